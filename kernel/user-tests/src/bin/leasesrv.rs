//! A lease server with a second thread, for the TLB-shootdown test and as the
//! fuzzer's IPC partner. Argument 0: the main thread serves calls on `WAIT`,
//! answering each with the sum of the first 64 bytes of its first lease (the root
//! task set its lease window); capabilities that arrive (into slots 20..23) are
//! deleted again. Argument 1: a second thread of the same address space that
//! reports once and then spins, so its CPU keeps this address space loaded when the
//! server's lease is released.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use ramen_rt::msgbuf::MessageBuffer;
use ramen_rt::{Message, kobj, recv, reply_recv, slot};
use ramen_user_tests::{WAIT, report};

ramen_rt::entry!(main);

/// First slot received capabilities land in.
const RECEIVED: u64 = 20;

fn main(arg: u64) {
    if arg == 1 {
        report(3, &[]);
        loop {
            core::hint::spin_loop();
        }
    }
    let mut buf = MessageBuffer::program_thread(0);
    buf.receive_caps_into(slot::CNODE, RECEIVED, 64);
    let Ok((_, mut request)) = recv(WAIT) else {
        return;
    };
    loop {
        for i in 0..request.info.caps() as u64 {
            let _ = kobj::delete(slot::CNODE, RECEIVED + i, 64);
        }
        let sum = buf
            .lease(&request, 0)
            .map_or(u64::MAX, |lease| (0..64).filter_map(|i| lease.read(i)).map(u64::from).sum());
        request = match reply_recv(WAIT, &Message::new(1, &[sum])) {
            Ok((_, message)) => message,
            Err(_) => return,
        };
    }
}
