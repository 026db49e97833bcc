//! `fuzz`: issues N random system calls (N = argument word, default 10 000) from a
//! fixed seed, so a failure reproduces. Half are random in every field (number,
//! capability pointer, message info, registers); half are valid calls on the
//! well-known slots with random labels and arguments. The kernel must answer each
//! with a result or an error and never crash; the program ends with
//! `fuzz: N syscalls done`.
//!
//! With an endpoint in slot [`PARTNER`] (a `leasesrv` serving it), one call in four
//! goes there instead: a `Call` with a random length up to 120 words, random
//! capability pointers (mostly its well-known slots, which the kernel copies to the
//! partner and the partner deletes), and random leases over its own stack, heap and
//! code, read-only or read-write, or anywhere: the kernel must check, pin, map,
//! unmap and unpin them all, or refuse them with the documented error.
//!
//! Run it with only the well-known slots: calls that would end the fuzzer itself
//! (suspending or redirecting its own thread) and CNode operations on the well-known
//! slot range are steered away, so that it keeps running and keeps its console.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use ramen_abi::MSG_MAX_WORDS;
use ramen_abi::invocation::{cnode, thread};
use ramen_abi::ipc_buffer::{LEASES, SEND_CAPS};
use ramen_abi::lease::{LEN_MASK, WRITABLE};
use ramen_abi::syscall::Sys;
use ramen_rt::msgbuf::MessageBuffer;
use ramen_rt::{MSG_REGS, MessageInfo, slot};
use ramen_user_tests::XorShift;

ramen_rt::entry!(main);

const SEED: u64 = 0x5eed_0fea_7f00_d00d;
const WELL_KNOWN: [u64; 8] = [
    slot::NULL,
    slot::THREAD,
    slot::CNODE,
    slot::VSPACE,
    slot::DEBUG,
    slot::IRQ_CONTROL,
    slot::IO_PORTS,
    slot::SCHED_CONTROL_BASE,
];
/// CNode operations on slots below this index are redirected above it.
const PROTECTED_SLOTS: u64 = 64;
/// Child slot of the IPC partner's endpoint, if the root task gave one.
const PARTNER: u64 = ramen_user_tests::WAIT;

fn main(arg: u64) {
    let total = ramen_user_tests::arg_or(arg, 10_000);
    let mut rng = XorShift::new(SEED);
    let progress_every = (total / 10).max(1);
    let mut errors: u64 = 0;
    // Partner calls that went through, and the leases they carried.
    let (mut partner_ok, mut lent) = (0u64, 0u64);
    let mut buf = MessageBuffer::program_thread(0);
    let heap = alloc::vec![0x5au8; 3 * 4096];
    let has_partner = ramen_rt::nb_send(PARTNER, &ramen_rt::Message::default()).is_ok();
    for done in 0..total {
        let to_partner = has_partner && rng.below(4) == 0;
        let (number, cptr, info, regs) = if to_partner {
            partner_call(&mut rng, &mut buf, &heap)
        } else if rng.below(2) == 0 {
            random_call(&mut rng)
        } else {
            mutated_valid_call(&mut rng)
        };
        if !to_partner && blocks_or_ends_us(number, cptr, info, &regs) {
            continue;
        }
        let reply = ramen_rt::raw(number, cptr, info, regs);
        if reply.error != 0 {
            errors += 1;
        } else if to_partner {
            partner_ok += 1;
            lent += MessageInfo(info).leases() as u64;
        }
        if (done + 1) % progress_every == 0 {
            ramen_rt::println!("fuzz: {}/{} ({} errors)", done + 1, total, errors);
        }
    }
    ramen_rt::println!(
        "fuzz: {} syscalls done ({} calls to the partner went through, lending {} leases)",
        total,
        partner_ok,
        lent
    );
    ramen_user_tests::report(1, &[total, errors]);
}

type Call = (u64, u64, u64, [u64; MSG_REGS]);

