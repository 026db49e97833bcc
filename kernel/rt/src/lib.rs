//! The RamenOS user runtime: what every user program links to run on the kernel.
//!
//! It provides the ELF entry (`_start`, then the program's `main` through
//! [`entry!`]), typed system-call wrappers ([`call`], [`send`], [`recv`],
//! [`reply_recv`], ...), the debug console ([`debug_write`], [`print!`],
//! [`println!`], formatted with `ufmt` like the kernel), [`exit`], a panic handler
//! that reports `panic at file:line` and exits, a global allocator over a 256 KiB
//! static heap (so programs may use `alloc`), and the memory intrinsics the compiler
//! needs.
//!
//! This is the one user-space crate with `unsafe`, all of it in the `sys` module.
//! The register convention and every constant come from `ramen-abi`.
#![no_std]
#![deny(unsafe_code)]

pub mod console;
pub mod heap;
pub mod ipc;
pub mod kobj;
pub mod msgbuf;
#[allow(unsafe_code)]
mod sys;
#[cfg(feature = "trace")]
pub mod trace;
pub mod vm;

use ramen_abi::syscall::Sys;
pub use ramen_abi::{Error, MSG_REGS, MessageInfo, invocation, slot};
pub use sys::cpu::current_cpu;
pub use sys::fault;
#[cfg(not(test))]
pub use sys::start::entry_point;
pub use sys::syscall::{RawReply, raw};
pub use sys::vm::boot_info;

/// The time-stamp counter (`rdtsc` before, `rdtscp` after what is timed), for benchmarks.
pub mod tsc {
    pub use crate::sys::tsc::{rdtsc, rdtsc32, rdtscp, rdtscp32};
}

#[doc(hidden)]
pub use ufmt;

pub use console::{Console, debug_write};

/// A sender's badge, as a receive operation reports it (0 for an unbadged capability).
pub type Badge = u64;

/// A message that fits in the message registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub info: MessageInfo,
    pub regs: [u64; MSG_REGS],
}

impl Message {
    /// A message with `label` and `words` in the message registers. Words beyond
    /// [`MSG_REGS`] are dropped (longer messages go through the IPC buffer) and the
    /// label is cut to [`MessageInfo::MAX_LABEL`].
    pub fn new(label: u64, words: &[u64]) -> Self {
        let len = words.len().min(MSG_REGS);
        let mut regs = [0; MSG_REGS];
        for (reg, word) in regs.iter_mut().zip(words) {
            *reg = *word;
        }
        let info = MessageInfo::try_new(label & MessageInfo::MAX_LABEL, len, 0, 0).unwrap_or_default();
        Self { info, regs }
    }

    /// The protocol label.
    pub fn label(&self) -> u64 {
        self.info.label()
    }

    /// The words of the message that are in registers.
    pub fn words(&self) -> &[u64] {
        self.regs.get(..self.info.len_words().min(MSG_REGS)).unwrap_or(&[])
    }
}

/// A failed system call: the kernel's error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysError(pub u64);

impl SysError {
    /// The code as the kernel returned it.
    pub fn code(self) -> u64 {
        self.0
    }

    /// The error, if the code is one this ABI version knows.
    pub fn kind(self) -> Option<Error> {
        Error::from_code(self.0)
    }
}

impl From<Error> for SysError {
    fn from(error: Error) -> Self {
        Self(error.code())
    }
}

impl PartialEq<Error> for SysError {
    fn eq(&self, other: &Error) -> bool {
        self.0 == other.code()
    }
}

fn syscall(sys: Sys, cptr: u64, message: &Message) -> Result<RawReply, SysError> {
    let reply = raw(sys as u64, cptr, message.info.0, message.regs);
    if reply.error == 0 { Ok(reply) } else { Err(SysError(reply.error)) }
}

/// The system-call stubs with `syscall` replaced by a NOP, for benchmarks: each runs
/// exactly its real counterpart's code around the instruction (the number goes in as
/// 0, so the reply looks like a success and takes the success path), and enters no
/// kernel. Timing one between two time-stamp reads gives sel4bench's overhead.
pub mod nop_stub {
    use super::{Badge, Message, RawReply, SysError, received};
    use crate::sys::syscall::raw_nop;

    fn syscall(cptr: u64, message: &Message) -> Result<RawReply, SysError> {
        let reply = raw_nop(0, cptr, message.info.0, message.regs);
        if reply.error == 0 { Ok(reply) } else { Err(SysError(reply.error)) }
    }

    /// [`super::call`]'s code around a NOP.
    pub fn call(cptr: u64, message: &Message) -> Result<Message, SysError> {
        syscall(cptr, message).map(|reply| received(reply).1)
    }

    /// [`super::reply_recv`]'s code around a NOP.
    pub fn reply_recv(cptr: u64, message: &Message) -> Result<(Badge, Message), SysError> {
        syscall(cptr, message).map(received)
    }
}

fn received(reply: RawReply) -> (Badge, Message) {
    (reply.badge, Message { info: MessageInfo(reply.info), regs: reply.regs })
}

