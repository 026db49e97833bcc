//! `fpu`: floating-point work whose every step is checked, for the FPU isolation
//! test. Two instances with different argument words run side by side; if the kernel
//! leaked one thread's SSE/x87 state into another, the checks would fail.
//! The argument word selects the seed and the number of rounds (default 1000).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::hint::black_box;

ramen_rt::entry!(main);

const LANES: usize = 8;
/// Iterations between yields, so preemption and yields both interleave the threads.
const STEPS_PER_ROUND: u64 = 100_000;

fn main(arg: u64) {
    let rounds = ramen_user_tests::arg_or(arg & 0xffff, 1000);
    let seed = (arg >> 16) as f64 + 1.0;
    let mut lanes = [0.0f64; LANES];
    for round in 0..rounds {
        for step in 0..STEPS_PER_ROUND {
            // Integers below 2^53 are exact in f64, so each identity holds exactly.
            let base = black_box((round * STEPS_PER_ROUND + step) as f64 + seed);
            for (i, lane) in lanes.iter_mut().enumerate() {
                *lane = base * (i as f64 + 3.0);
            }
            for (i, lane) in lanes.iter().enumerate() {
                let back = black_box(*lane) / (i as f64 + 3.0);
                if back != base {
                    ramen_rt::println!("fpu: MISMATCH round {} step {} lane {}", round, step, i);
                    ramen_user_tests::report(0, &[round, step]);
                    ramen_rt::exit();
                }
            }
        }
        ramen_rt::yield_now();
    }
    ramen_rt::println!("fpu: ok ({} rounds)", rounds);
    ramen_user_tests::report(1, &[rounds]);
}
