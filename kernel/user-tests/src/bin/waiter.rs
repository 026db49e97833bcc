//! Blocks receiving on the endpoint in its `WAIT` slot and reports what the receive
//! returned: the revoke test deletes that endpoint from another CPU while it waits.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

ramen_rt::entry!(main);

fn main(_arg: u64) {
    let code = match ramen_rt::recv(ramen_user_tests::WAIT) {
        Ok(_) => 0,
        Err(e) => e.code(),
    };
    ramen_user_tests::report(2, &[code, u64::from(ramen_rt::current_cpu())]);
}
