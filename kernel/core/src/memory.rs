//! The boot-time physical frame allocator.
//!
//! Built from the loader's memory map, it hands out 4 KiB frames for the kernel's
//! own boot structures (page tables, per-CPU blocks, stacks) from the lowest free
//! addresses up, so early frames stay inside the boot window. Whatever it has not
//! handed out when boot ends becomes untyped memory for user space.
//!
//! Invariants: `free` holds at most [`MAX_RANGES`] disjoint, page-aligned,
//! non-empty ranges sorted by address.

/// The frame size.
pub const FRAME_BYTES: u64 = 4096;

/// Free ranges tracked; real machines report a few dozen at most.
pub const MAX_RANGES: usize = 128;

/// A half-open physical range `[start, end)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl PhysRange {
    /// Length in bytes.
    pub const fn len_bytes(&self) -> u64 {
        self.end - self.start
    }
}

/// Why a memory-map operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryError {
    /// More disjoint ranges than [`MAX_RANGES`].
    TooManyRanges,
}

/// Rounds up to a frame boundary, saturating at the last frame.
const fn align_up(addr: u64) -> u64 {
    match addr.checked_add(FRAME_BYTES - 1) {
        Some(v) => v & !(FRAME_BYTES - 1),
        None => !(FRAME_BYTES - 1),
    }
}

const fn align_down(addr: u64) -> u64 {
    addr & !(FRAME_BYTES - 1)
}

/// Free physical memory as sorted, disjoint ranges.
#[derive(Clone, Debug)]
pub struct FrameAllocator {
    free: [PhysRange; MAX_RANGES],
    len: usize,
}

impl Default for FrameAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameAllocator {
    /// An allocator with no memory.
    pub const fn new() -> Self {
        Self { free: [PhysRange { start: 0, end: 0 }; MAX_RANGES], len: 0 }
    }

    /// The free ranges, sorted.
    pub fn free_ranges(&self) -> &[PhysRange] {
        self.free.get(..self.len).unwrap_or(&[])
    }

    /// Total free bytes.
    pub fn free_bytes(&self) -> u64 {
        self.free_ranges().iter().map(PhysRange::len_bytes).sum()
    }

    /// Adds usable RAM `[start, start+len)`, shrunk inwards to whole frames and merged
    /// with its neighbours.
    pub fn add(&mut self, start: u64, len: u64) -> Result<(), MemoryError> {
        let end = align_down(start.saturating_add(len));
        let start = align_up(start);
        if start >= end {
            return Ok(());
        }
        // Take out any overlap first so the ranges stay disjoint, then insert.
        self.reserve(start, end - start)?;
        let at = self.free_ranges().iter().position(|r| r.start > start).unwrap_or(self.len);
        self.insert(at, PhysRange { start, end })?;
        self.merge_around(at);
        Ok(())
    }

    /// Removes `[start, start+len)` (grown outwards to whole frames) from the free set:
    /// the kernel image, firmware tables, boot modules.
    pub fn reserve(&mut self, start: u64, len: u64) -> Result<(), MemoryError> {
        let hole = PhysRange { start: align_down(start), end: align_up(start.saturating_add(len)) };
        if hole.start >= hole.end {
            return Ok(());
        }
        let mut i = 0;
        while i < self.len {
            let Some(r) = self.free.get(i).copied() else { break };
            if r.end <= hole.start || r.start >= hole.end {
                i += 1;
                continue;
            }
            let left = PhysRange { start: r.start, end: hole.start.max(r.start) };
            let right = PhysRange { start: hole.end.min(r.end), end: r.end };
            match (left.start < left.end, right.start < right.end) {
                (true, true) => {
                    self.insert(i + 1, right)?;
                    self.set(i, left);
                    i += 2;
                }
                (true, false) => {
                    self.set(i, left);
                    i += 1;
                }
                (false, true) => {
                    self.set(i, right);
                    i += 1;
                }
                (false, false) => self.remove(i),
            }
        }
        Ok(())
    }

    /// One frame from the lowest free address.
    pub fn alloc(&mut self) -> Option<u64> {
        self.alloc_below(u64::MAX)
    }

    /// One frame whose whole extent lies below `limit`.
    pub fn alloc_below(&mut self, limit: u64) -> Option<u64> {
        self.alloc_contiguous(1, FRAME_BYTES, limit)
    }

    /// `frames` contiguous frames aligned to `align` bytes (a power of two, at least a
    /// frame), entirely below `limit`; the lowest such run.
    pub fn alloc_contiguous(&mut self, frames: u64, align: u64, limit: u64) -> Option<u64> {
        self.alloc_contiguous_in(frames, align, 0, limit)
    }

    /// [`Self::alloc_contiguous`] entirely inside `[low, limit)`: memory of one NUMA
    /// node, say.
    pub fn alloc_contiguous_in(&mut self, frames: u64, align: u64, low: u64, limit: u64) -> Option<u64> {
        if frames == 0 || !align.is_power_of_two() || align < FRAME_BYTES {
            return None;
        }
        let bytes = frames.checked_mul(FRAME_BYTES)?;
        for i in 0..self.len {
            let r = *self.free.get(i)?;
            let start = r.start.max(low).checked_add(align - 1)? & !(align - 1);
            let end = start.checked_add(bytes)?;
            if end <= r.end && end <= limit {
                // Reserving a piece of one range adds at most one range.
                self.reserve(start, bytes).ok()?;
                return Some(start);
            }
        }
        None
    }

    fn set(&mut self, i: usize, r: PhysRange) {
        if let Some(slot) = self.free.get_mut(i) {
            *slot = r;
        }
    }

