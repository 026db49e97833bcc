//! Kernel-object invocations: `Sys::Call` on a capability to a kernel object runs an
//! operation on it, selected by the message label. Arguments are message registers in
//! the order each operation documents; results come back the same way.

/// Operations on a `DebugConsole` capability.
pub mod debug {
    /// Write bytes to the kernel console. MR0 = byte count (at most [`WRITE_MAX`]),
    /// MR1.. = the bytes, little-endian, eight per register.
    pub const WRITE: u64 = 1;
    /// Most bytes one `WRITE` carries (five message registers).
    pub const WRITE_MAX: usize = 40;
    /// Kernel IPC statistics, summed over CPUs: MR0 = calls and replies that took the
    /// fastpath, MR1 = IPC system calls that took the slow path, MR2 = TLB flushes
    /// CPUs did at another CPU's request (lease shootdowns), MR3 = times a CPU took
    /// the capability lock for writing (the kernel's one global lock).
    pub const IPC_STATS: u64 = 2;
    /// Check kernel invariants the caller can name: the derivation-tree links of every
    /// slot in its root CNode, and the run queue of the CPU it runs on (queued flags,
    /// owners, states, priorities, links). MR0 = violations found, MR1 = slots checked,
    /// MR2 = queued threads checked.
    pub const CHECK_INVARIANTS: u64 = 3;
    /// Labels the debug console once used for tracing control (0x10..=0x12, see
    /// [`super::trace_control`]); the console now refuses them with
    /// `IllegalOperation`, and they stay reserved so an old program cannot reach a
    /// new console operation by accident.
    pub const RETIRED_TRACE_LABELS: [u64; 3] = [0x10, 0x11, 0x12];

    // Regression: `TRACE_START` was once given console label 3, which
    // `CHECK_INVARIANTS` took at the same time, so starting a trace ran the invariant
    // check instead. Every console label must be distinct, retired ones included.
    const _: () = {
        let [r0, r1, r2] = RETIRED_TRACE_LABELS;
        let labels = [WRITE, IPC_STATS, CHECK_INVARIANTS, r0, r1, r2];
        let mut i = 0;
        while i < labels.len() {
            let mut j = i + 1;
            while j < labels.len() {
                assert!(labels[i] != labels[j], "two debug-console operations share a label");
                j += 1;
            }
            i += 1;
        }
    };
}

/// Operations on a `Thread` capability.
pub mod thread {
    /// Stop the thread; it runs again only after `RESUME`. A thread may suspend
    /// itself, which is how a program exits.
    pub const SUSPEND: u64 = 0x10;
    /// Make a suspended thread runnable.
    pub const RESUME: u64 = 0x11;
    /// Set entry point and stack: MR0 = RIP, MR1 = RSP, MR2 = argument (RDI).
    pub const WRITE_ENTRY: u64 = 0x12;
    /// MR0 = priority (0..=255; at most the caller's own).
    pub const SET_PRIORITY: u64 = 0x13;
    /// Bind the notification MR0 (capability pointer, read right) to the thread: a
    /// receive on an endpoint then also returns when the notification is signalled.
    /// MR0 = 0 unbinds.
    pub const BIND_NOTIFICATION: u64 = 0x16;
    /// MR0 = CPU index to run on; works while the thread runs or is blocked.
    pub const SET_AFFINITY: u64 = 0x14;
    /// Set the CSpace root (MR0: capability pointer, in the caller's CSpace, of a
    /// CNode capability, copied into the thread), the VSpace (MR1: capability pointer
    /// of a VSpace), the fault endpoint (MR2: a capability pointer in the thread's new
    /// CSpace, 0 for none) and the IPC buffer's address (MR3, 0 for none). The thread
    /// must be suspended.
    pub const CONFIGURE: u64 = 0x15;
    /// Set where the kernel maps the leases of calls this thread receives: MR0 =
    /// start (4 KiB aligned, user space), MR1 = size in bytes (a multiple of 4 KiB,
    /// at most `crate::lease::MAX_WINDOW_BYTES`); 0, 0 for none. The window must be
    /// free of mappings, with its page tables installed (the kernel allocates none).
    /// Needs the write right; `Busy` while a lease is mapped there.
    pub const SET_LEASE_WINDOW: u64 = 0x17;
    /// Name the thread (shown in traces): MR0 = length in bytes (at most
    /// [`NAME_MAX`], 0 clears the name), MR1.. = UTF-8 bytes, little-endian, eight
    /// per register. Needs the write right; the thread must be the caller or
    /// suspended.
    pub const SET_NAME: u64 = 0x18;
    /// Longest thread name in bytes (two message registers).
    pub const NAME_MAX: usize = 16;
    /// Give the thread a user trace buffer: MR0 = a 4 KiB frame capability (read and
    /// write rights) in the caller's CSpace, 0 to take the buffer away. The kernel
    /// writes the buffer's header (`ramen_perf_record::user_buffer`,
    /// [`TRACE_BUFFER_RECORDS`] records, overwrite mode), sets its enabled categories
    /// when tracing starts and stops, and copies its records into the trace dump. The
    /// thread maps the frame and appends records itself, with no system call per
    /// event. Needs the write right; `Busy` when the kernel's table of buffers is full.
    pub const SET_TRACE_BUFFER: u64 = 0x19;
    /// Records in a user trace buffer: the largest power of two that fits a 4 KiB
    /// frame after the 64-byte header.
    pub const TRACE_BUFFER_RECORDS: u32 = 64;
}

