//! The kernel's table of CPUs and the machine facts learned at boot.
//!
//! `CPUS[i]` is filled once by CPU `i` itself as it comes up and never changes
//! after; other CPUs read it without locks. Each CPU's entry lives in memory of its
//! own NUMA node (frames taken from the boot allocator inside one of the node's
//! SRAT ranges, anywhere if there are none); the table holds references only.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use ramen_arch::apic::Lapic;
use ramen_arch::cpu::Features;
use ramen_arch::percpu::{CpuCell, CpuLocal};
use ramen_core::lookup_cache::LookupCache;
use ramen_core::topology::{MAX_CPUS, Topology};

use crate::sched::{Inbox, Sched};
use spin::Once;

/// One CPU as the kernel sees it.
pub struct Cpu {
    /// Physical address of this entry (in memory of the CPU's node).
    pub home: u64,
    /// The arch per-CPU block (identity, stacks, GS base target).
    pub local: &'static CpuLocal,
    /// The local APIC; only its own CPU touches it.
    pub lapic: CpuCell<Lapic>,
    /// APIC id the local APIC itself reported when the CPU came up.
    pub reported_apic_id: u32,
    /// Timer interrupts taken.
    pub timer_ticks: AtomicU64,
    /// Test IPIs taken.
    pub test_ipis: AtomicU64,
    /// The scheduler; only its own CPU touches it.
    pub sched: CpuCell<Sched>,
    /// Requests from other CPUs (wake, suspend, migrate).
    pub inbox: spin::Mutex<Inbox>,
    /// Requests this CPU posted that found their target's inbox full, held until it
    /// has room (`sched::post`, `sched::flush_outbox`); only this CPU touches it.
    pub outbox: CpuCell<ramen_core::inbox::Outbox>,
    /// The outbox holds something (a plain flag only this CPU writes: skipping the
    /// empty outbox costs one load).
    pub outbox_held: AtomicBool,
    /// Suspends and resumes this CPU asked other CPUs for that are not done yet: its
    /// system call waits for them before returning to user mode (`sched::suspend`,
    /// `sched::resume_thread`).
    pub requests_awaited: AtomicU32,
    /// This CPU has something to wait for before returning to user mode (a thread it
    /// destroyed or suspended on another CPU: `sched::await_stopped`): one load after
    /// an invocation when it has not.
    pub awaiting: AtomicBool,
    /// Capability-pointer resolutions cached on this CPU.
    pub lookup: CpuCell<LookupCache>,
    /// This CPU's time slice, set through its SchedControl capability.
    pub slice_ns: AtomicU64,
    /// This CPU's TSC minus the boot CPU's at the same moment, measured at bring-up
    /// (traces subtract it to put all CPUs on one time line).
    pub tsc_offset: core::sync::atomic::AtomicI64,
    /// IPC operations on this CPU that took the fastpath (written by this CPU only,
    /// with a plain load and store; others read it).
    pub ipc_fast: AtomicU64,
    /// IPC system calls on this CPU that took the slow path.
    pub ipc_slow: AtomicU64,
    /// Times this CPU took `CAP_LOCK` for writing (the one global lock left: see
    /// docs/concurrency.md). Written by this CPU only, read by `IPC_STATS`.
    pub cap_writes: AtomicU64,
    /// Capability changes this CPU made without `CAP_LOCK`'s write side, holding
    /// single slots in a read section (`ramen_core::light`). Written by this CPU only,
    /// read by `IPC_STATS`.
    pub cap_unlocked: AtomicU64,
    /// This CPU's trace ring (`trace` gives the rule that replaces a lock).
    pub trace: crate::trace::CpuTrace,
    /// This CPU is in the IPC fastpath, reading capabilities and endpoints without
    /// holding `CAP_LOCK` (`objects::CapLock::read_fast`).
    pub reading: AtomicBool,
    /// Something was posted to the inbox; this CPU is polling it (`ramen_core::wake`).
    pub wake: ramen_core::wake::WakeFlags,
    /// Another CPU asks this one to flush its TLB.
    pub tlb_flush_requested: core::sync::atomic::AtomicBool,
    /// Flushes done on request.
    pub tlb_flushes: AtomicU64,
    /// An address space being destroyed that this CPU must stop having loaded (it
    /// switches to the kernel's tables) when it answers the flush request that comes
    /// with it (`tlb::leave`); 0: none.
    pub leave_vspace: AtomicU64,
}

