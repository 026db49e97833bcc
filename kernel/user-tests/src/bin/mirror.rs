//! Fastpath/slow-path differential workload over the endpoint in its `WAIT` slot.
//! Requests and replies fill the registers past their length with junk, which the
//! kernel must not pass on: every thread checks that the registers past the length
//! of what it receives hold its own values from its receiving system call (its
//! request or reply and its junk, or `recv`'s zeros), never the sender's.
//! With argument 0 it serves: each request is answered with label + 1 and
//! `label % 7` words made of everything it received (info word, badge, a digest of
//! all six message registers, the first three registers), so every reply shape from
//! 0 to 6 words occurs and the reply depends on every register the kernel handed
//! over, including the ones past the message. With argument
//! `rounds << 3 | 1` it is the client: `rounds` calls of every length from 0 to 6
//! words with pseudo-random labels and words, folding every register of every reply
//! (result, info, badge, six message registers) into a digest it reports to the root
//! task. The root task runs the pair with the IPC fastpath on and off and compares.
//!
//! With argument `rounds << 3 | 2` it is a notification ping-pong server (waits on
//! the notification in `WAIT`, signals the one in [`PONG`], forever), with
//! `rounds << 3 | 3` its client (signals `WAIT`'s, waits on `PONG`'s, `rounds` times,
//! then reports 1 and the rounds done).
//!
//! With `4` and `rounds << 3 | 5` it is the call pair again over one-way messages:
//! the client `Send`s each request on `WAIT` and `Recv`s the answer on the endpoint
//! in [`PONG`]; the server `Recv`s on `WAIT` and `Send`s the answer back.
//!
//! With `rounds << 3 | 6` it is a badge client of the server (argument 0): `rounds`
//! calls of label 2, each answered with the badge the server saw, while the root task
//! deletes the capability in `WAIT` and mints it again with the other of
//! [`SWAP_BADGES`]; it reports 1 and the answers with the first badge, with the
//! second, with anything else, and the calls refused (the slot empty just then).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use ramen_abi::syscall::Sys;
use ramen_abi::{MSG_REGS, MessageInfo};
use ramen_rt::fault::{self, HOSTILE_RFLAGS};
use ramen_rt::msgbuf::MessageBuffer;
use ramen_rt::{Message, call, nb_send, recv, reply_recv, send};
use ramen_user_tests::{SWAP_BADGES, WAIT, XorShift, report};

ramen_rt::entry!(main);

/// Child slot of the second notification of the ping-pong.
pub const PONG: u64 = 11;

