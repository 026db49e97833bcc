//! `fuzz`: issues N random system calls (N = argument word, default 10 000) from a
//! fixed seed, so a failure reproduces. Half are random in every field (number,
//! capability pointer, message info, registers); half are valid calls on the
//! well-known slots with random labels and arguments. The kernel must answer each
//! with a result or an error and never crash; the program ends with
//! `fuzz: N syscalls done`.
//!
//! Run it with only the well-known slots: calls that would end the fuzzer itself
//! (suspending or redirecting its own thread) and CNode operations on the well-known
//! slot range are steered away, so that it keeps running and keeps its console.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use ramen_abi::invocation::{cnode, thread};
use ramen_abi::syscall::Sys;
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

fn main(arg: u64) {
    let total = ramen_user_tests::arg_or(arg, 10_000);
    let mut rng = XorShift::new(SEED);
    let progress_every = (total / 10).max(1);
    let mut errors: u64 = 0;
    for done in 0..total {
        let (number, cptr, info, regs) =
            if rng.below(2) == 0 { random_call(&mut rng) } else { mutated_valid_call(&mut rng) };
        if blocks_or_ends_us(number, cptr, info, &regs) {
            continue;
        }
        if ramen_rt::raw(number, cptr, info, regs).error != 0 {
            errors += 1;
        }
        if (done + 1) % progress_every == 0 {
            ramen_rt::println!("fuzz: {}/{} ({} errors)", done + 1, total, errors);
        }
    }
    ramen_rt::println!("fuzz: {} syscalls done", total);
    ramen_user_tests::report(1, &[total, errors]);
}

type Call = (u64, u64, u64, [u64; MSG_REGS]);

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
    match Sys::from_number(number) {
        Some(Sys::Recv | Sys::ReplyRecv | Sys::Send) => true,
        Some(Sys::Call) => own_thread || own_cnode || report,
        _ => false,
    }
}
