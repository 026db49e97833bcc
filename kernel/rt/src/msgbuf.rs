//! Messages longer than the registers, and capability transfer, through the thread's
//! IPC buffer (layout in `ramen_abi::ipc_buffer`).
//!
//! A thread needs to know where its IPC buffer is. The root task's is fixed by the
//! ABI; programs the root task starts follow the loader convention below (the main
//! thread's buffer at [`PROGRAM_IPC_BUFFER`], the n-th extra thread's
//! `n * THREAD_SPACING` below it). Until the runtime has thread-local storage, a
//! thread picks its buffer with [`MessageBuffer::root`] or
//! [`MessageBuffer::program_thread`].
//!
//! ```ignore
//! let mut buf = MessageBuffer::program_thread(0);
//! let request = buf.message(LABEL, &words, &[cap_to_send])?;
//! let reply = ramen_rt::call(ENDPOINT, &request)?;
//! let n = buf.read_words(&reply, &mut out);
//! ```

use ramen_abi::ipc_buffer::{LEASES, RECV_CNODE, RECV_DEPTH, RECV_INDEX, SEND_CAPS, WORDS};
use ramen_abi::lease::{LEN_MASK, WRITABLE};
use ramen_abi::{MSG_MAX_CAPS, MSG_MAX_LEASES, MSG_MAX_WORDS, MSG_REGS, MessageInfo};

use crate::Message;
use crate::sys::ipcbuf;

/// Top of the stack of a program's main thread (the root task's loader convention).
pub const PROGRAM_STACK_TOP: u64 = 0x0000_7000_0000_0000;
/// A program main thread's IPC buffer.
pub const PROGRAM_IPC_BUFFER: u64 = 0x0000_6fff_0000_0000;
/// A further thread's stack and IPC buffer sit this far below the previous thread's.
pub const THREAD_SPACING: u64 = 0x1_0000_0000;

/// Why a long message could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageError {
    /// More than `MSG_MAX_WORDS` words.
    TooLong,
    /// More than `MSG_MAX_CAPS` capabilities.
    TooManyCaps,
    /// The label does not fit the message-info word.
    BadLabel,
    /// More than `MSG_MAX_LEASES` leases.
    TooManyLeases,
}

/// A lease: `len` bytes from `addr`, lent read-only or read-write. A caller builds
/// them to lend its memory; a server gets them from [`MessageBuffer::lease`] and
/// reaches the memory (mapped in its lease window until it replies) through
/// [`Lease::read`] and [`Lease::write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub addr: u64,
    pub len: u64,
    pub writable: bool,
}

impl Lease {
    /// A read-only lease of `len` bytes from `addr`.
    pub const fn read_only(addr: u64, len: u64) -> Self {
        Self { addr, len, writable: false }
    }

    /// A read-write lease.
    pub const fn read_write(addr: u64, len: u64) -> Self {
        Self { addr, len, writable: true }
    }

    /// Byte `offset` of a received lease (`None` past its end).
    pub fn read(&self, offset: u64) -> Option<u8> {
        (offset < self.len).then(|| crate::sys::ipcbuf::lease_read(self.addr + offset))
    }

    /// Writes byte `offset` of a received read-write lease; false if it is
    /// read-only or `offset` is past its end.
    pub fn write(&self, offset: u64, value: u8) -> bool {
        let ok = self.writable && offset < self.len;
        if ok {
            crate::sys::ipcbuf::lease_write(self.addr + offset, value);
        }
        ok
    }
}

/// This thread's IPC buffer.
#[derive(Clone, Copy, Debug)]
pub struct MessageBuffer {
    base: u64,
}

impl MessageBuffer {
    /// The root task's buffer.
    pub fn root() -> Self {
        Self { base: ramen_abi::syscall::ROOT_IPC_BUFFER }
    }

    /// The buffer of a program's thread `index` (0: the main thread, n: the n-th
    /// thread the root task's loader started in that program).
    pub fn program_thread(index: u64) -> Self {
        let offset = index.saturating_mul(THREAD_SPACING).min(PROGRAM_IPC_BUFFER - crate::vm::PAGE);
        Self { base: PROGRAM_IPC_BUFFER - offset }
    }

    /// Word `index` of the buffer (0 past its end).
    pub fn word(&self, index: usize) -> u64 {
        if index < WORDS { ipcbuf::read(self.base, index) } else { 0 }
    }

