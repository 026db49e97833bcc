//! `churn`: object lifecycles under load, from a fixed seed. One runs on every CPU,
//! each with an untyped region of its own (child slot [`CHURN_UNTYPED`], handed over
//! once the root task says go on [`WAIT`]). It makes and destroys kernel objects in
//! that region at random: threads (running its own `main` as workers, on every
//! CPU, moved between CPUs, suspended and resumed while they spin, wait, signal, send
//! and call), notifications, endpoints, copies and badged copies of them, and frames
//! mapped into its own address space and filled with a pattern. It deletes and
//! revokes them while the workers use them, and when the region is full it revokes
//! the whole untyped, which destroys everything in it (running threads included) and
//! reuses the memory at once.
//!
//! What it checks: every frame still holds its pattern when it is deleted, and
//! before every revoke of the region (a kernel write into memory that a destroyed
//! thread or object left behind would show there). The root task then checks the
//! kernel's invariants from every CPU. Argument word: operations (bits 0-31) and
//! CPUs (bits 32-39); a worker's argument has bit 63 set, its mode in bits 16-18
//! and the slot it works on in bits 0-15.
//!
//! Every 64 operations it asks the kernel to check its invariants on this CPU (the
//! run queue holds only threads this CPU owns, runnable; this CSpace's derivation
//! links are consistent).
//!
//! Reports (label 1): operations, errors answered, `Busy` answers, corrupted frames,
//! broken invariants.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use ramen_abi::{Error, object};
use ramen_rt::vm::{Mapping, Tables};
use ramen_rt::{Message, SysError, kobj, slot};
use ramen_user_tests::{CHURN_UNTYPED, CHURN_WINDOW, WAIT, XorShift};

ramen_rt::entry!(main);

const WORKER: u64 = 1 << 63;
/// First slot of this program's objects, and how many there are.
const BASE: u64 = 64;
const SLOTS: usize = 40;
/// Live worker threads at most, and their stacks (more stacks than threads: a
/// destroyed thread's stack waits in line before it is reused, which mattered while
/// a delete returned before the thread's CPU had stopped it; it no longer does).
const MAX_THREADS: usize = 6;
const STACKS: usize = 12;
const STACK_BYTES: usize = 8192;
/// Size of the untyped region (bits): 128 KiB, about thirty 4 KiB objects.
pub const REGION_BITS: u64 = 17;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Thread {
        stack: usize,
    },
    Notification,
    Endpoint,
    /// A 4 KiB frame, mapped at its slot's place in the window, filled with `pattern`.
    Frame {
        pattern: u8,
    },
}

#[derive(Clone, Copy)]
struct Entry {
    kind: Kind,
    /// The slot this is a copy of (notifications and endpoints only).
    origin: Option<usize>,
}

struct Churn {
    rng: XorShift,
    cpus: u64,
    entries: [Option<Entry>; SLOTS],
    /// Mappings of the frames in `entries`, by slot.
    maps: Vec<Option<Mapping>>,
    /// Free stacks, oldest first.
    free_stacks: Vec<usize>,
    stacks: Vec<Vec<u8>>,
    errors: u64,
    busy: u64,
    corrupt: u64,
    /// Broken kernel invariants found by the periodic check on this CPU (its run
    /// queue: every thread queued here is owned here and runnable; this CSpace's
    /// derivation links).
    broken: u64,
    /// Threads started, threads destroyed (deleted or revoked with the region), and
    /// revokes of the whole region.
    started: u64,
    destroyed: u64,
    regions: u64,
}

/// Page tables for the window are installed by the root task: none are needed here.
struct Installed;

impl Tables for Installed {
    fn take(&mut self, _: u32) -> Result<u64, SysError> {
        Err(Error::MissingPageTable.into())
    }
    fn give_back(&mut self, _: u32, _: u64) {}
}

