//! Invocations of kernel-object capabilities (`Sys::Call` on a non-endpoint cap).
//!
//! Shape of every operation: resolve and check everything (capability types, rights,
//! ranges, thread state) without side effects, then commit. Capability-space work runs
//! under `CAP_LOCK` (the write lock), except the changes `ramen_core::light` makes in a
//! read section holding single slots, and a thread's scheduling invocations; scheduling effects (suspend, resume, affinity) go through
//! `sched`, after the lock is dropped. Labels and argument registers are defined in
//! `ramen_abi::invocation` and documented in `docs/abi.md`.

use ramen_abi::invocation::{cnode, debug, ioport, thread, trace_control, untyped, vspace};
use ramen_abi::syscall::{USER_BASE, USER_TOP};
use ramen_abi::{Error, MSG_REGS, MessageInfo};
use ramen_arch::paging::{MapError, PageSize, user_flags};
use ramen_core::cap::{Cap, CapData, Rights};
use ramen_core::cnode::{self as ops, Step};
use ramen_core::cspace::{self, MAX_DEPTH};
use ramen_core::light::{self, Change, Outcome};
use ramen_core::object::{CapType, Destroyed, ObjectStore, PhysAddr, SlotRef};
use ramen_core::runqueue::ThreadRef;
use ramen_core::untyped::{RetypeRequest, retype};

use crate::cpus::{self, this_cpu};
use crate::objects::{CAP_LOCK, SlotChange, Store, ThreadState, address_space, cspace_slot, tcb};
use crate::sched;

/// Most delete or revoke steps one invocation performs before it reports
/// `Preempted` (the caller repeats the call to continue).
const MAX_STEPS: usize = 256;

/// The caller's CSpace root.
fn root_of<S: ObjectStore>(caller: ThreadRef, store: &S) -> Cap {
    cspace_slot(caller).map(|s| store.slot(s).cap()).unwrap_or_default()
}

/// Resolves `cptr` (full depth) in the caller's CSpace through this CPU's cache.
fn lookup<S: ObjectStore>(caller: ThreadRef, store: &S, cptr: u64) -> Result<SlotRef, Error> {
    let root = root_of(caller, store);
    this_cpu().lookup.with(|cache| cache.lookup(store, &root, cptr, MAX_DEPTH))
}

/// The capability `cptr` names; an empty slot is an invalid capability.
pub fn lookup_cap<S: ObjectStore>(caller: ThreadRef, store: &S, cptr: u64) -> Result<(SlotRef, Cap), Error> {
    let slot = lookup(caller, store, cptr)?;
    let cap = store.slot(slot).cap();
    if cap.is_null() {
        return Err(Error::InvalidCapability);
    }
    Ok((slot, cap))
}

/// Runs the operation `info.label()` on the capability `cptr`. Results go to `out`;
/// returns how many result words there are.
pub fn invoke(
    caller: ThreadRef,
    cptr: u64,
    info: MessageInfo,
    regs: &[u64; MSG_REGS],
    out: &mut [u64; MSG_REGS],
) -> Result<usize, Error> {
    // A read section, not the write lock: finding the capability changes nothing,
    // so an invocation that touches no kernel object's memory (a console write, IPC
    // statistics, a time slice, port I/O) takes no global lock at all, and every
    // other takes the write lock once, for its own work (a thread's, below).
    let found = {
        let store = CAP_LOCK.read_fast(this_cpu());
        lookup_cap(caller, &*store, cptr).map(|(_, cap)| cap)
    };
    invoke_found(caller, cptr, found, info, regs, out)
}

/// [`invoke`] with the capability `cptr` named already looked up (`found`: the
/// capability, or the lookup's error), by the system-call entry in a read section.
pub fn invoke_found(
    caller: ThreadRef,
    cptr: u64,
    found: Result<Cap, Error>,
    info: MessageInfo,
    regs: &[u64; MSG_REGS],
    out: &mut [u64; MSG_REGS],
) -> Result<usize, Error> {
    let cap = found?;
    // The info word is checked as any message's is (regression: invocations took
    // lengths over `MSG_MAX_WORDS` and more leases than `MSG_MAX_LEASES`).
    if !info.within_limits() {
        return Err(Error::RangeError);
    }
    // A kernel object takes its arguments in registers: capabilities or leases named
    // in the info word would silently not go (regression: they were ignored).
    if info.names_caps_or_leases() {
        return Err(Error::InvalidArgument);
    }
    let label = info.label();
    match cap.kind() {
        CapType::DebugConsole if label == debug::IPC_STATS => ipc_stats(out),
        CapType::DebugConsole if label == debug::CHECK_INVARIANTS => check_invariants(caller, out),
        CapType::DebugConsole => debug_write(label, regs),
        CapType::Thread => {
            // A thread's memory stays the thread's only while a capability to it
            // does: look it up again, in a read section or under the write lock,
            // which keeps it (the read section that found it has ended, and a delete
            // on another CPU may have destroyed the thread and retyped its memory
            // since).
            if let Some((result, request)) = thread_in_read_section(caller, cptr, label, regs) {
                if let Some(request) = request {
                    request.post();
                }
                return result;
            }
            match locked_again(caller, cptr, CapType::Thread, info, regs, out) {
                Ok((mut store, now)) => invoke_thread(&mut store, caller, &now, label, regs),
                Err(result) => result,
            }
        }
        CapType::CNode => invoke_cnode(caller, cptr, info, regs, out),
        CapType::Untyped => invoke_untyped(caller, cptr, label, regs),
        CapType::Frame4K | CapType::Frame2M => invoke_frame(caller, cptr, label, regs, out),
        CapType::Pdpt | CapType::PageDirectory | CapType::PageTable => {
            invoke_table(caller, cptr, label, regs)
        }
        CapType::IoPort => invoke_ioport(&cap, label, regs, out),
        CapType::SchedControl => invoke_sched_control(&cap, label, regs, out),
        CapType::IrqControl => invoke_irq_control(caller, cptr, label, regs),
        CapType::TraceControl => invoke_trace_control(caller, label, regs, out),
        _ => Err(Error::IllegalOperation),
    }
}

