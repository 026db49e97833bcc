//! Endpoint IPC, slow path: send, receive, call, reply, and fault messages.
//!
//! An endpoint is a queue of threads waiting to send or waiting to receive (never
//! both). A message is the sender's message-info word, its six message registers,
//! the badge of the capability it sent through, and for longer messages the words
//! beyond the registers and the capabilities to transfer, read from the sender's IPC
//! buffer at delivery. Register words move straight from the sender's saved
//! registers into the receiver's; buffer words are copied from buffer to buffer;
//! capabilities are copied (derived) into the slots the receiver named. A caller
//! waits for the reply; the receiver's TCB remembers whom to answer.
//!
//! Every message is checked before anything changes (`check_message`): a malformed
//! message fails the send with an error and leaves both sides as they were. What
//! depends on the receiver (no IPC buffer, no room for capabilities) cuts the
//! message short instead, and the receiver's message-info word says what arrived.
//!
//! All of this runs under `CAP_LOCK`; waking a thread owned by another CPU goes
//! through `sched::wake`, which posts to that CPU.

use ramen_abi::ipc_buffer::{RECV_CNODE, RECV_DEPTH, RECV_INDEX, SEND_CAPS};
use ramen_abi::{Error, MSG_MAX_WORDS, MSG_REGS, MessageInfo};
use ramen_core::cap::{Cap, Rights};
use ramen_core::cnode as ops;
use ramen_core::cspace;
use ramen_core::object::{CapType, ObjectStore};
use ramen_core::runqueue::ThreadRef;
use ramen_perf_record::IpcPath;

use crate::invoke::lookup_cap;
use crate::objects::{IpcBufferPage, IpcState, Store, ThreadState, phys_words, set_phys_words, tcb};
use crate::sched;
use crate::syscall::message_registers;

/// Label of a fault message (the handler sees it in the message info).
pub const FAULT_LABEL: u64 = 0xfa17;

/// An endpoint's state: queue head (with the queue kind in the low bits) and tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Queue {
    Empty,
    Senders(ThreadRef, ThreadRef),
    Receivers(ThreadRef, ThreadRef),
}

const KIND_SENDERS: u64 = 1;
const KIND_RECEIVERS: u64 = 2;
const KIND_MASK: u64 = 0xfff;

#[inline]
fn read_queue(endpoint: u64) -> Queue {
    let [head, tail] = phys_words(endpoint);
    let thread = ThreadRef::new(head & !KIND_MASK);
    match (head & KIND_MASK, thread, ThreadRef::new(tail)) {
        (KIND_SENDERS, Some(h), Some(t)) => Queue::Senders(h, t),
        (KIND_RECEIVERS, Some(h), Some(t)) => Queue::Receivers(h, t),
        _ => Queue::Empty,
    }
}

#[inline]
fn write_queue(endpoint: u64, queue: Queue) {
    let words = match queue {
        Queue::Empty => [0, 0],
        Queue::Senders(h, t) => [h.addr() | KIND_SENDERS, t.addr()],
        Queue::Receivers(h, t) => [h.addr() | KIND_RECEIVERS, t.addr()],
    };
    set_phys_words(endpoint, words);
}

/// The first thread waiting to receive on `endpoint`, if receivers wait there.
#[inline]
pub fn first_receiver(endpoint: u64) -> Option<ThreadRef> {
    match read_queue(endpoint) {
        Queue::Receivers(head, _) => Some(head),
        _ => None,
    }
}

/// The first thread waiting to send on `endpoint`, if senders wait there.
#[inline]
pub fn first_sender(endpoint: u64) -> Option<ThreadRef> {
    match read_queue(endpoint) {
        Queue::Senders(head, _) => Some(head),
        _ => None,
    }
}

/// True if senders wait on `endpoint`.
#[inline]
pub fn has_senders(endpoint: u64) -> bool {
    matches!(read_queue(endpoint), Queue::Senders(..))
}

