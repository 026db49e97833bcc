//! The IPC fastpath for `Call` and `ReplyRecv`, and the lock-free paths for plain
//! `Send` / `Recv` and notifications that the slow path's entry tries first.
//!
//! A chain of guards, each a cheap check that the slow path would do exactly what
//! follows; any unusual case (capability or lease transfer, reserved info bits, a
//! missing IPC buffer for a message longer than the registers, a receiver of lower
//! priority than someone runnable here, senders already queued, a fault reply, a
//! full inbox on the partner's CPU) returns `None` and the slow path runs instead.
//! After the marked point of no return the message registers go straight from the
//! sender's saved registers to the receiver's (words past the registers from IPC
//! buffer to IPC buffer), and the CPU switches directly to the receiver: no run-queue
//! round trip, no inbox, no wake-up. A receiver on another CPU gets the message the
//! same way and is woken through an inbox slot reserved before the point of no
//! return; this CPU then runs whatever is best here. All of it inside a `CAP_LOCK`
//! read section with the endpoint's (or notification's) own lock: no global lock.
//!
//! The same state results as from the slow path (`ipc::send` with `Call` followed by
//! the receiver running; `ipc::reply` then `ipc::receive`), except that the thread
//! switched to never passes through the run queue.

use ramen_abi::syscall::Sys;
use ramen_abi::{MSG_REGS, MessageInfo};
use ramen_arch::user::UserContext;
use ramen_core::cap::{Cap, Rights};
use ramen_core::cspace::MAX_DEPTH;
use ramen_core::object::{CapType, ObjectStore};
use ramen_core::runqueue::ThreadRef;
use ramen_perf_record::{Categories, EventKind, IpcPath};

use crate::cpus::{Cpu, this_cpu};
use crate::ipc::SendKind;
use crate::objects::{
    CAP_LOCK, EndpointLock, IpcBufferPage, IpcState, NotificationLock, ReadStore, ThreadState, cspace_slot,
    notification_words, set_notification_words, tcb,
};
use crate::sched::{self, Sched};
use crate::{ipc, syscall};

/// Runs first on every system call: finds the calling thread, records the entry, and
/// tries the fastpath. On success it switches to the receiver and never returns. It
/// returns the calling thread when the slow path must run (with nothing changed), or
/// `None` when no thread is current.
///
/// One borrow of this CPU's scheduler covers the whole attempt and the switch, and
/// the CPU's entry is found once (one GS load): each borrow is a check and two
/// stores, which shows on a path this short. Inlined into the system-call entry, which calls the slow path
/// (`syscall::slow_path`, out of line) only when this returns, so the slow path's
/// registers and stack frame do not weigh on it.
#[inline(always)]
pub fn attempt<const TRACED: bool, const PCID: bool>(ctx: &UserContext) -> Option<ThreadRef> {
    match try_commit::<TRACED, PCID>(ctx) {
        Outcome::Switched => return_to_receiver(),
        Outcome::Resume => None,
        Outcome::Slow(caller) => Some(caller),
    }
}

/// [`attempt`] up to where it leaves: the fastpath's whole decision and, when it
/// commits, the hand-over and switch (the kernel's host tests call this and compare
/// the state it leaves with the slow path's).
#[inline(always)]
pub(crate) fn try_commit<const TRACED: bool, const PCID: bool>(ctx: &UserContext) -> Outcome {
    let (number, cptr, info) = (ctx.rax, ctx.rdi, MessageInfo(ctx.rsi));
    crate::cpus::with_local_sched(|cpu, s| {
        let Some(caller) = sched::current_of(s) else {
            return Outcome::Resume;
        };
        // Whether tracing is on, read once for the three trace points on the way (the
        // later two read the categories again: a spin may come between). The
        // untraced build (the handler while tracing is off) has no trace point:
        // `false` here removes them all.
        let categories = if TRACED { crate::trace::categories() } else { Categories::empty() };
        let tracing = !categories.is_empty();
        if tracing {
            crate::trace::syscall_enter(cpu, categories, caller, number, cptr);
        }
        match guards_and_commit::<false, PCID>(cpu, s, caller, number, cptr, info, tracing) {
            Some(Next::Here(next)) => {
                // The IPC's records and the receiver's run, written on the way out
                // (the ring needs no scheduler borrow).
                if tracing {
                    let kind =
                        if number == Sys::Call as u64 { EventKind::IpcSend } else { EventKind::IpcReply };
                    let ipc = crate::trace::FastIpc { kind, len_words: info.len_words() };
                    crate::trace::fastpath_switch(cpu, caller, next, ipc);
                }
                Outcome::Switched
            }
            // Handed to another CPU: this CPU runs whatever is best here now.
            Some(Next::Resume) => Outcome::Resume,
            None => Outcome::Slow(caller),
        }
    })
}

/// Leaves for the thread the fastpath switched to, with `sysretq`: the receiver
/// blocked in a system call (`Recv`/`ReplyRecv` for a call, `Call` for a reply; a
/// faulted caller, whose context a trap saved, is never a target), so its context
/// was saved by `SYSCALL` and only its message registers have changed since.
#[inline(always)]
#[allow(unsafe_code)]
fn return_to_receiver() -> ! {
    debug_assert!(sched::current().is_some_and(|t| tcb(t).context.is_sane()));
    // SAFETY: the current context is the receiver's, saved by `SYSCALL` (above), so
    // its RIP follows a `SYSCALL` instruction below `USER_TOP` (canonical) and its
    // RFLAGS were forced by the entry stub; `sched::switch_in` installed it.
    unsafe { ramen_arch::user::sysret_to_user() }
}