/// The write lock, with the capability `cptr` looked up again under it: the read
/// section that found it has ended, and a delete on another CPU may have destroyed
/// its object and reused the memory since; the lock keeps it. `Err` with the
/// invocation's result if it is no longer a `kind` capability (deleted, or another
/// object's now): invoked as found now, which does not come back here.
fn locked_again(
    caller: ThreadRef,
    cptr: u64,
    kind: CapType,
    info: MessageInfo,
    regs: &[u64; MSG_REGS],
    out: &mut [u64; MSG_REGS],
) -> Result<(crate::objects::CapGuard<'static>, Cap), Result<usize, Error>> {
    let store = CAP_LOCK.lock();
    match lookup_cap(caller, &*store, cptr) {
        Ok((_, now)) if now.kind() == kind => Ok((store, now)),
        now => {
            drop(store);
            Err(invoke_found(caller, cptr, now.map(|(_, cap)| cap), info, regs, out))
        }
    }
}

/// Tracing control: only through the `TraceControl` capability (docs/abi.md).
fn invoke_trace_control(
    caller: ThreadRef,
    label: u64,
    regs: &[u64; MSG_REGS],
    out: &mut [u64; MSG_REGS],
) -> Result<usize, Error> {
    match label {
        trace_control::START => crate::trace::start(regs[0], regs[1], caller).map(|()| 0),
        trace_control::STOP => {
            crate::trace::stop();
            Ok(0)
        }
        trace_control::DUMP => {
            out[0] = crate::trace::dump();
            Ok(1)
        }
        trace_control::SET_FASTPATH => match regs[0] {
            0 | 1 => {
                crate::trace::set_fastpath(regs[0] == 1);
                Ok(0)
            }
            _ => Err(Error::InvalidArgument),
        },
        trace_control::STATS => {
            let [held, dropped, overwritten] = crate::trace::stats(regs[0])?;
            out[..3].copy_from_slice(&[held, dropped, overwritten]);
            Ok(3)
        }
        _ => Err(Error::IllegalOperation),
    }
}

fn debug_write(label: u64, regs: &[u64; MSG_REGS]) -> Result<usize, Error> {
    if label != debug::WRITE {
        return Err(Error::IllegalOperation);
    }
    let [count, words @ ..] = *regs;
    let count = usize::try_from(count).map_err(|_| Error::RangeError)?;
    if count > debug::WRITE_MAX {
        return Err(Error::RangeError);
    }
    let mut bytes = [0u8; debug::WRITE_MAX];
    for (chunk, word) in bytes.chunks_mut(8).zip(words) {
        for (byte, value) in chunk.iter_mut().zip(word.to_le_bytes()) {
            *byte = value;
        }
    }
    let text = bytes.get(..count).unwrap_or(&[]);
    crate::console::user_write(text);
    Ok(0)
}

/// The scheduling invocations of a thread (`SUSPEND`, `RESUME`, `SET_PRIORITY`,
/// `SET_AFFINITY`) without the write lock: in a `CAP_LOCK` read section, with the
/// capability `cptr` looked up again there (no writer runs meanwhile, so the thread
/// cannot be destroyed while it is decided on). Scheduling state is its owner CPU's:
/// a thread this CPU owns is changed here and now, as the owner serves a request;
/// another CPU's gets the request, which the caller posts after the section (a read
/// section never waits) and which keeps the thread's memory until it is handled
/// (`sched::Deferred`). `None` when the write lock's path must do it: the capability
/// is not a thread's any more, the label is another, `RESUME` of a faulted thread
/// (its fault IPC may need ending), or `SUSPEND` of a thread this CPU owns that is
/// blocked or faulted (it must be taken out of its IPC).
pub(crate) fn thread_in_read_section(
    caller: ThreadRef,
    cptr: u64,
    label: u64,
    regs: &[u64; MSG_REGS],
) -> Option<(Result<usize, Error>, Option<sched::Deferred>)> {
    if !matches!(label, thread::SUSPEND | thread::RESUME | thread::SET_PRIORITY | thread::SET_AFFINITY) {
        return None;
    }
    let store = CAP_LOCK.read_fast(this_cpu());
    let (_, cap) = lookup_cap(caller, &*store, cptr).ok()?;
    if cap.kind() != CapType::Thread {
        return None;
    }
    let target = ThreadRef::new(cap.addr().0)?;
    if let Err(e) = cap.require(Rights::WRITE) {
        return Some((Err(e), None));
    }
    let state = tcb(target).state;
    let inactive = matches!(state, ThreadState::Inactive | ThreadState::Faulted);
    let request = match label {
        thread::SUSPEND if target == caller => {
            // Running, so in no IPC.
            sched::stop_current(ThreadState::Inactive);
            None
        }
        thread::SUSPEND => sched::suspend_deferred(target).ok()?,
        thread::RESUME => {
            if !inactive {
                return Some((Ok(0), None));
            }
            if state == ThreadState::Faulted {
                return None;
            }
            if !configured(&*store, target) {
                return Some((Err(Error::WrongThreadState), None));
            }
            // The owner checks the state again (this read may be stale).
            sched::resume_deferred(target)
        }
        thread::SET_PRIORITY => {
            let result = set_priority(caller, target, inactive, regs[0]);
            return Some((result.map(|()| 0), None));
        }
        _ => {
            let cpu = match u32::try_from(regs[0]) {
                Ok(cpu) if cpus::is_online(cpu) => cpu,
                _ => return Some((Err(Error::RangeError), None)),
            };
            sched::set_affinity_deferred(target, cpu)
        }
    };
    Some((Ok(0), request))
}

