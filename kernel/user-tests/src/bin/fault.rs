//! `fault`: faults on purpose, chosen by the argument word: 0 reads a kernel address,
//! 1 reads the null page, 2 executes `ud2`. The kernel must report the fault and stop
//! the thread (never crash); `fault: survived` on the console means it did neither.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use ramen_rt::fault;

ramen_rt::entry!(main);

/// The start of the kernel image's mapping (`KERNEL_VMA`).
const KERNEL_ADDRESS: u64 = 0xffff_ffff_8000_0000;

fn main(arg: u64) {
    match arg {
        0 => {
            ramen_rt::println!("fault: reading kernel address {:#x}", KERNEL_ADDRESS);
            let _ = fault::read_byte(KERNEL_ADDRESS);
        }
        1 => {
            ramen_rt::println!("fault: reading address 0");
            let _ = fault::read_byte(0);
        }
        2 => {
            ramen_rt::println!("fault: executing ud2");
            fault::undefined_instruction();
        }
        other => {
            ramen_rt::println!("fault: unknown mode {} (0 kernel read, 1 null read, 2 ud2)", other);
            return;
        }
    }
    ramen_rt::println!("fault: survived");
}
