//! Output that user programs send through their debug-console capability.

use ramen_arch::serial::Console;

/// Writes user bytes to the console: printable ASCII and newlines as they are,
/// anything else as `?`, so a program cannot send terminal control sequences.
pub fn user_write(bytes: &[u8]) {
    let mut console = Console::lock();
    let mut clean = [0u8; 64];
    for chunk in bytes.chunks(clean.len()) {
        for (out, byte) in clean.iter_mut().zip(chunk) {
            *out = match *byte {
                b'\n' | b' '..=b'~' => *byte,
                _ => b'?',
            };
        }
        console.write_bytes(clean.get(..chunk.len()).unwrap_or(&[]));
    }
}