/// Appends `thread` to the endpoint's queue of the given kind.
#[inline(always)]
pub(crate) fn enqueue(endpoint: u64, thread: ThreadRef, senders: bool) {
    tcb(thread).ipc_next = None;
    let queue = match (read_queue(endpoint), senders) {
        (Queue::Senders(h, t), true) | (Queue::Receivers(h, t), false) => {
            tcb(t).ipc_next = Some(thread);
            (h, thread)
        }
        _ => (thread, thread),
    };
    write_queue(
        endpoint,
        if senders { Queue::Senders(queue.0, queue.1) } else { Queue::Receivers(queue.0, queue.1) },
    );
}

/// Takes the first thread of the queue if it is of the given kind.
#[inline(always)]
pub(crate) fn dequeue(endpoint: u64, senders: bool) -> Option<ThreadRef> {
    let (head, tail) = match (read_queue(endpoint), senders) {
        (Queue::Senders(h, t), true) | (Queue::Receivers(h, t), false) => (h, t),
        _ => return None,
    };
    let next = tcb(head).ipc_next.take();
    let queue = match next {
        None => Queue::Empty,
        Some(n) if senders => Queue::Senders(n, tail),
        Some(n) => Queue::Receivers(n, tail),
    };
    if !senders {
        // No signal to its bound notification looks for it here any more.
        tcb(head).bound_wait.store(0, core::sync::atomic::Ordering::Relaxed);
    }
    write_queue(endpoint, queue);
    Some(head)
}

/// Removes `thread` from the endpoint's queue wherever it is (suspend, delete).
pub fn remove(endpoint: u64, thread: ThreadRef) {
    let (head, senders) = match read_queue(endpoint) {
        Queue::Senders(h, _) => (h, true),
        Queue::Receivers(h, _) => (h, false),
        Queue::Empty => return,
    };
    // Rebuild the queue without it (queues are short; this is the slow path).
    write_queue(endpoint, Queue::Empty);
    if !senders {
        tcb(thread).bound_wait.store(0, core::sync::atomic::Ordering::Relaxed);
    }
    let mut cursor = Some(head);
    while let Some(t) = cursor {
        cursor = tcb(t).ipc_next.take();
        if t != thread {
            enqueue(endpoint, t, senders);
        }
    }
}

/// Wakes every thread waiting on a destroyed endpoint with `InvalidCapability`.
pub fn cancel_all(endpoint: u64) {
    for senders in [true, false] {
        while let Some(t) = dequeue(endpoint, senders) {
            finish_with_error(t, Error::InvalidCapability);
        }
    }
}

fn finish_with_error(thread: ThreadRef, error: Error) {
    let t = tcb(thread);
    t.ipc = IpcState::None;
    crate::syscall::set_reply(&mut t.context, Err(error), &[]);
    sched::wake(thread);
}

/// A message in flight.
#[derive(Clone, Copy, Debug)]
struct Message {
    /// Label, length and capability count as the sender gave them (checked).
    info: MessageInfo,
    regs: [u64; MSG_REGS],
    badge: u64,
    /// The thread whose IPC buffer holds the words past the registers and the
    /// capabilities to transfer (none for a fault message).
    from: Option<ThreadRef>,
}

/// The message `thread` is sending: its registers, as `check_message` accepted them.
fn message_of(thread: ThreadRef, badge: u64) -> Message {
    let ctx = &tcb(thread).context;
    let info = MessageInfo(ctx.rsi);
    let len = info.len_words().min(MSG_MAX_WORDS);
    Message {
        info: MessageInfo::try_new(info.label(), len, info.caps(), info.leases()).unwrap_or_default(),
        regs: message_registers(ctx),
        badge,
        from: Some(thread),
    }
}

