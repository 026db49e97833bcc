//! The local APIC: x2APIC through MSRs where the CPU has it, xAPIC through MMIO
//! otherwise (QEMU 7.2's TCG has no x2APIC), via the `x2apic` crate. Also the timer
//! (TSC-deadline mode where present, one-shot otherwise) and IPIs.
//!
//! Each CPU owns its [`Lapic`]; it is not `Send` (register accesses reach the local
//! APIC of whichever CPU runs them).
#![cfg_attr(feature = "hosted", allow(unused_imports, dead_code))]

use x2apic::lapic::{LocalApic, LocalApicBuilder, TimerDivide, TimerMode, xapic_base};
use x86_64::registers::model_specific::Msr;

/// Vector of the APIC timer.
pub const TIMER_VECTOR: u8 = 0x20;
/// Vector of the wake-up/reschedule IPI.
pub const WAKE_VECTOR: u8 = 0x21;
/// Vector of the test IPI (in-kernel tests).
pub const TEST_VECTOR: u8 = 0x22;
/// Vector of the APIC error interrupt.
pub const ERROR_VECTOR: u8 = 0xfe;
/// Spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// `IA32_TSC_DEADLINE`.
const TSC_DEADLINE_MSR: u32 = 0x6e0;
/// Bytes of the xAPIC register page.
pub const XAPIC_MMIO_BYTES: u64 = 4096;

/// Physical address of this CPU's xAPIC registers (from `IA32_APIC_BASE`).
pub fn xapic_phys() -> u64 {
    // SAFETY: reading IA32_APIC_BASE has no side effects.
    unsafe { xapic_base() }
}

/// A hosted test process's recording APIC (feature `hosted`).
#[cfg(feature = "hosted")]
pub use crate::hosted::Lapic;

/// One CPU's local APIC.
#[cfg(not(feature = "hosted"))]
pub struct Lapic {
    apic: LocalApic,
    deadline_mode: bool,
    x2apic: bool,
    /// The timer's LVT entry is unmasked (it stays so once armed: deadline and
    /// one-shot timers disarm themselves after firing).
    timer_enabled: bool,
}

/// How the local APIC runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LapicMode {
    /// x2APIC (MSRs) rather than xAPIC (MMIO).
    pub x2apic: bool,
    /// Timer in TSC-deadline mode.
    pub tsc_deadline: bool,
}

