//! A lease server with a second thread, for the TLB-shootdown test. Argument 0: the
//! main thread serves calls on `WAIT`, answering each with the sum of the first 64
//! bytes of its first lease (the root task set its lease window). Argument 1: a
//! second thread of the same address space that reports once and then spins, so
//! its CPU keeps this address space loaded when the server's lease is released.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use ramen_rt::msgbuf::MessageBuffer;
use ramen_rt::{Message, recv, reply_recv};
use ramen_user_tests::{WAIT, report};

ramen_rt::entry!(main);

fn main(arg: u64) {
    if arg == 1 {
        report(3, &[]);
        loop {
            core::hint::spin_loop();
        }
    }
    let buf = MessageBuffer::program_thread(0);
    let Ok((_, mut request)) = recv(WAIT) else {
        return;
    };
    loop {
        let sum = buf
            .lease(&request, 0)
            .map_or(u64::MAX, |lease| (0..64).filter_map(|i| lease.read(i)).map(u64::from).sum());
        request = match reply_recv(WAIT, &Message::new(1, &[sum])) {
            Ok((_, message)) => message,
            Err(_) => return,
        };
    }
}
