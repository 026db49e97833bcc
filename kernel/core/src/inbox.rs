//! A CPU's inbox: the requests other CPUs post to it (wake a thread it owns, stop
//! one, forget a destroyed one, adopt or release one that migrates).
//!
//! The kernel keeps one per CPU behind a short spin lock; this is the data
//! structure: bounded, oldest first, with slots a poster can reserve ahead of time
//! (a CPU inside a `CAP_LOCK` read section must never wait for space, so it reserves
//! before its point of no return and posts after it).

use crate::runqueue::ThreadRef;

/// Requests one CPU can post to another's inbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Make the thread runnable here (it is owned by the receiving CPU).
    Wake(ThreadRef),
    /// Make the thread runnable if it is stopped (suspended or faulted), and only
    /// then: `RESUME` decided on a state it read from another CPU, which may be stale.
    /// The given CPU waits until that is done (or the thread is gone), as for
    /// `Suspend`: a later request of its own cannot overtake this one (one sent
    /// straight to where the thread went while this one is forwarded there).
    Resume(ThreadRef, u32),
    /// Stop the thread (suspend); the given CPU waits until that is done (or the
    /// thread is gone) before its system call returns.
    Suspend(ThreadRef, u32),
    /// The thread was destroyed: stop it and drop every reference this CPU keeps to
    /// it (its FPU ownership); its memory may be reused once this is done.
    Forget(ThreadRef),
    /// Take ownership of the thread (migration); run it if it was runnable.
    Adopt(ThreadRef),
    /// The thread's affinity changed to the given CPU: give it away.
    Release(ThreadRef, u32),
}

impl Request {
    /// The thread the request is about.
    #[inline]
    pub const fn thread(self) -> ThreadRef {
        match self {
            Self::Wake(t)
            | Self::Resume(t, _)
            | Self::Suspend(t, _)
            | Self::Forget(t)
            | Self::Adopt(t)
            | Self::Release(t, _) => t,
        }
    }

    /// The CPU waiting for the request to be carried out or dropped, if any.
    #[inline]
    pub const fn waiter(self) -> Option<u32> {
        match self {
            Self::Resume(_, waiter) | Self::Suspend(_, waiter) => Some(waiter),
            Self::Wake(_) | Self::Forget(_) | Self::Adopt(_) | Self::Release(..) => None,
        }
    }
}

/// What the CPU draining its inbox does with a request: the rule that makes every
/// request act on the thread's owner, wherever the thread has gone since it was
/// posted (`Tcb::cpu`, which only the owner changes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Carry it out here (this CPU owns the thread).
    Apply,
    /// Post it again to the thread's owner (it moved on).
    Forward(u32),
    /// Drop it: the thread was destroyed (a suspend's or resume's waiter is told it is done), or
    /// an adoption reached a CPU the thread already left (the CPU that moved it on
    /// posted its own adoption to where it went).
    Drop,
}

/// Where `request` goes when drained by CPU `here`, for a thread owned by `owner`
/// (`dead`: destroyed and forgotten by its owner).
pub const fn route(request: Request, owner: u32, here: u32, dead: bool) -> Route {
    if dead {
        return Route::Drop;
    }
    if owner == here {
        return Route::Apply;
    }
    match request {
        Request::Adopt(_) => Route::Drop,
        Request::Wake(_)
        | Request::Resume(..)
        | Request::Suspend(..)
        | Request::Forget(_)
        | Request::Release(..) => Route::Forward(owner),
    }
}

/// Requests waiting for a CPU, bounded: a full inbox makes the sender wait for the
/// owner to drain it (the owner never waits on anyone's inbox while holding its own).
pub const INBOX_CAPACITY: usize = 64;
/// Requests handed out per [`Inbox::take_batch`] (per lock hold when draining).
pub const BATCH: usize = 4;

/// One CPU's incoming requests, oldest first.
pub struct Inbox {
    items: [Option<Request>; INBOX_CAPACITY],
    len: usize,
    /// Slots promised to posters ([`Inbox::reserve`]) that have not posted yet: a
    /// push that is not one of them finds the inbox full this much earlier.
    reserved: usize,
    /// Flow id of the last traced wake-up IPI that came with these requests (0: none).
    ipi_flow: u64,
}