/// Whether `thread` has an address space and a CSpace root (`RESUME` needs both).
fn configured<S: ObjectStore>(store: &S, thread: ThreadRef) -> bool {
    tcb(thread).vspace != 0 && cspace_slot(thread).is_some_and(|s| !store.slot(s).is_empty())
}

/// `SET_PRIORITY`: at most the caller's own, of the caller or a stopped thread. The
/// byte is written from any CPU (a stopped thread is in no run queue; its owner
/// files it under the priority it has when it queues it: `Tcb::queued_at`).
fn set_priority(caller: ThreadRef, target: ThreadRef, inactive: bool, arg: u64) -> Result<(), Error> {
    let priority = u8::try_from(arg).map_err(|_| Error::RangeError)?;
    if priority > tcb(caller).priority {
        return Err(Error::InsufficientRights);
    }
    if !inactive && target != caller {
        return Err(Error::WrongThreadState);
    }
    tcb(target).priority = priority;
    Ok(())
}

/// The thread invocations, under the write lock (`store`), which keeps the thread's
/// memory its own: every one runs entirely under it (a `SUSPEND` of a thread on
/// another CPU posts its request under it and waits after the lock is released, in
/// `sched::await_stopped`).
fn invoke_thread(
    store: &mut Store,
    caller: ThreadRef,
    cap: &Cap,
    label: u64,
    regs: &[u64; MSG_REGS],
) -> Result<usize, Error> {
    let target = ThreadRef::new(cap.addr().0).ok_or(Error::InvalidCapability)?;
    let [a0, a1, a2, a3, ..] = *regs;
    let state = tcb(target).state;
    let inactive = matches!(state, ThreadState::Inactive | ThreadState::Faulted);
    match label {
        thread::SUSPEND => {
            cap.require(Rights::WRITE)?;
            if target == caller {
                leave_ipc(target);
                sched::stop_current(ThreadState::Inactive);
            } else {
                // Out of IPC where it is stopped, not here: running on another CPU
                // until its owner serves the request, it could block in IPC again
                // (regression: the four-CPU host test found a suspended thread
                // resumed while still queued on an endpoint, then switched to by a
                // fastpath call while also on its run queue).
                sched::suspend(target);
            }
        }
        thread::RESUME => {
            cap.require(Rights::WRITE)?;
            if !inactive {
                return Ok(0);
            }
            if !configured(store, target) {
                return Err(Error::WrongThreadState);
            }
            if state == ThreadState::Faulted {
                // Waiting for its fault handler (queued on the fault endpoint, or its
                // fault message received): out of that IPC first, as in seL4 (the
                // handler no longer owes it a reply), or it would run while still
                // queued there. Stable here: only a reply, under this lock, changes a
                // faulted thread's state from another CPU, and it cannot enter IPC
                // again before it runs.
                leave_ipc(target);
            }
            // The owner checks the state again (this read may be stale).
            sched::resume_thread(target);
        }
        thread::WRITE_ENTRY => {
            cap.require(Rights::WRITE)?;
            if !inactive {
                return Err(Error::WrongThreadState);
            }
            if !(USER_BASE..USER_TOP).contains(&a0) || !(USER_BASE..=USER_TOP).contains(&a1) {
                return Err(Error::InvalidArgument);
            }
            tcb(target).context = ramen_arch::user::UserContext::new_user(a0, a1, a2);
        }
        thread::SET_PRIORITY => {
            cap.require(Rights::WRITE)?;
            set_priority(caller, target, inactive, a0)?;
        }
        thread::SET_AFFINITY => {
            cap.require(Rights::WRITE)?;
            let cpu = u32::try_from(a0).map_err(|_| Error::RangeError)?;
            if !cpus::is_online(cpu) {
                return Err(Error::RangeError);
            }
            if target == caller {
                sched::set_affinity(caller, cpu);
            } else {
                sched::set_affinity(target, cpu);
            }
        }
        thread::BIND_NOTIFICATION => {
            cap.require(Rights::WRITE)?;
            let addr = if a0 == 0 {
                0
            } else {
                let (_, notification) = lookup_cap(caller, store, a0)?;
                if notification.kind() != CapType::Notification {
                    return Err(Error::WrongType);
                }
                notification.require(Rights::READ)?;
                notification.addr().0
            };
            crate::ipc::bind(target, addr)?;
        }
        thread::SET_LEASE_WINDOW => {
            cap.require(Rights::WRITE)?;
            if tcb(target).caller.is_some_and(|c| tcb(c).leases.any()) {
                return Err(Error::Busy);
            }
            crate::lease::set_window(target, a0, a1)?;
        }
        thread::SET_NAME => {
            cap.require(Rights::WRITE)?;
            let name = thread_name(a0, [a1, a2])?;
            // The name lives in the TCB, which only the CPU running the thread touches
            // (as for SET_PRIORITY): name yourself, or a suspended thread.
            if !inactive && target != caller {
                return Err(Error::WrongThreadState);
            }
            crate::trace::set_name(target, name);
        }
        thread::SET_TRACE_BUFFER => {
            cap.require(Rights::WRITE)?;
            // Under the lock, so the frame cannot be deleted before it is registered
            // (deleting it unregisters it, in `tear_down`).
            let frame = if a0 == 0 {
                None
            } else {
                let (_, frame) = lookup_cap(caller, store, a0)?;
                if frame.kind() != CapType::Frame4K {
                    return Err(Error::WrongType);
                }
                frame.require(Rights::READ | Rights::WRITE)?;
                Some(frame.addr())
            };
            crate::trace::set_user_buffer(target, frame)?;
        }
        thread::CONFIGURE => {
            cap.require(Rights::WRITE)?;
            if !inactive {
                return Err(Error::WrongThreadState);
            }
            configure(store, caller, target, [a0, a1, a2, a3])?;
        }
        _ => return Err(Error::IllegalOperation),
    }
    Ok(0)
}

