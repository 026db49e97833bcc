//! The per-core run queue: 256 priority levels, FIFO within a level, and the highest
//! non-empty level found in O(1) through a two-level bitmap.
//!
//! Higher numbers run first (as in seL4). The queues are intrusive: each thread's
//! links live in its TCB and are reached through [`ThreadLinks`], so queueing never
//! allocates. Round-robin within a level is [`RunQueue::rotate`], called when the
//! running thread's timeslice ends.
//!
//! Invariants:
//! - Bit `p % 64` of `words[p / 64]` is set exactly when level `p` is non-empty, and
//!   bit `w` of `summary` exactly when `words[w]` is non-zero.
//! - Each level is a doubly-linked list from `heads[p]` to `tails[p]`.
//! - A thread is in at most one level of one run queue; the kernel tracks which (the
//!   TCB's state and priority) and passes that level to [`RunQueue::remove`].

use core::num::NonZeroU64;

/// Priority levels.
pub const PRIORITIES: usize = 256;
const WORDS: usize = PRIORITIES / 64;

/// A thread, by the physical address of its TCB.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ThreadRef(NonZeroU64);

impl ThreadRef {
    /// The thread whose TCB is at `addr`, or `None` for zero.
    pub const fn new(addr: u64) -> Option<Self> {
        match NonZeroU64::new(addr) {
            Some(addr) => Some(Self(addr)),
            None => None,
        }
    }

    /// The TCB's physical address.
    pub const fn addr(self) -> u64 {
        self.0.get()
    }
}

/// A thread's run-queue links, stored in its TCB.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct RunLinks {
    /// The thread ahead of it in its level.
    pub prev: Option<ThreadRef>,
    /// The thread behind it in its level.
    pub next: Option<ThreadRef>,
}

/// Access to the run-queue links in TCBs (the kernel: TCB memory; tests: a map).
pub trait ThreadLinks {
    /// The links of `thread`.
    fn links(&self, thread: ThreadRef) -> RunLinks;
    /// Overwrites the links of `thread`.
    fn set_links(&mut self, thread: ThreadRef, links: RunLinks);
}

/// One core's ready threads.
#[derive(Clone, Debug)]
pub struct RunQueue {
    heads: [Option<ThreadRef>; PRIORITIES],
    tails: [Option<ThreadRef>; PRIORITIES],
    words: [u64; WORDS],
    summary: u64,
    len: usize,
}

impl Default for RunQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl RunQueue {
    /// An empty run queue.
    pub const fn new() -> Self {
        Self { heads: [None; PRIORITIES], tails: [None; PRIORITIES], words: [0; WORDS], summary: 0, len: 0 }
    }

    /// Threads queued.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// True if no thread is ready.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The highest non-empty level.
    #[inline(always)]
    pub fn highest(&self) -> Option<u8> {
        let word = 63u32.checked_sub(self.summary.leading_zeros())?;
        let bits = *self.words.get(word as usize)?;
        let bit = 63u32.checked_sub(bits.leading_zeros())?;
        u8::try_from(word * 64 + bit).ok()
    }

    /// The thread at the head of `priority`.
    pub fn head(&self, priority: u8) -> Option<ThreadRef> {
        self.heads.get(usize::from(priority)).copied().flatten()
    }

    /// Queues `thread` (not queued anywhere) at the back of `priority`.
    pub fn enqueue<L: ThreadLinks>(&mut self, links: &mut L, thread: ThreadRef, priority: u8) {
        let p = usize::from(priority);
        let tail = self.tails.get(p).copied().flatten();
        links.set_links(thread, RunLinks { prev: tail, next: None });
        match tail {
            Some(tail) => {
                let old = links.links(tail);
                links.set_links(tail, RunLinks { next: Some(thread), ..old });
            }
            None => self.set_head(p, Some(thread)),
        }
        self.set_tail(p, Some(thread));
        self.mark(p, true);
        self.len = self.len.saturating_add(1);
    }