/// Filled in by each CPU as it comes up.
pub static CPUS: [Once<&'static Cpu>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];

/// CPUs that finished bring-up.
pub static ONLINE: AtomicU32 = AtomicU32::new(0);

/// One past the highest index of a CPU that registered: how far `CAP_LOCK`'s writers
/// look for fastpath readers.
pub static INDEX_BOUND: AtomicU32 = AtomicU32::new(0);

/// CPUs the firmware listed that did not come up.
pub static FAILED: AtomicU32 = AtomicU32::new(0);

/// Set per CPU index once it is fully up.
pub static ONLINE_FLAGS: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Facts the boot CPU learned that every CPU needs.
pub struct Machine {
    /// CPU features (the boot CPU's; CPUs are assumed homogeneous).
    pub features: Features,
    /// All CPUs the firmware lists, with sockets and nodes.
    pub topology: Topology,
    /// TSC ticks per second.
    pub tsc_hz: u64,
    /// Kernel virtual address of the xAPIC registers (unused with x2APIC).
    pub xapic_virt: u64,
    /// The kernel page tables' root.
    pub kernel_root: u64,
    /// Non-existent CPUs added on purpose (`phantom_cpu=`), expected to fail.
    pub phantom_cpus: u32,
    /// SRAT memory ranges with their NUMA node: `(base, len, node)`.
    pub memory_nodes: [(u64, u64, u32); MAX_MEMORY_NODES],
    /// Valid entries of `memory_nodes`.
    pub memory_node_count: usize,
}

/// Memory ranges with a known node that the kernel keeps.
pub const MAX_MEMORY_NODES: usize = 64;

impl Machine {
    /// The NUMA node holding physical address `paddr` (0 when unknown).
    pub fn node_of_memory(&self, paddr: u64) -> u32 {
        self.memory_nodes
            .iter()
            .take(self.memory_node_count)
            .find(|(base, len, _)| paddr >= *base && paddr - base < *len)
            .map_or(0, |(_, _, node)| *node)
    }
}

/// Set once by the boot CPU before any AP starts.
pub static MACHINE: Once<Machine> = Once::new();

/// The machine facts; only valid after the boot CPU set them.
pub fn machine() -> &'static Machine {
    match MACHINE.get() {
        Some(m) => m,
        None => ramen_arch::trap::fatal_early("machine facts used before boot recorded them"),
    }
}

/// The running CPU's entry: one GS load (the CPU's block holds the address
/// [`register`] gave it) and a test for zero.
#[inline(always)]
pub fn this_cpu() -> &'static Cpu {
    match crate::objects::registered_cpu() {
        Some(cpu) => cpu,
        None => no_entry(),
    }
}

/// Runs `f` with the running CPU's entry and its scheduler, borrowed without
/// `CpuCell::with`'s owner check (the entry came from this CPU's own block).
#[inline(always)]
#[allow(unsafe_code)]
pub fn with_local_sched<R>(f: impl FnOnce(&'static Cpu, &mut Sched) -> R) -> R {
    let cpu = this_cpu();
    // SAFETY: `this_cpu` read the running CPU's own block, whose `kernel_cpu` field
    // holds this CPU's entry (set by `register` on this CPU); the scheduler cell in it
    // was created on, and belongs to, this CPU.
    unsafe { cpu.sched.with_owned(|s| f(cpu, s)) }
}

#[cold]
#[inline(never)]
fn no_entry() -> ! {
    ramen_arch::trap::fatal_early("CPU table entry missing for the running CPU")
}

/// CPU `index`'s entry, if it came up.
#[inline]
pub fn cpu(index: u32) -> Option<&'static Cpu> {
    CPUS.get(index as usize).and_then(Once::get).copied()
}

