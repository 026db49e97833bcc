//! The system-call contract on the kernel's own code: bad calls a hostile program
//! made from docs/abi.md that the kernel answered wrongly, each checked on the
//! fastpath configuration and on the slow path alone, for the exact code, every
//! register of the reply, and nothing changed.

use ramen_abi::invocation::cnode;
use ramen_abi::ipc_buffer::LEASES;
use ramen_abi::syscall::Sys;
use ramen_abi::{Error, MSG_MAX_LEASES, MSG_REGS};

use super::*;

/// What a call returned to its caller: rax, rdi, rsi and the message registers.
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    rax: u64,
    rdi: u64,
    rsi: u64,
    regs: [u64; MSG_REGS],
}

impl Reply {
    /// A kernel's error reply: the code, and every other register zero.
    fn error(error: Error) -> Self {
        Self { rax: error.code(), rdi: 0, rsi: 0, regs: [0; MSG_REGS] }
    }
}

/// Makes `op` from thread 0 of a new world, with the fastpath and the lock-free paths
/// on (`fast`) or off, after `prepare` (which may write thread 0's IPC buffer); the
/// caller must still run afterwards. Returns its reply, and whether anything in the
/// world but the caller's own TCB changed.
fn call(fast: bool, op: &Op, prepare: impl FnOnce(&World)) -> (Reply, bool) {
    let (_turn, cpu) = machine_turn();
    crate::trace::set_fastpath(fast);
    let world = build(cpu, &one_cpu_spec());
    let caller = world.threads[0];
    assert_eq!(sched::current(), Some(caller), "thread 0 runs first");
    prepare(&world);
    let before = snapshot(&world, caller);
    step(op, fast);
    let still_runs = sched::current() == Some(caller);
    let c = &tcb(caller).context;
    let reply = Reply { rax: c.rax, rdi: c.rdi, rsi: c.rsi, regs: syscall::message_registers(c) };
    let changed = snapshot(&world, caller) != before;
    let ended = end_world();
    crate::trace::set_fastpath(true);
    ended.unwrap_or_else(|e| panic!("{e}"));
    assert!(still_runs, "{op:x?} blocked or switched away: {reply:x?}");
    (reply, changed)
}

/// `call` on both paths: each must give `expected` and change nothing.
fn refused(op: &Op, expected: Error, prepare: impl Fn(&World)) {
    for fast in [true, false] {
        let (reply, changed) = call(fast, op, &prepare);
        assert_eq!(reply, Reply::error(expected), "{op:x?} (fastpath on: {fast})");
        assert!(!changed, "{op:x?} failed but changed the world (fastpath on: {fast})");
    }
}

/// An invocation with a raw info word (`label << 16 | rest`).
fn raw(sys: Sys, cptr: u64, label: u64, rest: u64, regs: [u64; MSG_REGS]) -> Op {
    Op { sys: sys as u64, cptr, info: label << 16 | rest, regs, buffer: [0; 8] }
}

/// Regression: an unknown CNode label answered `RangeError` when the index or depth
/// was bad too: the label was decoded after them.
#[test]
fn an_unknown_cnode_label_is_an_illegal_operation_whatever_the_arguments() {
    for regs in [[999, 70, 1, 0, 0, 0], [16, 64, 1, 0xf, 0, 0]] {
        refused(&raw(Sys::Call, SELF_SLOT, 0x2f, 5, regs), Error::IllegalOperation, |_| {});
    }
}

/// Regression: kernel-object invocations took messages longer than 120 words and
/// more leases than the maximum (a COPY with a 121-word info word went through).
#[test]
fn an_invocation_with_a_message_longer_than_the_maximum_is_a_range_error() {
    let copy = [16, 64, 1, 0, 0, 0];
    refused(&raw(Sys::Call, SELF_SLOT, cnode::COPY, 121, copy), Error::RangeError, |_| {});
    refused(&raw(Sys::Call, SELF_SLOT, cnode::COPY, 127, copy), Error::RangeError, |_| {});
    let five_leases = (MSG_MAX_LEASES as u64 + 1) << 9 | 3;
    refused(&raw(Sys::Call, SELF_SLOT, cnode::COPY, five_leases, copy), Error::RangeError, |_| {});
}

