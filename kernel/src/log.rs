//! Kernel log lines on the console, each prefixed with the CPU number.
//!
//! Formatting goes through `ufmt`, compiled from source with the kernel's flags, never
//! through `core::fmt`, whose precompiled number formatting uses SIMD registers.

/// Writes one line, `[cpuN] ` first, holding the console lock for the whole line.
#[macro_export]
macro_rules! kprintln {
    ($($arg:tt)*) => {{
        let mut console = ramen_arch::serial::Console::lock();
        let _ = ufmt::uwrite!(console, "[cpu{}] ", ramen_arch::percpu::cpu_index());
        let _ = ufmt::uwriteln!(console, $($arg)*);
    }};
}
