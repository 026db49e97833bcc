//! The RamenOS kernel image.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use ramen_arch::pvh::{BootParams, StartInfoError};
use ramen_arch::serial::Console;

/// The boot CPU's entry from arch.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
fn ramen_kernel_main(boot: Result<BootParams, StartInfoError>) -> ! {
    let mut c = Console::lock();
    let _ = ufmt::uwriteln!(c, "hello from ramen: boot ok = {}", boot.is_ok());
    if let Ok(b) = boot {
        let _ = ufmt::uwriteln!(c, "cmdline: {} memmap {}", b.cmdline(), b.memmap_len);
        for e in b.memmap() {
            let _ = ufmt::uwriteln!(c, "  {:x} {:x} {}", e.addr, e.len, e.kind);
        }
    }
    drop(c);
    ramen_arch::exit::exit_qemu(ramen_arch::exit::ExitCode::Success)
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    ramen_arch::exit::exit_qemu(ramen_arch::exit::ExitCode::Failure)
}
