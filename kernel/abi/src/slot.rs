//! Well-known capability slots in every program's initial CSpace.
//!
//! The root CNode's guard covers the high bits of a capability pointer, so a small
//! integer addresses a slot of the root CNode directly. The kernel fills these slots
//! for the root task; the root task fills the same slots for every program it starts,
//! so the user runtime finds its own thread and console without being told.

/// Never holds a capability: a zero capability pointer is always invalid.
pub const NULL: u64 = 0;
/// The program's own thread.
pub const THREAD: u64 = 1;
/// The root CNode of the program's own CSpace.
pub const CNODE: u64 = 2;
/// The program's own address space.
pub const VSPACE: u64 = 3;
/// The kernel debug console (write-only), if the program was given one.
pub const DEBUG: u64 = 4;
/// IRQ control (root task only): creates IRQ handler capabilities.
pub const IRQ_CONTROL: u64 = 5;
/// The whole I/O port space (root task only).
pub const IO_PORTS: u64 = 6;
/// Trace control (root task only): starts, stops and dumps kernel tracing. Slots
/// 7..=14 are left to the programs the root task starts (fault endpoint, report and
/// wait endpoints, benchmark endpoints).
pub const TRACE_CONTROL: u64 = 15;
/// First slot of per-CPU scheduling-control capabilities (root task only), one per
/// CPU, in CPU index order.
pub const SCHED_CONTROL_BASE: u64 = 16;