/// Regression: a `Call` whose info word says 5 to 7 leases (the field has 3 bits) was
/// accepted, its extra descriptors read from IPC-buffer words past the lease area.
/// Every descriptor here is a good one (8 bytes of the caller's own IPC buffer), so
/// only the count is wrong.
#[test]
fn a_call_with_more_leases_than_the_maximum_is_a_range_error() {
    let describe = |leases: usize| {
        move |world: &World| {
            let page = IpcBufferPage::of(world.threads[0]).expect("IPC buffer");
            for i in 0..leases {
                page.write(LEASES + 2 * i, BUFFER_BASE);
                page.write(LEASES + 2 * i + 1, 8);
            }
        }
    };
    for leases in MSG_MAX_LEASES + 1..=7 {
        let op = raw(Sys::Call, 1, 0, (leases as u64) << 9, [0; MSG_REGS]);
        refused(&op, Error::RangeError, describe(leases));
    }
    // The maximum itself is a lease call like any other: it waits for a server.
    let (_turn, cpu) = machine_turn();
    let world = build(cpu, &one_cpu_spec());
    describe(MSG_MAX_LEASES)(&world);
    step(&raw(Sys::Call, 1, 0, (MSG_MAX_LEASES as u64) << 9, [0; MSG_REGS]), true);
    let waiting = tcb(world.threads[0]).state == crate::objects::ThreadState::Blocked;
    end_world().unwrap_or_else(|e| panic!("{e}"));
    assert!(waiting, "a call with the maximum of leases waits for a server");
}

/// Regression: `NbRecv` on a notification with nothing pending answered success
/// (bits 0, the notification label), where docs/abi.md says `Busy`, as it is on an
/// endpoint with nobody queued; a pending signal is still taken once.
#[test]
fn a_poll_of_a_notification_with_nothing_pending_is_busy() {
    refused(&raw(Sys::NbRecv, 6, 0, 0, [0; MSG_REGS]), Error::Busy, |_| {});
    for fast in [true, false] {
        let (reply, _) = call(fast, &raw(Sys::NbRecv, 6, 0, 0, [0; MSG_REGS]), |world| {
            let words = objects::notification_words(world.notification);
            objects::set_notification_words(world.notification, [0x5, words[1], words[2], words[3]]);
        });
        let label = ramen_abi::syscall::NOTIFICATION_LABEL << 16;
        assert_eq!(reply, Reply { rax: 0, rdi: 0x5, rsi: label, regs: [0; MSG_REGS] }, "fastpath on: {fast}");
    }
}

/// Regression: error replies left the caller's capability pointer in `rdi`, which
/// docs/abi.md says kernel replies zero when they do not use it: every register of
/// an error reply is defined (the code in `rax`, everything else zero).
#[test]
fn an_error_reply_returns_nothing_but_the_code() {
    let words = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66];
    // An empty slot, called and sent to; an endpoint received from without the right;
    // a copy from an empty slot (the CNode operation's own check).
    refused(&raw(Sys::Call, 0x1f, 0, 6, words), Error::InvalidCapability, |_| {});
    refused(&raw(Sys::NbSend, 0x1f, 0, 6, words), Error::InvalidCapability, |_| {});
    refused(&raw(Sys::NbRecv, 4, 0, 0, words), Error::InsufficientRights, |_| {});
    refused(&raw(Sys::Call, SELF_SLOT, cnode::COPY, 3, [0x1e, 64, 0x1f, 0, 0, 0]), Error::SlotEmpty, |_| {});
}

/// Regression: `BIND_NOTIFICATION` of a thread already bound to one notification, to
/// a notification bound to another thread, answered `Busy` after it had unbound the
/// first: the thread still named the first notification, which no longer named the
/// thread (a failing call that changed something; the world of the "failing call"
/// test has one notification, so it never got there). A rebind that succeeds moves
/// the binding.
#[test]
fn a_refused_bind_leaves_the_binding_it_found() {
    use ramen_abi::invocation::{thread, untyped};
    for fast in [true, false] {
        let (_turn, cpu) = machine_turn();
        crate::trace::set_fastpath(fast);
        // Thread 0 is bound to the world's notification.
        let world = build(cpu, &Spec { bound: true, ..one_cpu_spec() });
        let [t0, t1, ..] = world.threads;
        // Thread 0 makes a second notification (slot 16) and binds thread 1 (its
        // next, slot 11) to it, then asks to bind thread 1 to the first one (slot 6).
        let made = [
            invoke_op(9, untyped::RETYPE, &[ramen_abi::object::NOTIFICATION, 0, SELF_SLOT, 16, 1]),
            invoke_op(11, thread::BIND_NOTIFICATION, &[16]),
        ];
        for op in &made {
            step(op, fast);
            assert_eq!(tcb(t0).context.rax, 0, "{op:x?}");
        }
        let second = tcb(t1).bound_notification;
        let before = snapshot(&world, t0);
        step(&invoke_op(11, thread::BIND_NOTIFICATION, &[6]), fast);
        let answer = tcb(t0).context.rax;
        let changed = snapshot(&world, t0) != before;
        let (bound_to, named_by) = (tcb(t1).bound_notification, objects::notification_words(second)[3]);
        // Unbinding (0) and binding the second again both work.
        step(&invoke_op(11, thread::BIND_NOTIFICATION, &[0]), fast);
        let unbound =
            (tcb(t0).context.rax, tcb(t1).bound_notification, objects::notification_words(second)[3]);
        end_world().unwrap_or_else(|e| panic!("{e}"));
        crate::trace::set_fastpath(true);
        assert_eq!(answer, Error::Busy.code(), "bound to another thread (fastpath on: {fast})");
        assert!(!changed, "the refused bind changed the world (fastpath on: {fast})");
        assert_eq!((bound_to, named_by), (second, t1.addr()), "thread 1 and its notification still agree");
        assert_eq!(unbound, (0, 0, 0), "unbinding clears both sides");
    }
}

