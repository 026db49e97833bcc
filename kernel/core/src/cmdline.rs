//! The kernel command line: space-separated words, `key` or `key=value`.
//!
//! Unknown words are kept so the kernel can warn about them instead of silently
//! ignoring a typo.

/// A kernel fault to inject on purpose, to test the fault reporter end to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedFault {
    /// Write to an unmapped address: #PF.
    PageFault,
    /// Execute `ud2`: #UD.
    InvalidOpcode,
    /// Load a non-canonical address: #GP.
    GeneralProtection,
    /// Call the panic handler.
    Panic,
    /// Index a slice out of bounds: `core`'s bounds-check panic, which the kernel
    /// links to a reporter that does not format (see `arch::panic_paths`).
    IndexOutOfBounds,
}

impl InjectedFault {
    fn parse(value: &str) -> Option<Self> {
        match value {
            "pf" => Some(Self::PageFault),
            "ud" => Some(Self::InvalidOpcode),
            "gp" => Some(Self::GeneralProtection),
            "panic" => Some(Self::Panic),
            "bounds" => Some(Self::IndexOutOfBounds),
            _ => None,
        }
    }
}

/// Most unknown words remembered for the warning.
pub const MAX_UNKNOWN: usize = 8;

/// What the command line asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cmdline<'a> {
    /// Run the in-kernel test cases, then exit QEMU with their status.
    pub test: bool,
    /// Inject a kernel fault after bring-up.
    pub fault: Option<InjectedFault>,
    /// Pretend the firmware listed a CPU with this APIC id that does not exist, to
    /// test that a CPU failing to start is reported and the rest carry on.
    pub phantom_cpu: Option<u32>,
    /// An idle CPU polls its inbox this many times before halting (0: halt at once
    /// and be woken by IPI; unset: the kernel's default); a sender skips the IPI to
    /// a CPU that is polling.
    pub idle_poll: Option<u32>,
    /// Do not use PCIDs even where the CPU has them (every address-space switch then
    /// drops the TLB's user entries).
    pub nopcid: bool,
    /// Words the kernel did not understand.
    pub unknown: [&'a str; MAX_UNKNOWN],
    /// How many of `unknown` are valid (more than [`MAX_UNKNOWN`] are counted, not kept).
    pub unknown_count: usize,
}

impl<'a> Cmdline<'a> {
    /// Parses a command line; never fails, unknown or malformed words are collected.
    pub fn parse(line: &'a str) -> Self {
        let mut out = Self::default();
        for word in line.split_ascii_whitespace() {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word, None),
            };
            match (key, value) {
                ("test", None) => out.test = true,
                ("nopcid", None) => out.nopcid = true,
                ("fault", Some(v)) if InjectedFault::parse(v).is_some() => {
                    out.fault = InjectedFault::parse(v);
                }
                ("phantom_cpu", Some(v)) if v.parse::<u32>().is_ok() => {
                    out.phantom_cpu = v.parse().ok();
                }
                ("idle_poll", Some(v)) if v.parse::<u32>().is_ok() => {
                    out.idle_poll = v.parse().ok();
                }
                _ => {
                    if let Some(slot) = out.unknown.get_mut(out.unknown_count) {
                        *slot = word;
                    }
                    out.unknown_count += 1;
                }
            }
        }
        out
    }

    /// The unknown words that were kept.
    pub fn unknown(&self) -> &[&'a str] {
        self.unknown.get(..self.unknown_count.min(MAX_UNKNOWN)).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_words() {
        let c = Cmdline::parse("  test fault=gp phantom_cpu=9 idle_poll=500 nopcid");
        assert_eq!(c.idle_poll, Some(500));
        assert!(c.nopcid);
        assert!(c.test);
        assert_eq!(c.fault, Some(InjectedFault::GeneralProtection));
        assert_eq!(c.phantom_cpu, Some(9));
        assert!(c.unknown().is_empty());
    }

    #[test]
    fn keeps_unknown_and_malformed_words() {
        let c = Cmdline::parse("tset fault=nope test=1 x phantom_cpu=-1");
        assert!(!c.test);
        assert!(!c.nopcid);
        assert_eq!(c.fault, None);
        assert_eq!(c.phantom_cpu, None);
        assert_eq!(c.unknown(), &["tset", "fault=nope", "test=1", "x", "phantom_cpu=-1"]);
    }

    #[test]
    fn counts_more_unknown_words_than_it_keeps() {
        let c = Cmdline::parse("a b c d e f g h i j");
        assert_eq!(c.unknown_count, 10);
        assert_eq!(c.unknown().len(), MAX_UNKNOWN);
    }
}
