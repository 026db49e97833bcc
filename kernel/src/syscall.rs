//! System calls and traps from user mode.
//!
//! Every system call names a capability. `Call` on a kernel-object capability is an
//! invocation (decoded in `invoke`); the IPC calls on endpoints come with the IPC
//! issue. Each handler validates everything before it changes anything (decode, then
//! invoke), writes its result into the caller's saved registers, and ends in
//! `sched::resume`, which returns to whichever thread should run.

use ramen_abi::syscall::Sys;
use ramen_abi::{Error, MSG_REGS, MessageInfo};
use ramen_arch::apic::{SPURIOUS_VECTOR, TEST_VECTOR, TIMER_VECTOR, WAKE_VECTOR};
use ramen_arch::user::UserContext;
use ramen_core::runqueue::ThreadRef;
use ramen_perf_record::EventKind;

use ramen_core::object::CapType;

use crate::cpus::this_cpu;
use crate::fastpath::CallRoute;
use crate::ipc::{self, SendKind};
use crate::objects::{CAP_LOCK, ThreadState, tcb};
use crate::{invoke, kprintln, sched};

/// The message registers of a saved context, in ABI order.
#[inline(always)]
pub fn message_registers(ctx: &UserContext) -> [u64; MSG_REGS] {
    [ctx.rdx, ctx.r8, ctx.r9, ctx.r10, ctx.r12, ctx.r13]
}

/// Writes a kernel reply into a saved context: result code, message info and
/// registers; the badge register (`rdi`, which held the capability pointer) and the
/// message registers beyond `words` are zeroed, so nothing of the call comes back
/// (regression: error replies returned the caller's capability pointer in `rdi`,
/// where docs/abi.md promises unused registers zeroed).
pub fn set_reply(ctx: &mut UserContext, result: Result<(), Error>, words: &[u64]) {
    ctx.rax = match result {
        Ok(()) => 0,
        Err(e) => e.code(),
    };
    ctx.rdi = 0;
    let len = words.len().min(MSG_REGS);
    ctx.rsi = MessageInfo::try_new(0, len, 0, 0).map_or(0, |i| i.0);
    let mut regs = [0u64; MSG_REGS];
    for (reg, word) in regs.iter_mut().zip(words) {
        *reg = *word;
    }
    set_message_registers(ctx, regs);
}

/// Copies the first `len` message registers (ABI order) of `src` into `dst`; the
/// registers past `len` keep `dst`'s own values, as the receiving thread left them
/// in its system call (nothing of anyone else's). Shared by the fastpath and the slow
/// path's delivery (which uses [`set_message_prefix`]), so both leave the same
/// registers.
#[inline(always)]
pub fn copy_message_registers(src: &UserContext, dst: &mut UserContext, len: usize) {
    if len == 0 {
        return;
    }
    dst.rdx = src.rdx;
    if len == 1 {
        return;
    }
    dst.r8 = src.r8;
    if len == 2 {
        return;
    }
    dst.r9 = src.r9;
    if len == 3 {
        return;
    }
    dst.r10 = src.r10;
    if len == 4 {
        return;
    }
    dst.r12 = src.r12;
    if len == 5 {
        return;
    }
    dst.r13 = src.r13;
}

/// Writes `words` (at most [`MSG_REGS`]) into the first message registers of a saved
/// context; the rest keep their values (see [`copy_message_registers`]).
pub fn set_message_prefix(ctx: &mut UserContext, words: &[u64]) {
    let mut regs = message_registers(ctx);
    for (reg, word) in regs.iter_mut().zip(words) {
        *reg = *word;
    }
    set_message_registers(ctx, regs);
}

/// Writes the message registers of a saved context, in ABI order.
#[inline(always)]
pub fn set_message_registers(ctx: &mut UserContext, words: [u64; MSG_REGS]) {
    let [r0, r1, r2, r3, r4, r5] = words;
    ctx.rdx = r0;
    ctx.r8 = r1;
    ctx.r9 = r2;
    ctx.r10 = r3;
    ctx.r12 = r4;
    ctx.r13 = r5;
}

/// Entry for every `SYSCALL` (registered with arch): the fastpath first, which also
/// finds the calling thread and records the entry, then the slow path.
///
/// Two builds: `TRACED = false` has no trace point in the fastpath at all and is the
/// handler while tracing is off; `trace::start` installs the `TRACED = true` build
/// (`ramen_arch::user::set_syscall_handler`) and `trace::stop` puts the plain one
/// back, so tracing compiled in but off costs the fastpath nothing. The slow path is
/// shared (out of line) and checks the enabled categories at each trace point.
pub extern "C" fn handle_syscall<const TRACED: bool, const PCID: bool>(ctx: &mut UserContext) -> ! {
    match crate::fastpath::attempt::<TRACED, PCID>(ctx) {
        Some(thread) => slow_path(thread, ctx),
        None => sched::resume(),
    }
}

