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

/// RFLAGS bits a program may try to set (`popf` in ring 3) that the kernel must not
/// carry: NT (nested task: the kernel's own `iretq` faults with it set, and the
/// kernel returns with it cleared) and the IOPL field (which `popf` in ring 3
/// silently leaves alone).
pub const HOSTILE_RFLAGS: u64 = 0x4000 | 0x3000;

/// [`raw`](super::syscall::raw) with `flags` ORed into RFLAGS (by `popf`) just before
/// the `syscall`, for tests of the kernel's entry and return paths. Returns the reply
/// and RFLAGS as the kernel returned to this thread with them.
pub fn raw_with_flags(
    flags: u64,
    number: u64,
    cptr: u64,
    info: u64,
    regs: [u64; super::syscall::RAW_REGS],
) -> (super::syscall::RawReply, u64) {
    let after;
    // The stack is used (push and pop): no `nostack`.
    let reply = super::syscall::stub!(
        ["pushfq", "or qword ptr [rsp], {flags}", "popfq", "syscall", "pushfq", "pop {flags}"],
        (flags = inout(reg) flags => after,),
        number,
        cptr,
        info,
        regs,
        ()
    );
    (reply, after)
}
