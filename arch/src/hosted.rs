//! The kernel's logic in an ordinary host process (feature `hosted`), for host tests
//! of kernel code that cannot be split from the hardware layer it runs on: the IPC
//! fast and slow paths, the scheduler, the object layer.
//!
//! What changes under the feature, and nothing else:
//! - "Physical" memory is an anonymous mapping at [`PHYS_BASE`] in the test process
//!   ([`map_memory`]); [`crate::phys::direct_map`] adds [`PHYS_BASE`] instead of the
//!   kernel's direct-map base, so every object access is the kernel's own code.
//! - The per-CPU block is found through the thread's GS base, set with
//!   `arch_prctl(ARCH_SET_GS)` ([`install_cpu`]), so `gs:`-relative loads (the CPU
//!   index, the kernel's CPU entry, the loaded address space) are the kernel's own.
//! - The local APIC is [`Lapic`], which records instead of writing registers; FPU
//!   switches and the console do nothing (the FPU is the test process's own).
//!
//! Anything else privileged (CR3, `invlpg`, I/O ports, `sysretq`) faults: a hosted
//! test must not reach it, and a crash says it did.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::percpu::{CpuIdentity, CpuLocal};

/// Where physical address 0 sits in the test process (user half, far from anything
/// the host's loader or allocator uses).
pub const PHYS_BASE: u64 = 0x2000_0000_0000;

const SYS_MMAP: u64 = 9;
const SYS_ARCH_PRCTL: u64 = 158;
const ARCH_SET_GS: u64 = 0x1001;
const ARCH_GET_GS: u64 = 0x1004;
const PROT_READ_WRITE: u64 = 0x3;
const MAP_PRIVATE_ANONYMOUS_FIXED_NOREPLACE: u64 = 0x02 | 0x20 | 0x10_0000;

