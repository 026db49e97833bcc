//! CPU identification, feature control and the few instructions the kernel needs.

use raw_cpuid::CpuId;
use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};

/// What this CPU can do, read once from CPUID.
#[derive(Clone, Copy, Debug, Default)]
pub struct Features {
    /// No-execute pages (EFER.NXE).
    pub nx: bool,
    /// Supervisor-mode execution prevention.
    pub smep: bool,
    /// Supervisor-mode access prevention.
    pub smap: bool,
    /// 1 GiB pages.
    pub huge_pages: bool,
    /// Process-context identifiers.
    pub pcid: bool,
    /// x2APIC mode.
    pub x2apic: bool,
    /// APIC timer TSC-deadline mode.
    pub tsc_deadline: bool,
    /// TSC runs at a constant rate in all P/C-states.
    pub invariant_tsc: bool,
    /// `rdtscp`.
    pub rdtscp: bool,
    /// `xsave` family.
    pub xsave: bool,
    /// Global pages.
    pub global_pages: bool,
}

impl Features {
    /// Reads CPUID.
    pub fn detect() -> Self {
        let cpuid = CpuId::new();
        let basic = cpuid.get_feature_info();
        let ext = cpuid.get_extended_feature_info();
        let ext_fn = cpuid.get_extended_processor_and_feature_identifiers();
        let power = cpuid.get_advanced_power_mgmt_info();
        Self {
            nx: ext_fn.as_ref().is_some_and(|f| f.has_execute_disable()),
            smep: ext.as_ref().is_some_and(|f| f.has_smep()),
            smap: ext.as_ref().is_some_and(|f| f.has_smap()),
            huge_pages: ext_fn.as_ref().is_some_and(|f| f.has_1gib_pages()),
            pcid: basic.as_ref().is_some_and(|f| f.has_pcid()),
            x2apic: basic.as_ref().is_some_and(|f| f.has_x2apic()),
            tsc_deadline: basic.as_ref().is_some_and(|f| f.has_tsc_deadline()),
            invariant_tsc: power.as_ref().is_some_and(|p| p.has_invariant_tsc()),
            rdtscp: ext_fn.as_ref().is_some_and(|f| f.has_rdtscp()),
            xsave: basic.as_ref().is_some_and(|f| f.has_xsave()),
            global_pages: basic.as_ref().is_some_and(|f| f.has_pge()),
        }
    }
}

/// Protection features actually switched on for this CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Protections {
    /// EFER.NXE.
    pub nx: bool,
    /// CR0.WP: the kernel cannot write read-only pages either.
    pub write_protect: bool,
    /// CR4.SMEP.
    pub smep: bool,
    /// CR4.SMAP.
    pub smap: bool,
}

/// Switches on NX, WP, SMEP and SMAP where the CPU has them, and global pages.
pub fn enable_protections(features: &Features) {
    if features.nx {
        // SAFETY: setting NXE only makes the NX bit in page tables meaningful; the
        // kernel's tables set NX deliberately.
        unsafe { Efer::update(|f| f.insert(EferFlags::NO_EXECUTE_ENABLE)) };
    }
    // SAFETY: WP makes read-only pages read-only for the kernel too; the kernel never
    // writes its own text or rodata.
    unsafe { Cr0::update(|f| f.insert(Cr0Flags::WRITE_PROTECT)) };
    let mut cr4 = Cr4Flags::empty();
    if features.smep {
        cr4 |= Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION;
    }
    if features.smap {
        cr4 |= Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION;
    }
    if features.global_pages {
        cr4 |= Cr4Flags::PAGE_GLOBAL;
    }
    // SAFETY: the kernel maps no user pages it executes or touches outside the
    // audited user-copy routine (which brackets accesses with stac/clac).
    unsafe { Cr4::update(|f| f.insert(cr4)) };
}

/// Reads back which protections are on.
pub fn protections() -> Protections {
    let cr4 = Cr4::read();
    Protections {
        nx: Efer::read().contains(EferFlags::NO_EXECUTE_ENABLE),
        write_protect: Cr0::read().contains(Cr0Flags::WRITE_PROTECT),
        smep: cr4.contains(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION),
        smap: cr4.contains(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION),
    }
}

/// Reads the time-stamp counter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no side effects; CR4.TSD is never set.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The faulting address of the last page fault.
pub fn cr2() -> u64 {
    x86_64::registers::control::Cr2::read_raw()
}

/// Physical address of the active top-level page table.
pub fn cr3() -> u64 {
    x86_64::registers::control::Cr3::read_raw().0.start_address().as_u64()
}

/// Halts with interrupts off, forever.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Enables interrupts and halts until one arrives, atomically (`sti; hlt`), then
/// disables them again. The kernel runs with interrupts off; this is the only place
/// they are taken in ring 0.
pub fn wait_for_interrupt() {
    x86_64::instructions::interrupts::enable_and_hlt();
    x86_64::instructions::interrupts::disable();
}

/// Spin-loop hint for busy waits.
#[inline(always)]
pub fn relax() {
    core::hint::spin_loop();
}

/// This CPU's initial APIC id from CPUID (leaf 0xB's x2APIC id where present).
pub fn apic_id_from_cpuid() -> u32 {
    let cpuid = CpuId::new();
    if let Some(level) = cpuid.get_extended_topology_info().and_then(|mut levels| levels.next()) {
        return level.x2apic_id();
    }
    cpuid.get_feature_info().map(|f| u32::from(f.initial_local_apic_id())).unwrap_or(0)
}

/// Number of low APIC-id bits that select a logical CPU inside a package: shifting an
/// APIC id right by this gives the package (socket) id.
pub fn package_shift() -> u32 {
    let cpuid = CpuId::new();
    // Leaf 0xB: the shift of the highest level (core) is the package shift.
    if let Some(levels) = cpuid.get_extended_topology_info() {
        let mut shift = None;
        for level in levels {
            shift = Some(level.shift_right_for_next_apic_id());
        }
        if let Some(shift) = shift {
            return shift;
        }
    }
    // Leaf 1: logical processors per package, rounded up to a power of two.
    let logical =
        cpuid.get_feature_info().map(|f| u32::from(f.max_logical_processor_ids())).unwrap_or(1).max(1);
    logical.next_power_of_two().trailing_zeros()
}

/// The CPU's brand string, or its vendor, for reports.
pub fn model_name(buf: &mut [u8; 48]) -> &str {
    let cpuid = CpuId::new();
    if let Some(brand) = cpuid.get_processor_brand_string() {
        let s = brand.as_str().trim();
        let n = s.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), s.as_bytes().get(..n)) {
            dst.copy_from_slice(src);
        }
        return core::str::from_utf8(buf.get(..n).unwrap_or(&[])).unwrap_or("unknown");
    }
    "unknown"
}