/// Checks the message in `thread`'s registers before anything changes: a length
/// that fits, an IPC buffer where the message needs one, capabilities only with the
/// grant right (`can_grant`) and only ones that exist, leases only on a call
/// (`call`) and only over memory the caller may lend (`lease::check`).
pub fn check_message(store: &Store, thread: ThreadRef, can_grant: bool, call: bool) -> Result<(), Error> {
    let info = MessageInfo(tcb(thread).context.rsi);
    // (Regression: an info word with 5 to 7 leases, which its 3-bit field allows, was
    // accepted, the extra descriptors read from buffer words past the lease area.)
    if !info.within_limits() {
        return Err(Error::RangeError);
    }
    if info.len_words() <= MSG_REGS && info.caps() == 0 && info.leases() == 0 {
        return Ok(());
    }
    if info.leases() > 0 {
        if !call {
            return Err(Error::InvalidArgument);
        }
        crate::lease::check(thread, info)?;
    }
    if info.caps() > 0 && !can_grant {
        return Err(Error::InsufficientRights);
    }
    // A message longer than the registers, or one with capabilities, needs the
    // sender's IPC buffer.
    let buffer = IpcBufferPage::of(thread).ok_or(Error::InvalidArgument)?;
    for i in 0..info.caps() {
        lookup_cap(thread, store, buffer.read(SEND_CAPS + i))?;
    }
    Ok(())
}

/// Delivers `message` into `receiver`: result, info, badge and register words into
/// its saved registers (registers past the message keep the receiver's own values
/// from its system call, as on the fastpath: nothing of anyone else's), further words into its IPC buffer, capabilities into
/// the slots it named. A receiver without an IPC buffer gets the register words
/// only; capabilities that find no usable slot are not transferred. The info word
/// it receives gives the length and capability count that arrived.
fn deliver(store: &mut Store, receiver: ThreadRef, message: &Message) {
    let mut len = message.info.len_words();
    let (mut caps, mut leases) = (0, 0);
    if len > MSG_REGS || message.info.caps() > 0 || message.info.leases() > 0 {
        let src = message.from.and_then(IpcBufferPage::of);
        match (src, IpcBufferPage::of(receiver)) {
            (Some(src), Some(dst)) => {
                for i in MSG_REGS..len {
                    dst.write(i, src.read(i));
                }
                if let Some(sender) = message.from {
                    caps = transfer_caps(store, sender, src, receiver, dst, message.info.caps());
                    leases = crate::lease::grant(sender, src, receiver, dst, message.info.leases());
                }
            }
            _ => len = len.min(MSG_REGS),
        }
    }
    let ctx = &mut tcb(receiver).context;
    ctx.rax = 0;
    crate::syscall::set_message_prefix(ctx, message.regs.get(..len.min(MSG_REGS)).unwrap_or(&[]));
    ctx.rsi = MessageInfo::try_new(message.info.label(), len, caps, leases).map_or(0, |i| i.0);
    ctx.rdi = message.badge;
}

/// Copies the sender's capabilities `SEND_CAPS[..count]` into consecutive slots of
/// the CNode the receiver named; stops at the first that cannot go (no CNode with
/// the write right there, an occupied slot, a capability that may not be copied, one
/// deleted since the send was checked). Returns how many went.
fn transfer_caps(
    store: &mut Store,
    sender: ThreadRef,
    src: IpcBufferPage,
    receiver: ThreadRef,
    dst: IpcBufferPage,
    count: usize,
) -> usize {
    let Ok((_, cnode)) = lookup_cap(receiver, store, dst.read(RECV_CNODE)) else {
        return 0;
    };
    let Ok(depth) = u8::try_from(dst.read(RECV_DEPTH)) else {
        return 0;
    };
    if cnode.kind() != CapType::CNode || !cnode.rights().contains(Rights::WRITE) {
        return 0;
    }
    let first = dst.read(RECV_INDEX);
    let mut moved = 0;
    for i in 0..count {
        let Ok((from, _)) = lookup_cap(sender, store, src.read(SEND_CAPS + i)) else {
            break;
        };
        let Some(index) = first.checked_add(i as u64) else {
            break;
        };
        let Ok(to) = cspace::resolve(&*store, &cnode, index, depth) else {
            break;
        };
        if !store.slot(to).is_empty() || ops::copy(store, from, to).is_err() {
            break;
        }
        moved += 1;
    }
    moved
}

/// Checks that `receive` would accept `cap` (an endpoint or a notification, with the
/// read right), without doing anything: `ReplyRecv` checks this before its reply goes,
/// so a bad receive capability fails the call with nothing changed.
pub fn check_receive_cap(cap: &Cap) -> Result<(), Error> {
    match cap.kind() {
        CapType::Endpoint | CapType::Notification => cap.require(Rights::READ),
        _ => Err(Error::WrongType),
    }
}

