//! Starting the other CPUs (APs): a real-mode trampoline and INIT-SIPI-SIPI.
//!
//! The trampoline is copied to [`TRAMPOLINE_PHYS`] (below 1 MiB, as SIPI requires).
//! An AP starts there in real mode, enters protected mode, then long mode on
//! trampoline page tables (the low 2 MiB identity-mapped plus the kernel's upper
//! half), jumps to [`ramen_ap_entry64`] in the kernel image, loads the kernel's own
//! page tables and calls the entry function the kernel gave [`ApStarter::start`].
//! APs are started one at a time, so one parameter block suffices.

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use x86_64::structures::paging::PageTableFlags as Flags;

use crate::apic::Lapic;
use crate::paging::{AddressSpace, FrameSource, MapError, PageSize, phys_to_virt};
use crate::tsc::spin_ticks;

/// Where the trampoline runs: page 8, SIPI vector 0x08.
pub const TRAMPOLINE_PHYS: u64 = 0x8000;

global_asm!(
    r#"
    .section .text.trampoline, "ax"
    .code16
    .global ramen_trampoline_start
ramen_trampoline_start:
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl tramp_gdt_ptr - ramen_trampoline_start
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $(0x8000 + tramp32 - ramen_trampoline_start)

    .code32
tramp32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov (0x8000 + ramen_tramp_cr3 - ramen_trampoline_start), %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or (0x8000 + ramen_tramp_efer - ramen_trampoline_start), %eax
    wrmsr
    mov %cr0, %eax
    or $0x80010000, %eax
    mov %eax, %cr0
    ljmp $0x18, $(0x8000 + tramp64 - ramen_trampoline_start)

    .code64
tramp64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov (0x8000 + ramen_tramp_stack - ramen_trampoline_start), %rsp
    mov (0x8000 + ramen_tramp_arg - ramen_trampoline_start), %rdi
    mov (0x8000 + ramen_tramp_entry - ramen_trampoline_start), %rax
    jmp *%rax

    .p2align 3
tramp_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF
    .quad 0x00CF92000000FFFF
    .quad 0x00209A0000000000
tramp_gdt_ptr:
    .word tramp_gdt_ptr - tramp_gdt - 1
    .long 0x8000 + tramp_gdt - ramen_trampoline_start
    .p2align 3
    .global ramen_tramp_cr3
ramen_tramp_cr3:
    .quad 0
    .global ramen_tramp_efer
ramen_tramp_efer:
    .quad 0
    .global ramen_tramp_stack
ramen_tramp_stack:
    .quad 0
    .global ramen_tramp_arg
ramen_tramp_arg:
    .quad 0
    .global ramen_tramp_entry
ramen_tramp_entry:
    .quad 0
    .global ramen_trampoline_end
ramen_trampoline_end:

    .section .text.ramen_ap, "ax"
    .code64
    .global ramen_ap_entry64
ramen_ap_entry64:
    mov (%rdi), %rax
    mov %rax, %cr3
    xor %ebp, %ebp
    call {ap_rust}
    ud2
"#,
    ap_rust = sym ap_rust,
    options(att_syntax)
);

unsafe extern "C" {
    static ramen_trampoline_start: u8;
    static ramen_trampoline_end: u8;
    static ramen_tramp_cr3: u8;
    static ramen_tramp_efer: u8;
    static ramen_tramp_stack: u8;
    static ramen_tramp_arg: u8;
    static ramen_tramp_entry: u8;
    fn ramen_ap_entry64();
}

/// What an AP runs once it is in long mode on the kernel's page tables.
pub type ApEntry = fn(arg: u64) -> !;

/// The parameter block an AP reads on its way in. `cr3` must stay first: the
/// assembly entry loads it from offset 0.
#[repr(C)]
struct ApBoot {
    cr3: AtomicU64,
    entry: spin::Mutex<Option<ApEntry>>,
    arg: AtomicU64,
    /// Set by the AP as its first act in Rust.
    alive: AtomicBool,
}

static AP_BOOT: ApBoot = ApBoot {
    cr3: AtomicU64::new(0),
    entry: spin::Mutex::new(None),
    arg: AtomicU64::new(0),
    alive: AtomicBool::new(false),
};

extern "C" fn ap_rust(boot: &'static ApBoot) -> ! {
    boot.alive.store(true, Ordering::Release);
    let entry = *boot.entry.lock();
    let arg = boot.arg.load(Ordering::Acquire);
    match entry {
        Some(entry) => entry(arg),
        None => crate::cpu::halt_forever(),
    }
}

fn symbol(s: &u8) -> u64 {
    s as *const u8 as u64
}

/// Starts APs. Holds the trampoline's page tables.
pub struct ApStarter {
    tables: AddressSpace,
    kernel_root: u64,
}

