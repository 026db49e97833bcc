//! Kernel replacements for `core`'s panic entry points that format numbers.
//!
//! `core` is precompiled for user space: a call like `panic_bounds_check` builds a
//! `fmt::Arguments` that links in integer `Display`, `Formatter::pad` and friends,
//! which use SSE registers. The kernel must contain no SIMD instruction (it would
//! clobber user FPU state), so `cargo xtask build` links every kernel crate with
//! `--wrap` for those entry points and points the wrappers at the stubs below. A
//! wrapped panic reports what kind of panic it was and the address it was called
//! from (look it up with `addr2line -e <kernel ELF>`), never formats, and ends the
//! run like any kernel panic. The list of wrapped symbols lives in xtask
//! (`image::WRAPPED_PANICS`); each stub's name is `ramen_panic_<kind>`. The module is
//! left out of host test builds, where `std` provides the real panic machinery.

use core::arch::global_asm;

use ufmt::uwriteln;

use crate::exit::{ExitCode, exit_qemu};
use crate::serial::Console;

/// The kinds of wrapped panic, in stub order.
const KINDS: [&str; 7] = [
    "index out of bounds",
    "slice index out of range",
    "Option::expect on None",
    "Result::unwrap on Err",
    "str index not on a char boundary",
    "RefCell borrowed twice",
    "assertion failed",
];

global_asm!(
    r#"
    .section .text.ramen_panic_paths, "ax"
    .global ramen_panic_bounds
ramen_panic_bounds:
    mov $0, %esi
    jmp 1f
    .global ramen_panic_slice
ramen_panic_slice:
    mov $1, %esi
    jmp 1f
    .global ramen_panic_expect
ramen_panic_expect:
    mov $2, %esi
    jmp 1f
    .global ramen_panic_unwrap
ramen_panic_unwrap:
    mov $3, %esi
    jmp 1f
    .global ramen_panic_str
ramen_panic_str:
    mov $4, %esi
    jmp 1f
    .global ramen_panic_borrow
ramen_panic_borrow:
    mov $5, %esi
    jmp 1f
    .global ramen_panic_assert
ramen_panic_assert:
    mov $6, %esi
1:
    mov (%rsp), %rdi
    and $-16, %rsp
    call {report}
    ud2
"#,
    report = sym report,
    options(att_syntax)
);

extern "C" fn report(return_rip: u64, kind: u32) -> ! {
    let cpu = crate::trap::enter_fatal();
    let what = KINDS.get(kind as usize).copied().unwrap_or("unknown panic");
    let mut c = Console::emergency();
    let _ = uwriteln!(c, "[cpu{}] PANIC: {} (called from RIP={:#018x})", cpu, what, return_rip);
    drop(c);
    exit_qemu(ExitCode::Failure)
}