    /// Sets word `index` (ignored past the end).
    pub fn set_word(&mut self, index: usize, value: u64) {
        if index < WORDS {
            ipcbuf::write(self.base, index, value);
        }
    }

    /// Builds a message of `words` (registers first, the rest in the buffer) that
    /// transfers the capabilities `caps` (pointers in this thread's CSpace; the
    /// endpoint capability used needs the grant right).
    pub fn message(&mut self, label: u64, words: &[u64], caps: &[u64]) -> Result<Message, MessageError> {
        if words.len() > MSG_MAX_WORDS {
            return Err(MessageError::TooLong);
        }
        if caps.len() > MSG_MAX_CAPS {
            return Err(MessageError::TooManyCaps);
        }
        let info = MessageInfo::try_new(label, words.len(), caps.len(), 0).ok_or(MessageError::BadLabel)?;
        let mut regs = [0; MSG_REGS];
        for (reg, word) in regs.iter_mut().zip(words) {
            *reg = *word;
        }
        for (i, word) in words.iter().enumerate().skip(MSG_REGS) {
            self.set_word(i, *word);
        }
        for (i, cap) in caps.iter().enumerate() {
            self.set_word(SEND_CAPS + i, *cap);
        }
        Ok(Message { info, regs })
    }

    /// [`Self::message`] that also lends `leases` (a `Call` only; the kernel pins them
    /// until the reply).
    pub fn message_with_leases(
        &mut self,
        label: u64,
        words: &[u64],
        caps: &[u64],
        leases: &[Lease],
    ) -> Result<Message, MessageError> {
        if leases.len() > MSG_MAX_LEASES {
            return Err(MessageError::TooManyLeases);
        }
        let mut message = self.message(label, words, caps)?;
        self.set_leases(leases);
        message.info = MessageInfo::try_new(label, words.len(), caps.len(), leases.len())
            .ok_or(MessageError::BadLabel)?;
        Ok(message)
    }

    /// Names `leases` (at most `MSG_MAX_LEASES`; the rest are ignored) for the next
    /// call; its info word must count them.
    pub fn set_leases(&mut self, leases: &[Lease]) {
        for (i, lease) in leases.iter().enumerate().take(MSG_MAX_LEASES) {
            self.set_word(LEASES + 2 * i, lease.addr);
            self.set_word(
                LEASES + 2 * i + 1,
                (lease.len & LEN_MASK) | if lease.writable { WRITABLE } else { 0 },
            );
        }
    }

    /// Copies message words `MSG_REGS..` of the last message this thread received
    /// (as many as `out` holds) out of the buffer.
    pub fn read_message_words(&self, out: &mut [u64]) {
        for (i, word) in out.iter_mut().enumerate() {
            *word = self.word(MSG_REGS + i);
        }
    }

    /// Lease `index` of a received `message`, where this thread sees it.
    pub fn lease(&self, message: &Message, index: usize) -> Option<Lease> {
        if index >= message.info.leases() {
            return None;
        }
        let word = self.word(LEASES + 2 * index + 1);
        Some(Lease {
            addr: self.word(LEASES + 2 * index),
            len: word & LEN_MASK,
            writable: word & WRITABLE != 0,
        })
    }

    /// Copies the words of a received `message` (registers, then buffer) into `out`;
    /// returns how many the message has (it may be more than `out` holds).
    pub fn read_words(&self, message: &Message, out: &mut [u64]) -> usize {
        let len = message.info.len_words().min(MSG_MAX_WORDS);
        for (i, slot) in out.iter_mut().enumerate().take(len) {
            *slot = if i < MSG_REGS { message.regs[i] } else { self.word(i) };
        }
        len
    }

    /// Says where capabilities this thread receives go: consecutive slots from
    /// `index` of the CNode `cnode` (a capability pointer with the write right),
    /// resolved at `depth` bits. Capabilities that find no empty slot are not
    /// transferred; the received message-info word counts those that arrived.
    pub fn receive_caps_into(&mut self, cnode: u64, index: u64, depth: u64) {
        self.set_word(RECV_CNODE, cnode);
        self.set_word(RECV_INDEX, index);
        self.set_word(RECV_DEPTH, depth);
    }
}