impl Default for Inbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Inbox {
    /// An empty inbox.
    pub const fn new() -> Self {
        Self { items: [None; INBOX_CAPACITY], len: 0, reserved: 0, ipi_flow: 0 }
    }

    /// Appends `request` unless the inbox (with its reserved slots) is full.
    #[inline]
    pub fn push(&mut self, request: Request) -> bool {
        if self.len + self.reserved >= INBOX_CAPACITY {
            return false;
        }
        self.append(request)
    }

    #[inline]
    fn append(&mut self, request: Request) -> bool {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(request);
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// Promises one slot to a poster that will [`push_reserved`](Self::push_reserved)
    /// later; false if there is no room.
    #[inline]
    pub fn reserve(&mut self) -> bool {
        if self.len + self.reserved >= INBOX_CAPACITY {
            return false;
        }
        self.reserved += 1;
        true
    }

    /// Posts into a slot [`reserve`](Self::reserve) promised (room is certain).
    #[inline]
    pub fn push_reserved(&mut self, request: Request) {
        self.unreserve();
        let _ = self.append(request);
    }

    /// Gives back a promised slot that will not be used.
    #[inline]
    pub fn unreserve(&mut self) {
        self.reserved = self.reserved.saturating_sub(1);
    }

    /// Remembers the flow id of the traced IPI that announces these requests.
    #[inline]
    pub fn set_ipi_flow(&mut self, flow: u64) {
        if flow != 0 {
            self.ipi_flow = flow;
        }
    }

    /// Drops every request about `thread` (destroyed: nothing may touch it again),
    /// keeping the others in order, and hands each dropped one to `dropped` (a
    /// suspend's waiter must hear it is done); returns how many it dropped.
    pub fn forget(&mut self, thread: ThreadRef, mut dropped: impl FnMut(Request)) -> usize {
        let mut kept = 0;
        for i in 0..self.len {
            let Some(request) = self.items.get_mut(i).and_then(Option::take) else { continue };
            if request.thread() == thread {
                dropped(request);
            } else if let Some(slot) = self.items.get_mut(kept) {
                *slot = Some(request);
                kept += 1;
            }
        }
        let dropped = self.len - kept;
        self.len = kept;
        dropped
    }

    /// Moves up to [`BATCH`] of the oldest requests into `out` (the rest move down);
    /// returns how many, and the IPI flow id. Copies only what is there: the whole
    /// inbox is 1.5 KiB, and copying it on every kernel exit cost the slow path about
    /// 1,100 instructions per IPC.
    #[inline]
    pub fn take_batch(&mut self, out: &mut [Option<Request>; BATCH]) -> (usize, u64) {
        let n = self.len.min(BATCH);
        for (dst, src) in out.iter_mut().zip(self.items.iter_mut()).take(n) {
            *dst = src.take();
        }
        if self.len > n {
            self.items.copy_within(n..self.len, 0);
        }
        self.len -= n;
        (n, core::mem::take(&mut self.ipi_flow))
    }

    /// Requests waiting.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if nothing waits.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots promised to posters that have not posted yet.
    #[inline]
    pub fn reserved(&self) -> usize {
        self.reserved
    }
}

/// Requests a CPU could not post yet because their target's inbox was full, held by
/// the poster in order. A CPU never waits for another's full inbox while it may
/// hold something that CPU waits for: the target may be spinning for `CAP_LOCK`,
/// held by the poster (a destroy posting `Forget`, a slow-path wake-up), and drains
/// its inbox only after it gets the lock. The poster delivers what it holds whenever
/// it waits or leaves the kernel (`sched::flush_outbox`).
pub const OUTBOX_CAPACITY: usize = 128;

/// One CPU's held requests, oldest first, each with its target CPU.
pub struct Outbox {
    items: [Option<(u32, Request)>; OUTBOX_CAPACITY],
    len: usize,
}

impl Default for Outbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Outbox {
    /// Nothing held.
    pub const fn new() -> Self {
        Self { items: [None; OUTBOX_CAPACITY], len: 0 }
    }

