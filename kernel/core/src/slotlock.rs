//! A capability slot's lock word: the lock that a lock-free capability change
//! ([`crate::light`]) holds on the slot, and the version that read sections check
//! their reads of it against (a seqlock).
//!
//! The word is even while the slot is free and odd while a change holds it. Taking it
//! is a compare-exchange from even to odd that is only ever tried (a change that
//! cannot take a slot lets go of the ones it holds and starts again, so no change
//! waits while holding one). Releasing it stores the taken value plus 2 if the change
//! wrote the slot's capability, or the taken value itself if it only relinked the
//! slot: so the even value is the capability's version, and a reader that finds the
//! same even value before and after reading the capability read it whole.
//!
//! The `loom` model below checks both halves: a reader never sees half of a change,
//! and two changes never hold one slot.

#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering, fence};

#[cfg(not(loom))]
use core::sync::atomic::{AtomicU64, Ordering, fence};

/// Takes `word` if it is free; returns the even value it had (for [`release`]).
#[inline]
pub fn try_take(word: &AtomicU64) -> Option<u64> {
    let now = word.load(Ordering::Relaxed);
    if now & 1 != 0 || word.compare_exchange(now, now + 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
        return None;
    }
    // The writes that follow must not be seen before the odd value: a reader that sees
    // one of them sees the word moved when it checks again (this fence pairs with the
    // reader's acquire fence). On x86 the locked compare-exchange already orders them.
    fence(Ordering::Release);
    Some(now)
}

/// Releases `word`, taken at the even value `taken`: its next version if the holder
/// wrote the capability (`written`), the same one if it only changed the links.
#[inline]
pub fn release(word: &AtomicU64, taken: u64, written: bool) {
    word.store(if written { taken + 2 } else { taken }, Ordering::Release);
}

/// A seqlock read: runs `read` until it ran while nobody held `word` and the word did
/// not move meanwhile; returns its result and the version it ran at (even). `spin`
/// runs between tries (a holder waits for nothing, so this is a few stores long).
#[inline(always)]
pub fn read<T>(word: &AtomicU64, mut read: impl FnMut() -> T, mut spin: impl FnMut()) -> (T, u64) {
    loop {
        let before = word.load(Ordering::Acquire);
        if before & 1 == 0 {
            let value = read();
            // The reads above stay before the check (pairs with `try_take`'s fence).
            fence(Ordering::Acquire);
            if word.load(Ordering::Relaxed) == before {
                return (value, before);
            }
        }
        spin();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_taken_word_cannot_be_taken_again_and_release_sets_the_version() {
        let word = AtomicU64::new(4);
        let taken = try_take(&word).expect("free");
        assert_eq!(taken, 4);
        assert_eq!(try_take(&word), None, "held");
        release(&word, taken, false);
        assert_eq!(word.load(Ordering::Relaxed), 4, "links only: same version");
        let taken = try_take(&word).expect("free again");
        release(&word, taken, true);
        assert_eq!(word.load(Ordering::Relaxed), 6, "capability written: next version");
        assert_eq!(read(&word, || 7, || ()), (7, 6));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    extern crate std;
    use super::{read, release, try_take};
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicU64, Ordering};
    use loom::thread;

    /// A slot's capability as two words, written by a change holding the slot and
    /// read by a seqlock reader: every interleaving, every allowed reordering of the
    /// relaxed data accesses. The reader sees the old pair or the new one, never a mix,
    /// and the version moves with the write.
    #[test]
    fn loom_a_reader_never_sees_half_a_change() {
        loom::model(|| {
            let word = Arc::new(AtomicU64::new(0));
            let data = Arc::new([AtomicU64::new(1), AtomicU64::new(1)]);
            let writer = {
                let (word, data) = (word.clone(), data.clone());
                thread::spawn(move || {
                    let taken = try_take(&word).expect("nobody else takes it");
                    data[0].store(2, Ordering::Relaxed);
                    data[1].store(2, Ordering::Relaxed);
                    release(&word, taken, true);
                })
            };
            let (pair, version) = read(
                &word,
                || (data[0].load(Ordering::Relaxed), data[1].load(Ordering::Relaxed)),
                thread::yield_now,
            );
            assert!(
                pair == (1, 1) && version == 0 || pair == (2, 2) && version == 2,
                "{pair:?} at {version}"
            );
            writer.join().expect("writer");
        });
    }

    /// Two changes trying one slot, each retrying until it takes it: they never hold
    /// it together (a plain load and store under it lose no update).
    #[test]
    fn loom_two_changes_never_hold_one_slot() {
        loom::model(|| {
            let word = Arc::new(AtomicU64::new(0));
            let count = Arc::new(AtomicU64::new(0));
            let change = |word: &AtomicU64, count: &AtomicU64| {
                let taken = loop {
                    if let Some(taken) = try_take(word) {
                        break taken;
                    }
                    thread::yield_now();
                };
                let seen = count.load(Ordering::Relaxed);
                count.store(seen + 1, Ordering::Relaxed);
                release(word, taken, true);
            };
            let other = {
                let (word, count) = (word.clone(), count.clone());
                thread::spawn(move || change(&word, &count))
            };
            change(&word, &count);
            other.join().expect("thread");
            assert_eq!(count.load(Ordering::Relaxed), 2);
            assert_eq!(word.load(Ordering::Relaxed), 4);
        });
    }
}