/// Timing of the INIT-SIPI-SIPI sequence, in TSC ticks.
#[derive(Clone, Copy, Debug)]
pub struct StartTiming {
    /// After INIT (10 ms by the MP specification).
    pub after_init: u64,
    /// After each SIPI (200 us).
    pub after_sipi: u64,
    /// How long to wait for the AP to report in before giving up.
    pub timeout: u64,
}

impl ApStarter {
    /// Installs the trampoline and builds its page tables: the low 2 MiB identity
    /// mapped (executable, for the trampoline) and the kernel's upper half.
    /// `frames` must give frames below 4 GiB (CR3 is loaded in 32-bit mode).
    pub fn prepare(kernel_root: u64, frames: FrameSource<'_>) -> Result<Self, MapError> {
        // SAFETY: the linker script keeps the trampoline in the image; we take addresses.
        let (start, end) = unsafe { (symbol(&ramen_trampoline_start), symbol(&ramen_trampoline_end)) };
        let len = (end - start) as usize;
        if len > crate::PAGE_SIZE as usize {
            return Err(MapError::WindowFull);
        }
        // SAFETY: the trampoline page is below 1 MiB, which the kernel keeps out of the
        // frame allocator and uses for nothing else; the direct map covers it.
        unsafe {
            core::ptr::copy_nonoverlapping(start as *const u8, phys_to_virt(TRAMPOLINE_PHYS) as *mut u8, len);
        }
        let mut tables = AddressSpace::new(frames)?;
        if tables.root() >= 1 << 32 {
            return Err(MapError::FrameUnreachable(tables.root()));
        }
        tables.map(0, 0, PageSize::Size2M, Flags::WRITABLE, frames)?;
        Ok(Self { tables, kernel_root })
    }

    fn set_param(&self, symbol_addr: u64, value: u64) {
        // SAFETY: as above; the `ramen_trampoline_*` range contains the symbol.
        let start = unsafe { symbol(&ramen_trampoline_start) };
        let at = phys_to_virt(TRAMPOLINE_PHYS) + (symbol_addr - start);
        // SAFETY: `at` is inside the trampoline copy, 8-byte aligned by `.p2align 3`,
        // and no AP is running the trampoline while parameters change.
        unsafe { (at as *mut u64).write_volatile(value) };
    }

    /// Starts the CPU with APIC id `apic_id` on `stack_top`, to run `entry(arg)`.
    /// Returns whether it reported in before the timeout; a CPU that does not is
    /// left alone (it may be broken or absent) and the caller reports it.
    pub fn start(
        &mut self,
        lapic: &mut Lapic,
        apic_id: u32,
        stack_top: u64,
        entry: ApEntry,
        arg: u64,
        timing: StartTiming,
    ) -> bool {
        // The upper half of the trampoline tables mirrors the kernel's, refreshed each
        // time so stacks mapped since `prepare` are visible.
        let src = phys_to_virt(self.kernel_root) as *const u64;
        let dst = phys_to_virt(self.tables.root()) as *mut u64;
        // SAFETY: both are page tables (512 entries) reachable through the direct
        // map; we copy the upper 256 entries, which only the kernel edits, and no AP
        // is using the trampoline tables now.
        unsafe { core::ptr::copy_nonoverlapping(src.add(256), dst.add(256), 256) };

        AP_BOOT.cr3.store(self.kernel_root, Ordering::Release);
        *AP_BOOT.entry.lock() = Some(entry);
        AP_BOOT.arg.store(arg, Ordering::Release);
        AP_BOOT.alive.store(false, Ordering::Release);
        // SAFETY: taking symbol addresses only.
        unsafe {
            self.set_param(symbol(&ramen_tramp_cr3), self.tables.root());
            self.set_param(symbol(&ramen_tramp_efer), 0x100 | 0x800); // LME | NXE
            self.set_param(symbol(&ramen_tramp_stack), stack_top);
            self.set_param(symbol(&ramen_tramp_arg), core::ptr::addr_of!(AP_BOOT) as u64);
            self.set_param(symbol(&ramen_tramp_entry), ramen_ap_entry64 as *const () as u64);
        }

        let page = (TRAMPOLINE_PHYS >> 12) as u8;
        lapic.send_init(apic_id);
        spin_ticks(timing.after_init);
        for _ in 0..2 {
            lapic.send_startup(apic_id, page);
            spin_ticks(timing.after_sipi);
            if AP_BOOT.alive.load(Ordering::Acquire) {
                break;
            }
        }
        let start = crate::cpu::rdtsc();
        while !AP_BOOT.alive.load(Ordering::Acquire) {
            if crate::cpu::rdtsc().wrapping_sub(start) > timing.timeout {
                // Park it again so a late start cannot run with the next CPU's stack.
                lapic.send_init(apic_id);
                return false;
            }
            crate::cpu::relax();
        }
        true
    }
}
