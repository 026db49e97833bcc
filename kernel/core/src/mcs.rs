//! A queue lock (Mellor-Crummey and Scott) with one node per CPU, for the kernel's
//! global capability lock's write side.
//!
//! A test-and-set spin lock makes every waiting CPU hammer the lock's cache line,
//! and whichever CPU's compare-exchange lands first wins: on a machine with 64 CPUs
//! over two sockets, each release sends the line round every waiter, and a CPU on the
//! far socket can lose every time. Here a CPU joins the queue with one swap on the
//! tail, then spins on a flag in its *own* node (its own cache line) until its
//! predecessor hands the lock on: one write to one waiter's line per hand-over, in
//! arrival order. seL4's big kernel lock is the same kind of lock (a CLH lock).
//!
//! Nodes live in the lock, one per CPU index (as `u32` index + 1 in the links, 0 for
//! none), so the code has no pointers and no `unsafe`. A CPU may hold or wait for the
//! lock once at a time (the kernel's lock is not re-entrant; a second `lock` by the
//! same CPU before its `unlock` would corrupt the queue, not memory). The `loom`
//! model below checks mutual exclusion over every interleaving of three CPUs.

#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering};

#[cfg(not(loom))]
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crossbeam_utils::CachePadded;

/// One CPU's place in the queue.
#[derive(Debug)]
struct Node {
    /// The CPU behind this one (index + 1; 0: none yet).
    next: AtomicU32,
    /// Set while this CPU waits; its predecessor clears it to hand the lock over.
    waiting: AtomicBool,
}

impl Node {
    #[cfg(not(loom))]
    const fn new() -> Self {
        Self { next: AtomicU32::new(0), waiting: AtomicBool::new(false) }
    }

    #[cfg(loom)]
    fn new() -> Self {
        Self { next: AtomicU32::new(0), waiting: AtomicBool::new(false) }
    }
}

/// The lock, for CPUs `0..N`.
#[derive(Debug)]
pub struct McsLock<const N: usize> {
    /// The last CPU in the queue (index + 1), the holder if it is alone; 0: free.
    tail: CachePadded<AtomicU32>,
    nodes: [CachePadded<Node>; N],
}