/// FNV-1a over 64-bit words.
fn fold(digest: u64, word: u64) -> u64 {
    word.to_le_bytes().iter().fold(digest, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The answer to `request` (badge `badge`): label + 1, `label % 7` words.
fn answer(buf: &mut MessageBuffer, badge: u64, request: &Message) -> Message {
    let mix = request.regs.iter().fold(0xcbf2_9ce4_8422_2325, |h, w| fold(h, *w));
    // Words past the registers (a long request) count too.
    let mut all = [0u64; LONGEST];
    let len = buf.read_words(request, &mut all).min(LONGEST);
    let mix = all.iter().take(len).skip(MSG_REGS).fold(mix, |h, w| fold(h, *w));
    let label = request.label();
    if label % 5 == 4 {
        // A long answer: through the IPC buffer.
        let long = MSG_REGS + 1 + (label % 13) as usize;
        let mut words = [0u64; LONGEST];
        for (i, word) in words.iter_mut().enumerate().take(long) {
            *word = mix.rotate_left(i as u32) ^ request.info.0 ^ badge;
        }
        return buf.message(label + 1, words.get(..long).unwrap_or(&[]), &[]).unwrap_or_default();
    }
    let words = [request.info.0, badge, mix, request.regs[0], request.regs[1], request.regs[2]];
    let len = (label % (MSG_REGS as u64 + 1)) as usize;
    // Every register is set, the ones past the length to junk the kernel must not
    // pass on.
    with_junk(Message::new(label + 1, words.get(..len).unwrap_or(&[])), len, mix)
}

/// Longest message the pair sends (7 to 19 words when long).
const LONGEST: usize = 20;

/// `message` with its registers from `len` on filled with junk derived from `seed`.
fn with_junk(mut message: Message, len: usize, seed: u64) -> Message {
    for (i, reg) in message.regs.iter_mut().enumerate().skip(len) {
        *reg = seed.rotate_left(i as u32) | 1;
    }
    message
}

/// Whether the registers of `received` past its length are the receiver's own
/// `passed` (what it had in them at its receiving system call): the kernel writes
/// only the message's words.
fn rest_is_own(received: &Message, passed: &Message) -> bool {
    let len = received.info.len_words().min(MSG_REGS);
    received.regs.get(len..) == passed.regs.get(len..)
}

/// A reply no client accepts (label 0): the server's way to fail the run.
fn refusal() -> Message {
    Message::new(0, &[])
}

fn serve() {
    let mut buf = MessageBuffer::program_thread(0);
    let Ok((badge, request)) = recv(WAIT) else {
        return;
    };
    // `recv` passes zeros in the message registers.
    let mut reply = if rest_is_own(&request, &Message::default()) {
        answer(&mut buf, badge, &request)
    } else {
        refusal()
    };
    loop {
        match reply_recv(WAIT, &reply) {
            Ok((badge, request)) if rest_is_own(&request, &reply) => {
                reply = answer(&mut buf, badge, &request)
            }
            Ok(_) => reply = refusal(),
            Err(_) => return,
        }
    }
}

/// Makes the calls (`one_way`: as a `Send` and a `Recv` each); returns the digest of
/// every reply register, or `None` if a call failed.
fn client(rounds: u64, one_way: bool) -> Option<u64> {
    let mut buf = MessageBuffer::program_thread(0);
    let mut random = XorShift::new(0x5eed_f00d);
    let mut digest = 0xcbf2_9ce4_8422_2325;
    for i in 0..rounds {
        let words: [u64; LONGEST] = core::array::from_fn(|_| random.next_u64());
        let label = 1 + random.below(1000);
        // Every fifth request is long (7 to 19 words, through the IPC buffer).
        let len =
            if i % 5 == 4 { MSG_REGS + 1 + (i % 13) as usize } else { (i % (MSG_REGS as u64 + 1)) as usize };
        let mut request = if len > MSG_REGS {
            buf.message(label, words.get(..len).unwrap_or(&[]), &[]).ok()?
        } else {
            with_junk(Message::new(label, words.get(..len).unwrap_or(&[])), len, random.next_u64())
        };
        // Every fourth call also sets the info word's reserved bits, which the
        // kernel must not pass on (whichever path it takes).
        if i % 4 == 3 {
            request.info.0 |= 0xf000;
        }
        let reply = if one_way {
            send(WAIT, &request).ok()?;
            let (badge, reply) = recv(PONG).ok()?;
            digest = fold(digest, badge);
            rest_is_own(&reply, &Message::default()).then_some(reply)?
        } else {
            // The registers past the reply's length are this client's own request's.
            let reply = if i % 3 == 2 {
                // With RFLAGS bits no thread may return to user mode with (NT, IOPL):
                // the kernel must drop them whichever path returns here.
                // Either path returns with them clear (the slow path sanitises the
                // context; the fastpath relies on the entry having done so).
                let (raw, flags) = fault::raw_with_flags(
                    HOSTILE_RFLAGS,
                    Sys::Call as u64,
                    WAIT,
                    request.info.0,
                    request.regs,
                );
                let clean = raw.error == 0 && flags & HOSTILE_RFLAGS == 0;
                clean.then_some(Message { info: MessageInfo(raw.info), regs: raw.regs })?
            } else {
                call(WAIT, &request).ok()?
            };
            rest_is_own(&reply, &request).then_some(reply)?
        };
        digest = fold(digest, reply.info.0);
        digest = reply.regs.iter().fold(digest, |h, w| fold(h, *w));
        let mut all = [0u64; LONGEST];
        let got = buf.read_words(&reply, &mut all).min(LONGEST);
        digest = all.iter().take(got).skip(MSG_REGS).fold(digest, |h, w| fold(h, *w));
        // The answer's own checks: the label and the sender's view of the request.
        let sent = MessageInfo::try_new(label, len, 0, 0)?.0;
        let short_answer = label % 5 != 4;
        if reply.label() != label + 1 || (short_answer && reply.info.len_words() > 0 && reply.regs[0] != sent)
        {
            return None;
        }
    }
    Some(digest)
}

/// The notification ping-pong (see the module doc).
fn ping_pong(client: bool, rounds: u64) {
    let signal = || nb_send(if client { WAIT } else { PONG }, &Message::new(0, &[])).is_ok();
    let wait = || recv(if client { PONG } else { WAIT }).is_ok();
    if !client {
        while wait() && signal() {}
        return;
    }
    let done = (0..rounds).take_while(|_| signal() && wait()).count() as u64;
    report(u64::from(done == rounds), &[done]);
}

/// The one-way server: `Recv` a request on `WAIT`, `Send` the answer on `PONG`.
fn serve_one_way() {
    let mut buf = MessageBuffer::program_thread(0);
    while let Ok((badge, request)) = recv(WAIT) {
        let answer = if rest_is_own(&request, &Message::default()) {
            answer(&mut buf, badge, &request)
        } else {
            refusal()
        };
        if send(PONG, &answer).is_err() {
            return;
        }
    }
}

/// See the module doc (argument `rounds << 3 | 6`).
fn badge_client(rounds: u64) {
    let (mut first, mut second, mut other, mut refused) = (0u64, 0u64, 0u64, 0u64);
    for _ in 0..rounds {
        match call(WAIT, &Message::new(2, &[])) {
            // The server answers label 2 with label 3: the info word and the badge.
            Ok(reply) if reply.label() == 3 => match reply.words().get(1) {
                Some(&b) if b == SWAP_BADGES[0] => first += 1,
                Some(&b) if b == SWAP_BADGES[1] => second += 1,
                _ => other += 1,
            },
            Ok(_) => other += 1,
            Err(_) => refused += 1,
        }
    }
    report(1, &[first, second, other, refused]);
}

fn main(arg: u64) {
    let rounds = arg >> 3;
    let result = match arg & 7 {
        0 => {
            serve();
            return;
        }
        2 | 3 => {
            ping_pong(arg & 1 == 1, rounds);
            return;
        }
        4 => {
            serve_one_way();
            return;
        }
        6 => {
            badge_client(rounds);
            return;
        }
        1 => client(rounds, false),
        _ => client(rounds, true),
    };
    match result {
        Some(digest) => report(1, &[digest]),
        None => report(0, &[]),
    }
}
