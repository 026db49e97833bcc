//! Blocks receiving on the endpoint or notification in its `WAIT` slot and reports
//! what the receive returned (error code, CPU, badge, label): the revoke, migration
//! and notification tests use it. With argument 1 it calls instead and reports how
//! the call ended (the dead-server test).
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
    let (code, badge, label) = match ramen_rt::recv(ramen_user_tests::WAIT) {
        Ok((badge, message)) => (0, badge, message.label()),
        Err(e) => (e.code(), 0, 0),
    };
    ramen_user_tests::report(2, &[code, u64::from(ramen_rt::current_cpu()), badge, label]);
}