/// Operations on a `CNode` capability. MR0 = destination index, MR1 = destination
/// depth; the source is MR2 (capability pointer in the caller's CSpace).
pub mod cnode {
    /// Copy a capability (same rights and badge).
    pub const COPY: u64 = 0x20;
    /// Copy with fewer rights (MR3) and/or a badge (MR4).
    pub const MINT: u64 = 0x21;
    /// Move a capability.
    pub const MOVE: u64 = 0x22;
    /// Move with fewer rights (MR3) and/or a badge (MR4).
    pub const MUTATE: u64 = 0x23;
    /// Delete the capability at the destination.
    pub const DELETE: u64 = 0x24;
    /// Delete every capability derived from the one at the destination.
    pub const REVOKE: u64 = 0x25;
}

/// Operations on an `Untyped` capability.
pub mod untyped {
    /// Create objects: MR0 = object type, MR1 = size bits (for sized objects), MR2 =
    /// destination CNode (capability pointer), MR3 = first slot, MR4 = count.
    pub const RETYPE: u64 = 0x30;
}

/// Operations on `Frame` and page-table capabilities.
pub mod vspace {
    /// Map a frame: MR0 = VSpace capability pointer, MR1 = virtual address, MR2 =
    /// rights (bit 0 write, bit 1 execute).
    pub const FRAME_MAP: u64 = 0x40;
    /// Unmap a frame.
    pub const FRAME_UNMAP: u64 = 0x41;
    /// Install a page table: MR0 = VSpace capability pointer, MR1 = virtual address
    /// the table will cover.
    pub const TABLE_MAP: u64 = 0x42;
}

/// Operations on an `IoPort` capability (a range of I/O ports). The port and the
/// access width must lie inside the range.
pub mod ioport {
    /// Write MR1 to port MR0, 8 bits.
    pub const OUT8: u64 = 0x50;
    /// Write MR1 to port MR0, 16 bits.
    pub const OUT16: u64 = 0x51;
    /// Write MR1 to port MR0, 32 bits.
    pub const OUT32: u64 = 0x52;
    /// Read port MR0, 8 bits, into MR0.
    pub const IN8: u64 = 0x53;
    /// Read port MR0, 16 bits, into MR0.
    pub const IN16: u64 = 0x54;
    /// Read port MR0, 32 bits, into MR0.
    pub const IN32: u64 = 0x55;
}

/// Operations on a `SchedControl` capability (one CPU's time).
pub mod sched_control {
    /// Set the CPU's round-robin time slice: MR0 = nanoseconds, within
    /// [`MIN_SLICE_NS`]..=[`MAX_SLICE_NS`]. Returns the previous slice in MR0.
    pub const SET_SLICE: u64 = 0x60;
    /// Shortest time slice.
    pub const MIN_SLICE_NS: u64 = 100_000;
    /// Longest time slice.
    pub const MAX_SLICE_NS: u64 = 1_000_000_000;
}

/// Operations on the `TraceControl` capability (kernel tracing, every CPU). The root
/// task gets it at boot in `slot::TRACE_CONTROL`; a program without a copy can
/// neither start, stop nor read tracing.
pub mod trace_control {
    /// Start tracing on every CPU: MR0 = categories to record (the
    /// `ramen_perf_record::Categories` bits), MR1 = flags ([`KEEP_OLDEST`]; 0: a full
    /// ring overwrites its oldest records). Clears every CPU's trace ring first.
    /// Unknown category or flag bits: `InvalidArgument`, nothing changed.
    pub const START: u64 = 0x80;
    /// START flag: a full ring keeps its oldest records and drops new ones (counted).
    pub const KEEP_OLDEST: u64 = 1;
    /// Stop tracing on every CPU; the rings keep what they hold.
    pub const STOP: u64 = 0x81;
    /// Stop tracing, then write every CPU's ring as one trace dump to the trace port
    /// (COM2). Returns MR0 = records written.
    pub const DUMP: u64 = 0x82;
    /// The state of CPU MR0's ring while tracing is stopped: MR0 = records held, MR1 =
    /// records dropped (rings that keep their oldest), MR2 = records overwritten
    /// (rings that keep their newest), since the last START. `Busy` while tracing
    /// runs; `RangeError` for a CPU that is not online.
    pub const STATS: u64 = 0x83;
    /// MR0 = 0: every CPU sends every IPC down the slow path from now on (the
    /// fastpath's handler is swapped out, at no cost to it); 1: the fastpath is back.
    /// For differential tests and for tracing the slow path. Other values:
    /// `InvalidArgument`.
    pub const SET_FASTPATH: u64 = 0x84;
}

/// Operations on the `IrqControl` capability.
pub mod irq_control {
    /// Issue the handler capability for IRQ line MR0 into slot MR1 (index, full depth)
    /// of the caller's CSpace. One handler per line: a second issue returns `Busy`
    /// until every copy of the first is deleted.
    pub const ISSUE: u64 = 0x70;
}
