//! Typed wrappers for kernel-object invocations (`ramen_abi::invocation`): one
//! function per operation, arguments in the documented registers.

use ramen_abi::invocation::{cnode, ioport, thread, untyped, vspace};

use crate::{Message, SysError, call};

fn invoke(cptr: u64, label: u64, args: &[u64]) -> Result<Message, SysError> {
    call(cptr, &Message::new(label, args))
}

/// Retypes `count` objects of type `kind` (a `CapType` code) and size `size_bits`
/// from the untyped `untyped` into slots `offset..` of the CNode `dest_cnode`.
pub fn retype(
    untyped: u64,
    kind: u64,
    size_bits: u64,
    dest_cnode: u64,
    offset: u64,
    count: u64,
) -> Result<(), SysError> {
    invoke(untyped, untyped::RETYPE, &[kind, size_bits, dest_cnode, offset, count]).map(drop)
}

/// Copies the capability `src` into slot `index` (`depth` bits) of CNode `cnode`.
pub fn copy(cnode: u64, index: u64, depth: u64, src: u64) -> Result<(), SysError> {
    invoke(cnode, cnode::COPY, &[index, depth, src]).map(drop)
}

/// Copies `src` with fewer `rights` and/or a `badge` (0: keep).
pub fn mint(cnode: u64, index: u64, depth: u64, src: u64, rights: u64, badge: u64) -> Result<(), SysError> {
    invoke(cnode, cnode::MINT, &[index, depth, src, rights, badge]).map(drop)
}

/// Moves `src` into the slot.
pub fn move_cap(cnode: u64, index: u64, depth: u64, src: u64) -> Result<(), SysError> {
    invoke(cnode, cnode::MOVE, &[index, depth, src]).map(drop)
}

/// Deletes the capability in the slot.
pub fn delete(cnode: u64, index: u64, depth: u64) -> Result<(), SysError> {
    invoke(cnode, cnode::DELETE, &[index, depth]).map(drop)
}

/// Deletes every capability derived from the one in the slot, repeating the call
/// while the kernel reports a preemption point.
pub fn revoke(cnode: u64, index: u64, depth: u64) -> Result<(), SysError> {
    loop {
        match invoke(cnode, cnode::REVOKE, &[index, depth]) {
            Err(e) if e == ramen_abi::Error::Preempted => continue,
            other => return other.map(drop),
        }
    }
}

/// Sets a suspended thread's CSpace root, VSpace, fault endpoint and IPC buffer.
pub fn configure(
    tcb: u64,
    cspace: u64,
    vspace_cap: u64,
    fault_endpoint: u64,
    ipc_buffer: u64,
) -> Result<(), SysError> {
    invoke(tcb, thread::CONFIGURE, &[cspace, vspace_cap, fault_endpoint, ipc_buffer]).map(drop)
}

/// Sets a suspended thread's entry point, stack and argument.
pub fn write_entry(tcb: u64, rip: u64, rsp: u64, arg: u64) -> Result<(), SysError> {
    invoke(tcb, thread::WRITE_ENTRY, &[rip, rsp, arg]).map(drop)
}

/// Sets a thread's priority.
pub fn set_priority(tcb: u64, priority: u64) -> Result<(), SysError> {
    invoke(tcb, thread::SET_PRIORITY, &[priority]).map(drop)
}

/// Moves a thread to CPU `cpu`.
pub fn set_affinity(tcb: u64, cpu: u64) -> Result<(), SysError> {
    invoke(tcb, thread::SET_AFFINITY, &[cpu]).map(drop)
}

/// Makes a configured, suspended thread runnable.
pub fn resume(tcb: u64) -> Result<(), SysError> {
    invoke(tcb, thread::RESUME, &[]).map(drop)
}

