//! The `#[global_allocator]`: [`crate::heap::Bitmap`] (safe, host-tested) over a static
//! arena in `.bss`, behind a spin lock.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

use crate::heap::{Bitmap, HEAP_BYTES};

#[repr(C, align(4096))]
struct Arena(UnsafeCell<[u8; HEAP_BYTES]>);

// SAFETY: the arena's bytes are only reached through pointers the allocator hands out,
// and the bitmap (behind a lock) gives each byte to at most one allocation at a time.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; HEAP_BYTES]));
static BITMAP: spin::Mutex<Bitmap> = spin::Mutex::new(Bitmap::new());

struct Heap;

// SAFETY: `alloc` returns null or a block of at least `layout.size()` bytes, aligned to
// `layout.align()`, inside the arena and disjoint from every live block (the bitmap's
// guarantee); `dealloc` returns exactly the blocks `alloc` marked for that layout.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = ARENA.0.get().cast::<u8>();
        match BITMAP.lock().allocate(base.addr(), layout.size(), layout.align()) {
            Some(offset) => base.wrapping_add(offset),
            None => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let base = ARENA.0.get().cast::<u8>();
        BITMAP.lock().free(ptr.addr().wrapping_sub(base.addr()), layout.size());
    }
}

#[global_allocator]
static HEAP: Heap = Heap;