/// A call to the IPC partner with random buffer words, capabilities and leases.
fn partner_call(rng: &mut XorShift, buf: &mut MessageBuffer, heap: &[u8]) -> Call {
    let stack_word = 0u64;
    let places = [
        core::ptr::addr_of!(stack_word) as u64,
        heap.as_ptr() as u64,
        main as fn(u64) as usize as u64,
        rng.next_u64(),
        0xffff_8000_0000_0000,
    ];
    let len = rng.below(MSG_MAX_WORDS as u64 + 1) as usize;
    for i in MSG_REGS..len {
        buf.set_word(i, rng.next_u64());
    }
    let caps = rng.below(4) as usize;
    for i in 0..caps {
        let cptr = if rng.below(4) == 0 { rng.next_u64() } else { WELL_KNOWN[rng.below(8) as usize] };
        buf.set_word(SEND_CAPS + i, cptr);
    }
    let leases = rng.below(5) as usize;
    for i in 0..leases {
        let base = places[rng.below(places.len() as u64) as usize];
        let offset = rng.below(8192);
        let bytes = if rng.below(8) == 0 { rng.next_u64() & LEN_MASK } else { rng.below(3 * 4096) };
        let access = if rng.below(2) == 0 { WRITABLE } else { 0 };
        buf.set_word(LEASES + 2 * i, base.wrapping_add(offset));
        buf.set_word(LEASES + 2 * i + 1, bytes | access);
    }
    let info = MessageInfo::try_new(rng.below(0x100), len, caps, leases).unwrap_or_default();
    (Sys::Call as u64, PARTNER, info.0, random_regs(rng))
}

fn random_regs(rng: &mut XorShift) -> [u64; MSG_REGS] {
    let mut regs = [0; MSG_REGS];
    for reg in &mut regs {
        // Mostly small values (slot indices, sizes), sometimes anything.
        *reg = if rng.below(4) == 0 { rng.next_u64() } else { rng.below(256) };
    }
    regs
}

/// Anything at all: numbers beyond the ABI, any capability pointer, any info word.
fn random_call(rng: &mut XorShift) -> Call {
    let number = if rng.below(8) == 0 { rng.next_u64() } else { rng.below(12) };
    let cptr = if rng.below(2) == 0 { rng.next_u64() } else { rng.below(64) };
    (number, cptr, rng.next_u64(), random_regs(rng))
}

/// A well-formed call on a well-known slot with a random label and arguments.
fn mutated_valid_call(rng: &mut XorShift) -> Call {
    let number = Sys::Call as u64;
    let cptr = WELL_KNOWN[rng.below(WELL_KNOWN.len() as u64) as usize];
    let label = if rng.below(4) == 0 { rng.below(MessageInfo::MAX_LABEL + 1) } else { rng.below(0x50) };
    let len = rng.below(MSG_REGS as u64 + 1) as usize;
    let info = MessageInfo::try_new(label, len, 0, 0).unwrap_or_default();
    let mut regs = random_regs(rng);
    if cptr == slot::CNODE && regs[0] < PROTECTED_SLOTS {
        regs[0] += PROTECTED_SLOTS;
    }
    (number, cptr, info.0, regs)
}

/// Calls the fuzzer must not make: blocking receives (nothing will ever arrive),
/// suspending or re-pointing its own thread, and CNode changes to the well-known slots.
fn blocks_or_ends_us(number: u64, cptr: u64, info: u64, regs: &[u64; MSG_REGS]) -> bool {
    let label = MessageInfo(info).label();
    let own_thread = cptr == slot::THREAD
        && matches!(label, thread::SUSPEND | thread::WRITE_ENTRY | thread::CONFIGURE | thread::SET_PRIORITY);
    let own_cnode = cptr == slot::CNODE
        && (cnode::COPY..=cnode::REVOKE).contains(&label)
        && (regs[0] < PROTECTED_SLOTS
            || (matches!(label, cnode::MOVE | cnode::MUTATE) && regs[2] < PROTECTED_SLOTS));
    // A call on the report endpoint would wait for a reply that never comes.
    let report = cptr == ramen_user_tests::REPORT;
    // Only the partner calls (above) go to the partner's endpoint: a random one could
    // be a receive on it, which would wait forever.
    let partner = cptr == PARTNER;
    match Sys::from_number(number) {
        Some(Sys::Recv | Sys::ReplyRecv | Sys::Send) => true,
        Some(Sys::Call) => own_thread || own_cnode || report || partner,
        _ => partner,
    }
}
