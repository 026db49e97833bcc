//! The per-core trace ring.
//!
//! Only the owning core records. Every field is an atomic used with plain loads and
//! stores (never a read-modify-write), which on x86_64 compile to the same `mov`s as
//! plain fields: the ring can be shared with the core that reads it (`&self`
//! everywhere, no lock, no `unsafe`) at no cost to the producer. `written` (and
//! `dropped` in drop mode) are the only fields the hot path writes, and they live in
//! the core's own memory.
//!
//! The consumer side (`drain`, `clear`, `set_policy`) must run while the producer is
//! stopped: the kernel quiesces every core before it reads another core's ring. If
//! the two ever overlapped, a record read could mix two events, but nothing worse.
//!
//! Overwrite mode never touches `read` on the hot path: the records a wrapped ring
//! overwrote are counted lazily, when the consumer looks, from `written - read`.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::Release};

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

/// One record slot: the record's 32 bytes as four words (`tsc`; the head,
/// [`Record::head`]; the two arguments).
#[derive(Debug)]
struct Slot([AtomicU64; 4]);

impl Slot {
    const fn empty() -> Slot {
        Slot([const { AtomicU64::new(0) }; 4])
    }

    #[inline(always)]
    fn store(&self, tsc: u64, head: u64, args: [u64; 2]) {
        let [t, h, a0, a1] = &self.0;
        t.store(tsc, Relaxed);
        h.store(head, Relaxed);
        a0.store(args[0], Relaxed);
        a1.store(args[1], Relaxed);
    }

    fn load(&self) -> Record {
        let [tsc, head, arg0, arg1] = &self.0;
        let (kind, cpu, thread) = Record::split_head(head.load(Relaxed));
        Record { tsc: tsc.load(Relaxed), kind, cpu, thread, args: [arg0.load(Relaxed), arg1.load(Relaxed)] }
    }
}

