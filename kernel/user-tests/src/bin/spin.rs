//! `spin`: a busy loop that never blocks, printing a counter every N iterations
//! (N = argument word, default 10 000 000): the preemption test's victim.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

ramen_rt::entry!(main);

fn main(arg: u64) {
    let every = ramen_user_tests::arg_or(arg, 10_000_000);
    let mut count: u64 = 0;
    loop {
        for _ in 0..every {
            count = core::hint::black_box(count.wrapping_add(1));
        }
        // Progress report; dropped when the root task is not listening.
        let _ = ramen_rt::nb_send(
            ramen_user_tests::REPORT,
            &ramen_rt::Message::new(1, &[count, u64::from(ramen_rt::current_cpu())]),
        );
    }
}