fn main(arg: u64) {
    if arg & WORKER != 0 {
        worker(arg);
    }
    let ops = arg & 0xffff_ffff;
    let cpus = ((arg >> 32) & 0xff).max(1);
    // Go (and the region) from the root task.
    let _ = ramen_rt::recv(WAIT);
    let mut churn = Churn {
        rng: XorShift::new(0xc4_0a2e ^ (u64::from(ramen_rt::current_cpu()) << 40)),
        cpus,
        entries: [None; SLOTS],
        maps: (0..SLOTS).map(|_| None).collect(),
        free_stacks: (0..STACKS).collect(),
        stacks: (0..STACKS).map(|_| alloc::vec![0u8; STACK_BYTES]).collect(),
        errors: 0,
        busy: 0,
        corrupt: 0,
        broken: 0,
        started: 0,
        destroyed: 0,
        regions: 0,
    };
    for op in 0..ops {
        churn.step();
        if op % 64 == 63 {
            churn.check_invariants();
        }
    }
    churn.revoke_region();
    ramen_rt::println!(
        "churn: {} operations: {} threads started, {} destroyed, {} region revokes; {} errors ({} busy), {} corrupted frames, {} broken invariants",
        ops,
        churn.started,
        churn.destroyed,
        churn.regions,
        churn.errors,
        churn.busy,
        churn.corrupt,
        churn.broken
    );
    ramen_user_tests::report(1, &[ops, churn.errors, churn.busy, churn.corrupt, churn.broken]);
}

/// A worker thread: loops forever on the slot it was given, in its mode. Touches no
/// heap and no console (it may be destroyed at any instruction).
fn worker(arg: u64) -> ! {
    let target = arg & 0xffff;
    let mode = (arg >> 16) & 7;
    let empty = Message::new(0, &[]);
    let mut count = 0u64;
    loop {
        let failed = match mode {
            // Wait on a notification, or receive on an endpoint.
            0 => ramen_rt::recv(target).is_err(),
            // Signal, or send if someone waits.
            1 => ramen_rt::nb_send(target, &empty).is_err(),
            // Call: blocks until a receiver replies (or the endpoint goes).
            2 => ramen_rt::call(target, &empty).is_err(),
            // Serve: reply to the last caller, then receive.
            3 => ramen_rt::reply_recv(target, &empty).is_err(),
            // Spin.
            _ => {
                for _ in 0..2000 {
                    count = core::hint::black_box(count.wrapping_add(1));
                }
                false
            }
        };
        if failed || mode >= 4 || mode == 1 {
            ramen_rt::yield_now();
        }
    }
}

fn slot_of(index: usize) -> u64 {
    BASE + index as u64
}

