//! The per-core trace ring.
//!
//! Only the owning core records, so the producer side takes `&mut self` and needs no
//! atomics, locks or shared cache lines: `written` (and `dropped` in drop mode) are
//! the only fields the hot path writes, and they live in the core's own memory. The
//! consumer reads when tracing is stopped on that core (the kernel stops it with an
//! IPI before reading another core's ring), so producer and consumer never race.
//!
//! Overwrite mode never touches `read` on the hot path: the records a wrapped ring
//! overwrote are counted lazily, when the consumer looks, from `written - read`.

use crate::{Categories, EventKind, Record};

/// Records per core ring when the kernel has no reason to choose otherwise:
/// 4096 × 32 bytes = 128 KiB per core.
pub const DEFAULT_RING_RECORDS: usize = 4096;

/// What a full ring does with a new record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FullPolicy {
    /// Keep the newest records: the oldest one is overwritten (and counted lost).
    #[default]
    Overwrite,
    /// Keep the oldest records: the new one is dropped (and counted lost).
    Drop,
}

/// A single-producer ring of `N` records; `N` must be a power of two.
///
/// Cache-line aligned (64 bytes) so that rings of neighbouring cores laid out in one
/// array never share a line: one core's counters cannot sit next to another core's
/// first slot.
#[derive(Clone, Debug)]
#[repr(C, align(64))]
pub struct TraceRing<const N: usize> {
    slots: [Record; N],
    /// Records ever accepted; the next one goes to slot `written % N`.
    written: u64,
    /// Index (in the `written` numbering) of the oldest record not yet consumed.
    /// May lag more than `N` behind `written` in overwrite mode until [`Self::settle`].
    read: u64,
    /// Records refused in drop mode.
    dropped: u64,
    /// Records overwritten before anyone read them, as of the last settle.
    overwritten: u64,
    policy: FullPolicy,
}

impl<const N: usize> Default for TraceRing<N> {
    fn default() -> Self {
        Self::new(FullPolicy::default())
    }
}

impl<const N: usize> TraceRing<N> {
    const CAPACITY: u64 = {
        assert!(N.is_power_of_two(), "trace ring size must be a power of two");
        N as u64
    };

    /// An empty ring.
    pub const fn new(policy: FullPolicy) -> Self {
        let _ = Self::CAPACITY;
        TraceRing { slots: [Record::EMPTY; N], written: 0, read: 0, dropped: 0, overwritten: 0, policy }
    }

    /// Appends a record; returns whether it was stored.
    ///
    /// The hot path: two loads, a subtract and compare for "full", a policy test that
    /// is only reached when full, one masked index, a 32-byte store and an increment
    /// (about 12 instructions on x86_64, see `docs/tracing.md`).
    #[inline]
    pub fn record(&mut self, record: Record) -> bool {
        let full = self.written.wrapping_sub(self.read) >= Self::CAPACITY;
        if full && self.policy == FullPolicy::Drop {
            self.dropped = self.dropped.wrapping_add(1);
            return false;
        }
        // N is a power of two, so this is a mask and the index is provably in bounds.
        let slot = (self.written % Self::CAPACITY) as usize;
        if let Some(cell) = self.slots.get_mut(slot) {
            *cell = record;
        }
        self.written = self.written.wrapping_add(1);
        true
    }

    /// Records `kind` only if its category is enabled; the timestamp is read only
    /// then, so a disabled category costs a load, a test and a branch.
    #[inline(always)]
    pub fn record_if(
        &mut self,
        enabled: Categories,
        kind: EventKind,
        cpu: u16,
        thread: u32,
        args: [u64; 2],
        read_tsc: impl FnOnce() -> u64,
    ) {
        if enabled.intersects(kind.category()) {
            self.record(Record::new(kind, cpu, thread, read_tsc(), args));
        }
    }

    /// Number of slots.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// What a full ring does with a new record.
    pub const fn policy(&self) -> FullPolicy {
        self.policy
    }

    /// Changes the full policy. Records already held stay.
    pub fn set_policy(&mut self, policy: FullPolicy) {
        self.settle();
        self.policy = policy;
    }

    /// Records held and not yet consumed.
    pub fn len(&self) -> usize {
        // At most N, so the cast is lossless.
        self.live().min(Self::CAPACITY) as usize
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records lost so far, dropped or overwritten, since the ring was made or cleared.
    pub fn lost(&self) -> u64 {
        let pending = self.live().saturating_sub(Self::CAPACITY);
        self.dropped.wrapping_add(self.overwritten).wrapping_add(pending)
    }

    /// The held records, oldest first, without consuming them.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Record> + '_ {
        let len = self.len();
        let first = self.written.wrapping_sub(len as u64);
        (0..len).map(move |i| self.slot(first.wrapping_add(i as u64)))
    }

    /// Removes and yields the held records, oldest first. Lost counts are kept.
    pub fn drain(&mut self) -> Drain<'_, N> {
        self.settle();
        Drain { ring: self }
    }

    /// Forgets every record and the lost counts.
    pub fn clear(&mut self) {
        self.written = 0;
        self.read = 0;
        self.dropped = 0;
        self.overwritten = 0;
    }

    fn live(&self) -> u64 {
        self.written.wrapping_sub(self.read)
    }

    fn slot(&self, index: u64) -> Record {
        self.slots.get((index % Self::CAPACITY) as usize).copied().unwrap_or(Record::EMPTY)
    }

    /// Moves `read` past records that overwrite mode has already replaced.
    fn settle(&mut self) {
        let pending = self.live().saturating_sub(Self::CAPACITY);
        self.overwritten = self.overwritten.wrapping_add(pending);
        self.read = self.read.wrapping_add(pending);
    }
}

