//! A server for the long-message and capability-transfer tests: it serves the
//! endpoint in its `WAIT` slot. Every call is answered with a message of the same
//! label and length whose words are the request's plus one (so the client sees that
//! every word, register or buffer, made the trip both ways); the first reply word
//! is replaced by the number of capabilities that arrived. A capability that arrives
//! lands in slot [`RECEIVED`] of its CNode; with label [`SIGNAL`] the server signals
//! it (a notification) and deletes it, so the slot is free for the next one.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use ramen_abi::{MSG_MAX_WORDS, slot};
use ramen_rt::msgbuf::MessageBuffer;
use ramen_rt::{Message, kobj};
use ramen_user_tests::WAIT;

ramen_rt::entry!(main);

/// Where received capabilities go (a slot of the program's own CNode).
const RECEIVED: u64 = 20;
/// Label: signal the notification just received, then delete it.
const SIGNAL: u64 = 0x5161;

fn main(_: u64) {
    let mut buf = MessageBuffer::program_thread(0);
    buf.receive_caps_into(slot::CNODE, RECEIVED, 64);
    let mut request = match ramen_rt::recv(WAIT) {
        Ok((_, message)) => message,
        Err(_) => return,
    };
    loop {
        let mut words = [0u64; MSG_MAX_WORDS];
        let len = buf.read_words(&request, &mut words).min(MSG_MAX_WORDS);
        let caps = request.info.caps() as u64;
        if request.label() == SIGNAL && caps > 0 {
            let _ = ramen_rt::send(RECEIVED, &Message::new(0, &[]));
            let _ = kobj::delete(slot::CNODE, RECEIVED, 64);
        }
        let reply_words = words.get_mut(..len).unwrap_or(&mut []);
        for word in reply_words.iter_mut() {
            *word = word.wrapping_add(1);
        }
        if let Some(first) = reply_words.first_mut() {
            *first = caps;
        }
        let reply = buf.message(request.label(), reply_words, &[]).unwrap_or_default();
        request = match ramen_rt::reply_recv(WAIT, &reply) {
            Ok((_, message)) => message,
            Err(_) => return,
        };
    }
}
