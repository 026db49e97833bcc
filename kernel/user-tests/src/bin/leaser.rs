//! The caller side of the lease test. It waits on its `WAIT` endpoint for the root
//! task's go (MR0: a 3-page read-write area the root task mapped here, MR1: a
//! read-only page), then calls the same endpoint lending both: the root task serves
//! that call itself, reading and writing through its lease window and checking that
//! the pages stay pinned. Then it tries leases the kernel must refuse, each with the
//! error the ABI documents, and reports 1 (all as expected) or 0 with label 2 and the
//! number of the first case that went wrong.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use ramen_abi::Error;
use ramen_abi::lease::MAX_BYTES;
use ramen_abi::syscall::USER_TOP;
use ramen_rt::msgbuf::{Lease, MessageBuffer};
use ramen_rt::{Message, call, recv, send};
use ramen_user_tests::WAIT;

ramen_rt::entry!(main);

const PAGE: u64 = 4096;

fn main(_: u64) {
    let Ok((_, go)) = recv(WAIT) else {
        return;
    };
    let (area, read_only) = (go.regs[0], go.regs[1]);
    let mut buf = MessageBuffer::program_thread(0);
    let leases = [Lease::read_write(area + 100, 3 * PAGE - 200), Lease::read_only(read_only, PAGE)];
    let lent = buf
        .message_with_leases(1, &[7], &[], &leases)
        .ok()
        .and_then(|request| call(WAIT, &request).ok())
        .is_some_and(|reply| reply.label() == 1);
    if !lent {
        let _ = send(WAIT, &Message::new(2, &[0, 0]));
        return;
    }
    // Leases the kernel refuses before anything changes.
    let refused: [(Lease, Error); 6] = [
        (Lease::read_only(0x1000_0000_0000, PAGE), Error::InvalidArgument),
        (Lease::read_only(0xffff_8000_0000_0000, PAGE), Error::InvalidArgument),
        (Lease::read_write(read_only, PAGE), Error::InsufficientRights),
        (Lease::read_only(area, 0), Error::InvalidArgument),
        (Lease::read_only(area, MAX_BYTES + 1), Error::RangeError),
        (Lease::read_only(USER_TOP - PAGE, 2 * PAGE), Error::InvalidArgument),
    ];
    let mut first_wrong = 0;
    for (case, (lease, error)) in refused.iter().enumerate() {
        let result = buf.message_with_leases(1, &[], &[], &[*lease]).ok().map(|m| call(WAIT, &m));
        if !matches!(result, Some(Err(e)) if e == *error) && first_wrong == 0 {
            first_wrong = case as u64 + 1;
        }
    }
    // A lease goes with a call only.
    let on_send = buf.message_with_leases(1, &[], &[], &[leases[1]]).ok().map(|m| send(WAIT, &m));
    if !matches!(on_send, Some(Err(e)) if e == Error::InvalidArgument) && first_wrong == 0 {
        first_wrong = 7;
    }
    let _ = send(WAIT, &Message::new(2, &[u64::from(first_wrong == 0), first_wrong]));
}