/// Sets where the kernel maps the leases of calls `tcb` receives: `bytes` from
/// `start` (page tables installed, nothing mapped there; see [`crate::vm::install_tables`]).
pub fn set_lease_window(tcb: u64, start: u64, bytes: u64) -> Result<(), SysError> {
    invoke(tcb, thread::SET_LEASE_WINDOW, &[start, bytes]).map(drop)
}

/// Stops a thread.
pub fn suspend(tcb: u64) -> Result<(), SysError> {
    invoke(tcb, thread::SUSPEND, &[]).map(drop)
}

/// Maps the frame `frame` at `vaddr` in `vspace_cap`; `rights` bit 0 write, bit 1
/// execute.
pub fn map_frame(frame: u64, vspace_cap: u64, vaddr: u64, rights: u64) -> Result<(), SysError> {
    invoke(frame, vspace::FRAME_MAP, &[vspace_cap, vaddr, rights]).map(drop)
}

/// Unmaps the frame `frame` from `vaddr` in `vspace_cap`.
pub fn unmap_frame(frame: u64, vspace_cap: u64, vaddr: u64) -> Result<(), SysError> {
    invoke(frame, vspace::FRAME_UNMAP, &[vspace_cap, vaddr]).map(drop)
}

/// Installs the page table `table` covering `vaddr` in `vspace_cap`.
pub fn map_table(table: u64, vspace_cap: u64, vaddr: u64) -> Result<(), SysError> {
    invoke(table, vspace::TABLE_MAP, &[vspace_cap, vaddr]).map(drop)
}

/// Writes `value` to I/O port `port` (32 bits) through the port capability `ports`.
pub fn port_out32(ports: u64, port: u64, value: u64) -> Result<(), SysError> {
    invoke(ports, ioport::OUT32, &[port, value]).map(drop)
}

/// Sets the time slice of the CPU a SchedControl capability governs; returns the old one.
pub fn set_slice(sched_control: u64, slice_ns: u64) -> Result<u64, SysError> {
    let reply = invoke(sched_control, ramen_abi::invocation::sched_control::SET_SLICE, &[slice_ns])?;
    Ok(reply.words().first().copied().unwrap_or(0))
}

/// Kernel IPC statistics through the debug console: (fastpath operations, slow-path
/// IPC system calls), summed over CPUs.
pub fn ipc_stats(console: u64) -> Result<(u64, u64), SysError> {
    let [fast, slow, ..] = stats(console)?;
    Ok((fast, slow))
}

/// The debug console's `IPC_STATS` words: fastpath, slow path, shootdown flushes,
/// write acquisitions of the kernel's capability lock, capability changes made
/// without it.
fn stats(console: u64) -> Result<[u64; 5], SysError> {
    let reply = invoke(console, ramen_abi::invocation::debug::IPC_STATS, &[])?;
    let word = |i: usize| reply.words().get(i).copied().unwrap_or(0);
    Ok([word(0), word(1), word(2), word(3), word(4)])
}

/// Capability changes any CPU made without the capability lock's write side since
/// boot (all CPUs): copies, mints, moves, mutates and deletes of endpoint and
/// notification capabilities that hold single slots instead (docs/concurrency.md).
pub fn cap_changes_unlocked(console: u64) -> Result<u64, SysError> {
    Ok(stats(console)?[4])
}

/// Times any CPU took the kernel's capability lock for writing since boot (all
/// CPUs): what a workload costs in the one global lock left.
pub fn cap_lock_writes(console: u64) -> Result<u64, SysError> {
    Ok(stats(console)?[3])
}

/// TLB flushes CPUs did at another CPU's request since boot (all CPUs).
pub fn tlb_shootdowns(console: u64) -> Result<u64, SysError> {
    Ok(stats(console)?[2])
}

/// Issues the handler capability for IRQ `irq` into slot `dest` of this CSpace.
pub fn issue_irq_handler(irq_control: u64, irq: u64, dest: u64) -> Result<(), SysError> {
    invoke(irq_control, ramen_abi::invocation::irq_control::ISSUE, &[irq, dest]).map(drop)
}