/// Bytes of a CPU's home frames before its trace ring: the entry, page-rounded.
const RING_OFFSET: u64 = (core::mem::size_of::<Cpu>() as u64).next_multiple_of(ramen_arch::PAGE_SIZE);

/// Frames for CPU `index`'s entry and its trace ring (at [`RING_OFFSET`]): inside its
/// node's memory when the firmware described it, otherwise anywhere.
fn home_frames(node: u32) -> u64 {
    let bytes = RING_OFFSET + core::mem::size_of::<crate::trace::Ring>() as u64;
    let frames = bytes.div_ceil(ramen_arch::PAGE_SIZE);
    let m = machine();
    let mut allocator = crate::boot::FRAMES.lock();
    let local = m.memory_nodes.iter().take(m.memory_node_count).filter(|(_, _, n)| *n == node).find_map(
        |(base, len, _)| {
            allocator.alloc_contiguous_in(frames, ramen_arch::PAGE_SIZE, *base, base.saturating_add(*len))
        },
    );
    local
        .or_else(|| allocator.alloc_contiguous(frames, ramen_arch::PAGE_SIZE, u64::MAX))
        .unwrap_or_else(|| ramen_arch::trap::fatal_early("no memory for a CPU's kernel data"))
}

/// Registers the running CPU: its block and local APIC.
pub fn register(local: &'static CpuLocal, lapic: Lapic) -> &'static Cpu {
    let reported_apic_id = lapic.id();
    let index = local.index as usize;
    let Some(slot) = CPUS.get(index) else {
        ramen_arch::trap::fatal_early("CPU index beyond MAX_CPUS");
    };
    let home = home_frames(local.node.load(Ordering::Relaxed));
    let cpu = *slot.call_once(|| {
        crate::objects::place_cpu(
            home,
            Cpu {
                home,
                local,
                lapic: CpuCell::new(lapic),
                reported_apic_id,
                timer_ticks: AtomicU64::new(0),
                test_ipis: AtomicU64::new(0),
                sched: CpuCell::new(Sched::new()),
                inbox: spin::Mutex::new(Inbox::new()),
                outbox: CpuCell::new(ramen_core::inbox::Outbox::new()),
                outbox_held: AtomicBool::new(false),
                requests_awaited: AtomicU32::new(0),
                awaiting: AtomicBool::new(false),
                lookup: CpuCell::new(LookupCache::new()),
                slice_ns: AtomicU64::new(crate::sched::DEFAULT_SLICE_NS),
                tsc_offset: core::sync::atomic::AtomicI64::new(0),
                ipc_fast: AtomicU64::new(0),
                ipc_slow: AtomicU64::new(0),
                cap_writes: AtomicU64::new(0),
                cap_unlocked: AtomicU64::new(0),
                trace: crate::trace::CpuTrace::new(crate::objects::place_trace_ring(home + RING_OFFSET)),
                wake: ramen_core::wake::WakeFlags::new(),
                reading: AtomicBool::new(false),
                tlb_flush_requested: core::sync::atomic::AtomicBool::new(false),
                tlb_flushes: AtomicU64::new(0),
                leave_vspace: AtomicU64::new(0),
            },
        )
    });
    ramen_arch::percpu::set_kernel_cpu(cpu as *const Cpu as u64);
    if let Some(flag) = ONLINE_FLAGS.get(index) {
        flag.store(true, Ordering::Release);
    }
    ONLINE.fetch_add(1, Ordering::AcqRel);
    INDEX_BOUND.fetch_max(index as u32 + 1, Ordering::AcqRel);
    cpu
}

/// Whether CPU `index` is up.
pub fn is_online(index: u32) -> bool {
    ONLINE_FLAGS.get(index as usize).is_some_and(|f| f.load(Ordering::Acquire))
}