/// How [`attempt`] went.
pub(crate) enum Outcome {
    /// Switched to the receiver here: return to it.
    Switched,
    /// No thread was current, or the message went to another CPU: this CPU resumes
    /// whatever is best.
    Resume,
    /// The slow path runs for this thread (nothing changed).
    Slow(ThreadRef),
}

/// Counts an IPC operation done on the fastpath (or the lock-free paths) on `cpu`,
/// which is the running CPU: no other CPU writes its counter, so a plain load and
/// store does (no locked instruction on the fastpath); other CPUs only read it.
#[inline(always)]
fn count_fast(cpu: &Cpu) {
    let fast = &cpu.ipc_fast;
    fast.store(
        fast.load(core::sync::atomic::Ordering::Relaxed).wrapping_add(1),
        core::sync::atomic::Ordering::Relaxed,
    );
}

/// Where a committed fastpath goes next.
enum Next {
    /// Switch to this thread here.
    Here(ThreadRef),
    /// The message went to a thread on another CPU, woken there, and the caller
    /// blocked: this CPU runs whatever is best now (`sched::resume`).
    Resume,
}

/// The fastpath proper, under the scheduler borrow `s`: the guards common to both
/// calls, the call's own guards and commit, and the switch. Returns where to go
/// next, or `None` (nothing changed).
#[inline(always)]
fn guards_and_commit<const LONG: bool, const PCID: bool>(
    cpu: &'static Cpu,
    s: &mut Sched,
    caller: ThreadRef,
    number: u64,
    cptr: u64,
    info: MessageInfo,
    tracing: bool,
) -> Option<Next> {
    // The differential build (feature `slowpath-only`) sends everything the slow way.
    if cfg!(feature = "slowpath-only") {
        return None;
    }
    let is_call = match number {
        n if n == Sys::Call as u64 => true,
        n if n == Sys::ReplyRecv as u64 => false,
        _ => return None,
    };
    if !LONG && !info.fits_fastpath() {
        // Longer than the registers: the same path with the IPC buffers, out of line.
        return long::<PCID>(cpu, s, caller, number, cptr, info, tracing);
    }
    // A read section, not the write lock: no shared line written (see `CapLock`).
    let store = CAP_LOCK.read_fast(cpu);
    // The thread's own memo first; a miss goes through this CPU's lookup cache, out of
    // line so that a hit keeps everything in registers. (Written out here and in
    // `send_receive_in`: a shared helper returning the capability measured 4 more
    // instructions per round trip here, and 40 more per notification round trip.)
    if tcb(caller).lookup_memo.hit(&*store, cptr, MAX_DEPTH).is_none() {
        lookup_miss_in_place(cpu, &store, caller, cptr)?;
    }
    // Read where it lies, in the memo (a miss refilled it): one address on both
    // paths, so a hit runs straight on (the other lookups, which take a reference
    // from either memo, measured 4 instructions more per round trip here).
    let cap = *tcb(caller).lookup_memo.cap();
    if cap.kind() != CapType::Endpoint {
        return None;
    }
    let here = ramen_arch::percpu::index_fast();
    let next = if is_call {
        call::<LONG>(s, caller, &cap, info, here, tracing)?
    } else {
        reply_recv::<LONG>(s, caller, &cap, info, here, tracing)?
    };
    let Some(next) = next else {
        // Delivered to another CPU (its wake-up posted inside the read section: see
        // `remote_call`).
        drop(store);
        sched::stop_current_in(s, ThreadState::Blocked);
        count_fast(cpu);
        return Some(Next::Resume);
    };
    // The IPC's trace records are written on the way out (`trace::fastpath_switch`).
    // The read section covers capability slots and endpoint queues, all done with.
    drop(store);
    sched::switch_in::<PCID>(s, caller, next);
    count_fast(cpu);
    Some(Next::Here(next))
}

/// `Send` / `NbSend` and `Recv` / `NbRecv` without `CAP_LOCK`'s write side, in a
/// read section: on an endpoint ([`send`], [`receive`], with the endpoint's lock),
/// or on a notification (signal; wait or poll, with the notification's own lock, as
/// the slow path's `ipc::signal` / `ipc::wait` would do them). A thread woken on
/// another CPU is woken through a reserved inbox slot (see [`remote_call`]). Left to
/// the slow path (nothing changed): other capabilities, missing rights (it reports
/// the error), the cases [`send`] and [`receive`] list, and a signal with no waiter on
/// a notification bound to a thread (which may be waiting on an endpoint, whose
/// queue the slow path edits). Called by the slow path (`syscall::slow_path`) for
/// those four system calls only ([`reply_slow`] and [`call_slow`] do the others), so
/// neither the call fastpath nor the other slow calls carry any of it; returns
/// whether it did the operation (the CPU then resumes whatever is best).
#[inline(never)]
pub fn send_receive(caller: ThreadRef, sys: Sys, cptr: u64) -> bool {
    if !lock_free_enabled() {
        return false;
    }
    let (signal, blocking) = match sys {
        Sys::Send | Sys::NbSend => (true, false),
        Sys::Recv => (false, true),
        Sys::NbRecv => (false, false),
        _ => return false,
    };
    let blocking_send = sys == Sys::Send;
    let cpu = this_cpu();
    cpu.sched.with(|s| send_receive_in(cpu, s, caller, signal, blocking, blocking_send, cptr)).is_some()
}