/// The name `SET_NAME` carries: `len` bytes of `words`, valid UTF-8.
fn thread_name(len: u64, words: [u64; 2]) -> Result<crate::trace::ThreadName, Error> {
    let len = usize::try_from(len).map_err(|_| Error::RangeError)?;
    if len > thread::NAME_MAX {
        return Err(Error::RangeError);
    }
    let mut bytes = [0u8; thread::NAME_MAX];
    for (chunk, word) in bytes.chunks_mut(8).zip(words) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    crate::trace::ThreadName::new(bytes.get(..len).unwrap_or(&[])).ok_or(Error::InvalidArgument)
}

/// Sets a thread's CSpace root, VSpace, fault endpoint and IPC buffer.
fn configure(store: &mut Store, caller: ThreadRef, target: ThreadRef, args: [u64; 4]) -> Result<(), Error> {
    let [cspace, vspace, fault, ipc_buffer] = args;
    if ipc_buffer != 0 && (!ipc_buffer.is_multiple_of(4096) || !(USER_BASE..USER_TOP).contains(&ipc_buffer)) {
        return Err(Error::InvalidArgument);
    }
    let (cnode_slot, cnode_cap) = lookup_cap(caller, store, cspace)?;
    if cnode_cap.kind() != CapType::CNode {
        return Err(Error::WrongType);
    }
    let (_, vspace_cap) = lookup_cap(caller, store, vspace)?;
    if vspace_cap.kind() != CapType::VSpace {
        return Err(Error::WrongType);
    }
    let dest = cspace_slot(target).ok_or(Error::InvalidCapability)?;
    // Replace any previous root: delete it (a CNode copy never destroys the CNode
    // while the copy we are about to make exists, but the source may be the last).
    if !store.slot(dest).is_empty() {
        run_steps(store, dest, ops::delete_step)?;
    }
    ops::copy(store, cnode_slot, dest)?;
    let t = tcb(target);
    crate::asid::thread_removed(store, t.vspace);
    t.vspace = vspace_cap.addr().0;
    crate::asid::thread_added(store, t.vspace);
    t.fault_endpoint = fault;
    t.ipc_buffer = ipc_buffer;
    Ok(())
}

/// Repeats a preemptible step (delete, revoke) up to [`MAX_STEPS`] times, tearing
/// down each destroyed object. `Preempted` if it is not done yet.
fn run_steps(
    store: &mut Store,
    at: SlotRef,
    step: fn(&mut Store, SlotRef) -> Result<Step, Error>,
) -> Result<(), Error> {
    for _ in 0..MAX_STEPS {
        let Step { done, destroyed } = step(store, at)?;
        if let Some(object) = destroyed {
            tear_down(store, object);
        }
        if done {
            return Ok(());
        }
    }
    Err(Error::Preempted)
}

