//! Interrupt and IPI handling for vectors 32 and up.

use core::sync::atomic::Ordering;

use ramen_arch::apic::{SPURIOUS_VECTOR, TEST_VECTOR, TIMER_VECTOR, WAKE_VECTOR};
use ramen_arch::trap::TrapFrame;
use ramen_perf_record::EventKind;

use crate::cpus::this_cpu;

/// The handler arch calls for every vector from 32 up.
pub fn handle(vector: u8, _frame: &mut TrapFrame) {
    // Spurious interrupts must not be acknowledged.
    if vector == SPURIOUS_VECTOR {
        return;
    }
    crate::trace::record(EventKind::IrqEnter, [u64::from(vector), 0]);
    let cpu = this_cpu();
    match vector {
        TIMER_VECTOR => {
            cpu.timer_ticks.fetch_add(1, Ordering::Relaxed);
        }
        TEST_VECTOR => {
            cpu.test_ipis.fetch_add(1, Ordering::Relaxed);
        }
        WAKE_VECTOR => {}
        _ => {
            crate::kprintln!("unexpected interrupt vector {}", vector);
        }
    }
    cpu.lapic.with(|lapic| lapic.eoi());
    crate::trace::record(EventKind::IrqExit, [u64::from(vector), 0]);
}