/// `RETYPE`'s destination CNode is a capability argument: an empty slot there is
/// `InvalidCapability`, as for every other invocation's (it answered `SlotEmpty`),
/// and a CNode capability without the write right is refused on the lock-free path
/// and under the write lock alike (regression: it created the object).
#[test]
fn a_retype_into_an_empty_or_read_only_cnode_slot_is_refused() {
    use ramen_abi::invocation::untyped::RETYPE;
    use ramen_abi::object::ENDPOINT;
    refused(&invoke_op(9, RETYPE, &[ENDPOINT, 0, 0x1f, 16, 1]), Error::InvalidCapability, |_| {});
    let read_only_copy = |world: &World| {
        let mut store = CAP_LOCK.lock();
        let own = |index| SlotRef::in_cnode(PhysAddr(world.cnodes[0]), index).expect("slot");
        ops::mint(&mut *store, own(SELF_SLOT), own(0x1e), Rights::READ, CapData::Keep).expect("mint");
    };
    refused(&invoke_op(9, RETYPE, &[ENDPOINT, 0, 0x1e, 16, 1]), Error::InsufficientRights, read_only_copy);
}

/// Regression: capabilities or leases named in the info word of a signal or of a
/// kernel-object invocation were silently ignored (neither carries a message through
/// an IPC buffer): `InvalidArgument`, as leases on anything but a call are.
#[test]
fn a_signal_or_an_invocation_naming_capabilities_or_leases_is_refused() {
    let one_cap = 1 << 7;
    let one_lease = 1 << 9;
    for extra in [one_cap, one_lease] {
        refused(&raw(Sys::NbSend, 7, 0, extra, [0; MSG_REGS]), Error::InvalidArgument, |_| {});
        refused(&raw(Sys::Send, 7, 0, extra, [0; MSG_REGS]), Error::InvalidArgument, |_| {});
        refused(
            &raw(Sys::Call, SELF_SLOT, cnode::COPY, extra | 3, [16, 64, 1, 0, 0, 0]),
            Error::InvalidArgument,
            |_| {},
        );
    }
    // A plain signal still works, on both paths.
    for fast in [true, false] {
        let (reply, changed) = call(fast, &raw(Sys::NbSend, 7, 0, 0, [0; MSG_REGS]), |_| {});
        assert_eq!(reply, Reply { rax: 0, rdi: 0, rsi: 0, regs: [0; MSG_REGS] }, "fastpath on: {fast}");
        assert!(changed, "the signal set the notification's bits");
    }
}

/// Regression: an I/O port past the 16-bit port space answered `RangeError` at
/// 2^64 - 1 but `InsufficientRights` at 0x10000 (and for a 16-bit read at 0xffff): out
/// of the port space is `RangeError` whatever the capability, checked first.
#[test]
fn a_port_past_the_port_space_is_a_range_error() {
    use ramen_abi::invocation::ioport::{IN8, IN16};
    let ports = |world: &World| {
        let mut store = CAP_LOCK.lock();
        let at = SlotRef::in_cnode(PhysAddr(world.cnodes[0]), 0x1d).expect("slot");
        let cap = Cap::io_port(0xff00, 0xffff).expect("port range");
        ops::insert_initial(&mut *store, at, cap).expect("insert");
    };
    for (label, port) in [(IN8, 0x1_0000), (IN16, 0xffff), (IN16, u64::MAX), (IN8, u64::MAX)] {
        refused(&invoke_op(0x1d, label, &[port]), Error::RangeError, ports);
    }
    // Inside the port space but outside the capability: its rights.
    refused(&invoke_op(0x1d, IN8, &[0xfeff]), Error::InsufficientRights, ports);
}
