//! Test programs for the kernel's user-mode tests, one binary each (`src/bin/`):
//! `spin` (preemption), `fpu` (FPU/SSE state isolation), `fault` (user faults) and
//! `fuzz` (random system calls). Each takes its parameter in the argument word.
//! This library holds what they share.
#![no_std]
#![forbid(unsafe_code)]

/// xorshift64*: a small, fixed-seed pseudo-random generator (reproducible runs).
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (zero is replaced: xorshift would stay at zero).
    pub const fn new(seed: u64) -> Self {
        Self(if seed == 0 { 0x9e37_79b9_7f4a_7c15 } else { seed })
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..bound` (`bound` > 0; slight modulo bias is fine here).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

/// The argument word, or `default` when the creator passed 0.
pub fn arg_or(arg: u64, default: u64) -> u64 {
    if arg == 0 { default } else { arg }
}

/// Child CSpace slot of the endpoint a test program reports to (the root task gives
/// each program a badged copy).
pub const REPORT: u64 = 8;
/// Child CSpace slot of an endpoint the `waiter` program blocks on.
pub const WAIT: u64 = 9;

/// Sends `words` to the root task's report endpoint, waiting until it is received.
pub fn report(label: u64, words: &[u64]) {
    let _ = ramen_rt::send(REPORT, &ramen_rt::Message::new(label, words));
}
