//! Deliberate faults, for the programs that test how the kernel handles them.

use core::arch::asm;

/// Reads the byte at `address` whatever it is: if the address is not readable by this
/// program (a kernel address, the null page), the CPU faults here and the kernel deals
/// with the thread.
pub fn read_byte(address: u64) -> u8 {
    let value: u8;
    // SAFETY: the asm reads one byte into a register and nothing else; it creates no
    // Rust reference, so an unmapped or foreign address is a CPU fault handled by the
    // kernel, never undefined behaviour in this program.
    unsafe {
        asm!(
            "mov {value}, byte ptr [{address}]",
            address = in(reg) address,
            value = out(reg_byte) value,
            options(nostack, readonly, preserves_flags),
        );
    }
    value
}

/// Executes `ud2` (invalid opcode).
pub fn undefined_instruction() -> ! {
    // SAFETY: `ud2` always raises #UD; the kernel never resumes the thread after it.
    unsafe { asm!("ud2", options(noreturn, nomem, nostack)) }
}