/// Kernel-side clean-up of an object whose last capability went away.
fn tear_down(store: &mut Store, object: Destroyed) {
    match object {
        // Mapping records that name this VSpace are stale from now on.
        // No CPU may keep it loaded once its memory can be reused.
        Destroyed::PageTable { addr, kind: CapType::VSpace } => {
            crate::tlb::leave(addr.0);
            crate::asid::release(store, addr.0);
        }
        Destroyed::Endpoint(addr) => crate::ipc::cancel_all(addr.0),
        Destroyed::Notification(addr) => crate::ipc::cancel_notification(addr.0),
        // The line is free for a new handler. (Masking it comes with IRQ delivery to
        // user-space drivers; no line is unmasked yet.)
        Destroyed::IrqHandler(irq) => IRQS.lock().release(irq),
        Destroyed::Frame { addr, .. } => crate::trace::forget_user_buffer(addr.0),
        Destroyed::Thread(addr) => {
            crate::trace::forget_user_buffer(addr.0);
            if let Some(thread) = ThreadRef::new(addr.0) {
                crate::asid::thread_removed(store, tcb(thread).vspace);
                leave_ipc(thread);
                crate::ipc::sever_reply_links(thread);
                let _ = crate::ipc::bind(thread, 0);
                // Take it off its CPU before the memory can be reused: at once here,
                // by request on its owner (retype refuses the memory until it is done).
                sched::forget_anywhere(thread);
            }
        }
        // A frame's mappings went with its capabilities (`remove_mapping`). Tables
        // still installed in a parent stay linked there: the open gap in
        // docs/objects.md.
        _ => {}
    }
}

/// How often a lock-free capability change tries again when another change holds a
/// slot it needs, before it takes the write lock instead.
const LIGHT_TRIES: usize = 8;

/// A CNode invocation without the write lock, when it is one that
/// `ramen_core::light` makes (copy, mint, move, mutate, delete of an endpoint or
/// notification capability that leaves its object another capability): in a read
/// section, which keeps every write-lock change out, holding only the slots it
/// touches. `None` when the write lock's path must do it (or report its error: this
/// path reports only the operation's own refusals, so the codes are the same).
fn cnode_in_read_section(
    caller: ThreadRef,
    cptr: u64,
    label: u64,
    regs: &[u64; MSG_REGS],
) -> Option<Result<usize, Error>> {
    if !crate::fastpath::lock_free_enabled() {
        return None;
    }
    let [index, depth, src, rights, badge, _] = *regs;
    let store = CAP_LOCK.read_fast(this_cpu());
    let (_, cap) = lookup_cap(caller, &*store, cptr).ok()?;
    if cap.kind() != CapType::CNode || cap.require(Rights::WRITE).is_err() {
        return None;
    }
    let dest = cspace::resolve(&*store, &cap, index, u8::try_from(depth).ok()?).ok()?;
    let rights = Rights::from_bits(u8::try_from(rights).ok()?)?;
    let src = || lookup(caller, &*store, src).ok();
    let change = match label {
        cnode::COPY => Change::Copy { src: src()? },
        cnode::MINT => Change::Mint { src: src()?, rights, badge },
        cnode::MOVE => Change::Move { src: src()? },
        cnode::MUTATE => Change::Mutate { src: src()?, rights, badge },
        cnode::DELETE => Change::Delete,
        _ => return None,
    };
    changed_in_read_section(&store, dest, change)
}

fn invoke_cnode(
    caller: ThreadRef,
    cptr: u64,
    info: MessageInfo,
    regs: &[u64; MSG_REGS],
    out: &mut [u64; MSG_REGS],
) -> Result<usize, Error> {
    let label = info.label();
    // The label first (regression: an unknown label with a bad index or depth
    // answered `RangeError`).
    if !matches!(
        label,
        cnode::COPY | cnode::MINT | cnode::MOVE | cnode::MUTATE | cnode::DELETE | cnode::REVOKE
    ) {
        return Err(Error::IllegalOperation);
    }
    if let Some(result) = cnode_in_read_section(caller, cptr, label, regs) {
        return result;
    }
    // (Walking a CNode found in the ended read section read whatever its memory holds
    // now as capabilities, if a delete on another CPU destroyed it meanwhile.)
    let (mut store, cap) = match locked_again(caller, cptr, CapType::CNode, info, regs, out) {
        Ok(found) => found,
        Err(result) => return result,
    };
    cap.require(Rights::WRITE)?;
    let [index, depth, src, rights, badge, _] = *regs;
    let depth = u8::try_from(depth).map_err(|_| Error::RangeError)?;
    let dest = cspace::resolve(&*store, &cap, index, depth)?;
    let rights = Rights::from_bits(u8::try_from(rights).map_err(|_| Error::InvalidArgument)?)
        .ok_or(Error::InvalidArgument)?;
    let data = cap_data(&store, caller, src, badge)?;
    match label {
        cnode::COPY => {
            let src = lookup(caller, &*store, src)?;
            ops::copy(&mut *store, src, dest)?;
        }
        cnode::MINT => {
            let src = lookup(caller, &*store, src)?;
            ops::mint(&mut *store, src, dest, rights, data)?;
        }
        cnode::MOVE => {
            let src = lookup(caller, &*store, src)?;
            ops::move_cap(&mut *store, src, dest)?;
        }
        cnode::MUTATE => {
            let src = lookup(caller, &*store, src)?;
            ops::mutate(&mut *store, src, dest, rights, data)?;
        }
        cnode::DELETE => run_steps(&mut store, dest, ops::delete_step)?,
        cnode::REVOKE => run_steps(&mut store, dest, ops::revoke_step)?,
        _ => return Err(Error::IllegalOperation),
    }
    Ok(0)
}