/// The endpoint a capability names, checked for type and right.
fn endpoint_of(cap: &Cap, right: Rights) -> Result<u64, Error> {
    if cap.kind() != CapType::Endpoint {
        return Err(Error::WrongType);
    }
    cap.require(right)?;
    Ok(cap.addr().0)
}

/// What a send operation wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendKind {
    /// Block until received.
    Blocking,
    /// Drop the message if nobody waits.
    NonBlocking,
    /// Block until received, then until replied to.
    Call,
}

/// `Send`, `NbSend` or `Call` from `sender` through `cap`. The sender's context holds
/// the message; on return it holds the result (or the sender is blocked).
pub fn send(store: &mut Store, sender: ThreadRef, cap: &Cap, kind: SendKind) -> Result<(), Error> {
    if cap.kind() == CapType::Notification && kind != SendKind::Call {
        // A signal carries no message: capabilities or leases named in its info word
        // would silently not go (regression: they were ignored), so they are refused
        // as leases on anything but a call are.
        cap.require(Rights::WRITE)?;
        if MessageInfo(tcb(sender).context.rsi).names_caps_or_leases() {
            return Err(Error::InvalidArgument);
        }
        signal(cap)?;
        crate::syscall::set_reply(&mut tcb(sender).context, Ok(()), &[]);
        return Ok(());
    }
    let endpoint = endpoint_of(cap, Rights::WRITE)?;
    if kind == SendKind::Call {
        cap.require(Rights::GRANT_REPLY).or_else(|_| cap.require(Rights::GRANT))?;
    }
    check_message(store, sender, cap.rights().contains(Rights::GRANT), kind == SendKind::Call)?;
    let message = message_of(sender, cap.badge());
    match dequeue(endpoint, false) {
        Some(receiver) => {
            crate::trace::ipc_send(sender, Some(receiver), message.info.len_words(), IpcPath::Slow);
            tcb(receiver).ipc = IpcState::None;
            deliver(store, receiver, &message);
            if kind == SendKind::Call {
                set_caller(receiver, sender);
                block(sender, IpcState::WaitingReply);
                sched::wake_direct(receiver);
            } else {
                crate::syscall::set_reply(&mut tcb(sender).context, Ok(()), &[]);
                sched::wake(receiver);
            }
            Ok(())
        }
        None if kind == SendKind::NonBlocking => {
            crate::syscall::set_reply(&mut tcb(sender).context, Ok(()), &[]);
            Ok(())
        }
        None => {
            crate::trace::ipc_send(sender, None, message.info.len_words(), IpcPath::Slow);
            tcb(sender).ipc_badge = cap.badge();
            let state = if kind == SendKind::Call {
                IpcState::Calling(endpoint)
            } else {
                IpcState::Sending(endpoint)
            };
            enqueue(endpoint, sender, true);
            block(sender, state);
            Ok(())
        }
    }
}