/// A single-producer ring of `N` records; `N` must be a power of two.
///
/// All-zero memory is a valid empty ring in overwrite mode (what
/// `TraceRing::new(FullPolicy::Overwrite)` makes), so a kernel can place a large ring
/// in zeroed frames rather than build it on a stack.
///
/// Cache-line aligned (64 bytes) so that rings of neighbouring cores laid out in one
/// array never share a line: one core's counters cannot sit next to another core's
/// first slot.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct TraceRing<const N: usize> {
    slots: [Slot; N],
    /// Records ever accepted; the next one goes to slot `written % N`.
    written: AtomicU64,
    /// Index (in the `written` numbering) of the oldest record not yet consumed.
    /// May lag more than `N` behind `written` in overwrite mode until [`Self::settle`].
    read: AtomicU64,
    /// The `written` count at which a new record is refused, negated: `-(read + N)` in
    /// drop mode, 0 (never) in overwrite mode, so that zero is the overwrite state.
    /// Kept by the consumer side; the producer's "full and dropping" test is one add
    /// and its carry (`written + neg_limit` carries exactly when `written >= limit`).
    neg_limit: AtomicU64,
    /// Records refused in drop mode.
    dropped: AtomicU64,
    /// Records overwritten before anyone read them, as of the last settle.
    overwritten: AtomicU64,
    /// Drop mode ([`FullPolicy::Drop`]) when set.
    drop_when_full: AtomicBool,
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
        TraceRing {
            slots: [const { Slot::empty() }; N],
            written: AtomicU64::new(0),
            read: AtomicU64::new(0),
            neg_limit: AtomicU64::new(match policy {
                FullPolicy::Drop => Self::CAPACITY.wrapping_neg(),
                FullPolicy::Overwrite => 0,
            }),
            dropped: AtomicU64::new(0),
            overwritten: AtomicU64::new(0),
            drop_when_full: AtomicBool::new(matches!(policy, FullPolicy::Drop)),
        }
    }

    /// Appends a record; returns whether it was stored. Only the owning core calls it.
    ///
    #[inline]
    pub fn record(&self, record: Record) -> bool {
        let head = Record::head(record.kind, record.cpu, record.thread);
        self.record_words(record.tsc, head, record.args)
    }

    /// [`Self::record`] with the record's head already packed ([`Record::head`]).
    #[inline(always)]
    pub fn record_words(&self, tsc: u64, head: u64, args: [u64; 2]) -> bool {
        self.batch().push(tsc, head, args)
    }

    /// Starts appending several records at once: the counters are read once, and
    /// written back once when the batch is dropped. Only the owning core batches.
    #[inline(always)]
    pub fn batch(&self) -> Batch<'_, N> {
        Batch { ring: self, written: self.written.load(Relaxed), neg_limit: self.neg_limit.load(Relaxed) }
    }

    /// Records `kind` only if its category is enabled; the timestamp is read only
    /// then, so a disabled category costs a load, a test and a branch.
    #[inline(always)]
    pub fn record_if(
        &self,
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
    pub fn policy(&self) -> FullPolicy {
        if self.drop_when_full.load(Relaxed) { FullPolicy::Drop } else { FullPolicy::Overwrite }
    }

    /// Changes the full policy. Records already held stay. Consumer side.
    pub fn set_policy(&self, policy: FullPolicy) {
        self.settle();
        self.drop_when_full.store(matches!(policy, FullPolicy::Drop), Relaxed);
        self.set_limit();
    }

    /// Recomputes `neg_limit` after `read` or the policy changed.
    fn set_limit(&self) {
        let neg_limit = if self.drop_when_full.load(Relaxed) {
            self.read.load(Relaxed).wrapping_add(Self::CAPACITY).wrapping_neg()
        } else {
            0
        };
        self.neg_limit.store(neg_limit, Relaxed);
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
        self.dropped.load(Relaxed).wrapping_add(self.overwritten.load(Relaxed)).wrapping_add(pending)
    }

    /// Records refused because the ring was full in drop mode.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Records overwritten before they were read (overwrite mode).
    pub fn overwritten(&self) -> u64 {
        let pending = self.live().saturating_sub(Self::CAPACITY);
        self.overwritten.load(Relaxed).wrapping_add(pending)
    }

    /// The held records, oldest first, without consuming them.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Record> + '_ {
        let len = self.len();
        let first = self.written.load(Relaxed).wrapping_sub(len as u64);
        (0..len).map(move |i| self.slot(first.wrapping_add(i as u64)))
    }

    /// Removes and yields the held records, oldest first. Lost counts are kept.
    /// Consumer side.
    pub fn drain(&self) -> Drain<'_, N> {
        self.settle();
        Drain { ring: self }
    }

    /// Forgets every record and the lost counts. Consumer side.
    pub fn clear(&self) {
        for counter in [&self.written, &self.read, &self.dropped, &self.overwritten] {
            counter.store(0, Relaxed);
        }
        self.set_limit();
    }

    fn live(&self) -> u64 {
        self.written.load(Relaxed).wrapping_sub(self.read.load(Relaxed))
    }

    fn slot(&self, index: u64) -> Record {
        self.slots.get((index % Self::CAPACITY) as usize).map_or(Record::EMPTY, Slot::load)
    }

    /// Moves `read` past records that overwrite mode has already replaced.
    fn settle(&self) {
        let pending = self.live().saturating_sub(Self::CAPACITY);
        self.overwritten.store(self.overwritten.load(Relaxed).wrapping_add(pending), Relaxed);
        self.read.store(self.read.load(Relaxed).wrapping_add(pending), Relaxed);
        self.set_limit();
    }
}

/// Records being appended to a ring ([`TraceRing::batch`]); they count as written
/// when the batch is dropped.
#[derive(Debug)]
pub struct Batch<'a, const N: usize> {
    ring: &'a TraceRing<N>,
    written: u64,
    neg_limit: u64,
}

impl<const N: usize> Batch<'_, N> {
    /// Appends a record (its head packed, [`Record::head`]); returns whether it was
    /// stored.
    ///
    /// The hot path: an add and its carry for "full and dropping" (never in overwrite
    /// mode), one masked index, four 8-byte stores and an increment (see
    /// `docs/tracing.md` for the instruction count).
    #[inline(always)]
    pub fn push(&mut self, tsc: u64, head: u64, args: [u64; 2]) -> bool {
        if self.written.overflowing_add(self.neg_limit).1 {
            let dropped = &self.ring.dropped;
            dropped.store(dropped.load(Relaxed).wrapping_add(1), Relaxed);
            return false;
        }
        // N is a power of two, so this is a mask and the index is provably in bounds.
        let slot = (self.written % TraceRing::<N>::CAPACITY) as usize;
        if let Some(cell) = self.ring.slots.get(slot) {
            cell.store(tsc, head, args);
        }
        self.written = self.written.wrapping_add(1);
        true
    }
}

