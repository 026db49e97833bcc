//! The root task: the first user program, started by the kernel with every initial
//! capability and the boot-information pages.
//!
//! It maps the boot archive, and starts the programs in it: in a normal boot it
//! reports the machine and shuts down; with `test` on the kernel command line it runs
//! the user-mode test suite (`tests`), which starts the test programs on every CPU;
//! with `bench`, the IPC benchmark (`bench`) instead.
//! Either way it ends the QEMU run itself, through the I/O-port capability (the
//! `isa-debug-exit` device): the kernel has no ambient power to do it for it.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

mod alloc;
mod bench;
mod contended;
mod loader;
mod tests;
mod trace;

use ramen_abi::slot;
use ramen_rt::{kobj, println};

ramen_rt::entry!(main);

/// The `isa-debug-exit` port and the values the kernel uses too (QEMU exits 33 / 35).
const DEBUG_EXIT_PORT: u64 = 0xf4;
const EXIT_SUCCESS: u64 = 0x10;
const EXIT_FAILURE: u64 = 0x11;

fn main(arg: u64) {
    let Some(info) = ramen_rt::boot_info(arg) else {
        println!("root task: no boot information at {:#x}", arg);
        power_off(false);
    };
    println!(
        "root task: {} CPUs, {} sockets, {} nodes, {} untyped regions, {} files",
        info.cpu_count, info.socket_count, info.node_count, info.untyped_count, info.file_count
    );
    let cmdline = core::str::from_utf8(&info.cmdline).unwrap_or("").trim_end_matches('\0');
    let has = |word: &str| cmdline.split_ascii_whitespace().any(|w| w == word);
    let ok = if has("trace") {
        trace::run(info, cmdline)
    } else if has("bench") {
        bench::run(info)
    } else if has("test") {
        tests::run(info)
    } else {
        true
    };
    power_off(ok);
}

/// Ends the QEMU run with the given status.
fn power_off(ok: bool) -> ! {
    let value = if ok { EXIT_SUCCESS } else { EXIT_FAILURE };
    let _ = kobj::port_out32(slot::IO_PORTS, DEBUG_EXIT_PORT, value);
    println!("root task: the exit device did not stop the machine; halting");
    ramen_rt::exit()
}