fn invoke_untyped(caller: ThreadRef, cptr: u64, label: u64, regs: &[u64; MSG_REGS]) -> Result<usize, Error> {
    if label != untyped::RETYPE {
        return Err(Error::IllegalOperation);
    }
    let [kind, size_bits, dest_cnode, offset, count, _] = *regs;
    let kind = CapType::from_code(kind).ok_or(Error::InvalidArgument)?;
    let size_bits = u8::try_from(size_bits).map_err(|_| Error::RangeError)?;
    let request = RetypeRequest { kind, size_bits, count };
    if let Some(result) = retype_in_read_section(caller, cptr, request, dest_cnode, offset) {
        return result;
    }
    let mut store = CAP_LOCK.lock();
    let untyped_slot = lookup(caller, &*store, cptr)?;
    let dest = lookup(caller, &*store, dest_cnode)?;
    // A thread destroyed on another CPU may still run there for a moment: until that
    // CPU takes it off, the memory it lived in is not handed out again.
    let region = store.slot(untyped_slot).cap();
    if region.kind() == CapType::Untyped
        && crate::objects::retype_would_reuse_running_thread(region.addr().0, 1 << region.size_bits())
    {
        return Err(Error::Busy);
    }
    retype(&mut *store, untyped_slot, request, dest, offset)?;
    Ok(0)
}

/// A small retype (`light::RETYPE_MAX_COUNT` objects, `light::RETYPE_MAX_BYTES`) without
/// the write lock: in a read section, holding the untyped's slot and the slots the new
/// capabilities go to, so retypes from different untypeds run at once. `None` when
/// the write lock's path must do it (a larger retype, a lookup that fails, anything
/// `light::change` leaves to it).
fn retype_in_read_section(
    caller: ThreadRef,
    cptr: u64,
    request: RetypeRequest,
    dest_cnode: u64,
    offset: u64,
) -> Option<Result<usize, Error>> {
    if !crate::fastpath::lock_free_enabled() {
        return None;
    }
    let store = CAP_LOCK.read_fast(this_cpu());
    let untyped = lookup(caller, &*store, cptr).ok()?;
    let dest = lookup(caller, &*store, dest_cnode).ok()?;
    // As on the write lock's path: memory a destroyed thread may still run in on
    // another CPU is not handed out again yet.
    let region = store.slot(untyped).cap();
    if region.kind() == CapType::Untyped
        && crate::objects::retype_would_reuse_running_thread(region.addr().0, 1 << region.size_bits())
    {
        return Some(Err(Error::Busy));
    }
    changed_in_read_section(&store, dest, Change::Retype { untyped, request, offset })
}

/// Makes `change` on `dest` in the read section `store`, trying again while another
/// change holds a slot it needs, and counts it; `None` for the write lock's path.
fn changed_in_read_section(
    store: &crate::objects::ReadGuard<'_>,
    dest: SlotRef,
    change: Change,
) -> Option<Result<usize, Error>> {
    for _ in 0..LIGHT_TRIES {
        match light::change(&mut SlotChange::new(store), dest, change) {
            Outcome::Done(result) => {
                // Only this CPU writes its count: a plain load and store.
                let count = &this_cpu().cap_unlocked;
                count.store(
                    count.load(core::sync::atomic::Ordering::Relaxed) + 1,
                    core::sync::atomic::Ordering::Relaxed,
                );
                return Some(result.map(|()| 0));
            }
            Outcome::Locked => return None,
            Outcome::Busy => core::hint::spin_loop(),
        }
    }
    None
}

fn map_error(e: MapError) -> Error {
    match e {
        MapError::OutOfFrames => Error::MissingPageTable,
        MapError::AlreadyMapped(_) | MapError::HugePageInTheWay(_) => Error::AlreadyMapped,
        MapError::Misaligned(_) => Error::AlignmentError,
        MapError::FrameUnreachable(_) | MapError::WindowFull => Error::RangeError,
        MapError::Pinned(_) => Error::Busy,
    }
}

/// The VSpace root a capability pointer names, for mapping.
fn vspace_root(caller: ThreadRef, store: &Store, cptr: u64) -> Result<u64, Error> {
    let (_, cap) = lookup_cap(caller, store, cptr)?;
    if cap.kind() != CapType::VSpace {
        return Err(Error::WrongType);
    }
    cap.require(Rights::WRITE)?;
    Ok(cap.addr().0)
}

fn check_user_range(vaddr: u64, bytes: u64) -> Result<(), Error> {
    let end = vaddr.checked_add(bytes).ok_or(Error::RangeError)?;
    if vaddr < USER_BASE || end > USER_TOP {
        return Err(Error::RangeError);
    }
    if !vaddr.is_multiple_of(bytes) {
        return Err(Error::AlignmentError);
    }
    Ok(())
}