/// A Linux system call with up to six arguments.
fn syscall6(number: u64, args: [u64; 6]) -> i64 {
    let ret: i64;
    // SAFETY: the callers below pass only `mmap` (a fixed, non-replacing mapping: it
    // fails rather than touch anything mapped) and `arch_prctl` on GS (unused by
    // Rust's runtime on x86_64, which keeps thread-locals behind FS).
    unsafe {
        core::arch::asm!("syscall", inlateout("rax") number as i64 => ret, in("rdi") args[0],
            in("rsi") args[1], in("rdx") args[2], in("r10") args[3], in("r8") args[4],
            in("r9") args[5], lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// Maps `len` bytes of zeroed "physical" memory at physical address `phys`
/// (page-aligned), once per range; an error is the negated `errno`.
pub fn map_memory(phys: u64, len: u64) -> Result<(), i64> {
    let want = PHYS_BASE + phys;
    let got =
        syscall6(SYS_MMAP, [want, len, PROT_READ_WRITE, MAP_PRIVATE_ANONYMOUS_FIXED_NOREPLACE, u64::MAX, 0]);
    if got < 0 {
        return Err(got);
    }
    if got as u64 != want {
        return Err(-22);
    }
    Ok(())
}

/// The calling thread's GS base (0 when none was set).
pub fn gs_base() -> u64 {
    let mut base = 0u64;
    let ret = syscall6(SYS_ARCH_PRCTL, [ARCH_GET_GS, &raw mut base as u64, 0, 0, 0, 0]);
    if ret < 0 { 0 } else { base }
}

/// Writes a per-CPU block for `id` at `block` (in memory mapped by [`map_memory`]'s
/// caller, `CPU_LOCAL_BYTES` long) and makes it the calling thread's GS base, as
/// `percpu::install` does on a CPU (without descriptor tables or MSRs).
///
/// # Safety
/// `block` must be writable, 4 KiB aligned, unused by anything else, and stay
/// allocated for the life of the process.
pub unsafe fn install_cpu(block: u64, id: CpuIdentity) -> &'static CpuLocal {
    // SAFETY: guaranteed by the caller.
    let local = unsafe { crate::percpu::write_block(block, id) };
    let ret = syscall6(SYS_ARCH_PRCTL, [ARCH_SET_GS, block, 0, 0, 0, 0]);
    assert!(ret == 0, "arch_prctl(ARCH_SET_GS) failed");
    local
}

/// Makes `local` (a block [`install_cpu`] wrote) the calling thread's CPU: each
/// test thread that runs kernel code first says which CPU it is.
pub fn use_cpu(local: &'static CpuLocal) {
    let ret = syscall6(SYS_ARCH_PRCTL, [ARCH_SET_GS, local as *const CpuLocal as u64, 0, 0, 0, 0]);
    assert!(ret == 0, "arch_prctl(ARCH_SET_GS) failed");
}

/// What a hosted CPU was asked to do to its TLB, in order, and the kernel's shootdown
/// milestones (recorded by the kernel's test build).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlbEvent {
    /// A CR3 write (root, PCID, no-flush bit as written).
    Cr3(u64),
    /// Every non-global entry of the loaded PCID dropped.
    FlushAll,
    /// One page's entry dropped (`invlpg`).
    FlushPage(u64),
    /// A shootdown of the space at this root began: its translation is gone and its
    /// TLB generation renewed (before the shooter looks for CPUs that have it).
    Removed(u64),
    /// That shootdown returned: no CPU may use the removed translation any more.
    Done(u64),
}

/// Recorded TLB events not yet taken, oldest first, each with the CPU it happened on.
struct TlbLog {
    events: [Option<(u32, TlbEvent)>; 4096],
    len: usize,
    /// Events that found the log full (a test that sees any drained too rarely).
    lost: usize,
}

static TLB_LOG: spin::Mutex<TlbLog> = spin::Mutex::new(TlbLog { events: [None; 4096], len: 0, lost: 0 });

/// Whether TLB events are recorded (only tests that model the TLB turn it on).
static TLB_RECORDING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Turns recording of TLB events on or off (the log is emptied either way).
pub fn record_tlb_events(on: bool) {
    TLB_RECORDING.store(on, Ordering::SeqCst);
    take_tlb_events(|_, _| {});
}

/// Records a TLB event on the calling CPU (the hosted `paging` functions call this
/// instead of the instruction), if recording is on.
pub fn record_tlb(event: TlbEvent) {
    if !TLB_RECORDING.load(Ordering::SeqCst) {
        return;
    }
    let cpu = crate::percpu::index_fast();
    let mut log = TLB_LOG.lock();
    let len = log.len;
    match log.events.get_mut(len) {
        Some(slot) => {
            *slot = Some((cpu, event));
            log.len += 1;
        }
        None => log.lost += 1,
    }
}

/// Hands every recorded TLB event to `f` (CPU, event), oldest first, and empties the
/// log; returns how many were lost to a full log since the last call.
pub fn take_tlb_events(mut f: impl FnMut(u32, TlbEvent)) -> usize {
    let mut log = TLB_LOG.lock();
    let len = log.len;
    for event in log.events.iter_mut().take(len) {
        if let Some((cpu, e)) = event.take() {
            f(cpu, e);
        }
    }
    log.len = 0;
    core::mem::take(&mut log.lost)
}

/// The local APIC of a hosted CPU: records what the kernel asks of it.
#[derive(Debug, Default)]
pub struct Lapic {
    /// The TSC deadline of the last `arm_timer`, 0 if none.
    pub armed: u64,
    /// `arm_timer` calls.
    pub arms: u64,
    /// IPIs sent: `(vector, destination)` of the last one and how many.
    pub last_ipi: (u8, u32),
    /// IPIs sent.
    pub ipis: u64,
}

/// End-of-interrupt writes on any hosted CPU (none are expected).
pub static EOIS: AtomicU64 = AtomicU64::new(0);

impl Lapic {
    /// A hosted APIC with nothing recorded.
    pub fn new() -> Self {
        Self::default()
    }

    /// As the hardware APIC's `init`: a hosted APIC, nothing enabled.
    pub fn init(_xapic_virt: u64, _features: &crate::cpu::Features) -> Result<Self, &'static str> {
        Ok(Self::new())
    }

    /// The mode in use (x2APIC, TSC deadline).
    pub fn mode(&self) -> crate::apic::LapicMode {
        crate::apic::LapicMode { x2apic: true, tsc_deadline: true }
    }

    /// The APIC id (0).
    pub fn id(&self) -> u32 {
        0
    }

    /// Counts an end of interrupt.
    pub fn eoi(&mut self) {
        EOIS.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the deadline.
    pub fn arm_timer(&mut self, deadline_tsc: u64, _fallback_ticks: impl FnOnce() -> u32) {
        self.armed = deadline_tsc;
        self.arms += 1;
    }

    /// Records the IPI.
    pub fn send_ipi(&mut self, vector: u8, dest: u32) {
        self.last_ipi = (vector, dest);
        self.ipis += 1;
    }

    /// Not available hosted.
    pub fn send_init(&mut self, _dest: u32) {
        panic!("hosted: no AP start-up");
    }

    /// Not available hosted.
    pub fn send_startup(&mut self, _dest: u32, _page: u8) {
        panic!("hosted: no AP start-up");
    }
}
