//! The RamenOS kernel image: the entry the hardware layer calls and the panic
//! handler, around the kernel library (`lib.rs`).
//!
//! The boot CPU enters at [`ramen_kernel_main`] and runs `boot::bsp_main`. Nothing
//! here uses `unsafe` except the one exported entry symbol.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use ramen_arch::pvh::{BootParams, StartInfoError};

/// The boot CPU's entry, called by arch once the console works.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
fn ramen_kernel_main(boot: Result<BootParams, StartInfoError>) -> ! {
    ramen_kernel::boot::bsp_main(boot)
}

/// Prints where the kernel panicked and ends the run with a failure status.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let cpu = ramen_arch::trap::enter_fatal();
    let mut console = ramen_arch::serial::Console::emergency();
    let (file, line, column) = info.location().map_or(("?", 0, 0), |l| (l.file(), l.line(), l.column()));
    let _ = ufmt::uwriteln!(console, "[cpu{}] PANIC at {}:{}:{}", cpu, file, line, column);
    if let Some(message) = info.message().as_str() {
        let _ = ufmt::uwriteln!(console, "[cpu{}]   {}", cpu, message);
    }
    drop(console);
    ramen_arch::exit::exit_qemu(ramen_arch::exit::ExitCode::Failure)
}
