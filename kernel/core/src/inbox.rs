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
    /// Stop the thread (suspend).
    Suspend(ThreadRef),
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
            Self::Wake(t) | Self::Suspend(t) | Self::Forget(t) | Self::Adopt(t) | Self::Release(t, _) => t,
        }
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
    /// keeping the others in order; returns how many it dropped.
    pub fn forget(&mut self, thread: ThreadRef) -> usize {
        let mut kept = 0;
        for i in 0..self.len {
            let request = self.items.get_mut(i).and_then(Option::take);
            if let Some(request) = request.filter(|r| r.thread() != thread)
                && let Some(slot) = self.items.get_mut(kept)
            {
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
        for i in 0..INBOX_CAPACITY as u64 - 1 {
            assert!(inbox.push(Request::Wake(thread(i + 1))));
        }
        assert!(!inbox.push(Request::Wake(thread(99))), "the last slot is promised");
        assert!(!inbox.reserve());
        inbox.push_reserved(Request::Adopt(thread(100)));
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
                1 => Request::Suspend(thread(t)),
                2 => Request::Forget(thread(t)),
                3 => Request::Adopt(thread(t)),
                _ => Request::Release(thread(t), 3),
            };
            let all: Vec<Request> = requests.iter().copied().map(make).collect();
            let mut inbox = Inbox::new();
            for r in &all {
                prop_assert!(inbox.push(*r));
            }
            let dropped = inbox.forget(thread(victim));
            let expected: Vec<Request> = all.iter().copied().filter(|r| r.thread() != thread(victim)).collect();
            prop_assert_eq!(dropped, all.len() - expected.len());
            prop_assert_eq!(inbox.len(), expected.len());
            prop_assert_eq!(drain(&mut inbox), expected);
            prop_assert!(inbox.is_empty());
        }
    }
}