/// `Reply` and `ReplyRecv` (on an endpoint) the fastpath declined, in a read section
/// ([`reply_only`], [`reply_receive`]); false, nothing done, where the slow path
/// must do them. Apart from [`send_receive`], so that the notification operations
/// there carry none of it.
#[inline(never)]
pub fn reply_slow(caller: ThreadRef, sys: Sys, cptr: u64) -> bool {
    if !lock_free_enabled() {
        return false;
    }
    let cpu = this_cpu();
    cpu.sched
        .with(|s| {
            let store = CAP_LOCK.read_fast(cpu);
            if sys == Sys::Reply {
                reply_only(s, caller)?;
            } else {
                // A reference into the memo (copying the capability measured 16 more
                // instructions per notification round trip): nothing here looks up
                // again, so nothing rewrites the memo while it is used.
                let cap = match tcb(caller).lookup_memo.hit(&*store, cptr, MAX_DEPTH) {
                    Some(cap) => cap,
                    None => lookup_miss(cpu, &store, caller, cptr)?,
                };
                if cap.kind() != CapType::Endpoint || !cap.rights().contains(Rights::READ) {
                    return None;
                }
                reply_receive(s, caller, cap)?;
            }
            count_fast(cpu);
            Some(())
        })
        .is_some()
}

/// Whether the slow path's entry tries the lock-free paths: they follow the
/// fastpath switch (`trace_control::SET_FASTPATH`, the `slowpath-only` build).
#[inline(always)]
pub(crate) fn lock_free_enabled() -> bool {
    !cfg!(feature = "slowpath-only") && crate::trace::fastpath_enabled()
}

fn send_receive_in(
    cpu: &'static Cpu,
    s: &mut Sched,
    caller: ThreadRef,
    signal: bool,
    blocking: bool,
    blocking_send: bool,
    cptr: u64,
) -> Option<()> {
    let store = CAP_LOCK.read_fast(cpu);
    // A reference into the memo, as in `reply_slow`.
    let cap = match tcb(caller).lookup_memo.hit(&*store, cptr, MAX_DEPTH) {
        Some(cap) => cap,
        None => lookup_miss(cpu, &store, caller, cptr)?,
    };
    let needed = if signal { Rights::WRITE } else { Rights::READ };
    if cap.kind() == CapType::Endpoint && cap.rights().contains(needed) {
        if signal {
            let kind = if blocking_send { SendKind::Blocking } else { SendKind::NonBlocking };
            send(s, caller, cap, kind)?;
        } else {
            receive(s, caller, cap, blocking)?;
        }
        count_fast(cpu);
        return Some(());
    }
    if cap.kind() != CapType::Notification || !cap.rights().contains(needed) {
        return None;
    }
    let addr = cap.addr().0;
    let _lock = NotificationLock::notification(addr);
    let words = notification_words(addr);
    let [pending, head, tail, bound] = words;
    if signal {
        let bits = if cap.badge() == 0 { 1 } else { cap.badge() };
        match ThreadRef::new(head) {
            Some(waiter) => {
                let here = ramen_arch::percpu::index_fast();
                let owner = tcb(waiter).cpu;
                let slot = if owner == here { None } else { Some(sched::reserve(owner)?) };
                // ---- point of no return ----
                ipc::signal_first_waiter(addr, words, bits);
                match slot {
                    Some(slot) => slot.wake(waiter),
                    None => sched::wake_in(s, waiter),
                }
            }
            None => match ThreadRef::new(bound) {
                Some(thread) => signal_bound(s, addr, words, bits, thread)?,
                None => set_notification_words(addr, [pending | bits, head, tail, bound]),
            },
        }
        syscall::set_reply(&mut tcb(caller).context, Ok(()), &[]);
    } else if pending != 0 {
        set_notification_words(addr, [0, head, tail, bound]);
        ipc::deliver_signal(caller, pending);
    } else if !blocking {
        // A poll with nothing pending, as the slow path's `ipc::wait` answers it.
        syscall::set_reply(&mut tcb(caller).context, Err(ramen_abi::Error::Busy), &[]);
    } else {
        // Queue behind the last waiter and block.
        ipc::queue_waiter(addr, words, caller);
        tcb(caller).ipc = IpcState::Waiting(addr);
        sched::stop_current_in(s, ThreadState::Blocked);
    }
    count_fast(cpu);
    Some(())
}

/// A signal (`bits`) on the notification at `addr` (words `words`, its lock held, no
/// waiter) bound to `thread`: if the thread waits on an endpoint as a receiver, it
/// takes the signal there (off the endpoint's queue, woken with the bits), else the
/// bits are left pending, as the slow path's `ipc::signal` does. The endpoint is the
/// one `Tcb::bound_wait` names, stable while the notification's lock is held (set
/// under it, cleared only as the thread leaves the queue); its lock is taken after
/// the notification's, and the thread's IPC state checked again under both. `None`:
/// nothing changed (a full inbox on the thread's CPU).
fn signal_bound(s: &mut Sched, addr: u64, words: [u64; 4], bits: u64, thread: ThreadRef) -> Option<()> {
    let [pending, head, tail, bound] = words;
    let endpoint = tcb(thread).bound_wait.load(core::sync::atomic::Ordering::Relaxed);
    let _queue = (endpoint != 0).then(|| EndpointLock::take(endpoint));
    let t = tcb(thread);
    if endpoint == 0 || t.ipc != IpcState::Receiving(endpoint) {
        set_notification_words(addr, [pending | bits, head, tail, bound]);
        return Some(());
    }
    let here = ramen_arch::percpu::index_fast();
    let slot = if t.cpu == here { None } else { Some(sched::reserve(t.cpu)?) };
    // ---- point of no return ----
    ipc::remove(endpoint, thread);
    t.ipc = IpcState::None;
    set_notification_words(addr, [0, head, tail, bound]);
    ipc::deliver_signal(thread, pending | bits);
    match slot {
        Some(slot) => slot.wake(thread),
        None => sched::wake_in(s, thread),
    }
    Some(())
}

