//! The per-CPU block, reached through the GS base.
//!
//! Every CPU owns one [`CpuLocal`] in memory of its own (page-aligned, so no two
//! CPUs share a cache line). `gs:0` holds the block's own address so
//! [`current`] is a single load; entry code later finds the kernel stack at a fixed
//! offset. Blocks are never freed.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use x86_64::VirtAddr;
use x86_64::registers::model_specific::{GsBase, KernelGsBase};

use crate::gdt::{CpuTables, IST_COUNT};

/// One CPU's identity, stacks and descriptor tables.
#[repr(C, align(4096))]
pub struct CpuLocal {
    /// Address of this block (read through `gs:0`).
    self_ptr: u64,
    /// Top of this CPU's kernel stack (`gs:8`; the syscall entry switches to it).
    pub kernel_stack_top: u64,
    /// Scratch slot for the user stack pointer on syscall entry (`gs:16`).
    pub user_rsp_scratch: u64,
    /// One past the end of the running thread's saved user context (`gs:24`): the
    /// syscall entry pushes the user registers there, the return path pops them.
    pub current_context_end: AtomicU64,
    /// Dense CPU index; the boot CPU is 0.
    pub index: u32,
    /// Local APIC id.
    pub apic_id: u32,
    /// Package (socket); set once the firmware tables are read.
    pub package: AtomicU32,
    /// NUMA node; set once the firmware tables are read.
    pub node: AtomicU32,
    /// Tops of the IST stacks, IST1 first.
    pub ist_tops: [u64; IST_COUNT],
    /// Set while this CPU reports a fatal fault: a fault inside the reporter must
    /// not report again (it would recurse on the same IST stack).
    pub in_fatal: AtomicBool,
    /// Interrupts taken by this CPU, by kind, for tests and statistics.
    pub interrupts: AtomicU64,
    /// Breakpoints (#BP) taken and resumed.
    pub breakpoints: AtomicU64,
    /// The user address space (PML4) this CPU has loaded, 0 for the kernel's:
    /// written by this CPU before each CR3 switch ([`set_loaded_vspace`]), read by
    /// others deciding whom a TLB shootdown concerns.
    pub loaded_vspace: AtomicU64,
    /// The kernel's own entry for this CPU (an address the kernel sets once, with
    /// [`set_kernel_cpu`], as the CPU registers; 0 until then), so that the kernel
    /// finds it in one GS load ([`kernel_cpu_fast`]) instead of through its table.
    pub kernel_cpu: AtomicU64,
}

/// Identity and stacks of a CPU before its block exists.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuIdentity {
    /// Dense CPU index.
    pub index: u32,
    /// Local APIC id.
    pub apic_id: u32,
    /// Package (socket).
    pub package: u32,
    /// NUMA node.
    pub node: u32,
    /// Top of the kernel stack.
    pub kernel_stack_top: u64,
    /// Tops of the IST stacks.
    pub ist_tops: [u64; IST_COUNT],
}

/// `IA32_TSC_AUX`.
const TSC_AUX_MSR: u32 = 0xc000_0103;

/// Bytes a per-CPU block needs: the [`CpuLocal`], then the CPU's GDT and TSS.
pub const CPU_LOCAL_BYTES: usize = core::mem::size_of::<CpuLocal>() + core::mem::size_of::<CpuTables>();

/// Initialises the per-CPU block at `block` for the running CPU: fills it, loads its
/// GDT and TSS, and points GS at it.
///
/// # Safety
/// `block` must be the kernel-virtual address of `CPU_LOCAL_BYTES` bytes of
/// writable memory, 4 KiB-aligned, used for nothing else, ever; and this must run
/// once, on the CPU that will own it.
pub unsafe fn install(block: u64, id: CpuIdentity) -> &'static CpuLocal {
    // SAFETY: the caller guarantees the memory is ours, aligned and large enough.
    let local = unsafe { write_block(block, id) };
    let tables_ptr = (block + core::mem::size_of::<CpuLocal>() as u64) as *mut CpuTables;
    // SAFETY: the tables follow the CpuLocal inside the caller's block (suitably
    // aligned: CpuLocal's size is a multiple of its 4 KiB alignment); they are
    // borrowed mutably once, here, and then only by the CPU's descriptor registers.
    let tables: &'static mut CpuTables = unsafe {
        tables_ptr.write(CpuTables::new());
        &mut *tables_ptr
    };
    crate::gdt::load(tables, id.kernel_stack_top, id.ist_tops);
    GsBase::write(VirtAddr::new(block));
    // `rdtscp` hands user space its CPU index in ECX (tracing and tests use it).
    if crate::cpu::Features::detect().rdtscp {
        // SAFETY: IA32_TSC_AUX only changes what rdtscp returns in ECX.
        unsafe { x86_64::registers::model_specific::Msr::new(TSC_AUX_MSR).write(u64::from(id.index)) };
    }
    // User GS starts at zero; `swapgs` on entry from user mode exchanges the two.
    KernelGsBase::write(VirtAddr::new(0));
    local
}

