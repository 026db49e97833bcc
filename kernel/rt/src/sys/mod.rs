//! Everything in the runtime that needs `unsafe`: the `syscall` instruction, the
//! time-stamp counter, the ELF entry, the memory intrinsics, the global allocator's
//! glue and the deliberate faults the fault tests use. Each piece is small and wrapped
//! in a safe interface; the rest of the runtime (and every program) is safe code.
//!
//! The entry, intrinsics and allocator exist only in the freestanding build: a host
//! test binary gets them from `std` and libc.

pub mod cpu;
pub mod fault;
pub mod ipcbuf;
pub mod syscall;
pub mod tsc;
pub mod vm;

#[cfg(not(test))]
mod global_alloc;
#[cfg(not(test))]
mod mem;
#[cfg(not(test))]
pub mod start;
