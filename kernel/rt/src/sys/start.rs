//! The ELF entry point.
//!
//! The creator of the thread sets RSP (16-byte aligned by the kernel's convention;
//! aligned again here in case) and RDI, the argument word (the root task gets
//! `ramen_abi::syscall::BOOT_INFO_VADDR`). `_start` clears RBP so backtraces end here
//! and calls [`ramen_rt_start`] with RDI untouched.

core::arch::global_asm!(
    ".section .text._start, \"ax\", @progbits",
    ".globl _start",
    ".type _start, @function",
    "_start:",
    "    and rsp, -16",
    "    xor ebp, ebp",
    "    call ramen_rt_start",
    "    ud2",
    ".size _start, . - _start",
);

unsafe extern "Rust" {
    /// Defined by the program through [`crate::entry!`].
    fn ramen_rt_main(arg: u64);
}

/// Runs the program's `main`, then exits the thread.
#[unsafe(no_mangle)]
extern "C" fn ramen_rt_start(arg: u64) -> ! {
    // SAFETY: `entry!` defines `ramen_rt_main` with exactly this signature; a program
    // without `entry!` fails to link rather than reaching here.
    unsafe { ramen_rt_main(arg) };
    crate::exit()
}

// SAFETY: `_start` is defined by the `global_asm!` above in this same crate; it is
// only ever named here for its address (never called from Rust), so declaring it
// `safe` with no arguments promises nothing a call could break.
unsafe extern "C" {
    /// The entry stub above.
    #[link_name = "_start"]
    safe fn start_stub();
}

/// The address of this program's entry point (`_start`): a further thread that
/// begins there (with its own stack and argument word) runs the program's `main`.
pub fn entry_point() -> u64 {
    start_stub as *const () as usize as u64
}
