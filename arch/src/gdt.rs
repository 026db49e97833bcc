//! Per-CPU GDT and TSS.
//!
//! The layout is fixed by `SYSCALL`/`SYSRET`: kernel code and data first, then user
//! data before user code (`SYSRET` loads CS = STAR[63:48] + 16 and SS = + 8).
//! The TSS carries the interrupt stacks: the kernel never takes an exception on the
//! stack it is running on (the precompiled `core` uses the red zone), so every
//! vector runs on an IST stack.

use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

/// Kernel code selector.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data selector.
pub const KERNEL_DS: u16 = 0x10;
/// User data selector (RPL 3).
pub const USER_DS: u16 = 0x1b;
/// User code selector (RPL 3).
pub const USER_CS: u16 = 0x23;

/// IST slot (1-based, as the IDT counts) for ordinary exceptions and interrupts.
pub const IST_GENERAL: u16 = 1;
/// IST slot for NMI.
pub const IST_NMI: u16 = 2;
/// IST slot for double fault.
pub const IST_DOUBLE_FAULT: u16 = 3;
/// IST slot for machine check.
pub const IST_MACHINE_CHECK: u16 = 4;
/// IST stacks per CPU.
pub const IST_COUNT: usize = 4;

/// One CPU's descriptor tables. Lives in that CPU's per-CPU block.
pub struct CpuTables {
    gdt: GlobalDescriptorTable,
    tss: TaskStateSegment,
}

impl CpuTables {
    /// Empty tables, filled by [`CpuTables::init`].
    pub const fn new() -> Self {
        Self { gdt: GlobalDescriptorTable::new(), tss: TaskStateSegment::new() }
    }
}

impl Default for CpuTables {
    fn default() -> Self {
        Self::new()
    }
}

/// Fills `tables` with this CPU's stacks and loads them. `ist_tops[i]` is the top of
/// IST stack `i + 1`; `kernel_stack_top` is RSP0 (used when user mode is
/// interrupted through a non-IST gate; all our gates use IST, but keep it sane).
pub fn load(tables: &'static mut CpuTables, kernel_stack_top: u64, ist_tops: [u64; IST_COUNT]) {
    let CpuTables { gdt, tss } = tables;
    tss.privilege_stack_table[0] = VirtAddr::new(kernel_stack_top);
    // The TSS is packed: copy the table out, fill it, write it back.
    let mut ist = tss.interrupt_stack_table;
    for (slot, top) in ist.iter_mut().zip(ist_tops) {
        *slot = VirtAddr::new(top);
    }
    tss.interrupt_stack_table = ist;
    let tss: &'static TaskStateSegment = tss;
    *gdt = GlobalDescriptorTable::new();
    let kcs = gdt.append(Descriptor::kernel_code_segment());
    let kds = gdt.append(Descriptor::kernel_data_segment());
    let uds = gdt.append(Descriptor::user_data_segment());
    let ucs = gdt.append(Descriptor::user_code_segment());
    let tss_sel = gdt.append(Descriptor::tss_segment(tss));
    debug_assert_eq!((kcs.0, kds.0, uds.0, ucs.0), (KERNEL_CS, KERNEL_DS, USER_DS, USER_CS));
    let gdt: &'static GlobalDescriptorTable = gdt;
    gdt.load();
    // SAFETY: the selectors index the GDT just loaded, whose entries match their use.
    unsafe {
        CS::set_reg(SegmentSelector(KERNEL_CS));
        SS::set_reg(SegmentSelector(KERNEL_DS));
        DS::set_reg(SegmentSelector(0));
        ES::set_reg(SegmentSelector(0));
        load_tss(tss_sel);
    }
}
