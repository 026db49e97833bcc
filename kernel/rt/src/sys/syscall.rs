//! The `syscall` instruction, with the register convention of
//! `ramen_abi::syscall` (see its table).

use ramen_abi::MSG_REGS;

// The stub below names exactly six message registers.
const _: () = assert!(MSG_REGS == 6);

/// The message registers [`raw`] takes.
pub const RAW_REGS: usize = MSG_REGS;

/// What the kernel hands back from any system call, undecoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawReply {
    /// 0, or an error code (`rax`).
    pub error: u64,
    /// The sender's badge for receive operations (`rdi`).
    pub badge: u64,
    /// The message-info word (`rsi`).
    pub info: u64,
    /// Message registers 0..5 (`rdx`, `r8`, `r9`, `r10`, `r12`, `r13`).
    pub regs: [u64; MSG_REGS],
}

/// The system-call stub: `$instruction`s around `syscall` (or in place of it), with the
/// number, capability pointer, info word and message registers in and the reply out
/// by the register convention of `ramen_abi::syscall`; `rcx` and `r11` clobbered (by
/// `syscall` itself). `$named` operands go first (with their trailing comma), then
/// these, then `$options`. One body for [`raw`], [`raw_nop`] and
/// `fault::raw_with_flags`, so the register map is written once and the benchmark's
/// NOP stub is the real stub but for the one instruction.
macro_rules! stub {
    (
        [$($instruction:literal),+],
        ($($named:tt)*),
        $number:expr, $cptr:expr, $info:expr, $regs:expr,
        ($($options:tt)*)
    ) => {{
        let [mut r0, mut r1, mut r2, mut r3, mut r4, mut r5] = $regs;
        let (error, badge, info_out);
        // SAFETY: the templates are `syscall`, a NOP, or `syscall` between a
        // `pushfq`/`popfq` that ORs bits into RFLAGS (bits that change no Rust-visible
        // state) and a `pushfq`/`pop` that reads RFLAGS back; the callers that use the
        // stack give no `nostack`, so the compiler keeps nothing below the stack
        // pointer. `syscall` enters the kernel, which preserves every register but
        // those listed as outputs here (rcx and r11 are clobbered by the instruction
        // itself) and does not touch the user stack (red zone included); the kernel
        // may write memory this program owns (the IPC buffer), so the asm is not
        // marked `nomem`. A NOP changes nothing.
        unsafe {
            ::core::arch::asm!(
                $($instruction,)+
                $($named)*
                inlateout("rax") $number => error,
                inlateout("rdi") $cptr => badge,
                inlateout("rsi") $info => info_out,
                inlateout("rdx") r0,
                inlateout("r8") r1,
                inlateout("r9") r2,
                inlateout("r10") r3,
                inlateout("r12") r4,
                inlateout("r13") r5,
                lateout("rcx") _,
                lateout("r11") _,
                $($options)*
            );
        }
        $crate::sys::syscall::RawReply { error, badge, info: info_out, regs: [r0, r1, r2, r3, r4, r5] }
    }};
}
pub(crate) use stub;

/// Issues system call `number` on `cptr` with message-info word `info` and message
/// registers `regs`, exactly as given: nothing is validated here (the fuzzer relies on
/// that; everyone else uses the typed wrappers in the crate root).
///
/// Safe because the kernel validates every argument and changes this program's memory
/// only as its capabilities allow, like any other effect of a system call.
#[inline(always)]
pub fn raw(number: u64, cptr: u64, info: u64, regs: [u64; MSG_REGS]) -> RawReply {
    stub!(["syscall"], (), number, cptr, info, regs, (options(nostack)))
}

/// [`raw`]'s stub with `syscall` replaced by a two-byte NOP (`xchg ax, ax`, the length
/// of `syscall`): the same register set-up before it and the same outputs after it,
/// and no kernel. Benchmarks time it to subtract the stub's own instructions from a
/// system call's window, as sel4bench's `DO_NOP_CALL` / `DO_NOP_REPLY_RECV` do. Every
/// register comes back as it went in.
#[inline(always)]
pub fn raw_nop(number: u64, cptr: u64, info: u64, regs: [u64; MSG_REGS]) -> RawReply {
    stub!(["xchg ax, ax"], (), number, cptr, info, regs, (options(nostack)))
}
