//! The kernel console on COM1, and the trace port on COM2, through the `uart_16550`
//! driver.
//!
//! One lock serialises whole lines from all CPUs. The fault and panic paths use
//! [`force_unlock`] semantics through [`Console::emergency`] so a CPU that died while
//! holding the lock cannot silence the report of its own death.

use spin::Mutex;
use uart_16550::{Config, Uart16550, backend::PioBackend};

/// I/O base of COM1.
const COM1: u16 = 0x3f8;
/// I/O base of COM2, which carries binary trace dumps (never console text).
const COM2: u16 = 0x2f8;

static CONSOLE: Mutex<Option<Uart16550<PioBackend>>> = Mutex::new(None);

/// Initialises COM1. Safe to call more than once; later calls do nothing.
pub fn init() {
    let mut console = CONSOLE.lock();
    if console.is_some() {
        return;
    }
    // SAFETY: COM1 at 0x3f8 is the standard PC serial port; the kernel is its only
    // user and this runs once, under the console lock.
    let Ok(mut uart) = (unsafe { Uart16550::new_port(COM1) }) else {
        return;
    };
    // A missing UART is not fatal: output is dropped, the kernel still runs.
    if uart.init(Config::default()).is_ok() {
        *console = Some(uart);
    }
}

fn send_all(uart: &mut Uart16550<PioBackend>, bytes: &[u8]) {
    for &byte in bytes {
        if byte == b'\n' {
            while uart.try_send_byte(b'\r').is_err() {}
        }
        while uart.try_send_byte(byte).is_err() {}
    }
}

/// A handle that writes to the console; holds the lock for its lifetime so a line
/// written through one handle is never interleaved with another CPU's.
pub struct Console {
    guard: spin::MutexGuard<'static, Option<Uart16550<PioBackend>>>,
}

impl Console {
    /// Takes the console lock.
    pub fn lock() -> Self {
        Self { guard: CONSOLE.lock() }
    }

    /// Takes the console even if another CPU holds the lock: for the fault and panic
    /// reporters only, which never return.
    pub fn emergency() -> Self {
        // Wait a little for an orderly release so lines stay whole, then break in.
        for _ in 0..1_000_000 {
            if let Some(guard) = CONSOLE.try_lock() {
                return Self { guard };
            }
            core::hint::spin_loop();
        }
        // SAFETY: only reached on a path that never returns to the interrupted
        // holder's work in a way that matters: the machine is about to stop.
        unsafe { CONSOLE.force_unlock() };
        Self { guard: CONSOLE.lock() }
    }

    /// Writes bytes, turning `\n` into `\r\n`.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        if let Some(uart) = self.guard.as_mut() {
            send_all(uart, bytes);
        }
    }
}

impl ufmt::uWrite for Console {
    type Error = core::convert::Infallible;

    fn write_str(&mut self, s: &str) -> Result<(), Self::Error> {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

/// COM2, opened on first use: a second UART so a binary trace dump never mixes with
/// console lines (QEMU's second `-serial` option captures it to a file).
static TRACE_PORT: Mutex<Option<Uart16550<PioBackend>>> = Mutex::new(None);

/// Writes raw bytes to the trace port (COM2), unchanged (no `\n` translation). Bytes
/// are dropped when the machine has no second UART.
pub fn trace_port_write(bytes: &[u8]) {
    let mut port = TRACE_PORT.lock();
    if port.is_none() {
        // SAFETY: COM2 at 0x2f8 is the standard second PC serial port; nothing else in
        // the kernel uses it, and this runs under the trace-port lock.
        if let Ok(mut uart) = unsafe { Uart16550::new_port(COM2) }
            && uart.init(Config::default()).is_ok()
        {
            *port = Some(uart);
        }
    }
    if let Some(uart) = port.as_mut() {
        for &byte in bytes {
            while uart.try_send_byte(byte).is_err() {}
        }
    }
}