impl<const N: usize> Drop for Batch<'_, N> {
    #[inline(always)]
    fn drop(&mut self) {
        self.ring.written.store(self.written, Release);
    }
}

/// Iterator returned by [`TraceRing::drain`]; records not yet yielded stay in the ring.
#[derive(Debug)]
pub struct Drain<'a, const N: usize> {
    ring: &'a TraceRing<N>,
}

impl<const N: usize> Iterator for Drain<'_, N> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        let read = self.ring.read.load(Relaxed);
        if read == self.ring.written.load(Relaxed) {
            return None;
        }
        let record = self.ring.slot(read);
        self.ring.read.store(read.wrapping_add(1), Relaxed);
        self.ring.set_limit();
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
        let ring = TraceRing::<4>::new(FullPolicy::Overwrite);
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
        assert_eq!((ring.dropped(), ring.overwritten()), (0, 6));
    }

    #[test]
    fn drop_keeps_oldest_and_counts_lost() {
        let ring = TraceRing::<4>::new(FullPolicy::Drop);
        let stored: Vec<bool> = (0..6).map(|n| ring.record(rec(n))).collect();
        assert_eq!(stored, [true, true, true, true, false, false]);
        assert_eq!(ring.lost(), 2);
        let drained: Vec<u64> = ring.drain().map(|r| r.tsc).collect();
        assert_eq!(drained, [0, 1, 2, 3]);
        assert_eq!((ring.dropped(), ring.overwritten()), (2, 0));
        assert!(ring.record(rec(6)), "space frees up once drained");
    }

    /// Every word of the ring, counters and slots.
    fn words<const N: usize>(ring: &TraceRing<N>) -> Vec<u64> {
        let counters = [&ring.written, &ring.read, &ring.neg_limit, &ring.dropped, &ring.overwritten];
        counters
            .iter()
            .map(|c| c.load(Relaxed))
            .chain([u64::from(ring.drop_when_full.load(Relaxed))])
            .chain(ring.slots.iter().flat_map(|s| s.0.iter().map(|w| w.load(Relaxed))))
            .collect()
    }

    #[test]
    fn an_empty_overwrite_ring_is_all_zero() {
        // The kernel places its rings in zeroed frames and relies on this.
        assert!(words(&TraceRing::<8>::new(FullPolicy::Overwrite)).iter().all(|w| *w == 0));
        assert!(words(&TraceRing::<8>::new(FullPolicy::Drop)).iter().any(|w| *w != 0));
        let ring = TraceRing::<8>::new(FullPolicy::Overwrite);
        for n in 0..20 {
            assert!(ring.record(rec(n)), "overwrite mode never refuses");
        }
        ring.clear();
        assert!(words(&ring).iter().take(6).all(|w| *w == 0), "cleared counters are zero again");
    }

    #[test]
    fn a_batch_counts_its_records_when_dropped() {
        let ring = TraceRing::<4>::new(FullPolicy::Drop);
        {
            let mut batch = ring.batch();
            for n in 0..6 {
                assert_eq!(batch.push(n, Record::head(EventKind::UserInstant as u16, 2, 7), [n, 1]), n < 4);
            }
            assert!(ring.is_empty(), "nothing counts before the batch is dropped");
        }
        assert_eq!(ring.len(), 4);
        assert_eq!(ring.lost(), 2);
        let first = ring.iter().next().unwrap();
        assert_eq!(first, Record::new(EventKind::UserInstant, 2, 7, 0, [0, 1]));
    }

    #[test]
    fn disabled_category_reads_no_timestamp() {
        let ring = TraceRing::<4>::default();
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
            let ring = TraceRing::<CAP>::new(FullPolicy::Overwrite);
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