/// Writes CPU `id`'s block at `block` and returns it (the part of [`install`] that
/// touches no register; hosted test processes use it too).
///
/// # Safety
/// As for [`install`]: `block` is `CPU_LOCAL_BYTES` of writable, 4 KiB-aligned memory
/// used for nothing else, ever.
pub(crate) unsafe fn write_block(block: u64, id: CpuIdentity) -> &'static CpuLocal {
    let ptr = block as *mut CpuLocal;
    // SAFETY: the caller guarantees the memory is ours, aligned and large enough.
    unsafe {
        ptr.write(CpuLocal {
            self_ptr: block,
            kernel_stack_top: id.kernel_stack_top,
            user_rsp_scratch: 0,
            current_context_end: AtomicU64::new(0),
            index: id.index,
            apic_id: id.apic_id,
            package: AtomicU32::new(id.package),
            node: AtomicU32::new(id.node),
            ist_tops: id.ist_tops,
            in_fatal: AtomicBool::new(false),
            interrupts: AtomicU64::new(0),
            breakpoints: AtomicU64::new(0),
            loaded_vspace: AtomicU64::new(0),
            kernel_cpu: AtomicU64::new(0),
        });
    }
    // SAFETY: initialised above; the block lives forever and is only read from now on.
    unsafe { &*ptr }
}

/// The running CPU's block, or `None` before [`install`] ran on this CPU.
pub fn try_current() -> Option<&'static CpuLocal> {
    #[cfg(not(feature = "hosted"))]
    let base = GsBase::read().as_u64();
    // Only kernel addresses are per-CPU blocks. An NMI or machine check that lands
    // between `swapgs` and the return to user mode sees the user's GS base here; user
    // space cannot point it into the kernel half (no FSGSBASE, and the kernel never
    // sets a user GS base there), so this test tells the two apart.
    #[cfg(not(feature = "hosted"))]
    if base < crate::PHYS_MAP_BASE {
        return None;
    }
    // A hosted test thread's GS base is zero or its block (`hosted::install_cpu`).
    #[cfg(feature = "hosted")]
    let base = match crate::hosted::gs_base() {
        0 => return None,
        base => base,
    };
    // SAFETY: a non-zero GS base in ring 0 is only ever set by `install` (hosted:
    // `hosted::install_cpu`), to a block that lives forever; `swapgs` happens only
    // around user mode.
    Some(unsafe { &*(base as *const CpuLocal) })
}

/// The running CPU's block. Before [`install`] this is a fatal error.
pub fn current() -> &'static CpuLocal {
    match try_current() {
        Some(local) => local,
        None => crate::trap::fatal_early("per-CPU block used before it was installed"),
    }
}

/// The running CPU's index, 0 before the block exists (only the boot CPU runs then).
pub fn cpu_index() -> u32 {
    try_current().map_or(0, |c| c.index)
}

/// The running CPU's index in one instruction (`mov gs:32`), for hot paths that run
/// only after this CPU's block is installed. Before that GS is zero and the read
/// faults (the kernel reports it), so it never returns a wrong answer.
#[inline(always)]
pub fn index_fast() -> u32 {
    let index: u32;
    // SAFETY: reads four bytes at GS:32, the `index` field of this CPU's block (checked
    // by the offset assertions below); it writes nothing and cannot alias Rust data.
    unsafe {
        core::arch::asm!("mov {:e}, gs:[{}]", out(reg) index, const INDEX_OFFSET,
            options(nostack, readonly, preserves_flags));
    }
    index
}

/// The address [`set_kernel_cpu`] stored in this CPU's block (0 before), in one GS
/// load: the kernel's hot paths find their CPU's entry this way.
#[inline(always)]
pub fn kernel_cpu_fast() -> u64 {
    let entry: u64;
    // SAFETY: reads the 8-byte `kernel_cpu` field of this CPU's block (offset from
    // `offset_of!`); only this CPU writes it, once, before reading it.
    unsafe {
        core::arch::asm!("mov {}, gs:[{}]", out(reg) entry, const KERNEL_CPU_OFFSET,
            options(nostack, readonly, preserves_flags));
    }
    entry
}

/// Records the kernel's entry for the running CPU (see [`kernel_cpu_fast`]).
pub fn set_kernel_cpu(entry: u64) {
    current().kernel_cpu.store(entry, Ordering::Release);
}

const KERNEL_CPU_OFFSET: usize = core::mem::offset_of!(CpuLocal, kernel_cpu);
const INDEX_OFFSET: usize = core::mem::offset_of!(CpuLocal, index);
const LOADED_VSPACE_OFFSET: usize = core::mem::offset_of!(CpuLocal, loaded_vspace);