#[cfg(not(feature = "hosted"))]
impl Lapic {
    /// Enables this CPU's local APIC, timer masked until armed. `xapic_virt` is the
    /// kernel mapping of the xAPIC page (used only without x2APIC).
    pub fn init(xapic_virt: u64, features: &crate::cpu::Features) -> Result<Self, &'static str> {
        let mode = if features.tsc_deadline { TimerMode::TscDeadline } else { TimerMode::OneShot };
        let mut apic = LocalApicBuilder::new()
            .timer_vector(usize::from(TIMER_VECTOR))
            .error_vector(usize::from(ERROR_VECTOR))
            .spurious_vector(usize::from(SPURIOUS_VECTOR))
            .timer_mode(mode)
            .timer_divide(TimerDivide::Div16)
            .timer_initial(0)
            .set_xapic_base(xapic_virt)
            .build()?;
        // SAFETY: the xAPIC page is mapped uncached at `xapic_virt` (or x2APIC is
        // used); enabling the APIC with the timer's initial count 0 arms nothing.
        unsafe {
            apic.enable();
            apic.disable_timer();
        }
        Ok(Self { apic, deadline_mode: features.tsc_deadline, x2apic: features.x2apic, timer_enabled: false })
    }

    /// The mode in use.
    pub fn mode(&self) -> LapicMode {
        LapicMode { x2apic: self.x2apic, tsc_deadline: self.deadline_mode }
    }

    /// This CPU's APIC id as the APIC reports it.
    pub fn id(&self) -> u32 {
        // SAFETY: reading the id register has no side effects.
        let raw = unsafe { self.apic.id() };
        // In xAPIC mode the id sits in bits 31:24 of the register.
        if self.x2apic { raw } else { raw >> 24 }
    }

    /// Signals end of interrupt.
    pub fn eoi(&mut self) {
        // SAFETY: called from an interrupt handler for an interrupt the APIC delivered.
        unsafe { self.apic.end_of_interrupt() };
    }

    /// Arms the timer to fire once, at TSC value `deadline_tsc` in deadline mode, or
    /// after `fallback_ticks()` APIC timer ticks in one-shot mode (computed only
    /// then: the conversion divides). The LVT entry is written the first time only.
    pub fn arm_timer(&mut self, deadline_tsc: u64, fallback_ticks: impl FnOnce() -> u32) {
        // SAFETY: programming this CPU's own timer; the vector has a handler.
        unsafe {
            if !self.timer_enabled {
                self.apic.enable_timer();
                self.timer_enabled = true;
            }
            if self.deadline_mode {
                Msr::new(TSC_DEADLINE_MSR).write(deadline_tsc);
            } else {
                self.apic.set_timer_initial(fallback_ticks().max(1));
            }
        }
    }

    /// Sends a fixed IPI with `vector` to the CPU with APIC id `dest`.
    pub fn send_ipi(&mut self, vector: u8, dest: u32) {
        // SAFETY: a fixed IPI only raises an interrupt on the target, which has a
        // handler for every vector.
        unsafe { self.apic.send_ipi(vector, self.dest(dest)) };
    }

    /// Sends INIT to `dest` (AP start-up).
    pub fn send_init(&mut self, dest: u32) {
        // SAFETY: INIT resets only the target CPU, which the caller is starting.
        unsafe { self.apic.send_init_ipi(self.dest(dest)) };
    }

    /// Sends a start-up IPI to `dest` with the trampoline at page `page` (< 256).
    pub fn send_startup(&mut self, dest: u32, page: u8) {
        // SAFETY: the target is in wait-for-SIPI state and the trampoline is in place.
        unsafe { self.apic.send_sipi(page, self.dest(dest)) };
    }

    /// The destination field in the form the crate expects: xAPIC ids live in bits
    /// 31:24 of ICR-high.
    fn dest(&self, apic_id: u32) -> u32 {
        if self.x2apic { apic_id } else { apic_id << 24 }
    }
}

/// First vector the legacy 8259 PICs are moved to before being masked, so a stray
/// PIC interrupt can never masquerade as an exception (by default IRQ0 arrives as
/// vector 8, #DF, without the error code a real #DF pushes).
pub const LEGACY_PIC_BASE: u8 = 0xe0;

/// Re-programs both legacy 8259 PICs to vectors `LEGACY_PIC_BASE..+16` and masks
/// every line. The kernel uses the local APIC (and, later, I/O APIC) only.
pub fn disable_legacy_pic() {
    use x86_64::instructions::port::Port;
    let mut master_cmd = Port::<u8>::new(0x20);
    let mut master_data = Port::<u8>::new(0x21);
    let mut slave_cmd = Port::<u8>::new(0xa0);
    let mut slave_data = Port::<u8>::new(0xa1);
    // SAFETY: the standard initialisation sequence for the PC's two 8259s; nothing
    // else in the kernel uses them, and interrupts are off.
    unsafe {
        master_cmd.write(0x11); // ICW1: initialise, expect ICW4
        slave_cmd.write(0x11);
        master_data.write(LEGACY_PIC_BASE); // ICW2: vector base
        slave_data.write(LEGACY_PIC_BASE + 8);
        master_data.write(4); // ICW3: slave on IRQ2
        slave_data.write(2);
        master_data.write(1); // ICW4: 8086 mode
        slave_data.write(1);
        master_data.write(0xff); // mask everything
        slave_data.write(0xff);
    }
}
