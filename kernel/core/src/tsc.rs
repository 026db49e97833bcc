//! TSC frequency: from CPUID where the CPU states it, otherwise from a calibration
//! against the 1.193182 MHz PIT.

/// The PIT's input clock.
pub const PIT_HZ: u64 = 1_193_182;

/// Where the TSC frequency came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TscSource {
    /// CPUID leaf 0x15 (TSC/crystal ratio and crystal frequency).
    CpuidCrystal,
    /// CPUID leaf 0x16 (processor base frequency).
    CpuidBase,
    /// Measured against the PIT.
    PitCalibration,
}

/// TSC frequency from CPUID leaf 0x15: `crystal_hz * numerator / denominator`.
/// `None` when any field is zero (the leaf is then not enumerated).
pub fn from_leaf_15(denominator: u32, numerator: u32, crystal_hz: u32) -> Option<u64> {
    if denominator == 0 || numerator == 0 || crystal_hz == 0 {
        return None;
    }
    u64::from(crystal_hz).checked_mul(u64::from(numerator))?.checked_div(u64::from(denominator))
}

/// TSC frequency from CPUID leaf 0x16's base frequency in MHz.
pub fn from_leaf_16(base_mhz: u16) -> Option<u64> {
    (base_mhz != 0).then(|| u64::from(base_mhz) * 1_000_000)
}

/// TSC frequency from `tsc_ticks` counted while the PIT counted `pit_ticks`.
pub fn from_pit(tsc_ticks: u64, pit_ticks: u64) -> Option<u64> {
    tsc_ticks.checked_mul(PIT_HZ)?.checked_div(pit_ticks)
}

/// Converts a TSC delta to nanoseconds at `tsc_hz`, saturating.
pub fn ticks_to_ns(ticks: u64, tsc_hz: u64) -> u64 {
    if tsc_hz == 0 {
        return 0;
    }
    // Split to avoid overflow: whole seconds, then the remainder.
    let secs = ticks / tsc_hz;
    let rem = ticks % tsc_hz;
    secs.saturating_mul(1_000_000_000).saturating_add(rem.saturating_mul(1_000_000_000) / tsc_hz)
}

/// TSC ticks in `ns` nanoseconds at `tsc_hz`, saturating.
pub fn ns_to_ticks(ns: u64, tsc_hz: u64) -> u64 {
    let secs = ns / 1_000_000_000;
    let rem = ns % 1_000_000_000;
    secs.saturating_mul(tsc_hz).saturating_add(rem.saturating_mul(tsc_hz) / 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_15_and_16() {
        // A Skylake client: 24 MHz crystal, ratio 300/2 -> 3.6 GHz... scaled.
        assert_eq!(from_leaf_15(2, 300, 24_000_000), Some(3_600_000_000));
        assert_eq!(from_leaf_15(0, 300, 24_000_000), None);
        assert_eq!(from_leaf_16(3400), Some(3_400_000_000));
        assert_eq!(from_leaf_16(0), None);
    }

    #[test]
    fn pit_calibration() {
        // About 10 ms of PIT ticks (11 931) during which a ~2 GHz TSC advances 20 M.
        assert_eq!(from_pit(20_000_000, PIT_HZ / 100), Some(2_000_137_457));
        assert_eq!(from_pit(1, 0), None);
        assert_eq!(from_pit(u64::MAX, 1), None);
    }

    #[test]
    fn conversions_round_trip_and_saturate() {
        assert_eq!(ticks_to_ns(3_000_000_000, 3_000_000_000), 1_000_000_000);
        assert_eq!(ns_to_ticks(1_000, 2_000_000_000), 2_000);
        assert_eq!(ticks_to_ns(5, 0), 0);
        assert_eq!(ticks_to_ns(u64::MAX, 1), u64::MAX);
    }
}