/// Where a `Call` the fastpath declined goes ([`call_slow`]).
pub enum CallRoute {
    /// Done without the write lock (queued on the endpoint, or handed to a receiver
    /// the fastpath would not switch to): this CPU resumes whatever is best.
    Done,
    /// An endpoint, in a case left to the slow path under the write lock.
    Endpoint,
    /// Not an endpoint: an invocation of this capability (or the lookup's error),
    /// found in a read section so that an invocation takes the write lock only for
    /// its own work, if it has any.
    Invoke(Result<Cap, ramen_abi::Error>),
}

/// A `Call` the fastpath declined: finds its capability in a read section and, on an
/// endpoint (write right and a grant or grant-reply right), does the call there when
/// it can ([`send`]): into the endpoint's queue when no receiver waits (a busy
/// server: the case the fastpath leaves), or to a receiver the fastpath would not
/// switch to (lower priority than the caller, or than a thread queued here).
#[inline(never)]
pub fn call_slow(caller: ThreadRef, cptr: u64) -> CallRoute {
    // Capabilities, leases or reserved bits: the write lock's path, which finds out
    // itself whether it is IPC (an invocation carries none of them; capability
    // transfer measured 168 instructions more per call with the read-section lookup
    // first).
    if !MessageInfo(tcb(caller).context.rsi).fits_words_only() {
        return CallRoute::Endpoint;
    }
    let cpu = this_cpu();
    cpu.sched.with(|s| {
        let store = CAP_LOCK.read_fast(cpu);
        let cap = match tcb(caller).lookup_memo.hit(&*store, cptr, MAX_DEPTH) {
            Some(cap) => *cap,
            None => match crate::invoke::lookup_cap(caller, &*store, cptr) {
                Ok((_, cap)) => cap,
                Err(e) => return CallRoute::Invoke(Err(e)),
            },
        };
        if cap.is_null() {
            return CallRoute::Invoke(Err(ramen_abi::Error::InvalidCapability));
        }
        if cap.kind() != CapType::Endpoint {
            return CallRoute::Invoke(Ok(cap));
        }
        let rights = cap.rights();
        if !lock_free_enabled()
            || !rights.contains(Rights::WRITE)
            || !rights.intersects(Rights::GRANT_REPLY | Rights::GRANT)
            || send(s, caller, &cap, SendKind::Call).is_none()
        {
            return CallRoute::Endpoint;
        }
        count_fast(cpu);
        CallRoute::Done
    })
}

/// A reply decided on but not yet made ([`plan_reply`]).
struct ReplyPlan {
    client: ThreadRef,
    words: Words,
    /// The inbox slot that wakes a client owned by another CPU.
    slot: Option<sched::Reservation>,
}

/// Checks the reply `server` would make now with the message `info` (no
/// capabilities or leases): `Some(None)` if it owes no one a reply, `None` if the
/// slow path must make it (a client that is not simply waiting for it: faulted,
/// lending leases, suspended since; a long reply where a thread has no IPC buffer;
/// a full inbox on the client's CPU). Nothing changes.
fn plan_reply(server: ThreadRef, info: MessageInfo, here: u32) -> Option<Option<ReplyPlan>> {
    let Some(client) = tcb(server).caller else {
        return Some(None);
    };
    let c = tcb(client);
    if !info.fits_words_only()
        || c.ipc != IpcState::WaitingReply
        || c.leases.any()
        || c.state != ThreadState::Blocked
    {
        return None;
    }
    let words = buffers_for(info, server, client)?;
    let slot = if c.cpu == here { None } else { Some(sched::reserve(c.cpu)?) };
    Some(Some(ReplyPlan { client, words, slot }))
}

/// Makes the reply [`plan_reply`] planned: the client gets the message and is woken
/// (on this CPU as the direct-switch candidate, as the slow path's `ipc::reply`
/// does).
fn commit_reply(s: &mut Sched, server: ThreadRef, info: MessageInfo, plan: ReplyPlan) {
    let (st, c) = (tcb(server), tcb(plan.client));
    st.caller = None;
    c.replier = None;
    c.ipc = IpcState::None;
    crate::trace::ipc_reply(server, plan.client, info.len_words(), IpcPath::Fast);
    transfer(&st.context, &mut c.context, info, 0);
    copy_words(plan.words, info.len_words());
    match plan.slot {
        Some(slot) => slot.wake(plan.client),
        None => sched::wake_direct_in(s, plan.client),
    }
}

/// `Reply` in a read section (no endpoint is involved; the read section keeps
/// writers, which may sever reply links, away). Left to the slow path: a server
/// that owes no one a reply (an error there) and what [`plan_reply`] leaves.
fn reply_only(s: &mut Sched, server: ThreadRef) -> Option<()> {
    let info = MessageInfo(tcb(server).context.rsi);
    let plan = plan_reply(server, info, ramen_arch::percpu::index_fast())??;
    // ---- point of no return ----
    commit_reply(s, server, info, plan);
    syscall::set_reply(&mut tcb(server).context, Ok(()), &[]);
    Some(())
}