/// The handler while the fastpath is switched off (`trace_control::SET_FASTPATH`):
/// every system call takes the slow path, recorded like the traced build's when
/// tracing is on.
pub extern "C" fn handle_syscall_slow(ctx: &mut UserContext) -> ! {
    let cpu = this_cpu();
    let categories = crate::trace::categories();
    match cpu.sched.with(|s| sched::current_of(s)) {
        Some(thread) => {
            if !categories.is_empty() {
                crate::trace::syscall_enter(cpu, categories, thread, ctx.rax, ctx.rdi);
            }
            slow_path(thread, ctx)
        }
        None => sched::resume(),
    }
}

/// Every system call the fastpath did not take. Out of line: its stack frame is
/// large, and the fastpath should not pay for setting it up.
#[inline(never)]
fn slow_path(thread: ThreadRef, ctx: &mut UserContext) -> ! {
    slow_path_body(thread, ctx);
    sched::resume()
}

/// [`slow_path`] up to where it leaves for [`sched::resume`] (the kernel's host
/// tests run it and then `sched::settle`).
#[inline(always)]
pub(crate) fn slow_path_body(thread: ThreadRef, ctx: &mut UserContext) {
    match Sys::from_number(ctx.rax) {
        None => set_reply(ctx, Err(Error::UnknownSyscall), &[]),
        Some(Sys::Yield) => {
            set_reply(ctx, Ok(()), &[]);
            sched::rotate_current();
        }
        // Send and receive (endpoints and notifications) without `CAP_LOCK`'s write
        // side when they can. A send naming capabilities or leases goes to the write
        // lock's path, which transfers them on an endpoint and refuses them on a signal
        // (tested here, on sends only: inside `fastpath::send_receive` the test cost 15
        // instructions per signal, from the code around it).
        Some(sys @ (Sys::Recv | Sys::NbRecv)) if crate::fastpath::send_receive(thread, sys, ctx.rdi) => {}
        Some(sys @ (Sys::Send | Sys::NbSend))
            if !MessageInfo(ctx.rsi).names_caps_or_leases()
                && crate::fastpath::send_receive(thread, sys, ctx.rdi) => {}
        Some(sys @ (Sys::Reply | Sys::ReplyRecv)) if crate::fastpath::reply_slow(thread, sys, ctx.rdi) => {}
        Some(sys @ (Sys::Send | Sys::NbSend | Sys::Recv | Sys::NbRecv | Sys::Reply | Sys::ReplyRecv)) => {
            this_cpu().ipc_slow.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            let cptr = ctx.rdi;
            if let Err(e) = ipc_syscall(thread, sys, cptr) {
                set_reply(&mut tcb(thread).context, Err(e), &[]);
            }
        }
        // A `Call` the fastpath declined: its capability found in a read section, the
        // call done there when it can be (a busy server's queue), the write lock only
        // for the endpoint cases left (and for invocations that change capabilities,
        // which take it themselves).
        Some(Sys::Call) => match crate::fastpath::call_slow(thread, ctx.rdi) {
            CallRoute::Done => {}
            CallRoute::Endpoint if call_endpoint(thread, ctx.rdi) => {}
            // Not an endpoint after all (it changed since the read section, or a
            // message with capabilities or leases was never looked up there): an
            // invocation, which looks it up itself.
            CallRoute::Endpoint => invocation(thread, ctx, None),
            CallRoute::Invoke(found) => invocation(thread, ctx, Some(found)),
        },
    }
}

/// A `Call` that invokes a kernel object (`found`: its capability or the lookup's
/// error, if looked up already).
fn invocation(thread: ThreadRef, ctx: &mut UserContext, found: Option<Result<ramen_core::cap::Cap, Error>>) {
    let info = MessageInfo(ctx.rsi);
    let regs = message_registers(ctx);
    let mut out = [0u64; MSG_REGS];
    let result = match found {
        Some(found) => invoke::invoke_found(thread, ctx.rdi, found, info, &regs, &mut out),
        None => invoke::invoke(thread, ctx.rdi, info, &regs, &mut out),
    };
    // Threads it destroyed or suspended on other CPUs are stopped there before this
    // returns (`CAP_LOCK` is released by now).
    sched::await_stopped();
    // The thread may have suspended itself; its registers still get the result for
    // when it is resumed.
    match result {
        Ok(words) => set_reply(ctx, Ok(()), out.get(..words).unwrap_or(&[])),
        Err(e) => set_reply(ctx, Err(e), &[]),
    }
}

