//! Blocks receiving on the endpoint or notification in its `WAIT` slot and reports
//! what the receive returned (error code, CPU, badge, label): the revoke, migration
//! and notification tests use it. With argument 1 it calls instead and reports how
//! the call ended (the dead-server test). With argument 2 it is a driver's loop:
//! it receives on the endpoint (a notification bound to it signals it, as an
//! interrupt would) until a message with label 9 comes, then reports how many
//! signals it took meanwhile (label 4).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

ramen_rt::entry!(main);

fn main(arg: u64) {
    if arg == 1 {
        // Call instead, and report how the call ended (label 3).
        let code = match ramen_rt::call(ramen_user_tests::WAIT, &ramen_rt::Message::new(7, &[])) {
            Ok(_) => 0,
            Err(e) => e.code(),
        };
        ramen_user_tests::report(3, &[code]);
        return;
    }
    if arg == 2 {
        let mut signals: u64 = 0;
        loop {
            match ramen_rt::recv(ramen_user_tests::WAIT) {
                Ok((_, m)) if m.label() == ramen_abi::syscall::NOTIFICATION_LABEL => signals += 1,
                Ok((_, m)) if m.label() == 9 => break,
                _ => {}
            }
        }
        ramen_user_tests::report(4, &[signals, u64::from(ramen_rt::current_cpu())]);
        return;
    }
    let (code, badge, label) = match ramen_rt::recv(ramen_user_tests::WAIT) {
        Ok((badge, message)) => (0, badge, message.label()),
        Err(e) => (e.code(), 0, 0),
    };
    ramen_user_tests::report(2, &[code, u64::from(ramen_rt::current_cpu()), badge, label]);
}