/// Binds the notification `notification` to the thread `tcb` (0 unbinds).
pub fn bind_notification(tcb: u64, notification: u64) -> Result<(), SysError> {
    invoke(tcb, thread::BIND_NOTIFICATION, &[notification]).map(drop)
}

/// Asks the kernel to check its invariants (see `invocation::debug::CHECK_INVARIANTS`):
/// (violations, slots checked, queued threads checked).
pub fn check_invariants(console: u64) -> Result<(u64, u64, u64), SysError> {
    let reply = invoke(console, ramen_abi::invocation::debug::CHECK_INVARIANTS, &[])?;
    let w = reply.words();
    let word = |i: usize| w.get(i).copied().unwrap_or(0);
    Ok((word(0), word(1), word(2)))
}

/// Names the thread `tcb` (at most `thread::NAME_MAX` bytes of UTF-8, no NUL; shown in
/// traces). An empty name clears it.
pub fn set_name(tcb: u64, name: &str) -> Result<(), SysError> {
    let bytes = name.as_bytes();
    if bytes.len() > thread::NAME_MAX {
        return Err(SysError(ramen_abi::Error::RangeError.code()));
    }
    let mut words = [0u64; 2];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
        let mut padded = [0u8; 8];
        padded[..chunk.len()].copy_from_slice(chunk);
        *word = u64::from_le_bytes(padded);
    }
    invoke(tcb, thread::SET_NAME, &[bytes.len() as u64, words[0], words[1]]).map(drop)
}

/// Starts kernel tracing of `categories` (`ramen_perf_record::Categories` bits) on
/// every CPU through the TraceControl capability `trace_control`.
pub fn trace_start(trace_control: u64, categories: u64) -> Result<(), SysError> {
    invoke(trace_control, ramen_abi::invocation::trace_control::START, &[categories]).map(drop)
}

/// [`trace_start`] with START's flags (`trace_control::KEEP_OLDEST`).
pub fn trace_start_with(trace_control: u64, categories: u64, flags: u64) -> Result<(), SysError> {
    invoke(trace_control, ramen_abi::invocation::trace_control::START, &[categories, flags]).map(drop)
}

/// CPU `cpu`'s ring while tracing is stopped: (records held, dropped, overwritten).
pub fn trace_stats(trace_control: u64, cpu: u64) -> Result<(u64, u64, u64), SysError> {
    let reply = invoke(trace_control, ramen_abi::invocation::trace_control::STATS, &[cpu])?;
    let word = |i: usize| reply.words().get(i).copied().unwrap_or(0);
    Ok((word(0), word(1), word(2)))
}

/// Turns the kernel's IPC fastpath on or off on every CPU (`trace_control::SET_FASTPATH`).
pub fn set_fastpath(trace_control: u64, on: bool) -> Result<(), SysError> {
    invoke(trace_control, ramen_abi::invocation::trace_control::SET_FASTPATH, &[u64::from(on)]).map(drop)
}

/// Stops kernel tracing on every CPU.
pub fn trace_stop(trace_control: u64) -> Result<(), SysError> {
    invoke(trace_control, ramen_abi::invocation::trace_control::STOP, &[]).map(drop)
}

/// Stops tracing and writes the dump to the trace port; returns the records written.
pub fn trace_dump(trace_control: u64) -> Result<u64, SysError> {
    let reply = invoke(trace_control, ramen_abi::invocation::trace_control::DUMP, &[])?;
    Ok(reply.words().first().copied().unwrap_or(0))
}

/// Makes the 4 KiB frame `frame` (read and write rights) the trace buffer of the
/// thread `tcb`, or takes its buffer away with `frame` 0 (see [`crate::trace`]).
pub fn set_trace_buffer(tcb: u64, frame: u64) -> Result<(), SysError> {
    invoke(tcb, thread::SET_TRACE_BUFFER, &[frame]).map(drop)
}