/// `ReplyRecv` on an endpoint (read right checked) that the fastpath declined, most
/// often because callers are queued on a busy server: the reply (if the server owes
/// one), then the first queued sender's message, or a place in the queue of
/// receivers, with the endpoint's lock, as the slow path's `ipc::reply` then
/// `ipc::receive` would do them. Both halves are checked (and their inbox slots
/// reserved) before either happens; a signal pending on the server's bound
/// notification is taken instead of a message, as the slow path does. Left to the
/// slow path: what [`plan_reply`] and [`plan_receive`] leave.
fn reply_receive(s: &mut Sched, server: ThreadRef, cap: &Cap) -> Option<()> {
    let info = MessageInfo(tcb(server).context.rsi);
    let here = ramen_arch::percpu::index_fast();
    let reply = plan_reply(server, info, here)?;
    let endpoint = cap.addr().0;
    let (_signals, pending) = lock_bound(server);
    if pending {
        // ---- point of no return ----
        // The reply first: it carries the server's message registers, which the
        // signal then overwrites.
        if let Some(reply) = reply {
            commit_reply(s, server, info, reply);
        }
        take_bound(server, cap);
        return Some(());
    }
    let _queue = EndpointLock::take(endpoint);
    let receive = plan_receive(server, endpoint, true, here)?;
    // ---- point of no return ----
    if let Some(reply) = reply {
        commit_reply(s, server, info, reply);
    }
    commit_receive(s, server, endpoint, cap, receive);
    Some(())
}

/// `Send`, `NbSend` or `Call` on an endpoint (rights checked by the caller) of a
/// message without capabilities or leases (words past the registers copied buffer
/// to buffer), as the slow path's `ipc::send` would do it: straight into a waiting
/// receiver (woken here or through a reserved slot on its CPU; after a `Call` it owes
/// the caller a reply and, here, is the direct-switch candidate), or into the
/// endpoint's queue of senders; `NbSend` with nobody waiting drops it. The caller
/// holds a read section; this takes the endpoint's lock. A receiver that still owes
/// another caller its reply abandons it for a `Call` (as the slow path does), unless
/// that caller lent memory. `None`: nothing changed.
fn send(s: &mut Sched, sender: ThreadRef, cap: &Cap, kind: SendKind) -> Option<()> {
    let info = MessageInfo(tcb(sender).context.rsi);
    if !info.fits_words_only() {
        return None;
    }
    let call = kind == SendKind::Call;
    let endpoint = cap.addr().0;
    let _queue = EndpointLock::take(endpoint);
    match ipc::first_receiver(endpoint) {
        Some(receiver) => {
            let r = tcb(receiver);
            if call && !abandoned_reply_is_lock_free(receiver) {
                return None;
            }
            let words = buffers_for(info, sender, receiver)?;
            let here = ramen_arch::percpu::index_fast();
            let slot = if r.cpu == here { None } else { Some(sched::reserve(r.cpu)?) };
            // ---- point of no return ----
            ipc::dequeue(endpoint, false);
            crate::trace::ipc_send(sender, Some(receiver), info.len_words(), IpcPath::Fast);
            if call {
                // The reply it owed before, if any, is abandoned (checked above).
                if let Some(old) = r.caller.take() {
                    tcb(old).replier = None;
                }
                link_call(sender, receiver, cap, info, words);
                sched::stop_current_in(s, ThreadState::Blocked);
            } else {
                r.ipc = IpcState::None;
                transfer(&tcb(sender).context, &mut r.context, info, cap.badge());
                copy_words(words, info.len_words());
                syscall::set_reply(&mut tcb(sender).context, Ok(()), &[]);
            }
            match slot {
                Some(slot) => slot.wake(receiver),
                None if call => sched::wake_direct_in(s, receiver),
                None => sched::wake_in(s, receiver),
            }
        }
        None if kind == SendKind::NonBlocking => syscall::set_reply(&mut tcb(sender).context, Ok(()), &[]),
        // A long message must find the sender's buffer when it is received.
        None if info.len_words() > MSG_REGS && IpcBufferPage::of(sender).is_none() => return None,
        None => {
            crate::trace::ipc_send(sender, None, info.len_words(), IpcPath::Fast);
            tcb(sender).ipc_badge = cap.badge();
            ipc::enqueue(endpoint, sender, true);
            tcb(sender).ipc = if call { IpcState::Calling(endpoint) } else { IpcState::Sending(endpoint) };
            sched::stop_current_in(s, ThreadState::Blocked);
        }
    }
    Some(())
}

