//! The IPC fastpath for `Call` and `ReplyRecv`.
//!
//! A chain of guards, each a cheap check that the slow path would do exactly what
//! follows; any unusual case (a message longer than the registers, capability or lease
//! transfer, a receiver on another CPU or of lower priority than someone runnable
//! here, senders already queued, a fault reply) returns `None` and the slow path runs
//! instead. After the marked point of no return the message registers go straight
//! from the sender's saved registers to the receiver's, and the CPU switches directly
//! to the receiver: no run-queue round trip, no inbox, no wake-up.
//!
//! The same state results as from the slow path (`ipc::send` with `Call` followed by
//! the receiver running; `ipc::reply` then `ipc::receive`), except that the thread
//! switched to never passes through the run queue.

use ramen_abi::MessageInfo;
use ramen_abi::syscall::Sys;
use ramen_core::cap::Rights;
use ramen_core::cspace::MAX_DEPTH;
use ramen_core::object::{CapType, ObjectStore};
use ramen_core::runqueue::ThreadRef;
use ramen_perf_record::IpcPath;

use crate::cpus::this_cpu;
use crate::objects::{CAP_LOCK, IpcState, ThreadState, cspace_slot, tcb};
use crate::{ipc, sched};

/// Tries the fastpath for the system call in `caller`'s saved registers. Returns the
/// thread to switch to, with every state change done, or `None` for the slow path
/// (nothing changed).
pub fn attempt(caller: ThreadRef) -> Option<ThreadRef> {
    let ctx = &tcb(caller).context;
    let (number, cptr, info) = (ctx.rax, ctx.rdi, MessageInfo(ctx.rsi));
    let sys = Sys::from_number(number).filter(|s| matches!(s, Sys::Call | Sys::ReplyRecv))?;
    if !info.fits_fastpath() {
        return None;
    }
    let store = CAP_LOCK.lock();
    let root = store.slot(cspace_slot(caller)?).cap();
    let slot = this_cpu().lookup.with(|cache| cache.lookup(&*store, &root, cptr, MAX_DEPTH)).ok()?;
    let cap = store.slot(slot).cap();
    if cap.kind() != CapType::Endpoint {
        return None;
    }
    let endpoint = cap.addr().0;
    let here = ramen_arch::percpu::index_fast();
    let waiting = sched::highest_waiting();
    match sys {
        Sys::Call => {
            if !cap.rights().contains(Rights::WRITE)
                || !cap.rights().intersects(Rights::GRANT_REPLY | Rights::GRANT)
            {
                return None;
            }
            let server = ipc::first_receiver(endpoint)?;
            let s = tcb(server);
            let c = tcb(caller);
            // A receiver still owing another caller its reply takes the slow path,
            // which unlinks that abandoned reply.
            if s.cpu != here
                || s.priority < c.priority
                || waiting.is_some_and(|p| p > s.priority)
                || s.caller.is_some()
            {
                return None;
            }
            // ---- point of no return ----
            ipc::dequeue(endpoint, false);
            s.ipc = IpcState::None;
            s.caller = Some(caller);
            c.replier = Some(server);
            c.ipc = IpcState::WaitingReply;
            c.state = ThreadState::Blocked;
            crate::trace::ipc_send(caller, Some(server), info.len_words(), IpcPath::Fast);
            transfer(caller, server, info, cap.badge());
            Some(server)
        }
        Sys::ReplyRecv => {
            // A bound notification may have a signal waiting: the slow path returns it.
            if !cap.rights().contains(Rights::READ)
                || ipc::has_senders(endpoint)
                || tcb(caller).bound_notification != 0
            {
                return None;
            }
            let client = tcb(caller).caller?;
            let c = tcb(client);
            // Leases lent to this call are released on the slow path.
            if c.ipc != IpcState::WaitingReply
                || c.leases.any()
                || c.state != ThreadState::Blocked
                || c.cpu != here
                || waiting.is_some_and(|p| p > c.priority)
            {
                return None;
            }
            // ---- point of no return ----
            let s = tcb(caller);
            s.caller = None;
            c.replier = None;
            c.ipc = IpcState::None;
            crate::trace::ipc_reply(caller, client, info.len_words(), IpcPath::Fast);
            transfer(caller, client, info, 0);
            ipc::enqueue(endpoint, caller, false);
            s.ipc = IpcState::Receiving(endpoint);
            s.recv_grant = cap.rights().contains(Rights::GRANT);
            s.state = ThreadState::Blocked;
            Some(client)
        }
        _ => None,
    }
}

/// Moves the message registers from `from`'s saved registers to `to`'s, with the
/// result, info and badge; registers beyond the message are zeroed.
#[inline(always)]
fn transfer(from: ThreadRef, to: ThreadRef, info: MessageInfo, badge: u64) {
    let src = &tcb(from).context;
    // The guards checked `info.fits_fastpath()`: at most MSG_REGS words, no
    // capabilities, no leases, so the info word is passed on as it is.
    let len = info.len_words();
    let keep = |i: usize, value: u64| if i < len { value } else { 0 };
    let (r0, r1, r2, r3, r4, r5) = (
        keep(0, src.rdx),
        keep(1, src.r8),
        keep(2, src.r9),
        keep(3, src.r10),
        keep(4, src.r12),
        keep(5, src.r13),
    );
    let ctx = &mut tcb(to).context;
    ctx.rax = 0;
    ctx.rdi = badge;
    ctx.rsi = info.0;
    ctx.rdx = r0;
    ctx.r8 = r1;
    ctx.r9 = r2;
    ctx.r10 = r3;
    ctx.r12 = r4;
    ctx.r13 = r5;
}
