//! The allocator's bookkeeping: a bitmap of 16-byte blocks over a fixed arena.
//!
//! Plain safe code over offsets, so it is tested on the host; `sys::global_alloc`
//! turns offsets into pointers. First fit, O(arena) per allocation at worst: the
//! arena is small and programs that need a fast allocator can bring their own.

/// Bytes in the arena: 256 KiB.
pub const HEAP_BYTES: usize = 256 * 1024;
/// Allocation granule (and the minimum alignment of every block).
pub const BLOCK_BYTES: usize = 16;
const BLOCKS: usize = HEAP_BYTES / BLOCK_BYTES;
const WORDS: usize = BLOCKS / 64;

/// Which blocks of the arena are in use.
#[derive(Debug)]
pub struct Bitmap {
    used: [u64; WORDS],
}

impl Default for Bitmap {
    fn default() -> Self {
        Self::new()
    }
}

impl Bitmap {
    /// An empty arena.
    pub const fn new() -> Self {
        Self { used: [0; WORDS] }
    }

    fn is_used(&self, block: usize) -> bool {
        self.used.get(block / 64).is_some_and(|word| word & (1 << (block % 64)) != 0)
    }

    fn set(&mut self, blocks: core::ops::Range<usize>, used: bool) {
        for block in blocks {
            if let Some(word) = self.used.get_mut(block / 64) {
                if used {
                    *word |= 1 << (block % 64);
                } else {
                    *word &= !(1 << (block % 64));
                }
            }
        }
    }

    /// Marks room for `size` bytes aligned to `align` (a power of two) in an arena
    /// that starts at address `base` (a multiple of [`BLOCK_BYTES`]); returns its
    /// offset from `base`, or `None` if no free run fits.
    pub fn allocate(&mut self, base: usize, size: usize, align: usize) -> Option<usize> {
        if !align.is_power_of_two() || !base.is_multiple_of(BLOCK_BYTES) {
            return None;
        }
        let blocks = size.max(1).div_ceil(BLOCK_BYTES);
        // Candidate starts are `first + k * step` blocks: exactly the aligned ones.
        let step = (align / BLOCK_BYTES).max(1);
        let first = (base.checked_next_multiple_of(align)? - base) / BLOCK_BYTES;
        let mut start = first;
        while start.checked_add(blocks)? <= BLOCKS {
            match (start..start + blocks).rev().find(|&block| self.is_used(block)) {
                None => {
                    self.set(start..start + blocks, true);
                    return Some(start * BLOCK_BYTES);
                }
                // Skip past the last used block in the window.
                Some(used) => start = first + (used + 1 - first).div_ceil(step) * step,
            }
        }
        None
    }

    /// Frees the `size` bytes at `offset` that `allocate` returned.
    pub fn free(&mut self, offset: usize, size: usize) {
        let start = offset / BLOCK_BYTES;
        let blocks = size.max(1).div_ceil(BLOCK_BYTES);
        self.set(start..start.saturating_add(blocks).min(BLOCKS), false);
    }

    /// Blocks in use (for tests and diagnostics).
    pub fn used_blocks(&self) -> usize {
        self.used.iter().map(|word| word.count_ones() as usize).sum()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn allocates_aligned_disjoint_blocks_and_reuses_freed_ones() {
        let mut heap = Bitmap::new();
        let base = 0x1000_0010; // 16-aligned, not 32-aligned
        let a = heap.allocate(base, 1, 1).unwrap();
        let b = heap.allocate(base, 24, 8).unwrap();
        assert_eq!((a, b), (0, 16));
        let c = heap.allocate(base, 64, 64).unwrap();
        assert_eq!((base + c) % 64, 0);
        assert!(c >= 48);
        heap.free(b, 24);
        assert_eq!(heap.allocate(base, 32, 16), Some(16));
        let page = heap.allocate(base, 100, 4096).unwrap();
        assert_eq!((base + page) % 4096, 0);
    }

    #[test]
    fn fills_up_and_refuses_bad_requests() {
        let mut heap = Bitmap::new();
        assert_eq!(heap.allocate(0, HEAP_BYTES, 16), Some(0));
        assert_eq!(heap.allocate(0, 1, 1), None);
        heap.free(0, HEAP_BYTES);
        assert_eq!(heap.used_blocks(), 0);
        assert_eq!(heap.allocate(0, HEAP_BYTES + 1, 16), None);
        assert_eq!(heap.allocate(0, usize::MAX, 16), None);
        assert_eq!(heap.allocate(0, 16, 3), None);
        assert_eq!(heap.allocate(8, 16, 16), None);
        assert_eq!(heap.allocate(usize::MAX - 15, 16, 1 << 40), None);
        assert_eq!(heap.used_blocks(), 0);
    }

    proptest! {
        /// Live allocations never overlap, stay in the arena and are aligned; freeing
        /// everything leaves the bitmap empty.
        #[test]
        fn random_alloc_free_sequences(
            ops in proptest::collection::vec((any::<bool>(), 1usize..3000, 0u32..13), 1..200),
            base_blocks in 0usize..1000,
        ) {
            let base = 0x10_0000 + base_blocks * BLOCK_BYTES;
            let mut heap = Bitmap::new();
            let mut live: Vec<(usize, usize)> = Vec::new();
            for (alloc, size, align_log) in ops {
                if alloc || live.is_empty() {
                    let align = 1usize << align_log;
                    if let Some(offset) = heap.allocate(base, size, align) {
                        prop_assert_eq!((base + offset) % align, 0);
                        prop_assert!(offset + size <= HEAP_BYTES);
                        for &(other, other_size) in &live {
                            prop_assert!(offset + size <= other || other + other_size <= offset);
                        }
                        live.push((offset, size));
                    }
                } else {
                    let (offset, size) = live.swap_remove(size % live.len());
                    heap.free(offset, size);
                }
            }
            for (offset, size) in live.drain(..) {
                heap.free(offset, size);
            }
            prop_assert_eq!(heap.used_blocks(), 0);
        }
    }
}