/// `Recv` / `NbRecv` on an endpoint (read right checked), as the slow path's
/// `ipc::receive` would do it: a signal pending on the receiver's bound
/// notification ([`lock_bound`]), else the first queued sender's message (a caller
/// then waits for this thread's reply; a plain sender is woken here or through a
/// reserved slot on its CPU), or, blocking, a place in the queue of receivers;
/// `NbRecv` with nobody queued is `Busy`. A receiver that still owes another caller
/// its reply abandons that reply when it takes a new caller's message (as in seL4;
/// [`abandoned_reply_is_lock_free`]). Left to the slow path: what [`plan_receive`]
/// leaves, and an abandoned caller that lent memory.
fn receive(s: &mut Sched, receiver: ThreadRef, cap: &Cap, blocking: bool) -> Option<()> {
    let endpoint = cap.addr().0;
    let (_signals, pending) = lock_bound(receiver);
    if pending {
        // ---- point of no return ----
        take_bound(receiver, cap);
        return Some(());
    }
    let _queue = EndpointLock::take(endpoint);
    let plan = plan_receive(receiver, endpoint, blocking, ramen_arch::percpu::index_fast())?;
    if matches!(plan, ReceivePlan::Take { calling: true, .. }) && !abandoned_reply_is_lock_free(receiver) {
        return None;
    }
    // ---- point of no return ----
    commit_receive(s, receiver, endpoint, cap, plan);
    Some(())
}

/// Whether `server`, about to take a new caller, can abandon the reply it still
/// owes (if any) without the write lock: the abandoned caller stays blocked with no
/// one owing it a reply (until it is suspended or deleted, as the slow path's
/// `ipc::set_caller` leaves it), and only the server, running here, touches that
/// link. Not if the abandoned caller lent memory: releasing a lease unmaps pages and
/// shoots down TLBs, under the write lock.
fn abandoned_reply_is_lock_free(server: ThreadRef) -> bool {
    tcb(server).caller.is_none_or(|old| !tcb(old).leases.any())
}

/// Makes `server` owe `caller` the reply, abandoning the one it owed before, if any
/// ([`abandoned_reply_is_lock_free`] said yes).
fn take_caller(server: ThreadRef, caller: ThreadRef) {
    if let Some(old) = tcb(server).caller.replace(caller) {
        tcb(old).replier = None;
    }
    tcb(caller).replier = Some(server);
}

/// Before a receive by `receiver`: if it has a bound notification, takes that
/// notification's lock (before any endpoint's: the lock order a signal to a bound
/// receiver follows, [`signal_bound`]) and says whether a signal is pending there,
/// which the receive then takes instead of a message ([`take_bound`]), as the slow
/// path's `ipc::receive` does. The lock is held until the returned guard drops: while
/// the receiver blocks on the endpoint, no signal can slip in between.
fn lock_bound(receiver: ThreadRef) -> (Option<NotificationLock>, bool) {
    let bound = tcb(receiver).bound_notification;
    if bound == 0 {
        return (None, false);
    }
    let lock = NotificationLock::notification(bound);
    (Some(lock), notification_words(bound)[0] != 0)
}

/// The receive through `cap` takes the signal pending on `receiver`'s bound
/// notification ([`lock_bound`] held and said so).
fn take_bound(receiver: ThreadRef, cap: &Cap) {
    tcb(receiver).recv_grant = cap.rights().contains(Rights::GRANT);
    ipc::take_bound_signal(receiver);
}

/// A receive decided on but not yet made ([`plan_receive`]).
enum ReceivePlan {
    /// Take the first queued sender's message.
    Take {
        sender: ThreadRef,
        info: MessageInfo,
        words: Words,
        /// The sender called: it waits for the receiver's reply.
        calling: bool,
        /// The inbox slot that wakes a plain sender owned by another CPU.
        slot: Option<sched::Reservation>,
    },
    /// Nothing queued, not blocking: `Busy`.
    Busy,
    /// Nothing queued: wait in the queue of receivers.
    Block,
}

/// Checks the receive `receiver` would do now on `endpoint` (whose lock the caller
/// holds). `None` if the slow path must do it: a queued sender with a fault message,
/// capabilities, leases or reserved info bits, a long message where a thread has no
/// IPC buffer, a full inbox on a plain sender's CPU. Nothing changes.
fn plan_receive(receiver: ThreadRef, endpoint: u64, blocking: bool, here: u32) -> Option<ReceivePlan> {
    let Some(sender) = ipc::first_sender(endpoint) else {
        return Some(if blocking { ReceivePlan::Block } else { ReceivePlan::Busy });
    };
    let t = tcb(sender);
    let info = MessageInfo(t.context.rsi);
    let calling = match t.ipc {
        IpcState::Calling(_) => true,
        IpcState::Sending(_) => false,
        _ => return None,
    };
    if t.pending_fault.is_some() || !info.fits_words_only() {
        return None;
    }
    let words = buffers_for(info, sender, receiver)?;
    let slot = if calling || t.cpu == here { None } else { Some(sched::reserve(t.cpu)?) };
    Some(ReceivePlan::Take { sender, info, words, calling, slot })
}

/// Makes the receive [`plan_receive`] planned, through the capability `cap`.
fn commit_receive(s: &mut Sched, receiver: ThreadRef, endpoint: u64, cap: &Cap, plan: ReceivePlan) {
    let r = tcb(receiver);
    r.recv_grant = cap.rights().contains(Rights::GRANT);
    match plan {
        ReceivePlan::Take { sender, info, words, calling, slot } => {
            let t = tcb(sender);
            ipc::dequeue(endpoint, true);
            crate::trace::ipc_dequeued(sender, info.len_words());
            transfer(&t.context, &mut r.context, info, t.ipc_badge);
            copy_words(words, info.len_words());
            if calling {
                take_caller(receiver, sender);
                t.ipc = IpcState::WaitingReply;
            } else {
                t.ipc = IpcState::None;
                syscall::set_reply(&mut t.context, Ok(()), &[]);
                match slot {
                    Some(slot) => slot.wake(sender),
                    None => sched::wake_in(s, sender),
                }
            }
        }
        ReceivePlan::Busy => syscall::set_reply(&mut r.context, Err(ramen_abi::Error::Busy), &[]),
        ReceivePlan::Block => {
            ipc::enqueue(endpoint, receiver, false);
            r.ipc = IpcState::Receiving(endpoint);
            if r.bound_notification != 0 {
                // With the notification's lock held ([`lock_bound`]).
                r.bound_wait.store(endpoint, core::sync::atomic::Ordering::Relaxed);
            }
            sched::stop_current_in(s, ThreadState::Blocked);
        }
    }
}