/// Frame capabilities record their one mapping (`Cap::mapping`): a second map of the
/// same capability is refused (map a copy instead), unmap must name that mapping, and
/// a mapped capability cannot be moved.
fn invoke_frame(
    caller: ThreadRef,
    cptr: u64,
    label: u64,
    regs: &[u64; MSG_REGS],
    out: &mut [u64; MSG_REGS],
) -> Result<usize, Error> {
    let [vspace_cptr, vaddr, rights, ..] = *regs;
    let mut store = CAP_LOCK.lock();
    let (slot, cap) = lookup_cap(caller, &*store, cptr)?;
    let (size, bytes) = match cap.kind() {
        CapType::Frame2M => (PageSize::Size2M, 1 << 21),
        _ => (PageSize::Size4K, 4096),
    };
    let root = vspace_root(caller, &store, vspace_cptr)?;
    check_user_range(vaddr, bytes)?;
    match label {
        vspace::FRAME_MAP => {
            if cap.mapping().is_some() {
                return Err(Error::AlreadyMapped);
            }
            if rights > 0b11 {
                return Err(Error::InvalidArgument);
            }
            let writable = rights & 1 != 0;
            let executable = rights & 2 != 0;
            if writable {
                cap.require(Rights::WRITE)?;
            }
            cap.require(Rights::READ)?;
            if writable && executable {
                // W^X: a page is never both.
                return Err(Error::InvalidArgument);
            }
            let mut space = address_space(root);
            let mut no_tables = || None;
            space
                .map(vaddr, cap.addr().0, size, user_flags(writable, executable), &mut no_tables)
                .map_err(map_error)?;
            let asid = crate::asid::of(&mut store, root)?;
            ops::record_mapping(&mut *store, slot, Some((PhysAddr(root), crate::asid::pack(vaddr, asid))))?;
            if let Some(word) = out.first_mut() {
                *word = vaddr;
            }
            Ok(1)
        }
        vspace::FRAME_UNMAP => {
            let recorded = cap.mapping().and_then(|(r, packed)| crate::asid::resolve(&store, r.0, packed));
            if recorded != Some((root, vaddr)) {
                return Err(Error::InvalidArgument);
            }
            let mut space = address_space(root);
            space.unmap(vaddr, size).map_err(map_error)?;
            ops::record_mapping(&mut *store, slot, None)?;
            // No CPU may keep the translation once the frame can be reused.
            crate::tlb::shoot_down(root, core::iter::once(vaddr));
            Ok(0)
        }
        _ => Err(Error::IllegalOperation),
    }
}

/// A table capability records where it is installed, like a frame its mapping:
/// installing it twice is refused (install a copy), and deleting it unlinks it.
fn invoke_table(caller: ThreadRef, cptr: u64, label: u64, regs: &[u64; MSG_REGS]) -> Result<usize, Error> {
    if label != vspace::TABLE_MAP {
        return Err(Error::IllegalOperation);
    }
    let [vspace_cptr, vaddr, ..] = *regs;
    let mut store = CAP_LOCK.lock();
    let (slot, cap) = lookup_cap(caller, &*store, cptr)?;
    let level = crate::objects::table_level(cap.kind());
    let root = vspace_root(caller, &store, vspace_cptr)?;
    if !(USER_BASE..USER_TOP).contains(&vaddr) {
        return Err(Error::RangeError);
    }
    if cap.mapping().is_some() {
        return Err(Error::AlreadyMapped);
    }
    let asid = crate::asid::of(&mut store, root)?;
    let mut space = address_space(root);
    space.install_table(vaddr, level, cap.addr().0).map_err(map_error)?;
    ops::record_mapping(&mut *store, slot, Some((PhysAddr(root), crate::asid::pack(vaddr, asid))))?;
    Ok(0)
}

fn invoke_ioport(
    cap: &Cap,
    label: u64,
    regs: &[u64; MSG_REGS],
    out: &mut [u64; MSG_REGS],
) -> Result<usize, Error> {
    let [port, value, ..] = *regs;
    let (width, write) = match label {
        ioport::OUT8 => (1, true),
        ioport::OUT16 => (2, true),
        ioport::OUT32 => (4, true),
        ioport::IN8 => (1, false),
        ioport::IN16 => (2, false),
        ioport::IN32 => (4, false),
        _ => return Err(Error::IllegalOperation),
    };
    let first = cap.arg() & 0xffff;
    let last = (cap.arg() >> 16) & 0xffff;
    // Ports outside the 16-bit port space are out of range whatever the capability
    // (regression: 2^64 - 1 answered `RangeError` but 0x10000 `InsufficientRights`).
    let end =
        port.checked_add(width - 1).filter(|end| *end <= u64::from(u16::MAX)).ok_or(Error::RangeError)?;
    if port < first || end > last {
        return Err(Error::InsufficientRights);
    }
    let port = u16::try_from(port).map_err(|_| Error::RangeError)?;
    if write {
        let value = u32::try_from(value).map_err(|_| Error::RangeError)?;
        if width < 4 && value >> (width * 8) != 0 {
            return Err(Error::RangeError);
        }
        crate::objects::port_out(port, width as u8, value);
        Ok(0)
    } else {
        if let Some(word) = out.first_mut() {
            *word = u64::from(crate::objects::port_in(port, width as u8));
        }
        Ok(1)
    }
}

/// Takes a thread out of any endpoint queue it waits in (suspend, delete). Under
/// `CAP_LOCK` (write), on a thread that is not running: it must not be able to enter
/// IPC again before it is stopped.
pub(crate) fn leave_ipc(thread: ThreadRef) {
    use crate::objects::IpcState;
    let t = tcb(thread);
    match t.ipc {
        IpcState::Sending(ep) | IpcState::Calling(ep) | IpcState::Receiving(ep) => {
            crate::ipc::remove(ep, thread);
            // A fault message not yet received goes with it (else a later call it
            // queues would deliver the stale fault instead of its message).
            t.pending_fault = None;
        }
        IpcState::Waiting(notification) => crate::ipc::remove_waiter(notification, thread),
        // Out of its call: what it lent comes back, and the server no longer owes it a
        // reply (regression: the link stayed, and the server's `Reply` later failed
        // after clearing it, a failing call that changed state; found by the host
        // test `a_failing_system_call_changes_nothing`).
        IpcState::WaitingReply => {
            crate::lease::release(thread);
            if let Some(server) = t.replier.take()
                && tcb(server).caller == Some(thread)
            {
                tcb(server).caller = None;
            }
        }
        IpcState::None => {}
    }
    t.ipc = IpcState::None;
}

