//! Event kinds, their phases and the categories that switch them on and off.

use bitflags::bitflags;

bitflags! {
    /// Groups of events that tracing control turns on and off together.
    ///
    /// The kernel keeps the enabled set per core and tests it before building a
    /// record, so a disabled category costs one load, one test and one branch.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Categories: u32 {
        /// System-call entry and exit.
        const SYSCALL = 1 << 0;
        /// IPC send, receive and reply.
        const IPC = 1 << 1;
        /// Context switches and thread migration.
        const SCHED = 1 << 2;
        /// Device interrupts.
        const IRQ = 1 << 3;
        /// Inter-processor interrupts.
        const IPI = 1 << 4;
        /// Page faults.
        const FAULT = 1 << 5;
        /// Spans, instants and counters recorded by user space.
        const USER = 1 << 6;
    }
}

/// How an event shows on a timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Opens a span; the matching [`Phase::End`] kind closes it.
    Begin,
    /// Closes the span opened by [`EventKind::span_begin`].
    End,
    /// Describes the trace rather than an event (a thread's name); not drawn.
    Metadata,
    /// A point in time.
    Instant,
    /// A sampled value: `args[0]` names the counter, `args[1]` is the value.
    Counter,
    /// Start of an arrow to another event (possibly on another core); `args[0]` is
    /// the flow id that the matching [`Phase::FlowEnd`] carries too.
    FlowStart,
    /// End of an arrow; `args[0]` is the flow id.
    FlowEnd,
}

/// Every event this format version knows, with its wire value.
///
/// Kernel kinds are below [`EventKind::USER_BASE`], user kinds at or above it, so the
/// kernel can refuse a user record that claims to be a kernel event with one compare.
/// Argument meaning is listed per kind; flow kinds always carry the flow id in
/// `args[0]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum EventKind {
    /// Kernel entered through `syscall`. Args: syscall number, first argument.
    SyscallEnter = 0x0001,
    /// Kernel about to `sysret`. Args: syscall number, result.
    SyscallExit = 0x0002,
    /// IPC message sent (Call or Send). Args: flow id, [`IpcInfo`] of the receiver.
    IpcSend = 0x0003,
    /// IPC message delivered to this thread. Args: flow id, [`IpcInfo`] of the sender.
    IpcRecv = 0x0004,
    /// IPC reply sent. Args: flow id, [`IpcInfo`] of the caller.
    IpcReply = 0x0005,
    /// Core switches threads; the record's thread is the outgoing one.
    /// Args: incoming thread, 0.
    ContextSwitch = 0x0006,
    /// Interrupt handler entered. Args: vector, 0.
    IrqEnter = 0x0007,
    /// Interrupt handler left. Args: vector, 0.
    IrqExit = 0x0008,
    /// Inter-processor interrupt sent. Args: flow id, target CPU.
    IpiSend = 0x0009,
    /// Inter-processor interrupt received. Args: flow id, source CPU.
    IpiRecv = 0x000A,
    /// Page fault handler entered. Args: faulting address, error code.
    PageFaultEnter = 0x000B,
    /// Page fault handler left. Args: faulting address, 1 if resolved else 0.
    PageFaultExit = 0x000C,
    /// Thread moved to another core; recorded on the old core.
    /// Args: thread, new CPU.
    ThreadMigrate = 0x000D,
    /// A thread's name ([`crate::ThreadName`]); the record's thread is the named
    /// thread, not the running one. Recorded whenever any category is on.
    /// Args: the name's bytes, zero-padded.
    ThreadName = 0x000E,
    /// User span opened. Args: label id, user data.
    UserSpanBegin = 0x8001,
    /// User span closed. Args: label id, user data.
    UserSpanEnd = 0x8002,
    /// User instant. Args: label id, user data.
    UserInstant = 0x8003,
    /// User counter sample. Args: label id, value (as `i64`).
    UserCounter = 0x8004,
}

impl EventKind {
    /// First wire value of the user-space kinds.
    pub const USER_BASE: u16 = 0x8000;

    /// Every kind, in wire order.
    pub const ALL: [EventKind; 18] = [
        EventKind::SyscallEnter,
        EventKind::SyscallExit,
        EventKind::IpcSend,
        EventKind::IpcRecv,
        EventKind::IpcReply,
        EventKind::ContextSwitch,
        EventKind::IrqEnter,
        EventKind::IrqExit,
        EventKind::IpiSend,
        EventKind::IpiRecv,
        EventKind::PageFaultEnter,
        EventKind::PageFaultExit,
        EventKind::ThreadMigrate,
        EventKind::ThreadName,
        EventKind::UserSpanBegin,
        EventKind::UserSpanEnd,
        EventKind::UserInstant,
        EventKind::UserCounter,
    ];

    /// The kind with wire value `raw`, if this version knows it.
    pub const fn from_raw(raw: u16) -> Option<Self> {
        use EventKind::*;
        Some(match raw {
            0x0001 => SyscallEnter,
            0x0002 => SyscallExit,
            0x0003 => IpcSend,
            0x0004 => IpcRecv,
            0x0005 => IpcReply,
            0x0006 => ContextSwitch,
            0x0007 => IrqEnter,
            0x0008 => IrqExit,
            0x0009 => IpiSend,
            0x000A => IpiRecv,
            0x000B => PageFaultEnter,
            0x000C => PageFaultExit,
            0x000D => ThreadMigrate,
            0x000E => ThreadName,
            0x8001 => UserSpanBegin,
            0x8002 => UserSpanEnd,
            0x8003 => UserInstant,
            0x8004 => UserCounter,
            _ => return None,
        })
    }