/// [`guards_and_commit`] for a message longer than the registers (no capabilities,
/// no leases): the words past the registers go from the sender's IPC buffer to the
/// receiver's; both must have one (the slow path truncates otherwise).
#[cold]
#[inline(never)]
fn long<const PCID: bool>(
    cpu: &'static Cpu,
    s: &mut Sched,
    caller: ThreadRef,
    number: u64,
    cptr: u64,
    info: MessageInfo,
    tracing: bool,
) -> Option<Next> {
    if !info.fits_words_only() {
        return None;
    }
    guards_and_commit::<true, PCID>(cpu, s, caller, number, cptr, info, tracing)
}

/// The IPC buffers the words past the registers move between (sender's, then
/// receiver's), if the message has such words: `Some(None)` if it has none, `None`
/// if a buffer is missing (the slow path then decides).
#[inline(always)]
fn buffers_for(info: MessageInfo, from: ThreadRef, to: ThreadRef) -> Option<Words> {
    if info.len_words() <= MSG_REGS {
        return Some(None);
    }
    Some(Some((IpcBufferPage::of(from)?, IpcBufferPage::of(to)?)))
}

/// Where the words past the registers go: (sender's buffer, receiver's buffer).
type Words = Option<(IpcBufferPage, IpcBufferPage)>;

/// Copies the words past the registers of a `len`-word message.
#[inline(always)]
fn copy_words(words: Words, len: usize) {
    if let Some((src, dst)) = words {
        for i in MSG_REGS..len {
            dst.write(i, src.read(i));
        }
    }
}

/// `Call` to a receiver owned by another CPU, after the common guards, with the
/// endpoint locked: one more guard, a slot in that CPU's inbox for the wake-up,
/// promised before anything changes (a CPU inside a read section must never wait for
/// inbox space: the inbox's owner may be a writer waiting for this CPU to leave the
/// section); then the hand-over, and the receiver is woken on its CPU. Out of line:
/// the same-CPU path does not carry its registers.
#[cold]
#[inline(never)]
fn remote_call(
    endpoint: u64,
    caller: ThreadRef,
    server: ThreadRef,
    cap: &Cap,
    info: MessageInfo,
    tracing: bool,
    words: Words,
) -> Option<Option<ThreadRef>> {
    let slot = sched::reserve(tcb(server).cpu)?;
    // ---- point of no return (the receiver runs on its own CPU) ----
    ipc::dequeue(endpoint, false);
    link_call(caller, server, cap, info, words);
    if tracing {
        crate::trace::ipc_send(caller, Some(server), info.len_words(), IpcPath::Fast);
    }
    slot.wake(server);
    Some(None)
}

/// `ReplyRecv` to a caller owned by another CPU: as [`remote_call`].
#[cold]
#[inline(never)]
fn remote_reply(
    server: ThreadRef,
    client: ThreadRef,
    endpoint: u64,
    cap: &Cap,
    info: MessageInfo,
    tracing: bool,
    words: Words,
) -> Option<Option<ThreadRef>> {
    let slot = sched::reserve(tcb(client).cpu)?;
    // ---- point of no return (the client runs on its own CPU) ----
    link_reply(server, client, endpoint, cap, info, words);
    if tracing {
        crate::trace::ipc_reply(server, client, info.len_words(), IpcPath::Fast);
    }
    slot.wake(client);
    Some(None)
}

/// A memo miss: the thread's previous memo, else a resolution through this CPU's
/// lookup cache, which becomes the memo (the old memo becoming the previous one).
/// Returns the capability where it lies, in the memo that has it.
#[cold]
#[inline(never)]
fn lookup_miss(cpu: &Cpu, store: &ReadStore, caller: ThreadRef, cptr: u64) -> Option<&'static Cap> {
    if let Some(cap) = tcb(caller).lookup_memo_prev.hit(store, cptr, MAX_DEPTH) {
        return Some(cap);
    }
    let t = tcb(caller);
    let generation = store.generation();
    let root_slot = cspace_slot(caller)?;
    let root = store.slot(root_slot).cap();
    let slot = cpu.lookup.with(|cache| cache.lookup(store, &root, cptr, MAX_DEPTH)).ok()?;
    t.lookup_memo_prev = t.lookup_memo;
    Some(t.lookup_memo.remember(store, generation, cptr, MAX_DEPTH, slot))
}

/// [`lookup_miss`] for the call fastpath, leaving the capability in `lookup_memo`:
/// a hit in the previous memo makes the two trade places (80 bytes each way, where
/// `lookup_miss` copies nothing: a thread alternating two capabilities on this path
/// pays that, one calling through one capability pays nothing).
#[cold]
#[inline(never)]
fn lookup_miss_in_place(cpu: &Cpu, store: &ReadStore, caller: ThreadRef, cptr: u64) -> Option<()> {
    let t = tcb(caller);
    if t.lookup_memo_prev.hit(store, cptr, MAX_DEPTH).is_some() {
        core::mem::swap(&mut t.lookup_memo, &mut t.lookup_memo_prev);
        return Some(());
    }
    lookup_miss(cpu, store, caller, cptr).map(|_| ())
}

