//! The kernel debug console: `DebugConsole::WRITE` on `slot::DEBUG`, at most
//! `WRITE_MAX` bytes per call, packed eight to a message register.

use ramen_abi::invocation::debug::{WRITE, WRITE_MAX};
use ramen_abi::{MSG_REGS, slot};

use crate::{Message, SysError, call};

// MR0 carries the count; the bytes must fit in the rest.
const _: () = assert!(WRITE_MAX.div_ceil(8) < MSG_REGS);

/// The `WRITE` message for up to [`WRITE_MAX`] bytes: MR0 = count, MR1.. = bytes,
/// little-endian. Longer input is cut to `WRITE_MAX`.
pub fn write_message(bytes: &[u8]) -> Message {
    let bytes = bytes.get(..WRITE_MAX).unwrap_or(bytes);
    let mut words = [0u64; MSG_REGS];
    words[0] = bytes.len() as u64;
    for (word, chunk) in words[1..].iter_mut().zip(bytes.chunks(8)) {
        let mut le = [0u8; 8];
        le[..chunk.len()].copy_from_slice(chunk);
        *word = u64::from_le_bytes(le);
    }
    Message::new(WRITE, &words[..1 + bytes.len().div_ceil(8)])
}

/// Writes `bytes` to the kernel console, [`WRITE_MAX`] bytes per system call.
pub fn debug_write(bytes: &[u8]) -> Result<(), SysError> {
    for chunk in bytes.chunks(WRITE_MAX) {
        call(slot::DEBUG, &write_message(chunk))?;
    }
    Ok(())
}

/// A `ufmt` writer that gathers output into `WRITE_MAX`-byte system calls and sends
/// the rest when dropped (so one `print!` is as few calls as possible).
#[derive(Debug)]
pub struct Console {
    buffer: [u8; WRITE_MAX],
    len: usize,
}

impl Console {
    pub const fn new() -> Self {
        Self { buffer: [0; WRITE_MAX], len: 0 }
    }

    /// Sends what is buffered.
    pub fn flush(&mut self) {
        let _ = debug_write(self.buffer.get(..self.len).unwrap_or(&[]));
        self.len = 0;
    }
}

impl Default for Console {
    fn default() -> Self {
        Self::new()
    }
}

impl ufmt::uWrite for Console {
    type Error = core::convert::Infallible;

    fn write_str(&mut self, text: &str) -> Result<(), Self::Error> {
        for &byte in text.as_bytes() {
            if self.len == WRITE_MAX {
                self.flush();
            }
            if let Some(slot) = self.buffer.get_mut(self.len) {
                *slot = byte;
                self.len += 1;
            }
        }
        Ok(())
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if self.len > 0 {
            self.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_bytes_little_endian_after_the_count() {
        let message = write_message(b"hello, world");
        assert_eq!(message.label(), WRITE);
        assert_eq!(
            message.words(),
            &[12, u64::from_le_bytes(*b"hello, w"), u64::from_le_bytes(*b"orld\0\0\0\0")]
        );
        let full = write_message(&[b'x'; WRITE_MAX + 5]);
        assert_eq!(full.words().len(), MSG_REGS);
        assert_eq!(full.words()[0], WRITE_MAX as u64);
        assert_eq!(write_message(b"").words(), &[0]);
    }
}