    /// True if nothing is held.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Requests held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if a request for `target` is held (a new one must queue behind it).
    pub fn holds_for(&self, target: u32) -> bool {
        self.items.iter().take(self.len).flatten().any(|(t, _)| *t == target)
    }

    /// Holds `request` for `target`, behind everything held; false if full.
    pub fn push(&mut self, target: u32, request: Request) -> bool {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = Some((target, request));
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// Offers the held requests to `deliver`, oldest first; keeps those it refuses,
    /// and every later one for a target that refused (each target's requests stay
    /// in order), in their order. Returns how many were delivered.
    pub fn flush(&mut self, mut deliver: impl FnMut(u32, Request) -> bool) -> usize {
        let mut blocked = [0u64; crate::topology::MAX_CPUS / 64];
        let is_blocked = |blocked: &[u64], t: u32| {
            blocked.get(t as usize / 64).is_some_and(|word| word & (1 << (t % 64)) != 0)
        };
        let (mut kept, mut delivered) = (0, 0);
        for i in 0..self.len {
            let Some((target, request)) = self.items.get_mut(i).and_then(Option::take) else { continue };
            if !is_blocked(&blocked, target) && deliver(target, request) {
                delivered += 1;
                continue;
            }
            if let Some(word) = blocked.get_mut(target as usize / 64) {
                *word |= 1 << (target % 64);
            }
            if let Some(slot) = self.items.get_mut(kept) {
                *slot = Some((target, request));
                kept += 1;
            }
        }
        self.len = kept;
        delivered
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    fn thread(n: u64) -> ThreadRef {
        ThreadRef::new(n * 4096).unwrap()
    }

    fn drain(inbox: &mut Inbox) -> Vec<Request> {
        let mut all = Vec::new();
        loop {
            let mut batch = [None; BATCH];
            let (n, _) = inbox.take_batch(&mut batch);
            if n == 0 {
                return all;
            }
            all.extend(batch.iter().take(n).flatten().copied());
        }
    }

    #[test]
    fn reserved_slots_are_kept_for_their_posters() {
        let mut inbox = Inbox::new();
        assert!(inbox.reserve());
        assert_eq!(inbox.reserved(), 1);
        for i in 0..INBOX_CAPACITY as u64 - 1 {
            assert!(inbox.push(Request::Wake(thread(i + 1))));
        }
        assert!(!inbox.push(Request::Wake(thread(99))), "the last slot is promised");
        assert!(!inbox.reserve());
        inbox.push_reserved(Request::Adopt(thread(100)));
        assert_eq!(inbox.reserved(), 0, "the promise is kept");
        assert_eq!(inbox.len(), INBOX_CAPACITY);
        assert_eq!(drain(&mut inbox).last(), Some(&Request::Adopt(thread(100))));
    }

    proptest! {
        /// Forgetting a thread drops exactly its requests and keeps the others in
        /// order, whatever the mix; batches hand requests out oldest first.
        #[test]
        fn forget_drops_one_threads_requests_only(
            requests in proptest::collection::vec((1u64..6, 0u8..5), 0..INBOX_CAPACITY),
            victim in 1u64..6,
        ) {
            let make = |(t, kind): (u64, u8)| match kind {
                0 => Request::Wake(thread(t)),
                1 => Request::Suspend(thread(t), 1),
                2 => Request::Forget(thread(t)),
                3 => Request::Adopt(thread(t)),
                _ => Request::Release(thread(t), 3),
            };
            let all: Vec<Request> = requests.iter().copied().map(make).collect();
            let mut inbox = Inbox::new();
            for r in &all {
                prop_assert!(inbox.push(*r));
            }
            let mut handed = Vec::new();
            let dropped = inbox.forget(thread(victim), |r| handed.push(r));
            let expected: Vec<Request> = all.iter().copied().filter(|r| r.thread() != thread(victim)).collect();
            prop_assert_eq!(dropped, all.len() - expected.len());
            let gone: Vec<Request> = all.iter().copied().filter(|r| r.thread() == thread(victim)).collect();
            prop_assert_eq!(handed, gone);
            prop_assert_eq!(inbox.len(), expected.len());
            prop_assert_eq!(drain(&mut inbox), expected);
            prop_assert!(inbox.is_empty());
        }
    }
    #[test]
    fn an_outbox_keeps_what_it_cannot_deliver_in_order() {
        let mut outbox = Outbox::new();
        for i in 0..OUTBOX_CAPACITY as u64 {
            assert!(outbox.push((i % 3) as u32, Request::Wake(thread(i + 1))));
        }
        assert!(!outbox.push(0, Request::Wake(thread(999))), "full");
        assert!(outbox.holds_for(2) && !outbox.holds_for(3));
        // Target 1 takes only two; target 2 takes everything.
        let mut taken = Vec::new();
        let mut room_on_1 = 2;
        let delivered = outbox.flush(|target, request| {
            let ok = match target {
                1 if room_on_1 > 0 => {
                    room_on_1 -= 1;
                    true
                }
                2 => true,
                _ => false,
            };
            if ok {
                taken.push((target, request));
            }
            ok
        });
        assert_eq!(delivered, taken.len());
        let ones: Vec<_> = taken.iter().filter(|(t, _)| *t == 1).map(|(_, r)| *r).collect();
        assert_eq!(ones, [Request::Wake(thread(2)), Request::Wake(thread(5))], "oldest first, then blocked");
        // What is left: every request for 0, and 1's from the third on, in order.
        let mut left = Vec::new();
        outbox.flush(|target, request| {
            left.push((target, request));
            true
        });
        let expected: Vec<_> = (0..OUTBOX_CAPACITY as u64)
            .map(|i| ((i % 3) as u32, Request::Wake(thread(i + 1))))
            .filter(|(t, r)| *t == 0 || (*t == 1 && !ones.contains(r)))
            .collect();
        assert_eq!(left, expected);
        assert!(outbox.is_empty());
    }

    proptest! {
        /// Whatever each target accepts, an outbox delivers each target's requests
        /// in the order they were held, and keeps the rest.
        #[test]
        fn an_outbox_delivers_each_targets_requests_in_order(
            held in proptest::collection::vec(0u32..4, 0..OUTBOX_CAPACITY),
            accepts in proptest::collection::vec(proptest::bool::ANY, 0..(2 * OUTBOX_CAPACITY)),
        ) {
            let mut outbox = Outbox::new();
            for (i, target) in held.iter().enumerate() {
                prop_assert!(outbox.push(*target, Request::Wake(thread(i as u64 + 1))));
            }
            let mut answers = accepts.iter().copied().chain(core::iter::repeat(true));
            let mut delivered = Vec::new();
            while !outbox.is_empty() {
                outbox.flush(|target, request| {
                    let ok = answers.next().unwrap_or(true);
                    if ok {
                        delivered.push((target, request));
                    }
                    ok
                });
            }
            for target in 0..4u32 {
                let sent: Vec<_> = delivered.iter().filter(|(t, _)| *t == target).map(|(_, r)| *r).collect();
                let wanted: Vec<_> = held
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| **t == target)
                    .map(|(i, _)| Request::Wake(thread(i as u64 + 1)))
                    .collect();
                prop_assert_eq!(sent, wanted);
            }
        }
    }
    #[test]
    fn requests_act_on_the_owner_wherever_the_thread_went() {
        let t = thread(1);
        let all = [
            Request::Wake(t),
            Request::Resume(t, 3),
            Request::Suspend(t, 3),
            Request::Forget(t),
            Request::Adopt(t),
            Request::Release(t, 2),
        ];
        for request in all {
            // A destroyed thread: nothing is done, whoever owns it.
            assert_eq!(route(request, 0, 0, true), Route::Drop);
            assert_eq!(route(request, 1, 0, true), Route::Drop);
            // Owned here: carried out here.
            assert_eq!(route(request, 4, 4, false), Route::Apply);
            // Moved on: followed to the owner, except an adoption, which the CPU
            // that moved it on posted anew.
            let moved = route(request, 5, 4, false);
            match request {
                Request::Adopt(_) => assert_eq!(moved, Route::Drop),
                _ => assert_eq!(moved, Route::Forward(5)),
            }
        }
    }
}
