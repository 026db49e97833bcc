//! Tries to control and read kernel tracing without the `TraceControl` capability and
//! reports each attempt's error code (label 4): the debug console's retired tracing
//! labels, the trace-control labels on the console and on its own thread, and the
//! trace-control slot, which is empty in every program the root task starts.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use ramen_abi::invocation::{debug, trace_control};
use ramen_abi::slot;
use ramen_rt::{Message, call};

ramen_rt::entry!(main);

/// Every kernel category (`ramen_perf_record::Categories` bits below `USER`).
const KERNEL_CATEGORIES: u64 = 0x3f;

fn code(cptr: u64, label: u64, words: &[u64]) -> u64 {
    match call(cptr, &Message::new(label, words)) {
        Ok(_) => 0,
        Err(e) => e.code(),
    }
}

fn main(_: u64) {
    let [old_start, old_stop, old_dump] = debug::RETIRED_TRACE_LABELS;
    let codes = [
        code(slot::DEBUG, old_start, &[KERNEL_CATEGORIES]),
        code(slot::DEBUG, old_stop, &[]),
        code(slot::DEBUG, old_dump, &[]),
        code(slot::DEBUG, trace_control::DUMP, &[]),
        code(slot::THREAD, trace_control::START, &[KERNEL_CATEGORIES]),
        code(slot::TRACE_CONTROL, trace_control::DUMP, &[]),
    ];
    ramen_user_tests::report(4, &codes);
}