/// `Recv` or `NbRecv` by `receiver` on `cap`.
pub fn receive(store: &mut Store, receiver: ThreadRef, cap: &Cap, blocking: bool) -> Result<(), Error> {
    if cap.kind() == CapType::Notification {
        return wait(receiver, cap, blocking);
    }
    let endpoint = endpoint_of(cap, Rights::READ)?;
    tcb(receiver).recv_grant = cap.rights().contains(Rights::GRANT);
    if take_bound_signal(receiver) {
        return Ok(());
    }
    match dequeue(endpoint, true) {
        Some(sender) => {
            let state = tcb(sender).ipc;
            let message = match tcb(sender).pending_fault.take() {
                Some((words, badge)) => fault_message(words, badge),
                None => message_of(sender, tcb(sender).ipc_badge),
            };
            crate::trace::ipc_dequeued(sender, message.info.len_words());
            deliver(store, receiver, &message);
            match state {
                IpcState::Calling(_) => {
                    set_caller(receiver, sender);
                    tcb(sender).ipc = IpcState::WaitingReply;
                }
                _ => {
                    tcb(sender).ipc = IpcState::None;
                    crate::syscall::set_reply(&mut tcb(sender).context, Ok(()), &[]);
                    sched::wake(sender);
                }
            }
            Ok(())
        }
        None if !blocking => Err(Error::Busy),
        None => {
            enqueue(endpoint, receiver, false);
            block(receiver, IpcState::Receiving(endpoint));
            if tcb(receiver).bound_notification != 0 {
                tcb(receiver).bound_wait.store(endpoint, core::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        }
    }
}

/// `Reply` from `server` to the thread that called it. `Ok(false)` if it owes no
/// one a reply (which `ReplyRecv` ignores: a server starts that way). A malformed
/// reply fails before anything changes; the caller keeps waiting for a good one.
pub fn reply(store: &mut Store, server: ThreadRef) -> Result<bool, Error> {
    let Some(caller) = tcb(server).caller else {
        return Ok(false);
    };
    check_message(store, server, tcb(server).recv_grant, false)?;
    tcb(server).caller = None;
    tcb(caller).replier = None;
    if tcb(caller).ipc != IpcState::WaitingReply {
        return Ok(false);
    }
    let message = message_of(server, 0);
    crate::trace::ipc_reply(server, caller, message.info.len_words(), IpcPath::Slow);
    crate::lease::release(caller);
    tcb(caller).ipc = IpcState::None;
    if tcb(caller).state == ThreadState::Faulted {
        // A reply to a fault message restarts the faulting instruction.
        tcb(caller).state = ThreadState::Blocked;
    } else {
        deliver(store, caller, &message);
    }
    // Runs next if the server then blocks (`ReplyRecv` with nothing queued), as on
    // the fastpath; a plain `Reply` keeps the server running.
    sched::wake_direct(caller);
    Ok(true)
}

/// Records that `server` owes `caller` a reply. A reply it still owed someone else is
/// abandoned, as in seL4: that caller stays blocked (a faulted thread stays stopped)
/// until it is suspended or deleted; only the link is cleared.
pub fn set_caller(server: ThreadRef, caller: ThreadRef) {
    if let Some(old) = tcb(server).caller.replace(caller) {
        tcb(old).replier = None;
        crate::lease::release(old);
    }
    tcb(caller).replier = Some(server);
}

/// Breaks the reply links of a thread that is going away: a caller waiting for its
/// reply wakes with `InvalidCapability`, and a server that owed it a reply forgets it
/// (so the reply can never reach freed memory).
pub fn sever_reply_links(thread: ThreadRef) {
    if let Some(caller) = tcb(thread).caller.take() {
        tcb(caller).replier = None;
        crate::lease::release(caller);
        finish_with_error(caller, Error::InvalidCapability);
    }
    crate::lease::release(thread);
    if let Some(server) = tcb(thread).replier.take()
        && tcb(server).caller == Some(thread)
    {
        tcb(server).caller = None;
    }
}

fn block(thread: ThreadRef, state: IpcState) {
    tcb(thread).ipc = state;
    if sched::current() == Some(thread) {
        sched::stop_current(ThreadState::Blocked);
    } else {
        tcb(thread).state = ThreadState::Blocked;
    }
}

/// Sends a fault message for the current thread to the endpoint `cap`: label
/// [`FAULT_LABEL`], registers: vector, error code, faulting RIP, fault address, RSP.
/// The thread then waits for the handler's reply, which restarts it.
pub fn send_fault(
    store: &mut Store,
    thread: ThreadRef,
    cap: &Cap,
    vector: u64,
    error: u64,
    address: u64,
) -> Result<(), Error> {
    let endpoint = endpoint_of(cap, Rights::WRITE)?;
    let ctx = tcb(thread).context;
    let words = [vector, error, ctx.rip, address, ctx.rsp];
    let Some(handler) = dequeue(endpoint, false) else {
        // No handler waiting yet: queue the thread as a caller, with its fault message
        // kept aside (its registers hold its own state, not a message).
        tcb(thread).pending_fault = Some((words, cap.badge()));
        tcb(thread).ipc = IpcState::Calling(endpoint);
        enqueue(endpoint, thread, true);
        return Ok(());
    };
    tcb(handler).ipc = IpcState::None;
    deliver(store, handler, &fault_message(words, cap.badge()));
    set_caller(handler, thread);
    tcb(thread).ipc = IpcState::WaitingReply;
    sched::wake(handler);
    Ok(())
}

fn fault_message(words: [u64; 5], badge: u64) -> Message {
    let [vector, error, rip, address, rsp] = words;
    Message {
        info: MessageInfo::try_new(FAULT_LABEL, 5, 0, 0).unwrap_or_default(),
        regs: [vector, error, rip, address, rsp, 0],
        badge,
        from: None,
    }
}

// ---- Notifications ----
//
// A notification is a word of signal bits, a FIFO of waiting threads, and optionally
// a bound thread. `Send`/`NbSend` on it signals (ORs in the capability's badge, or 1
// for an unbadged one); `Recv` waits for bits and takes them all; `NbRecv` polls. A
// thread bound to it that waits on an endpoint is woken by a signal too. What
// arrives is reported with label `NOTIFICATION_LABEL` and the bits in the badge
// register.

use crate::objects::{notification_words, set_notification_words};
use ramen_abi::syscall::NOTIFICATION_LABEL;

/// Hands `bits` to `thread` as a notification's message (label
/// `NOTIFICATION_LABEL`, the bits in the badge register).
pub(crate) fn deliver_signal(thread: ThreadRef, bits: u64) {
    let ctx = &mut tcb(thread).context;
    crate::syscall::set_reply(ctx, Ok(()), &[]);
    ctx.rsi = MessageInfo::try_new(NOTIFICATION_LABEL, 0, 0, 0).map_or(0, |i| i.0);
    ctx.rdi = bits;
}

/// `Send`/`NbSend` on a notification capability.
pub fn signal(cap: &Cap) -> Result<(), Error> {
    cap.require(Rights::WRITE)?;
    let addr = cap.addr().0;
    let bits = if cap.badge() == 0 { 1 } else { cap.badge() };
    let words = notification_words(addr);
    let [pending, head, tail, bound] = words;
    if let Some(waiter) = signal_first_waiter(addr, words, bits) {
        sched::wake(waiter);
        return Ok(());
    }
    // A bound thread waiting on an endpoint takes the signal instead.
    if let Some(thread) = ThreadRef::new(bound)
        && let IpcState::Receiving(endpoint) = tcb(thread).ipc
    {
        remove(endpoint, thread);
        tcb(thread).ipc = IpcState::None;
        set_notification_words(addr, [0, head, tail, bound]);
        deliver_signal(thread, pending | bits);
        sched::wake(thread);
        return Ok(());
    }
    set_notification_words(addr, [pending | bits, head, tail, bound]);
    Ok(())
}

/// `Recv` (blocking) or `NbRecv` (poll) on a notification capability. A poll that
/// finds nothing pending is `Busy`, as on an endpoint with nobody queued (regression:
/// it answered success with bits 0, where docs/abi.md says `Busy`).
pub fn wait(thread: ThreadRef, cap: &Cap, blocking: bool) -> Result<(), Error> {
    cap.require(Rights::READ)?;
    let addr = cap.addr().0;
    let [pending, head, tail, bound] = notification_words(addr);
    if pending == 0 && !blocking {
        return Err(Error::Busy);
    }
    if pending != 0 {
        set_notification_words(addr, [0, head, tail, bound]);
        deliver_signal(thread, pending);
        return Ok(());
    }
    queue_waiter(addr, [pending, head, tail, bound], thread);
    block(thread, IpcState::Waiting(addr));
    Ok(())
}

/// Takes the first waiter off the notification at `addr` (whose words are `words`)
/// and hands it the pending bits and `bits`; the caller wakes it. `None`: nobody
/// waits (nothing changed).
#[inline(always)]
pub(crate) fn signal_first_waiter(addr: u64, words: [u64; 4], bits: u64) -> Option<ThreadRef> {
    let [pending, head, tail, bound] = words;
    let waiter = ThreadRef::new(head)?;
    let (new_head, new_tail) = tcb(waiter).ipc_next.take().map_or((0, 0), |n| (n.addr(), tail));
    set_notification_words(addr, [0, new_head, new_tail, bound]);
    tcb(waiter).ipc = IpcState::None;
    deliver_signal(waiter, pending | bits);
    Some(waiter)
}

/// Queues `thread` behind the last waiter of the notification at `addr` (whose words
/// are `words`, nothing pending); the caller blocks it.
#[inline(always)]
pub(crate) fn queue_waiter(addr: u64, words: [u64; 4], thread: ThreadRef) {
    let [_, head, tail, bound] = words;
    tcb(thread).ipc_next = None;
    let (new_head, new_tail) = match ThreadRef::new(tail) {
        Some(last) => {
            tcb(last).ipc_next = Some(thread);
            (head, thread.addr())
        }
        None => (thread.addr(), thread.addr()),
    };
    set_notification_words(addr, [0, new_head, new_tail, bound]);
}

/// Takes pending bits of `thread`'s bound notification, if any: a receive on an
/// endpoint returns them instead of waiting.
pub fn take_bound_signal(thread: ThreadRef) -> bool {
    let addr = tcb(thread).bound_notification;
    if addr == 0 {
        return false;
    }
    let [pending, head, tail, bound] = notification_words(addr);
    if pending == 0 {
        return false;
    }
    set_notification_words(addr, [0, head, tail, bound]);
    deliver_signal(thread, pending);
    true
}

/// Removes `thread` from a notification's wait queue (suspend, delete).
pub fn remove_waiter(addr: u64, thread: ThreadRef) {
    let [pending, head, _, bound] = notification_words(addr);
    set_notification_words(addr, [pending, 0, 0, bound]);
    let mut cursor = ThreadRef::new(head);
    while let Some(t) = cursor {
        cursor = tcb(t).ipc_next.take();
        if t != thread {
            let [p, h, tl, b] = notification_words(addr);
            let (nh, nt) = match ThreadRef::new(tl) {
                Some(last) => {
                    tcb(last).ipc_next = Some(t);
                    (h, t.addr())
                }
                None => (t.addr(), t.addr()),
            };
            set_notification_words(addr, [p, nh, nt, b]);
        }
    }
}

/// Wakes every waiter of a destroyed notification with `InvalidCapability` and
/// unbinds its bound thread.
pub fn cancel_notification(addr: u64) {
    let [_, head, _, bound] = notification_words(addr);
    let mut cursor = ThreadRef::new(head);
    while let Some(t) = cursor {
        cursor = tcb(t).ipc_next.take();
        finish_with_error(t, Error::InvalidCapability);
    }
    if let Some(thread) = ThreadRef::new(bound) {
        tcb(thread).bound_notification = 0;
    }
    set_notification_words(addr, [0; 4]);
}

/// Binds (or with `addr == 0` unbinds) a notification to `thread`; a thread bound to
/// another notification moves (that one is unbound). `Busy` if the notification is
/// bound to another thread, with nothing changed.
pub fn bind(thread: ThreadRef, addr: u64) -> Result<(), Error> {
    // Checked before anything changes (regression: the old binding was undone first,
    // and a `Busy` then left the thread naming a notification that no longer named it).
    if addr != 0 {
        let bound = notification_words(addr)[3];
        if bound != 0 && bound != thread.addr() {
            return Err(Error::Busy);
        }
    }
    let old = tcb(thread).bound_notification;
    if old != 0 {
        let [p, h, t, _] = notification_words(old);
        set_notification_words(old, [p, h, t, 0]);
    }
    if addr != 0 {
        let [p, h, t, _] = notification_words(addr);
        set_notification_words(addr, [p, h, t, thread.addr()]);
    }
    tcb(thread).bound_notification = addr;
    // Bound while it waits on an endpoint: a signal must find it there.
    if let (true, IpcState::Receiving(endpoint)) = (addr != 0, tcb(thread).ipc) {
        tcb(thread).bound_wait.store(endpoint, core::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}