    /// Queues `thread` (not queued anywhere) at the front of `priority`: for a thread
    /// preempted before its timeslice ended.
    pub fn enqueue_front<L: ThreadLinks>(&mut self, links: &mut L, thread: ThreadRef, priority: u8) {
        let p = usize::from(priority);
        let head = self.head(priority);
        links.set_links(thread, RunLinks { prev: None, next: head });
        match head {
            Some(head) => {
                let old = links.links(head);
                links.set_links(head, RunLinks { prev: Some(thread), ..old });
            }
            None => self.set_tail(p, Some(thread)),
        }
        self.set_head(p, Some(thread));
        self.mark(p, true);
        self.len = self.len.saturating_add(1);
    }

    /// Takes `thread`, queued at `priority`, out of the queue.
    pub fn remove<L: ThreadLinks>(&mut self, links: &mut L, thread: ThreadRef, priority: u8) {
        let p = usize::from(priority);
        let RunLinks { prev, next } = links.links(thread);
        match prev {
            Some(prev) => {
                let old = links.links(prev);
                links.set_links(prev, RunLinks { next, ..old });
            }
            None => self.set_head(p, next),
        }
        match next {
            Some(next) => {
                let old = links.links(next);
                links.set_links(next, RunLinks { prev, ..old });
            }
            None => self.set_tail(p, prev),
        }
        links.set_links(thread, RunLinks::default());
        if self.head(priority).is_none() {
            self.mark(p, false);
        }
        self.len = self.len.saturating_sub(1);
    }

    /// Takes the first thread of the highest non-empty level out of the queue.
    pub fn pop_highest<L: ThreadLinks>(&mut self, links: &mut L) -> Option<(ThreadRef, u8)> {
        let priority = self.highest()?;
        let thread = self.head(priority)?;
        self.remove(links, thread, priority);
        Some((thread, priority))
    }

    /// Round-robin: moves the head of `priority` to its back.
    pub fn rotate<L: ThreadLinks>(&mut self, links: &mut L, priority: u8) {
        if let Some(thread) = self.head(priority) {
            self.remove(links, thread, priority);
            self.enqueue(links, thread, priority);
        }
    }

    fn set_head(&mut self, p: usize, thread: Option<ThreadRef>) {
        if let Some(head) = self.heads.get_mut(p) {
            *head = thread;
        }
    }

    fn set_tail(&mut self, p: usize, thread: Option<ThreadRef>) {
        if let Some(tail) = self.tails.get_mut(p) {
            *tail = thread;
        }
    }