/// `Call` on an endpoint with a receiver waiting: guards, then the hand-over.
/// `Some(Some(server))`: switch to it here; `Some(None)`: it runs on another CPU,
/// woken there.
#[inline(always)]
fn call<const LONG: bool>(
    s: &mut Sched,
    caller: ThreadRef,
    cap: &Cap,
    info: MessageInfo,
    here: u32,
    tracing: bool,
) -> Option<Option<ThreadRef>> {
    if !cap.rights().contains(Rights::WRITE) || !cap.rights().intersects(Rights::GRANT_REPLY | Rights::GRANT)
    {
        return None;
    }
    let endpoint = cap.addr().0;
    let _queue = EndpointLock::take(endpoint);
    let server = ipc::first_receiver(endpoint)?;
    let st = tcb(server);
    let c = tcb(caller);
    // A receiver still owing another caller its reply takes the slow path, which
    // unlinks that abandoned reply. Its context needs no sanitising: it blocked in a
    // system call (`UserContext::sanitise` says why that leaves it sane).
    if st.caller.is_some() {
        return None;
    }
    let words = if LONG { buffers_for(info, caller, server)? } else { None };
    if st.cpu != here {
        return remote_call(endpoint, caller, server, cap, info, tracing, words);
    }
    if st.priority < c.priority || sched::highest_queued(s).is_some_and(|p| p > st.priority) {
        return None;
    }
    // ---- point of no return ----
    ipc::dequeue(endpoint, false);
    link_call(caller, server, cap, info, words);
    Some(Some(server))
}

/// The state a call leaves: `server` (dequeued) owes `caller` a reply and holds the
/// message; `caller` waits for the reply.
#[inline(always)]
fn link_call(caller: ThreadRef, server: ThreadRef, cap: &Cap, info: MessageInfo, words: Words) {
    let (st, c) = (tcb(server), tcb(caller));
    st.ipc = IpcState::None;
    st.caller = Some(caller);
    c.replier = Some(server);
    c.ipc = IpcState::WaitingReply;
    c.state = ThreadState::Blocked;
    transfer(&c.context, &mut st.context, info, cap.badge());
    copy_words(words, info.len_words());
}

/// `ReplyRecv` with a caller waiting: guards, then the hand-over. `Some(Some(client))`:
/// switch to it here; `Some(None)`: it runs on another CPU, woken there.
#[inline(always)]
fn reply_recv<const LONG: bool>(
    s: &mut Sched,
    caller: ThreadRef,
    cap: &Cap,
    info: MessageInfo,
    here: u32,
    tracing: bool,
) -> Option<Option<ThreadRef>> {
    let endpoint = cap.addr().0;
    let _queue = EndpointLock::take(endpoint);
    let st = tcb(caller);
    // A bound notification may have a signal waiting: the slow path returns it.
    if !cap.rights().contains(Rights::READ) || ipc::has_senders(endpoint) || st.bound_notification != 0 {
        return None;
    }
    let client = st.caller?;
    let c = tcb(client);
    // Leases lent to this call are released on the slow path; a faulted caller (whose
    // context a trap saved) is restarted there. Blocked in `Call`, its context is
    // sane (see `UserContext::sanitise`).
    if c.ipc != IpcState::WaitingReply || c.leases.any() || c.state != ThreadState::Blocked {
        return None;
    }
    let words = if LONG { buffers_for(info, caller, client)? } else { None };
    if c.cpu != here {
        return remote_reply(caller, client, endpoint, cap, info, tracing, words);
    }
    if sched::highest_queued(s).is_some_and(|p| p > c.priority) {
        return None;
    }
    // ---- point of no return ----
    link_reply(caller, client, endpoint, cap, info, words);
    Some(Some(client))
}

/// The state a reply-and-receive leaves: `client` has the reply and owes nothing;
/// `server` waits on `endpoint` again.
#[inline(always)]
fn link_reply(
    server: ThreadRef,
    client: ThreadRef,
    endpoint: u64,
    cap: &Cap,
    info: MessageInfo,
    words: Words,
) {
    let (st, c) = (tcb(server), tcb(client));
    st.caller = None;
    c.replier = None;
    c.ipc = IpcState::None;
    transfer(&st.context, &mut c.context, info, 0);
    copy_words(words, info.len_words());
    ipc::enqueue(endpoint, server, false);
    st.ipc = IpcState::Receiving(endpoint);
    st.recv_grant = cap.rights().contains(Rights::GRANT);
    st.state = ThreadState::Blocked;
}

/// Moves the message registers from the sender's saved registers `src` to the
/// receiver's `dst`, with the result, info and badge; registers past the message
/// keep the receiver's own values (as on the slow path).
#[inline(always)]
fn transfer(src: &UserContext, dst: &mut UserContext, info: MessageInfo, badge: u64) {
    // The guards checked `info.fits_fastpath()` or `fits_words_only()`: no reserved
    // bits (so the word is what the slow path would rebuild; a long message's words
    // past the registers are copied by `copy_words`), no capabilities, no leases, so
    // the info word is passed on as it is.
    dst.rax = 0;
    dst.rdi = badge;
    dst.rsi = info.0;
    syscall::copy_message_registers(src, dst, info.len_words());
}
