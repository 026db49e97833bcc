//! Leaving QEMU with a status through the `isa-debug-exit` device.
//!
//! QEMU turns a write of `v` to port 0xf4 into the exit status `(v << 1) | 1`; the
//! two values below become 33 and 35, which no other QEMU failure produces.

use x86_64::instructions::port::Port;

/// I/O port of `-device isa-debug-exit,iobase=0xf4,iosize=0x04`.
const DEBUG_EXIT_PORT: u16 = 0xf4;

/// How the kernel ends a QEMU run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// Everything asked of this boot succeeded (QEMU exits with 33).
    Success = 0x10,
    /// A test failed, the kernel faulted or panicked (QEMU exits with 35).
    Failure = 0x11,
}

/// Ends the QEMU run. On hardware without the device the write is ignored and the
/// CPU halts forever with interrupts off.
pub fn exit_qemu(code: ExitCode) -> ! {
    let mut port = Port::<u32>::new(DEBUG_EXIT_PORT);
    // SAFETY: port 0xf4 is the debug-exit device under QEMU and unused on the
    // machines we run on otherwise; writing it has no effect on kernel memory.
    unsafe { port.write(code as u32) };
    crate::cpu::halt_forever()
}