/// Sends `message` on the endpoint `cptr` and waits for the reply, or invokes the
/// kernel object `cptr` (the label selects the operation).
pub fn call(cptr: u64, message: &Message) -> Result<Message, SysError> {
    syscall(Sys::Call, cptr, message).map(|reply| received(reply).1)
}

/// Sends `message` on `cptr`, blocking until a receiver takes it.
pub fn send(cptr: u64, message: &Message) -> Result<(), SysError> {
    syscall(Sys::Send, cptr, message).map(drop)
}

/// Sends `message` on `cptr` if a receiver is waiting; otherwise it is dropped.
pub fn nb_send(cptr: u64, message: &Message) -> Result<(), SysError> {
    syscall(Sys::NbSend, cptr, message).map(drop)
}

/// Waits for a message (endpoint) or a signal (notification) on `cptr`.
pub fn recv(cptr: u64) -> Result<(Badge, Message), SysError> {
    syscall(Sys::Recv, cptr, &Message::default()).map(received)
}

/// Receives on `cptr` if something is pending (a queued sender, pending signal bits);
/// returns `Busy` at once otherwise.
pub fn nb_recv(cptr: u64) -> Result<(Badge, Message), SysError> {
    syscall(Sys::NbRecv, cptr, &Message::default()).map(received)
}

/// Replies `message` to the last caller.
pub fn reply(message: &Message) -> Result<(), SysError> {
    syscall(Sys::Reply, slot::NULL, message).map(drop)
}

/// Replies `message` to the last caller, then waits on `cptr` (a server's loop).
pub fn reply_recv(cptr: u64, message: &Message) -> Result<(Badge, Message), SysError> {
    syscall(Sys::ReplyRecv, cptr, message).map(received)
}

/// Gives up the rest of the time slice.
pub fn yield_now() {
    let _ = syscall(Sys::Yield, slot::NULL, &Message::default());
}

/// Ends the program: suspends its own thread (`slot::THREAD`). Should that return,
/// the thread yields forever.
pub fn exit() -> ! {
    let _ = call(slot::THREAD, &Message::new(invocation::thread::SUSPEND, &[]));
    loop {
        yield_now();
    }
}

/// Runs `main(arg)`; used by [`entry!`].
#[doc(hidden)]
pub fn run_main(main: fn(u64), arg: u64) {
    main(arg);
}

/// Names the program's `fn main(arg: u64)`. The argument is the word the thread's
/// creator passed (the root task gets `ramen_abi::syscall::BOOT_INFO_VADDR`). When
/// `main` returns, the runtime exits the thread.
///
/// ```ignore
/// #![no_std]
/// #![no_main]
/// ramen_rt::entry!(main);
/// fn main(arg: u64) { ramen_rt::println!("hello {}", arg); }
/// ```
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        /// Called by the runtime's `_start`.
        #[unsafe(no_mangle)]
        fn ramen_rt_main(arg: u64) {
            $crate::run_main($main, arg)
        }
    };
}

/// Prints to the kernel debug console, formatted with `ufmt` (`{}` and `{:?}`).
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{
        use $crate::ufmt;
        let mut console = $crate::Console::new();
        let _ = ufmt::uwrite!(console, $($arg)*);
    }};
}

/// [`print!`] with a newline.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => {{
        use $crate::ufmt;
        let mut console = $crate::Console::new();
        let _ = ufmt::uwriteln!(console, $($arg)*);
    }};
}

/// Reports `panic at file:line` (and the message when it is a plain string), then exits.
#[cfg(not(test))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut console = Console::new();
    let (file, line) = info.location().map_or(("?", 0), |location| (location.file(), location.line()));
    let _ = ufmt::uwrite!(console, "panic at {}:{}", file, line);
    if let Some(message) = info.message().as_str() {
        let _ = ufmt::uwrite!(console, ": {}", message);
    }
    let _ = ufmt::uwrite!(console, "\n");
    drop(console);
    exit()
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn messages_keep_label_and_register_words() {
        let message = Message::new(0x42, &[1, 2, 3]);
        assert_eq!((message.label(), message.words()), (0x42, &[1, 2, 3][..]));
        assert_eq!(message.regs, [1, 2, 3, 0, 0, 0]);
        let long = Message::new(MessageInfo::MAX_LABEL + 2, &[9; MSG_REGS + 3]);
        assert_eq!((long.label(), long.words().len()), (1, MSG_REGS));
        assert!(Message::default().words().is_empty());
    }

    #[test]
    fn errors_compare_with_abi_errors() {
        assert_eq!(SysError(2), Error::SlotEmpty);
        assert_eq!(SysError(2).kind(), Some(Error::SlotEmpty));
        assert_eq!(SysError(99).kind(), None);
        assert_eq!(SysError::from(Error::WrongType).code(), 4);
    }

    /// The linker script must link programs where the ABI says user space starts.
    #[test]
    fn linker_script_uses_the_abi_user_base() {
        let script = include_str!("../user.ld");
        let wanted = std::format!("USER_BASE = {:#x};", ramen_abi::syscall::USER_BASE);
        assert!(script.contains(&wanted), "user.ld lacks `{wanted}`");
    }
}
