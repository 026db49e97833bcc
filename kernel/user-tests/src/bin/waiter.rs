//! Blocks receiving on the endpoint or notification in its `WAIT` slot and reports
//! what the receive returned (error code, CPU, badge, label): the revoke, migration
//! and notification tests use it.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

ramen_rt::entry!(main);

fn main(_arg: u64) {
    let (code, badge, label) = match ramen_rt::recv(ramen_user_tests::WAIT) {
        Ok((badge, message)) => (0, badge, message.label()),
        Err(e) => (e.code(), 0, 0),
    };
    ramen_user_tests::report(2, &[code, u64::from(ramen_rt::current_cpu()), badge, label]);
}