/// `Call` on an endpoint: the IPC slow path, with the one lookup that found the
/// endpoint (false, nothing done: `cptr` names something else, which `invoke` handles).
fn call_endpoint(thread: ThreadRef, cptr: u64) -> bool {
    let mut guard = CAP_LOCK.lock();
    let store = &mut *guard;
    let Ok((_, cap)) = invoke::lookup_cap(thread, store, cptr) else {
        return false;
    };
    if cap.kind() != CapType::Endpoint {
        return false;
    }
    this_cpu().ipc_slow.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    if let Err(e) = ipc::send(store, thread, &cap, SendKind::Call) {
        set_reply(&mut tcb(thread).context, Err(e), &[]);
    }
    true
}

/// The IPC system calls. They touch the caller's registers through its TCB only.
fn ipc_syscall(thread: ThreadRef, sys: Sys, cptr: u64) -> Result<(), Error> {
    let mut guard = CAP_LOCK.lock();
    let store = &mut *guard;
    let cap = |store: &crate::objects::Store| invoke::lookup_cap(thread, store, cptr).map(|(_, cap)| cap);
    match sys {
        Sys::Reply => {
            if !ipc::reply(store, thread)? {
                return Err(Error::InvalidCapability);
            }
            set_reply(&mut tcb(thread).context, Ok(()), &[]);
            Ok(())
        }
        Sys::ReplyRecv => {
            // Check the receive capability first (type and right, as `receive`
            // will), so a bad one fails before the reply goes (regression: only the
            // lookup was checked, and a capability without the read right failed the
            // call after the reply had gone; found by the host test
            // `a_failing_system_call_changes_nothing`). No caller to answer is not an
            // error here: the server may be starting; a malformed reply is, and
            // nothing happens.
            let endpoint = cap(store)?;
            ipc::check_receive_cap(&endpoint)?;
            ipc::reply(store, thread)?;
            ipc::receive(store, thread, &endpoint, true)
        }
        Sys::Send => ipc::send(store, thread, &cap(store)?, SendKind::Blocking),
        Sys::NbSend => ipc::send(store, thread, &cap(store)?, SendKind::NonBlocking),
        Sys::Recv => ipc::receive(store, thread, &cap(store)?, true),
        Sys::NbRecv => ipc::receive(store, thread, &cap(store)?, false),
        // `slow_path` handles these itself (`Call` on an endpoint in `call_endpoint`,
        // with the one lookup); they never come here.
        Sys::Call | Sys::Yield => Ok(()),
    }
}

/// Entry for every trap taken in user mode (registered with arch).
pub fn handle_user_trap(ctx: &mut UserContext) {
    let vector = ctx.vector as u8;
    if ctx.vector < 32 {
        user_fault(ctx);
    } else if vector != SPURIOUS_VECTOR {
        crate::trace::record(EventKind::IrqEnter, [u64::from(vector), 0]);
        let cpu = this_cpu();
        cpu.lapic.with(|l| l.eoi());
        match vector {
            TIMER_VECTOR => {
                cpu.timer_ticks.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
                sched::slice_expired();
            }
            TEST_VECTOR => {
                cpu.test_ipis.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            }
            WAKE_VECTOR => {}
            _ => {}
        }
        crate::trace::record(EventKind::IrqExit, [u64::from(vector), 0]);
    }
    sched::resume()
}

/// A fault in user mode: the thread stops, and the kernel says why on the console; if
/// its TCB names a fault endpoint, the handler gets a fault message (label `0xfa17`,
/// `ipc::send_fault`) and decides (docs/abi.md, "Faults").
fn user_fault(ctx: &mut UserContext) {
    let Some(thread) = sched::current() else {
        return;
    };
    let (name, what) = ramen_arch::trap::exception_name(ctx.vector as u8);
    let address = if ctx.vector == 14 { ramen_arch::cpu::cr2() } else { 0 };
    if ctx.vector == 14 {
        crate::trace::record(EventKind::PageFaultEnter, [address, ctx.error]);
    }
    let t = tcb(thread);
    t.faults += 1;
    t.last_fault = [ctx.vector, ctx.error, address];
    kprintln!(
        "thread {:#x} faulted: {} ({}) error {:#x} at RIP {:#x}, address {:#x}; thread stopped",
        thread.addr(),
        name,
        what,
        ctx.error,
        ctx.rip,
        address
    );
    if ctx.vector == 14 {
        // 0: not resolved here (the thread stops, or its fault handler decides).
        crate::trace::record(EventKind::PageFaultExit, [address, 0]);
    }
    sched::stop_current(ThreadState::Faulted);
    FAULTS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    let endpoint = t.fault_endpoint;
    if endpoint != 0 {
        let mut store = CAP_LOCK.lock();
        let sent = invoke::lookup_cap(thread, &*store, endpoint)
            .and_then(|(_, cap)| ipc::send_fault(&mut store, thread, &cap, ctx.vector, ctx.error, address));
        if sent.is_err() {
            kprintln!(
                "thread {:#x}: its fault endpoint is not a usable endpoint; it stays stopped",
                thread.addr()
            );
        }
    }
}

/// User faults taken since boot (all CPUs).
pub static FAULTS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