    fn insert(&mut self, at: usize, r: PhysRange) -> Result<(), MemoryError> {
        if self.len >= MAX_RANGES || at > self.len {
            return Err(MemoryError::TooManyRanges);
        }
        self.free.copy_within(at..self.len, at + 1);
        self.set(at, r);
        self.len += 1;
        Ok(())
    }

    fn remove(&mut self, at: usize) {
        if at < self.len {
            self.free.copy_within(at + 1..self.len, at);
            self.len -= 1;
        }
    }

    fn merge_around(&mut self, at: usize) {
        // Merge with the right neighbour, then the left.
        for i in [Some(at), at.checked_sub(1)].into_iter().flatten() {
            let (Some(a), Some(b)) = (self.free.get(i).copied(), self.free.get(i + 1).copied()) else {
                continue;
            };
            if i + 1 < self.len && a.end == b.start {
                self.set(i, PhysRange { start: a.start, end: b.end });
                self.remove(i + 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    extern crate std;
    use std::vec::Vec;

    #[test]
    fn add_shrinks_to_frames_and_merges() {
        let mut a = FrameAllocator::new();
        a.add(0x1001, 0x3000).unwrap();
        assert_eq!(a.free_ranges(), &[PhysRange { start: 0x2000, end: 0x4000 }]);
        a.add(0x4000, 0x1000).unwrap();
        assert_eq!(a.free_ranges(), &[PhysRange { start: 0x2000, end: 0x5000 }]);
        a.add(0x8000, 0x1000).unwrap();
        assert_eq!(a.free_ranges().len(), 2);
    }

    #[test]
    fn reserve_splits_a_range() {
        let mut a = FrameAllocator::new();
        a.add(0, 0x10000).unwrap();
        a.reserve(0x3800, 0x100).unwrap();
        assert_eq!(
            a.free_ranges(),
            &[PhysRange { start: 0, end: 0x3000 }, PhysRange { start: 0x4000, end: 0x10000 }]
        );
    }

    #[test]
    fn alloc_is_lowest_first_and_respects_limit() {
        let mut a = FrameAllocator::new();
        a.add(0x10_0000, 0x2000).unwrap();
        a.add(0x4000_0000, 0x10_0000).unwrap();
        assert_eq!(a.alloc_below(0x10_2000), Some(0x10_0000));
        assert_eq!(a.alloc_below(0x10_2000), Some(0x10_1000));
        assert_eq!(a.alloc_below(0x10_2000), None);
        assert_eq!(a.alloc(), Some(0x4000_0000));
    }

    #[test]
    fn contiguous_alignment() {
        let mut a = FrameAllocator::new();
        a.add(0x1000, 0x40_0000).unwrap();
        let p = a.alloc_contiguous(512, 0x20_0000, u64::MAX).unwrap();
        assert_eq!(p % 0x20_0000, 0);
        assert!(a.alloc_contiguous(0, FRAME_BYTES, u64::MAX).is_none());
        assert!(a.alloc_contiguous(1, 3, u64::MAX).is_none());
    }

    #[test]
    fn allocation_inside_a_window() {
        let mut a = FrameAllocator::new();
        a.add(0x1000, 0x10_0000).unwrap();
        a.add(0x100_0000, 0x10_0000).unwrap();
        // The lowest run at or above the window's start, inside it.
        assert_eq!(a.alloc_contiguous_in(2, FRAME_BYTES, 0x100_0000, 0x110_0000), Some(0x100_0000));
        assert_eq!(a.alloc_contiguous_in(1, FRAME_BYTES, 0x8_0000, 0x9_0000), Some(0x8_0000));
        assert_eq!(a.alloc_contiguous_in(1, FRAME_BYTES, 0x20_0000, 0x30_0000), None);
        assert_eq!(a.alloc_contiguous_in(0x101, FRAME_BYTES, 0x100_0000, u64::MAX), None);
    }

    #[test]
    fn too_many_ranges_is_an_error_not_a_panic() {
        let mut a = FrameAllocator::new();
        for i in 0..MAX_RANGES as u64 {
            a.add(i * 0x4000, 0x1000).unwrap();
        }
        assert_eq!(a.add(0x1000_0000, 0x1000), Err(MemoryError::TooManyRanges));
    }

    proptest! {
        /// Every frame handed out is free, aligned, distinct, inside the RAM added
        /// and outside every reservation; the bytes add up.
        #[test]
        fn frames_are_distinct_and_accounted(
            ram in proptest::collection::vec((0u64..1 << 24, 1u64..1 << 20), 1..8),
            holes in proptest::collection::vec((0u64..1 << 24, 0u64..1 << 16), 0..8),
            n in 0usize..200,
        ) {
            let mut a = FrameAllocator::new();
            for (s, l) in &ram { a.add(*s, *l).unwrap(); }
            for (s, l) in &holes { a.reserve(*s, *l).unwrap(); }
            let before = a.free_bytes();
            let mut got = Vec::new();
            for _ in 0..n {
                match a.alloc() { Some(f) => got.push(f), None => break }
            }
            prop_assert_eq!(a.free_bytes() + got.len() as u64 * FRAME_BYTES, before);
            let mut sorted = got.clone();
            sorted.sort_unstable();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), got.len());
            for f in got {
                prop_assert_eq!(f % FRAME_BYTES, 0);
                prop_assert!(ram.iter().any(|(s, l)| f >= *s && f + FRAME_BYTES <= s + l));
                prop_assert!(holes.iter().all(|(s, l)| *l == 0 || f + FRAME_BYTES <= *s || f >= s + l));
            }
            for w in a.free_ranges().windows(2) {
                prop_assert!(w[0].end < w[1].start);
            }
        }
    }
}