/// Iterator returned by [`TraceRing::drain`]; records not yet yielded stay in the ring.
#[derive(Debug)]
pub struct Drain<'a, const N: usize> {
    ring: &'a mut TraceRing<N>,
}

impl<const N: usize> Iterator for Drain<'_, N> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if self.ring.read == self.ring.written {
            return None;
        }
        let record = self.ring.slot(self.ring.read);
        self.ring.read = self.ring.read.wrapping_add(1);
        Some(record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let len = self.ring.len();
        (len, Some(len))
    }
}

impl<const N: usize> ExactSizeIterator for Drain<'_, N> {}

const _: () = assert!(core::mem::align_of::<TraceRing<1>>() == 64);
const _: () = assert!(core::mem::size_of::<TraceRing<1>>().is_multiple_of(64));

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use std::vec::Vec;

    fn rec(n: u64) -> Record {
        Record::new(EventKind::UserInstant, 0, 1, n, [n, 0])
    }

    #[test]
    fn overwrite_keeps_newest_and_counts_lost() {
        let mut ring = TraceRing::<4>::new(FullPolicy::Overwrite);
        for n in 0..10 {
            assert!(ring.record(rec(n)));
        }
        assert_eq!(ring.len(), 4);
        assert_eq!(ring.lost(), 6);
        let tscs: Vec<u64> = ring.iter().map(|r| r.tsc).collect();
        assert_eq!(tscs, [6, 7, 8, 9]);
        let drained: Vec<u64> = ring.drain().map(|r| r.tsc).collect();
        assert_eq!(drained, [6, 7, 8, 9]);
        assert!(ring.is_empty());
        assert_eq!(ring.lost(), 6, "draining keeps the lost count");
    }

    #[test]
    fn drop_keeps_oldest_and_counts_lost() {
        let mut ring = TraceRing::<4>::new(FullPolicy::Drop);
        let stored: Vec<bool> = (0..6).map(|n| ring.record(rec(n))).collect();
        assert_eq!(stored, [true, true, true, true, false, false]);
        assert_eq!(ring.lost(), 2);
        let drained: Vec<u64> = ring.drain().map(|r| r.tsc).collect();
        assert_eq!(drained, [0, 1, 2, 3]);
        assert!(ring.record(rec(6)), "space frees up once drained");
    }

    #[test]
    fn disabled_category_reads_no_timestamp() {
        let mut ring = TraceRing::<4>::default();
        ring.record_if(Categories::IPC, EventKind::IrqEnter, 0, 0, [0; 2], || panic!("tsc read"));
        assert!(ring.is_empty());
        ring.record_if(Categories::IRQ, EventKind::IrqEnter, 3, 9, [32, 0], || 77);
        assert_eq!(ring.iter().next(), Some(Record::new(EventKind::IrqEnter, 3, 9, 77, [32, 0])));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Record,
        Drain(usize),
        SetPolicy(bool),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => Just(Op::Record),
            2 => (0usize..10).prop_map(Op::Drain),
            1 => any::<bool>().prop_map(Op::SetPolicy),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        /// The ring behaves like a bounded queue that evicts the front (overwrite) or
        /// refuses the new element (drop), counting every record it loses.
        #[test]
        fn matches_a_bounded_queue(ops in proptest::collection::vec(op(), 0..200)) {
            const CAP: usize = 8;
            let mut ring = TraceRing::<CAP>::new(FullPolicy::Overwrite);
            let mut model = VecDeque::new();
            let mut lost = 0u64;
            let mut drop_mode = false;
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Record => {
                        let full = model.len() == CAP;
                        let stored = ring.record(rec(next));
                        prop_assert_eq!(stored, !(full && drop_mode));
                        if full {
                            lost += 1;
                            if !drop_mode {
                                model.pop_front();
                            }
                        }
                        if stored {
                            model.push_back(next);
                        }
                        next += 1;
                    }
                    Op::Drain(count) => {
                        let got: Vec<u64> = ring.drain().take(count).map(|r| r.tsc).collect();
                        let want: Vec<u64> = (0..count.min(model.len()))
                            .filter_map(|_| model.pop_front())
                            .collect();
                        prop_assert_eq!(got, want);
                    }
                    Op::SetPolicy(drop) => {
                        drop_mode = drop;
                        ring.set_policy(if drop { FullPolicy::Drop } else { FullPolicy::Overwrite });
                    }
                    Op::Clear => {
                        ring.clear();
                        model.clear();
                        lost = 0;
                    }
                }
                prop_assert_eq!(ring.len(), model.len());
                prop_assert_eq!(ring.lost(), lost);
                let held: Vec<u64> = ring.iter().map(|r| r.tsc).collect();
                prop_assert_eq!(held, model.iter().copied().collect::<Vec<_>>());
            }
        }
    }
}