/// The data word of mint and mutate: a badge for endpoints and notifications, a guard
/// (`value << 8 | bits`, see `ramen_abi::object::guard`) for CNodes; 0 keeps it.
fn cap_data(store: &Store, caller: ThreadRef, src: u64, word: u64) -> Result<CapData, Error> {
    if word == 0 {
        return Ok(CapData::Keep);
    }
    let Ok((_, cap)) = lookup_cap(caller, store, src) else {
        return Ok(CapData::Keep);
    };
    Ok(match cap.kind() {
        CapType::CNode => CapData::Guard { guard: word >> 8, guard_bits: (word & 0xff) as u8 },
        _ => CapData::Badge(word),
    })
}

fn invoke_sched_control(
    cap: &Cap,
    label: u64,
    regs: &[u64; MSG_REGS],
    out: &mut [u64; MSG_REGS],
) -> Result<usize, Error> {
    use ramen_abi::invocation::sched_control::{MAX_SLICE_NS, MIN_SLICE_NS, SET_SLICE};
    if label != SET_SLICE {
        return Err(Error::IllegalOperation);
    }
    let [slice_ns, ..] = *regs;
    if !(MIN_SLICE_NS..=MAX_SLICE_NS).contains(&slice_ns) {
        return Err(Error::RangeError);
    }
    let cpu = u32::try_from(cap.arg()).ok().and_then(cpus::cpu).ok_or(Error::InvalidCapability)?;
    let previous = cpu.slice_ns.swap(slice_ns, core::sync::atomic::Ordering::Relaxed);
    if let Some(word) = out.first_mut() {
        *word = previous;
    }
    Ok(1)
}

fn ipc_stats(out: &mut [u64; MSG_REGS]) -> Result<usize, Error> {
    let (mut fast, mut slow, mut flushes, mut writes, mut unlocked) = (0, 0, 0, 0, 0);
    for index in 0..ramen_core::topology::MAX_CPUS as u32 {
        if let Some(cpu) = cpus::cpu(index) {
            fast += cpu.ipc_fast.load(core::sync::atomic::Ordering::Relaxed);
            slow += cpu.ipc_slow.load(core::sync::atomic::Ordering::Relaxed);
            flushes += cpu.tlb_flushes.load(core::sync::atomic::Ordering::Relaxed);
            writes += cpu.cap_writes.load(core::sync::atomic::Ordering::Relaxed);
            unlocked += cpu.cap_unlocked.load(core::sync::atomic::Ordering::Relaxed);
        }
    }
    out[..5].copy_from_slice(&[fast, slow, flushes, writes, unlocked]);
    Ok(5)
}

/// Which IRQ lines have a handler capability; changed under `CAP_LOCK` (taken first).
static IRQS: spin::Mutex<ramen_core::irq::IrqTable> = spin::Mutex::new(ramen_core::irq::IrqTable::new());

fn invoke_irq_control(
    caller: ThreadRef,
    cptr: u64,
    label: u64,
    regs: &[u64; MSG_REGS],
) -> Result<usize, Error> {
    if label != ramen_abi::invocation::irq_control::ISSUE {
        return Err(Error::IllegalOperation);
    }
    let [irq, dest, ..] = *regs;
    let mut store = CAP_LOCK.lock();
    let control = lookup(caller, &*store, cptr)?;
    let dest = lookup(caller, &*store, dest)?;
    ramen_core::irq::issue_handler(&mut *store, &mut IRQS.lock(), control, irq, dest)?;
    Ok(0)
}

fn check_invariants(caller: ThreadRef, out: &mut [u64; MSG_REGS]) -> Result<usize, Error> {
    let store = CAP_LOCK.lock();
    let root = root_of(caller, &*store);
    if root.kind() != CapType::CNode {
        return Err(Error::InvalidCapability);
    }
    let (mut bad, mut slots) = (0u64, 0u64);
    for index in 0..1u64 << root.size_bits() {
        let Some(at) = SlotRef::in_cnode(root.addr(), index) else { break };
        let slot = store.slot(at);
        // Under the write lock no lock-free change holds a slot: an odd lock word is
        // one a change left held.
        if store.version(at) & 1 != 0 {
            bad += 1;
        }
        if slot.is_empty() {
            if slot.next().is_some() || slot.prev().is_some() {
                bad += 1;
            }
            continue;
        }
        slots += 1;
        let next_ok = slot.next().is_none_or(|n| store.slot(n).prev() == Some(at));
        let prev_ok = slot.prev().is_none_or(|p| store.slot(p).next() == Some(at));
        if !next_ok || !prev_ok {
            bad += 1;
        }
    }
    drop(store);
    let (queue_bad, queued) = sched::check_queue();
    out[0] = bad + queue_bad;
    out[1] = slots;
    out[2] = queued;
    Ok(3)
}