    /// Whether user space may record this kind.
    pub const fn is_user(self) -> bool {
        self as u16 >= Self::USER_BASE
    }

    /// Stable short name used in exported traces.
    pub const fn name(self) -> &'static str {
        use EventKind::*;
        match self {
            SyscallEnter => "syscall_enter",
            SyscallExit => "syscall_exit",
            IpcSend => "ipc_send",
            IpcRecv => "ipc_recv",
            IpcReply => "ipc_reply",
            ContextSwitch => "context_switch",
            IrqEnter => "irq_enter",
            IrqExit => "irq_exit",
            IpiSend => "ipi_send",
            IpiRecv => "ipi_recv",
            PageFaultEnter => "page_fault_enter",
            PageFaultExit => "page_fault_exit",
            ThreadMigrate => "thread_migrate",
            ThreadName => "thread_name",
            UserSpanBegin => "user_span_begin",
            UserSpanEnd => "user_span_end",
            UserInstant => "user_instant",
            UserCounter => "user_counter",
        }
    }

    /// How the event shows on a timeline.
    pub const fn phase(self) -> Phase {
        use EventKind::*;
        match self {
            SyscallEnter | IrqEnter | PageFaultEnter | UserSpanBegin => Phase::Begin,
            SyscallExit | IrqExit | PageFaultExit | UserSpanEnd => Phase::End,
            ContextSwitch | ThreadMigrate | UserInstant => Phase::Instant,
            UserCounter => Phase::Counter,
            IpcSend | IpcReply | IpiSend => Phase::FlowStart,
            IpcRecv | IpiRecv => Phase::FlowEnd,
            ThreadName => Phase::Metadata,
        }
    }

    /// The category that enables this kind.
    pub const fn category(self) -> Categories {
        use EventKind::*;
        match self {
            SyscallEnter | SyscallExit => Categories::SYSCALL,
            IpcSend | IpcRecv | IpcReply => Categories::IPC,
            ContextSwitch | ThreadMigrate => Categories::SCHED,
            IrqEnter | IrqExit => Categories::IRQ,
            IpiSend | IpiRecv => Categories::IPI,
            PageFaultEnter | PageFaultExit => Categories::FAULT,
            UserSpanBegin | UserSpanEnd | UserInstant | UserCounter => Categories::USER,
            // Any category on records it: a name is needed whatever is traced.
            ThreadName => Categories::all(),
        }
    }

    /// For an end kind, the begin kind it closes.
    pub const fn span_begin(self) -> Option<EventKind> {
        use EventKind::*;
        match self {
            SyscallExit => Some(SyscallEnter),
            IrqExit => Some(IrqEnter),
            PageFaultExit => Some(PageFaultEnter),
            UserSpanEnd => Some(UserSpanBegin),
            _ => None,
        }
    }

    /// Name of the span a begin kind opens.
    pub const fn span_name(self) -> &'static str {
        use EventKind::*;
        match self {
            SyscallEnter | SyscallExit => "syscall",
            IrqEnter | IrqExit => "irq",
            PageFaultEnter | PageFaultExit => "page_fault",
            UserSpanBegin | UserSpanEnd => "user_span",
            other => other.name(),
        }
    }
}

/// Which kernel path delivered an IPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpcPath {
    /// The register-only fastpath.
    Fast,
    /// The general slow path.
    Slow,
}

/// The second argument of the IPC kinds: who is on the other end and how the
/// message travelled.
///
/// Packed as bits `0..32` peer thread, bit `32` set for the fastpath, bits `40..48`
/// message length in words; other bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpcInfo {
    /// The thread at the other end of the message.
    pub peer: u32,
    /// Fastpath or slow path.
    pub path: IpcPath,
    /// Message length in words (saturated at 255).
    pub len_words: u8,
}

impl IpcInfo {
    const FAST_BIT: u32 = 32;
    const LEN_SHIFT: u32 = 40;

    /// Packs the description into an argument word.
    #[inline(always)]
    pub const fn pack(self) -> u64 {
        let fast = match self.path {
            IpcPath::Fast => 1u64 << Self::FAST_BIT,
            IpcPath::Slow => 0,
        };
        self.peer as u64 | fast | (self.len_words as u64) << Self::LEN_SHIFT
    }

    /// Unpacks an argument word; unknown bits are ignored.
    pub const fn unpack(word: u64) -> Self {
        let path = if word & (1 << Self::FAST_BIT) != 0 { IpcPath::Fast } else { IpcPath::Slow };
        IpcInfo { peer: word as u32, path, len_words: (word >> Self::LEN_SHIFT) as u8 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_kind_round_trips_through_its_wire_value() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_raw(kind as u16), Some(kind));
        }
        assert_eq!(EventKind::from_raw(0), None);
        assert_eq!(EventKind::from_raw(0xFFFF), None);
    }

    #[test]
    fn ends_close_begins_of_the_same_category() {
        for kind in EventKind::ALL {
            match kind.phase() {
                Phase::End => {
                    let begin = kind.span_begin().expect("an end names its begin");
                    assert_eq!(begin.phase(), Phase::Begin);
                    assert_eq!(begin.category(), kind.category());
                    assert_eq!(begin.span_name(), kind.span_name());
                }
                _ => assert_eq!(kind.span_begin(), None),
            }
            assert_eq!(kind.is_user(), kind.category() == Categories::USER);
        }
    }

    proptest! {
        #[test]
        fn ipc_info_round_trips(peer: u32, fast: bool, len_words: u8) {
            let path = if fast { IpcPath::Fast } else { IpcPath::Slow };
            let info = IpcInfo { peer, path, len_words };
            prop_assert_eq!(IpcInfo::unpack(info.pack()), info);
        }
    }
}
