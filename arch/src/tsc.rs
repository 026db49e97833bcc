//! Reading the TSC frequency: CPUID leaves 0x15/0x16, else a PIT calibration.

use raw_cpuid::CpuId;
use x86_64::instructions::port::Port;

use crate::cpu::rdtsc;

/// PIT ticks per calibration run (about 10 ms at 1.193182 MHz).
const CALIBRATION_PIT_TICKS: u16 = 11_932;
/// Calibration runs; the smallest result wins (least disturbed by the host).
const CALIBRATION_RUNS: usize = 3;

/// What CPUID says about the TSC rate: leaf 0x15 (denominator, numerator, crystal Hz)
/// and leaf 0x16's base frequency in MHz, zero where absent.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuidTsc {
    /// Leaf 0x15 EAX.
    pub denominator: u32,
    /// Leaf 0x15 EBX.
    pub numerator: u32,
    /// Leaf 0x15 ECX.
    pub crystal_hz: u32,
    /// Leaf 0x16 EAX.
    pub base_mhz: u16,
}

/// Reads the TSC-related CPUID leaves.
pub fn cpuid_tsc() -> CpuidTsc {
    let cpuid = CpuId::new();
    let mut out = CpuidTsc::default();
    if let Some(info) = cpuid.get_tsc_info() {
        out.denominator = info.denominator();
        out.numerator = info.numerator();
        out.crystal_hz = info.nominal_frequency();
    }
    if let Some(freq) = cpuid.get_processor_frequency_info() {
        out.base_mhz = freq.processor_base_frequency();
    }
    out
}

/// Measures TSC ticks against PIT channel 2 in one-shot mode, gated through port
/// 0x61 (the speaker gate), which needs no interrupt. Returns (tsc ticks, PIT ticks)
/// of the shortest of a few runs.
pub fn measure_against_pit() -> (u64, u64) {
    let mut best = u64::MAX;
    for _ in 0..CALIBRATION_RUNS {
        best = best.min(one_pit_run());
    }
    (best, u64::from(CALIBRATION_PIT_TICKS))
}

fn one_pit_run() -> u64 {
    let mut gate = Port::<u8>::new(0x61);
    let mut command = Port::<u8>::new(0x43);
    let mut channel2 = Port::<u8>::new(0x42);
    // SAFETY: ports 0x42/0x43/0x61 are the PIT and its gate; the kernel does not use
    // PIT channel 2 for anything else, and no other CPU runs yet.
    unsafe {
        // Gate low, speaker off.
        let g = gate.read();
        gate.write((g & !0x02) & !0x01);
        // Channel 2, lobyte/hibyte, mode 0 (interrupt on terminal count), binary.
        command.write(0b1011_0000);
        channel2.write(CALIBRATION_PIT_TICKS as u8);
        channel2.write((CALIBRATION_PIT_TICKS >> 8) as u8);
        // Raise the gate: counting starts.
        let g = gate.read();
        gate.write(g | 0x01);
        let start = rdtsc();
        // OUT2 (bit 5) goes high at terminal count.
        while gate.read() & 0x20 == 0 {
            crate::cpu::relax();
        }
        let end = rdtsc();
        let g = gate.read();
        gate.write(g & !0x01);
        end.wrapping_sub(start)
    }
}

/// Busy-waits for `ticks` TSC ticks.
pub fn spin_ticks(ticks: u64) {
    let start = rdtsc();
    while rdtsc().wrapping_sub(start) < ticks {
        crate::cpu::relax();
    }
}