/// The address space this CPU has loaded ([`set_loaded_vspace`]), in one GS load.
#[inline(always)]
pub fn loaded_vspace_fast() -> u64 {
    let root: u64;
    // SAFETY: reads the 8-byte `loaded_vspace` field of this CPU's block (offset from
    // `offset_of!`); only this CPU writes it, so the plain load sees its last store.
    unsafe {
        core::arch::asm!("mov {}, gs:[{}]", out(reg) root, const LOADED_VSPACE_OFFSET,
            options(nostack, readonly, preserves_flags));
    }
    root
}

/// Records in this CPU's block that it is about to load the address space `root`
/// (one store through GS; the CR3 write that follows serialises it).
/// [`set_loaded_vspace`] with a full barrier after it (an `xchg`): a switch with PCIDs
/// publishes the space before it reads the space's TLB generation, so that a CPU
/// removing a translation either sees this CPU in the space or this CPU sees the
/// new generation (`tlb` in the kernel).
#[inline(always)]
pub fn publish_loaded_vspace(root: u64) {
    // SAFETY: as for `set_loaded_vspace`; `xchg` with memory is atomic and a full
    // barrier.
    unsafe {
        core::arch::asm!("xchg gs:[{}], {}", const LOADED_VSPACE_OFFSET, inout(reg) root => _,
            options(nostack, preserves_flags));
    }
}

#[inline(always)]
pub fn set_loaded_vspace(root: u64) {
    // SAFETY: writes the 8-byte, 8-aligned `loaded_vspace` field of this CPU's block
    // (offset from `offset_of!`); an aligned 8-byte store is atomic on x86_64, so
    // other CPUs' atomic loads of the field see the old or the new value.
    unsafe {
        core::arch::asm!("mov gs:[{}], {}", const LOADED_VSPACE_OFFSET, in(reg) root,
            options(nostack, preserves_flags));
    }
}

impl CpuLocal {
    /// Counts an interrupt.
    pub fn count_interrupt(&self) {
        self.interrupts.fetch_add(1, Ordering::Relaxed);
    }
}

/// A value that belongs to one CPU and is only ever touched by that CPU: the local
/// APIC handle, later the run queue. Shared references to it may sit in global
/// per-CPU tables; [`CpuCell::with`] checks the caller is the owner and is not
/// re-entered (the kernel runs with interrupts off, so only a bug re-enters).
pub struct CpuCell<T> {
    owner: u32,
    busy: core::cell::Cell<bool>,
    value: core::cell::UnsafeCell<T>,
}

// SAFETY: every access goes through `with`, which admits only the owning CPU and
// never two borrows at once; `T` is created on and never leaves the owner.
unsafe impl<T> Sync for CpuCell<T> {}

// SAFETY: moving the cell (into a global table) moves no access rights: `with` still
// admits only the owner. Per-CPU values are never dropped (their tables are static).
unsafe impl<T> Send for CpuCell<T> {}

impl<T> CpuCell<T> {
    /// Wraps `value` as belonging to the running CPU.
    pub fn new(value: T) -> Self {
        if try_current().is_none() {
            crate::trap::fatal_early("CpuCell created before the CPU's per-CPU block");
        }
        Self {
            owner: cpu_index(),
            busy: core::cell::Cell::new(false),
            value: core::cell::UnsafeCell::new(value),
        }
    }

    /// The owning CPU.
    pub fn owner(&self) -> u32 {
        self.owner
    }

    /// Runs `f` on the value; a fatal error if called from another CPU or re-entered.
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        if index_fast() != self.owner {
            crate::trap::fatal_early("CpuCell touched by a CPU that does not own it");
        }
        if self.busy.replace(true) {
            crate::trap::fatal_early("CpuCell re-entered");
        }
        // SAFETY: only the owner gets here, and `busy` rules out a second live borrow.
        let result = f(unsafe { &mut *self.value.get() });
        self.busy.set(false);
        result
    }
}

impl<T> CpuCell<T> {
    /// [`with`](Self::with) without the owner check, for a caller that found the cell
    /// through the running CPU's own block (one compare and branch fewer on the
    /// kernel's hottest path). Re-entry is still checked.
    ///
    /// # Safety
    /// The running CPU must own the cell.
    #[inline(always)]
    pub unsafe fn with_owned<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        debug_assert_eq!(index_fast(), self.owner);
        if self.busy.replace(true) {
            crate::trap::fatal_early("CpuCell re-entered");
        }
        // SAFETY: the caller guarantees this CPU owns the cell, and `busy` rules out
        // a second live borrow.
        let result = f(unsafe { &mut *self.value.get() });
        self.busy.set(false);
        result
    }
}

// The entry assembly reaches these fields at fixed GS offsets.
const _: () = assert!(core::mem::offset_of!(CpuLocal, self_ptr) == 0);
const _: () = assert!(core::mem::offset_of!(CpuLocal, kernel_stack_top) == 8);
const _: () = assert!(core::mem::offset_of!(CpuLocal, user_rsp_scratch) == 16);
const _: () = assert!(core::mem::offset_of!(CpuLocal, current_context_end) == 24);