impl<const N: usize> Default for McsLock<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> McsLock<N> {
    /// A free lock.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            tail: CachePadded::new(AtomicU32::new(0)),
            nodes: [const { CachePadded::new(Node::new()) }; N],
        }
    }

    /// A free lock (loom's atomics are not `const`).
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            tail: CachePadded::new(AtomicU32::new(0)),
            nodes: core::array::from_fn(|_| CachePadded::new(Node::new())),
        }
    }

    /// Whether some CPU holds the lock or waits for it (a snapshot).
    #[inline(always)]
    pub fn is_locked(&self) -> bool {
        self.tail.load(Ordering::Acquire) != 0
    }

    /// Takes the lock for CPU `cpu` (< `N`), calling `wait` while it waits for its
    /// turn (to serve what other CPUs may be waiting for meanwhile, and to relax).
    /// Out of range: nothing happens and `false` (a caller bug, never reached from
    /// user input).
    #[inline(always)]
    pub fn lock(&self, cpu: usize, mut wait: impl FnMut()) -> bool {
        let Some(node) = self.nodes.get(cpu) else { return false };
        let me = cpu as u32 + 1;
        node.next.store(0, Ordering::Relaxed);
        node.waiting.store(true, Ordering::Relaxed);
        // AcqRel: acquire what the previous holder did if it was alone (it released
        // with its compare-exchange); release the node's reset to the predecessor,
        // which reads `next` with acquire before it clears `waiting`.
        let previous = self.tail.swap(me, Ordering::AcqRel);
        if previous == 0 {
            return true;
        }
        if let Some(before) = self.nodes.get(previous as usize - 1) {
            before.next.store(me, Ordering::Release);
        }
        while node.waiting.load(Ordering::Acquire) {
            wait();
        }
        true
    }

    /// Releases the lock CPU `cpu` holds: to the next CPU in the queue, or free.
    /// `relax` runs while a CPU that has just joined the queue behind this one has
    /// not yet linked itself in (a few instructions on its side).
    #[inline(always)]
    pub fn unlock(&self, cpu: usize, mut relax: impl FnMut()) {
        let Some(node) = self.nodes.get(cpu) else { return };
        let me = cpu as u32 + 1;
        let mut next = node.next.load(Ordering::Acquire);
        if next == 0 {
            if self.tail.compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed).is_ok() {
                return;
            }
            // Someone swapped the tail after this CPU: wait for its link.
            loop {
                next = node.next.load(Ordering::Acquire);
                if next != 0 {
                    break;
                }
                relax();
            }
        }
        if let Some(after) = self.nodes.get(next as usize - 1) {
            after.waiting.store(false, Ordering::Release);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    extern crate std;
    use super::McsLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn a_free_lock_is_taken_at_once_and_freed() {
        let lock = McsLock::<4>::new();
        assert!(!lock.is_locked());
        assert!(lock.lock(2, || panic!("waited for a free lock")));
        assert!(lock.is_locked());
        lock.unlock(2, || panic!("waited with nobody behind"));
        assert!(!lock.is_locked());
        assert!(!lock.lock(4, || {}), "CPU index out of range");
        assert!(!lock.is_locked());
    }

    /// Eight threads as CPUs, each adding to a counter with a plain load and store
    /// under the lock: a lost update means two held it at once.
    #[test]
    fn threads_hammering_the_lock_never_overlap() {
        const CPUS: usize = 8;
        const ROUNDS: u64 = 20_000;
        let lock = McsLock::<CPUS>::new();
        let count = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for cpu in 0..CPUS {
                let (lock, count) = (&lock, &count);
                scope.spawn(move || {
                    for _ in 0..ROUNDS {
                        lock.lock(cpu, std::thread::yield_now);
                        let seen = count.load(Ordering::Relaxed);
                        count.store(seen + 1, Ordering::Relaxed);
                        lock.unlock(cpu, std::thread::yield_now);
                    }
                });
            }
        });
        assert_eq!(count.load(Ordering::Relaxed), CPUS as u64 * ROUNDS);
        assert!(!lock.is_locked());
    }

    /// Waiters are served in the order they joined: CPU 0 holds the lock while
    /// CPUs 1, 2 and 3 queue one after another; they get it in that order.
    #[test]
    fn waiters_get_the_lock_in_arrival_order() {
        let lock = McsLock::<4>::new();
        let order = std::sync::Mutex::new(Vec::new());
        lock.lock(0, || {});
        std::thread::scope(|scope| {
            for cpu in 1..4 {
                let (lock, order) = (&lock, &order);
                // Joined the queue once the tail names it.
                scope.spawn(move || {
                    lock.lock(cpu, std::thread::yield_now);
                    order.lock().expect("order").push(cpu);
                    lock.unlock(cpu, std::thread::yield_now);
                });
                while lock.tail.load(Ordering::Acquire) != cpu as u32 + 1 {
                    std::thread::yield_now();
                }
            }
            lock.unlock(0, std::thread::yield_now);
        });
        assert_eq!(*order.lock().expect("order"), vec![1, 2, 3]);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    extern crate std;
    use super::McsLock;
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicU32, Ordering};
    use loom::thread;

    /// Every interleaving of two CPUs taking the lock twice each (which covers a
    /// release racing a CPU that is joining the queue, and the hand-over to a waiter):
    /// each adds to a counter with a plain load and store under it, so two holders at
    /// once, or a hand-over that does not order the holders' accesses, would lose an
    /// update. (Three CPUs do not finish: loom's state space with three spinners.)
    #[test]
    fn loom_queue_lock_excludes() {
        loom::model(|| {
            let lock = Arc::new(McsLock::<2>::new());
            let count = Arc::new(AtomicU32::new(0));
            let add = |lock: &McsLock<2>, count: &AtomicU32, cpu: usize| {
                for _ in 0..2 {
                    lock.lock(cpu, thread::yield_now);
                    let seen = count.load(Ordering::Relaxed);
                    count.store(seen + 1, Ordering::Relaxed);
                    lock.unlock(cpu, thread::yield_now);
                }
            };
            let other = {
                let (lock, count) = (lock.clone(), count.clone());
                thread::spawn(move || add(&lock, &count, 1))
            };
            add(&lock, &count, 0);
            other.join().expect("thread");
            assert_eq!(count.load(Ordering::Relaxed), 4);
            assert!(!lock.is_locked());
        });
    }
}
