//! System-call numbers and the register convention.
//!
//! `SYSCALL` from ring 3 with:
//!
//! | register | in | out |
//! |---|---|---|
//! | `rax` | [`Sys`] number | result: 0, or an [`crate::Error`] code |
//! | `rdi` | capability pointer invoked | badge of the sender (receive operations), or the signalled bits of a notification |
//! | `rsi` | [`crate::MessageInfo`] | message info of the message received or replied |
//! | `rdx`, `r8`, `r9`, `r10`, `r12`, `r13` | message registers 0..5 | message registers 0..5 |
//!
//! `rcx` and `r11` are clobbered by the instruction itself (return RIP and RFLAGS);
//! `rbx`, `rbp`, `r14`, `r15` and `rsp` are preserved. Message registers beyond
//! [`crate::MSG_REGS`] live in the thread's IPC buffer. The kernel never leaves kernel
//! data in a register it returns: unused message registers come back zero.

/// System calls. Every one names a capability in `rdi` (except [`Sys::Yield`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Sys {
    /// Send a message and wait for the reply (on an endpoint), or invoke a kernel
    /// object (on any other capability: the label selects the operation).
    Call = 1,
    /// Reply to the last caller, then wait on an endpoint.
    ReplyRecv = 2,
    /// Send, blocking until a receiver takes the message.
    Send = 3,
    /// Send if a receiver is waiting, otherwise drop the message.
    NbSend = 4,
    /// Wait for a message (endpoint) or a signal (notification).
    Recv = 5,
    /// Receive if a message is pending, otherwise return at once.
    NbRecv = 6,
    /// Reply to the last caller.
    Reply = 7,
    /// Give up the rest of the time slice.
    Yield = 8,
}

impl Sys {
    /// The call with this number, if any.
    pub const fn from_number(n: u64) -> Option<Self> {
        Some(match n {
            1 => Self::Call,
            2 => Self::ReplyRecv,
            3 => Self::Send,
            4 => Self::NbSend,
            5 => Self::Recv,
            6 => Self::NbRecv,
            7 => Self::Reply,
            8 => Self::Yield,
            _ => return None,
        })
    }
}

/// The label a receive reports when what arrived is a notification's signal (on a
/// notification, or on an endpoint through a bound notification): the badge register
/// then holds the signalled bits.
pub const NOTIFICATION_LABEL: u64 = 0x5167;

/// Where the root task finds its boot-information pages.
pub const BOOT_INFO_VADDR: u64 = 0x0000_7fff_0000_0000;

/// Top of the root task's stack (the kernel maps [`ROOT_STACK_PAGES`] below it).
pub const ROOT_STACK_TOP: u64 = 0x0000_7ffe_0000_0000;

/// Pages of the root task's initial stack.
pub const ROOT_STACK_PAGES: u64 = 16;

/// The root task's IPC buffer.
pub const ROOT_IPC_BUFFER: u64 = 0x0000_7ffd_0000_0000;

/// Lowest address user programs are linked at (the first 4 MiB stay unmapped so null
/// and small-offset accesses fault).
pub const USER_BASE: u64 = 0x40_0000;

/// One past the highest user address: the canonical lower half less its top page.
/// That page stays unmapped (as on Linux) so that no `SYSCALL` instruction can end at
/// the top of the half: the return address the CPU saves is then always canonical,
/// which the IPC fastpath relies on (it returns to threads without re-checking).
pub const USER_TOP: u64 = 0x0000_7fff_ffff_f000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for n in 0..16 {
            if let Some(sys) = Sys::from_number(n) {
                assert_eq!(sys as u64, n);
            }
        }
        assert_eq!(Sys::from_number(0), None);
        assert_eq!(Sys::from_number(9), None);
    }
}