impl Churn {
    fn note<T>(&mut self, result: Result<T, SysError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                self.errors += 1;
                if e == Error::Busy {
                    self.busy += 1;
                }
                None
            }
        }
    }

    fn pick(&mut self, want: impl Fn(&Entry) -> bool) -> Option<usize> {
        let start = self.rng.below(SLOTS as u64) as usize;
        (0..SLOTS).map(|i| (start + i) % SLOTS).find(|i| self.entries[*i].as_ref().is_some_and(&want))
    }

    fn empty_slot(&mut self) -> Option<usize> {
        let start = self.rng.below(SLOTS as u64) as usize;
        (0..SLOTS).map(|i| (start + i) % SLOTS).find(|i| self.entries[*i].is_none())
    }

    fn threads(&self) -> usize {
        self.entries.iter().flatten().filter(|e| matches!(e.kind, Kind::Thread { .. })).count()
    }

    fn cpu(&mut self) -> u64 {
        self.rng.below(self.cpus)
    }

    fn step(&mut self) {
        match self.rng.below(20) {
            0..=2 => self.make_thread(),
            3 | 4 => self.make(object::NOTIFICATION, Kind::Notification),
            5 => self.make(object::ENDPOINT, Kind::Endpoint),
            6 => self.make_frame(),
            7 => self.copy(),
            8..=10 => self.move_thread(),
            11 => self.suspend_resume(),
            12 => self.signal(),
            13..=15 => self.delete(),
            16 => self.revoke_one(),
            17 => self.check_frames(),
            18 if self.rng.below(8) == 0 => self.revoke_region(),
            _ => ramen_rt::yield_now(),
        }
    }

    /// Retypes one object of `kind` into `index`; on a full region, revokes it all.
    /// (`Busy` while a thread destroyed in the region may still be used elsewhere:
    /// yields and tries again a few times.)
    fn retype(&mut self, kind: u64, index: usize) -> bool {
        for _ in 0..2000 {
            match kobj::retype(CHURN_UNTYPED, kind, 0, slot::CNODE, slot_of(index), 1) {
                Ok(()) => return true,
                Err(e) if e == Error::Busy => {
                    self.busy += 1;
                    ramen_rt::yield_now();
                }
                Err(e) => {
                    if e == Error::NotEnoughMemory {
                        self.revoke_region();
                    } else {
                        self.note::<()>(Err(e));
                    }
                    return false;
                }
            }
        }
        self.errors += 1;
        false
    }

    fn make(&mut self, kind: u64, what: Kind) {
        if let Some(index) = self.empty_slot()
            && self.retype(kind, index)
        {
            self.entries[index] = Some(Entry { kind: what, origin: None });
        }
    }

    fn make_thread(&mut self) {
        if self.threads() >= MAX_THREADS || self.free_stacks.len() <= STACKS - MAX_THREADS {
            return;
        }
        let Some(index) = self.empty_slot() else { return };
        if !self.retype(object::THREAD, index) {
            return;
        }
        let stack = self.free_stacks.remove(0);
        self.entries[index] = Some(Entry { kind: Kind::Thread { stack }, origin: None });
        let tcb = slot_of(index);
        // Works on a notification or endpoint slot (whatever it holds by then).
        let target = self.pick(|e| matches!(e.kind, Kind::Notification | Kind::Endpoint)).map_or(0, slot_of);
        let mode = self.rng.below(5);
        let top = self.stacks[stack].as_ptr() as u64 + STACK_BYTES as u64;
        let priority = if self.rng.below(4) == 0 { 9 } else { 10 };
        let cpu = self.cpu();
        let started = kobj::configure(tcb, slot::CNODE, slot::VSPACE, 0, 0)
            .and_then(|()| {
                kobj::write_entry(tcb, ramen_rt::entry_point(), top & !15, WORKER | mode << 16 | target)
            })
            .and_then(|()| kobj::set_priority(tcb, priority))
            .and_then(|()| kobj::set_affinity(tcb, cpu))
            .and_then(|()| kobj::resume(tcb));
        if self.note(started).is_some() {
            self.started += 1;
        }
    }

    fn make_frame(&mut self) {
        let Some(index) = self.empty_slot() else { return };
        if !self.retype(object::FRAME_4K, index) {
            return;
        }
        let pattern = (self.rng.below(255) + 1) as u8;
        self.entries[index] = Some(Entry { kind: Kind::Frame { pattern }, origin: None });
        let vaddr = CHURN_WINDOW + index as u64 * 4096;
        if let Some(mut mapping) = self.note(Mapping::new(slot_of(index), 1, vaddr, true, &mut Installed)) {
            mapping.bytes_mut().fill(pattern);
            self.maps[index] = Some(mapping);
        }
    }

    /// A copy or a badged copy of a notification or endpoint.
    fn copy(&mut self) {
        let Some(from) = self.pick(|e| matches!(e.kind, Kind::Notification | Kind::Endpoint)) else { return };
        let Some(to) = self.empty_slot() else { return };
        let kind = self.entries[from].map(|e| e.kind);
        let result = if self.rng.below(2) == 0 {
            kobj::copy(slot::CNODE, slot_of(to), 64, slot_of(from))
        } else {
            let badge = self.rng.below(1 << 20) + 1;
            kobj::mint(slot::CNODE, slot_of(to), 64, slot_of(from), object::rights::ALL, badge)
        };
        if self.note(result).is_some()
            && let Some(kind) = kind
        {
            self.entries[to] = Some(Entry { kind, origin: Some(from) });
        }
    }

    /// Moves a thread to a random CPU; often a second time at once, before its CPU
    /// has seen the first move.
    fn move_thread(&mut self) {
        let Some(index) = self.pick(|e| matches!(e.kind, Kind::Thread { .. })) else { return };
        let cpu = self.cpu();
        let result = kobj::set_affinity(slot_of(index), cpu);
        self.note(result);
        if self.rng.below(2) == 0 {
            let cpu = self.cpu();
            let result = kobj::set_affinity(slot_of(index), cpu);
            self.note(result);
        }
    }

    fn suspend_resume(&mut self) {
        let Some(index) = self.pick(|e| matches!(e.kind, Kind::Thread { .. })) else { return };
        let result =
            if self.rng.below(2) == 0 { kobj::suspend(slot_of(index)) } else { kobj::resume(slot_of(index)) };
        self.note(result);
    }

    fn signal(&mut self) {
        let Some(index) = self.pick(|e| matches!(e.kind, Kind::Notification | Kind::Endpoint)) else {
            return;
        };
        let words = [self.rng.next_u64()];
        let result = ramen_rt::nb_send(slot_of(index), &Message::new(0, &words));
        self.note(result);
    }

    /// Forgets slot `index` (already deleted or revoked in the kernel): a thread's
    /// stack goes to the back of the line, copies of it now descend from its origin.
    fn forget(&mut self, index: usize) {
        let Some(entry) = self.entries[index].take() else { return };
        self.maps[index] = None;
        if let Kind::Thread { stack } = entry.kind {
            self.free_stacks.push(stack);
            self.destroyed += 1;
        }
        for other in self.entries.iter_mut().flatten() {
            if other.origin == Some(index) {
                other.origin = entry.origin;
            }
        }
    }

    fn frame_intact(&mut self, index: usize) -> bool {
        let Some(Entry { kind: Kind::Frame { pattern }, .. }) = self.entries[index] else { return true };
        let Some(mapping) = self.maps[index].as_ref() else { return true };
        let intact = mapping.bytes().iter().all(|b| *b == pattern);
        if !intact {
            self.corrupt += 1;
            ramen_rt::println!("churn: frame in slot {} lost its pattern", slot_of(index));
        }
        intact
    }

    fn delete(&mut self) {
        let Some(index) = self.pick(|_| true) else { return };
        self.frame_intact(index);
        let result = kobj::delete(slot::CNODE, slot_of(index), 64);
        if self.note(result).is_some() {
            self.forget(index);
        }
    }

    /// Revokes one slot: every copy made from it (and from those) goes.
    fn revoke_one(&mut self) {
        let Some(index) = self.pick(|_| true) else { return };
        let result = kobj::revoke(slot::CNODE, slot_of(index), 64);
        if self.note(result).is_some() {
            self.revoke_below(index);
        }
    }

    /// Drops every copy made from `index` (and from those): a revoke removed them.
    /// Copies are of notifications and endpoints only: no stack or mapping goes.
    fn revoke_below(&mut self, index: usize) {
        while let Some(child) = (0..SLOTS).find(|i| self.entries[*i].is_some_and(|e| e.origin == Some(index)))
        {
            self.revoke_below(child);
            self.entries[child] = None;
            self.maps[child] = None;
        }
    }

    /// The kernel's own check of this CPU's run queue and this CSpace.
    fn check_invariants(&mut self) {
        if let Ok((violations, _, _)) = kobj::check_invariants(slot::DEBUG) {
            if violations != 0 {
                ramen_rt::println!("churn: {} broken invariants", violations);
            }
            self.broken += violations;
        }
    }

    fn check_frames(&mut self) {
        for index in 0..SLOTS {
            self.frame_intact(index);
        }
    }

    /// Revokes the whole region: everything in it is destroyed, running threads
    /// included, and its memory is reused by the next retype.
    fn revoke_region(&mut self) {
        self.check_frames();
        let result = kobj::revoke(slot::CNODE, CHURN_UNTYPED, 64);
        if self.note(result).is_some() {
            self.regions += 1;
            for index in 0..SLOTS {
                self.forget(index);
            }
        }
    }
}