    fn mark(&mut self, p: usize, non_empty: bool) {
        let (w, bit) = (p / 64, 1u64 << (p % 64));
        let Some(word) = self.words.get_mut(w) else { return };
        if non_empty {
            *word |= bit;
        } else {
            *word &= !bit;
        }
        let summary_bit = 1u64 << w;
        if *word == 0 {
            self.summary &= !summary_bit;
        } else {
            self.summary |= summary_bit;
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::collections::{BTreeMap, VecDeque};
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    #[derive(Default)]
    struct Tcbs(BTreeMap<ThreadRef, RunLinks>);

    impl ThreadLinks for Tcbs {
        fn links(&self, thread: ThreadRef) -> RunLinks {
            self.0.get(&thread).copied().unwrap_or_default()
        }
        fn set_links(&mut self, thread: ThreadRef, links: RunLinks) {
            self.0.insert(thread, links);
        }
    }

    fn thread(n: u64) -> ThreadRef {
        ThreadRef::new(0x1000 * (n + 1)).unwrap()
    }

    #[test]
    fn highest_level_runs_first_and_levels_are_fifo() {
        let (mut q, mut tcbs) = (RunQueue::new(), Tcbs::default());
        q.enqueue(&mut tcbs, thread(0), 3);
        q.enqueue(&mut tcbs, thread(1), 200);
        q.enqueue(&mut tcbs, thread(2), 3);
        q.enqueue(&mut tcbs, thread(3), 255);
        q.enqueue(&mut tcbs, thread(4), 0);
        assert_eq!(q.highest(), Some(255));
        let order: Vec<_> = core::iter::from_fn(|| q.pop_highest(&mut tcbs)).collect();
        assert_eq!(
            order,
            [(thread(3), 255), (thread(1), 200), (thread(0), 3), (thread(2), 3), (thread(4), 0)]
        );
        assert!(q.is_empty());
        assert_eq!(q.highest(), None);
    }

    #[test]
    fn rotate_is_round_robin_and_front_enqueue_jumps_the_line() {
        let (mut q, mut tcbs) = (RunQueue::new(), Tcbs::default());
        for n in 0..3 {
            q.enqueue(&mut tcbs, thread(n), 64);
        }
        q.rotate(&mut tcbs, 64);
        assert_eq!(q.head(64), Some(thread(1)));
        q.enqueue_front(&mut tcbs, thread(9), 64);
        let order: Vec<_> = core::iter::from_fn(|| q.pop_highest(&mut tcbs).map(|(t, _)| t)).collect();
        assert_eq!(order, [thread(9), thread(1), thread(2), thread(0)]);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Enqueue(u8),
        EnqueueFront(u8),
        Remove(usize),
        Pop,
        Rotate(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few levels, so levels hold several threads; the extremes of the bitmap too.
        let level = prop_oneof![Just(0u8), Just(63), Just(64), Just(255), 0u8..8];
        prop_oneof![
            level.clone().prop_map(Op::Enqueue),
            level.clone().prop_map(Op::EnqueueFront),
            any::<usize>().prop_map(Op::Remove),
            Just(Op::Pop),
            level.prop_map(Op::Rotate),
        ]
    }

    proptest! {
        #![proptest_config(crate::testing::config())]

        /// The queue behaves like one `VecDeque` per level, scanned from the top.
        #[test]
        fn run_queue_matches_a_model(ops in proptest::collection::vec(op(), 1..64)) {
            let (mut q, mut tcbs) = (RunQueue::new(), Tcbs::default());
            let mut model: BTreeMap<u8, VecDeque<ThreadRef>> = BTreeMap::new();
            let mut next_id = 0;
            for op in ops {
                match op {
                    Op::Enqueue(p) | Op::EnqueueFront(p) => {
                        let t = thread(next_id);
                        next_id += 1;
                        if matches!(op, Op::Enqueue(_)) {
                            q.enqueue(&mut tcbs, t, p);
                            model.entry(p).or_default().push_back(t);
                        } else {
                            q.enqueue_front(&mut tcbs, t, p);
                            model.entry(p).or_default().push_front(t);
                        }
                    }
                    Op::Remove(pick) => {
                        let queued: Vec<(u8, ThreadRef)> =
                            model.iter().flat_map(|(p, level)| level.iter().map(|t| (*p, *t))).collect();
                        if let Some(&(p, t)) = queued.get(pick % queued.len().max(1)) {
                            q.remove(&mut tcbs, t, p);
                            model.get_mut(&p).unwrap().retain(|x| *x != t);
                        }
                    }
                    Op::Pop => {
                        let expected = model.iter_mut().rev().find(|(_, l)| !l.is_empty())
                            .map(|(p, l)| (l.pop_front().unwrap(), *p));
                        prop_assert_eq!(q.pop_highest(&mut tcbs), expected);
                    }
                    Op::Rotate(p) => {
                        q.rotate(&mut tcbs, p);
                        if let Some(level) = model.get_mut(&p) {
                            level.rotate_left(usize::from(!level.is_empty()));
                        }
                    }
                }
                model.retain(|_, level| !level.is_empty());
                prop_assert_eq!(q.highest(), model.keys().next_back().copied());
                prop_assert_eq!(q.len(), model.values().map(VecDeque::len).sum::<usize>());
                for (p, level) in &model {
                    prop_assert_eq!(q.head(*p), level.front().copied());
                }
            }
        }
    }
}
