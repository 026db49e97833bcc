//! Per-CPU scheduling: each CPU owns a priority run queue and the threads in it.
//!
//! No lock is shared between CPUs on this path. A CPU only ever touches its own
//! [`Sched`] (through `CpuCell`, which checks) and the TCBs of threads it owns. To wake,
//! suspend or hand over a thread owned by another CPU, a CPU posts a request to that
//! CPU's [`Inbox`] (a short lock held by one writer and the owner) and sends a wake-up
//! IPI; the owner drains its inbox on every kernel entry. Time slices come from the
//! local APIC timer: a thread runs for [`SLICE_NS`] when another of its priority is
//! ready, then goes to the back of its level (round robin).
//!
//! The kernel has one stack per CPU: switching threads means installing another
//! thread's saved context and address space, then returning to user mode. With
//! nothing to run, the CPU idles on its kernel stack with interrupts on.

use ramen_arch::apic::WAKE_VECTOR;
use ramen_arch::cpu;
use ramen_arch::fpu::FpuArea;
use ramen_core::runqueue::{RunQueue, ThreadRef};
use ramen_core::tsc::ns_to_ticks;

use crate::cpus::{self, this_cpu};
use crate::objects::{TcbLinks, ThreadState, tcb};

/// Length of a time slice until a SchedControl capability changes it.
pub const DEFAULT_SLICE_NS: u64 = 5_000_000;
/// Nanoseconds per APIC timer tick, for CPUs without TSC-deadline mode (QEMU's APIC
/// timer counts at 1 GHz; the kernel divides by 16). Real hardware without
/// TSC-deadline would need this calibrated; every CPU of the last decade has it.
const APIC_TICK_NS: u64 = 16;

use ramen_core::inbox::BATCH;
pub use ramen_core::inbox::{Inbox, Request};
use ramen_core::inbox::{Route, route};

/// One CPU's scheduler state.
pub struct Sched {
    queue: RunQueue,
    /// The thread whose context is installed (running, or about to run).
    current: Option<ThreadRef>,
    /// The thread whose FPU state is in this CPU's registers.
    fpu_owner: Option<ThreadRef>,
    /// Context switches, for statistics and tests.
    pub switches: u64,
    /// The current thread's time slice is armed on the timer.
    slice_running: bool,
    /// A thread that moves to another CPU once this one leaves the kernel.
    handoff: Option<(ThreadRef, u32)>,
    /// A thread an IPC woke here on the slow path in a system call that blocks its
    /// caller (a call, a reply-and-receive): it runs next unless a thread of higher
    /// priority is queued, ahead of its equals, as the fastpath's direct switch
    /// would have it ([`wake_direct`], [`settle`]).
    direct: Option<ThreadRef>,
    /// The PCIDs this CPU gave address spaces (used when PCIDs are on: `tlb`).
    pcids: ramen_core::pcid::PcidSlots,
}

impl Sched {
    /// An idle scheduler.
    pub const fn new() -> Self {
        Self {
            queue: RunQueue::new(),
            current: None,
            fpu_owner: None,
            switches: 0,
            slice_running: false,
            handoff: None,
            direct: None,
            pcids: ramen_core::pcid::PcidSlots::new(),
        }
    }
}

impl Sched {
    /// True if this scheduler still refers to any thread (current, queued, owning the
    /// FPU registers, being handed over or picked to run next): a CPU whose threads
    /// are all gone must hold none of them.
    #[cfg(test)]
    pub fn refers_to_threads(&self) -> bool {
        self.current.is_some()
            || self.fpu_owner.is_some()
            || self.handoff.is_some()
            || self.direct.is_some()
            || !self.queue.is_empty()
    }
}

fn with_sched<R>(f: impl FnOnce(&mut Sched) -> R) -> R {
    cpus::with_local_sched(|_, s| f(s))
}

/// The thread running on this CPU, if any.
pub fn current() -> Option<ThreadRef> {
    with_sched(|s| s.current)
}

/// Puts `thread` in this CPU's queue. Invariant: a thread is in the queue exactly
/// when `Tcb::queued` is set, and only its owner CPU changes either.
fn push(s: &mut Sched, thread: ThreadRef, front: bool) {
    let t = tcb(thread);
    // A thread being handed to another CPU as this one leaves the kernel stays
    // this CPU's until then, but must not be queued here: the CPU it goes to queues
    // it (regression: a wake-up served between the move and the hand-over queued it
    // here too, and it ran on both CPUs).
    if t.queued || s.handoff.is_some_and(|(h, _)| h == thread) {
        return;
    }
    t.queued = true;
    let priority = t.priority;
    t.queued_at = priority;
    if front {
        s.queue.enqueue_front(&mut TcbLinks, thread, priority);
    } else {
        s.queue.enqueue(&mut TcbLinks, thread, priority);
    }
}

fn pop(s: &mut Sched) -> Option<ThreadRef> {
    let (thread, _) = s.queue.pop_highest(&mut TcbLinks)?;
    tcb(thread).queued = false;
    Some(thread)
}

fn unqueue(s: &mut Sched, thread: ThreadRef) {
    let t = tcb(thread);
    if t.queued {
        s.queue.remove(&mut TcbLinks, thread, t.queued_at);
        t.queued = false;
    }
}

/// [`wake_local`] inside a borrow of this CPU's scheduler (the IPC fastpath's), for a
/// thread this CPU owns.
pub fn wake_in(s: &mut Sched, thread: ThreadRef) {
    wake_local(s, thread);
}

/// Makes `thread` runnable here if this CPU owns it; otherwise forwards the wake to
/// its owner (it may have migrated since the request was posted).
fn wake_local(s: &mut Sched, thread: ThreadRef) {
    let t = tcb(thread);
    let me = ramen_arch::percpu::index_fast();
    if t.cpu != me {
        post(t.cpu, Request::Wake(thread));
        return;
    }
    if matches!(t.state, ThreadState::Runnable) {
        // Running or queued already; a runnable thread in transit is queued on adopt.
        if s.current != Some(thread) {
            push(s, thread, false);
        }
        return;
    }
    t.state = ThreadState::Runnable;
    if s.current != Some(thread) {
        push(s, thread, false);
    }
}

/// Posts `request` to CPU `target` and kicks it with an IPI. Never waits for a full
/// inbox (its owner may be spinning for a lock this CPU holds): the request is then
/// held in this CPU's outbox, behind anything already held for that target, and
/// delivered as soon as there is room (`flush_outbox`: whenever this CPU waits, and
/// before it leaves the kernel or halts).
pub fn post(target: u32, request: Request) {
    // Counted until handled: the thread's memory is not reused before (a forwarded
    // request counts up before the one it came from counts down).
    count_request(request.thread());
    post_counted(target, request);
}

/// [`post`] of a request already counted in its thread's `requests`.
fn post_counted(target: u32, request: Request) {
    let Some(cpu) = cpus::cpu(target) else {
        // No such CPU (never so for a thread's owner): dropped, as if handled.
        if let Some(waiter) = request.waiter() {
            awaited_done(waiter);
        }
        request_done(request.thread(), 1);
        return;
    };
    let me = this_cpu();
    let behind =
        me.outbox_held.load(core::sync::atomic::Ordering::Relaxed) && me.outbox.with(|o| o.holds_for(target));
    if behind || !deliver(cpu, target, request) {
        hold(target, request);
    }
}

/// Puts `request` into CPU `target`'s inbox and kicks it; false if the inbox is full.
fn deliver(cpu: &cpus::Cpu, target: u32, request: Request) -> bool {
    {
        let mut inbox = cpu.inbox.lock();
        if !inbox.push(request) {
            return false;
        }
        inbox.set_ipi_flow(crate::trace::ipi_send(target));
    }
    // A CPU polling its inbox sees the request without an interrupt
    // (`ramen_core::wake`: the handshake, model-checked with loom).
    if cpu.wake.posted() {
        let apic_id = cpu.local.apic_id;
        this_cpu().lapic.with(|l| l.send_ipi(WAKE_VECTOR, apic_id));
    }
    true
}

/// Holds `request` for `target` in this CPU's outbox. Only a full outbox (128
/// requests stuck behind full inboxes) makes it wait, delivering meanwhile.
#[cold]
#[inline(never)]
fn hold(target: u32, request: Request) {
    let me = this_cpu();
    while !me.outbox.with(|o| o.push(target, request)) {
        service_while_waiting();
        cpu::relax();
    }
    me.outbox_held.store(true, core::sync::atomic::Ordering::Relaxed);
}

/// Delivers what this CPU's outbox holds, as far as the targets have room.
#[inline]
pub fn flush_outbox() {
    let me = this_cpu();
    if !me.outbox_held.load(core::sync::atomic::Ordering::Relaxed) {
        return;
    }
    flush_held(me);
}

#[cold]
#[inline(never)]
fn flush_held(me: &cpus::Cpu) {
    let empty = me.outbox.with(|o| {
        o.flush(|target, request| cpus::cpu(target).is_none_or(|cpu| deliver(cpu, target, request)));
        o.is_empty()
    });
    if empty {
        me.outbox_held.store(false, core::sync::atomic::Ordering::Relaxed);
    }
}

/// What a CPU does while it spins waiting for another: the TLB flush another CPU
/// may be waiting for, and the requests it holds for CPUs whose inboxes were full
/// (their owners may be the ones it waits for).
#[inline]
pub fn service_while_waiting() {
    crate::tlb::service();
    flush_outbox();
}

/// A request decided on inside a `CAP_LOCK` read section (a thread invocation's), to
/// be posted once the section has ended: a read section never waits, and [`post`]
/// may (a full outbox). Counted in the thread's `requests` when it is made, as a
/// posted request is, so the thread's memory stays the thread's until the request is
/// handled, even if a delete on another CPU destroys the thread right after the
/// section (the memory waits on `objects::DESTROYED`; the request finds it `Dead`).
#[must_use = "a deferred request must be posted"]
pub struct Deferred {
    target: u32,
    request: Request,
}

impl Deferred {
    /// `request` for CPU `target`, counted now.
    fn new(target: u32, request: Request) -> Self {
        count_request(request.thread());
        Self { target, request }
    }

    /// Posts it (outside any read section).
    pub fn post(self) {
        post_counted(self.target, self.request);
    }
}

/// A slot promised in CPU `target`'s inbox ([`reserve`]), to be used by
/// [`Reservation::wake`]; dropping it unused gives the slot back.
pub struct Reservation {
    target: u32,
    used: bool,
}

/// Promises a slot in CPU `target`'s inbox without waiting: `None` if the inbox is
/// full (or `target` is not up). For code that must not spin on a full inbox (a CPU
/// inside a `CAP_LOCK` read section: the inbox's owner may be a writer waiting for
/// it), decided before anything changes.
pub fn reserve(target: u32) -> Option<Reservation> {
    let cpu = cpus::cpu(target)?;
    if !cpu.inbox.lock().reserve() {
        return None;
    }
    Some(Reservation { target, used: false })
}

impl Reservation {
    /// Wakes `thread` (owned by the reserved CPU) through the promised slot: never
    /// waits for space. Kicks the CPU as [`post`] does.
    pub fn wake(mut self, thread: ThreadRef) {
        self.used = true;
        let Some(cpu) = cpus::cpu(self.target) else {
            return;
        };
        count_request(thread);
        let flow = crate::trace::ipi_send(self.target);
        {
            let mut inbox = cpu.inbox.lock();
            // Room is certain: the reservation held it.
            inbox.push_reserved(Request::Wake(thread));
            inbox.set_ipi_flow(flow);
        }
        if cpu.wake.posted() {
            let apic_id = cpu.local.apic_id;
            this_cpu().lapic.with(|l| l.send_ipi(WAKE_VECTOR, apic_id));
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.used
            && let Some(cpu) = cpus::cpu(self.target)
        {
            cpu.inbox.lock().unreserve();
        }
    }
}

/// `RESUME`: makes `thread` runnable on its CPU if it is stopped there (suspended
/// or faulted), from any CPU. The owner decides on the state it owns: a stale read
/// elsewhere (a second resume before the first was served, the thread since blocked
/// in IPC) must not wake a thread that is running or waiting (regression: the churn
/// saw a queued thread marked stopped by a racing resume). From another CPU the
/// system call returns only once the owner has done it, as for [`suspend`]
/// (regression: a `SUSPEND` right after a `RESUME` of a thread that was moving went
/// straight to its new CPU and was served there before the `RESUME`, which its old
/// CPU forwarded: the thread ran on after both returned; found by the QEMU test
/// `moving_and_stopping_threads_takes_no_global_lock` on four CPUs).
pub fn resume_thread(thread: ThreadRef) {
    if let Some(request) = resume_deferred(thread) {
        request.post();
    }
}

/// [`resume_thread`] up to its request (inside a `CAP_LOCK` read section: posted
/// after it): here at once if this CPU owns the thread, else the request to its
/// owner, awaited by this CPU.
pub fn resume_deferred(thread: ThreadRef) -> Option<Deferred> {
    let owner = tcb(thread).cpu;
    let me = this_cpu();
    if owner == me.local.index {
        with_sched(|s| resume_local(s, thread));
        None
    } else {
        Some(Deferred::new(owner, Request::Resume(thread, awaited_by(me))))
    }
}

/// Counts one more request this CPU's system call waits for ([`await_stopped`]);
/// returns this CPU's index, for the request.
fn awaited_by(me: &cpus::Cpu) -> u32 {
    me.requests_awaited.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    me.awaiting.store(true, core::sync::atomic::Ordering::Relaxed);
    me.local.index
}

/// [`resume_thread`] on the owner.
fn resume_local(s: &mut Sched, thread: ThreadRef) {
    let t = tcb(thread);
    if matches!(t.state, ThreadState::Inactive | ThreadState::Faulted) {
        t.state = ThreadState::Runnable;
        if s.current != Some(thread) {
            push(s, thread, false);
        }
    }
}

/// Makes `thread` runnable on its CPU, from any CPU.
pub fn wake(thread: ThreadRef) {
    on_owner(thread, Request::Wake(thread), wake_local);
}

/// [`wake`] for the thread an IPC hands its message to on the slow path while the
/// calling thread blocks (`Call`; the reply of `ReplyRecv`): on this CPU it also
/// becomes the direct-switch candidate, which [`settle`] runs next if the caller did
/// block and no thread of higher priority is queued. The fastpath switches to it in
/// exactly those cases, so both paths schedule alike (the host differential test
/// found that the slow path queued it behind its equals instead).
pub fn wake_direct(thread: ThreadRef) {
    on_owner(thread, Request::Wake(thread), wake_direct_in);
}

/// [`wake_direct`] inside a borrow of this CPU's scheduler (the lock-free IPC paths'),
/// for a thread this CPU owns.
pub fn wake_direct_in(s: &mut Sched, thread: ThreadRef) {
    wake_local(s, thread);
    s.direct = Some(thread);
}

/// Does `local` to `thread` here if this CPU owns it, else posts `request` to its
/// owner.
fn on_owner(thread: ThreadRef, request: Request, local: fn(&mut Sched, ThreadRef)) {
    let owner = tcb(thread).cpu;
    if owner == ramen_arch::percpu::index_fast() {
        with_sched(|s| local(s, thread));
    } else {
        post(owner, request);
    }
}

/// Inbox polls an idle CPU makes before it halts (`idle_poll=` on the command
/// line; 0: halt at once and always be woken by IPI). docs/ipc.md has the
/// measurements behind the default.
pub const DEFAULT_IDLE_POLL: u32 = 1000;
pub static IDLE_POLL: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(DEFAULT_IDLE_POLL);

/// One more request names `thread` (see `Tcb::requests`).
#[inline]
fn count_request(thread: ThreadRef) {
    tcb(thread).requests.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
}

/// A request naming `thread` was handled (or dropped): the last thing done with it.
/// Release: everything the handler did to the TCB comes before the count that lets
/// a destroyed thread's memory be reused. A count that would go below zero means a
/// request was handled that no one counted (or was counted down twice): the count no
/// longer guards the thread's memory, so it is reported as a violation (regression:
/// a request left in an inbox by a host test's earlier world named the same address
/// in the next one and wrapped a live thread's count, which then let its memory go
/// while a request still named it; nothing noticed).
#[inline]
fn request_done(thread: ThreadRef, count: u32) {
    let before = tcb(thread).requests.fetch_sub(count, core::sync::atomic::Ordering::Release);
    if before < count {
        request_count_violation(thread, before, count);
    }
}

/// Handles every request in this CPU's inbox.
pub fn drain_inbox() {
    service_while_waiting();
    // Every post sets the flag after its push, then interrupts this CPU (or finds it
    // polling): an empty flag means nothing to take yet, and skips the lock and the
    // copy. Cleared before the take: a request posted after it sets the flag again.
    if !this_cpu().wake.take() {
        return;
    }
    loop {
        let mut batch = [None; BATCH];
        let (len, ipi_flow) = this_cpu().inbox.lock().take_batch(&mut batch);
        if len == 0 {
            return;
        }
        crate::trace::ipi_received(ipi_flow);
        for request in batch.iter().take(len).flatten() {
            handle(*request);
            request_done(request.thread(), 1);
        }
    }
}

/// Handles one request from this CPU's inbox. The thread it names may have moved
/// on since it was posted: requests that act on the owner follow it there.
fn handle(request: Request) {
    let t = tcb(request.thread());
    // A request about a destroyed thread (posted or forwarded before its owner forgot
    // it) changes nothing; the memory is still the thread's (the request is counted).
    // One about a thread that moved on follows it (`ramen_core::inbox::route`).
    match route(request, t.cpu, ramen_arch::percpu::index_fast(), t.state == ThreadState::Dead) {
        Route::Drop => {
            if let Some(waiter) = request.waiter() {
                awaited_done(waiter);
            }
        }
        Route::Forward(owner) => post(owner, request),
        Route::Apply => match request {
            Request::Wake(t) => with_sched(|s| wake_local(s, t)),
            Request::Resume(t, waiter) => {
                with_sched(|s| resume_local(s, t));
                awaited_done(waiter);
            }
            Request::Suspend(t, waiter) => suspend_for(t, waiter),
            Request::Forget(t) => forget(t),
            Request::Adopt(t) => with_sched(|s| {
                if tcb(t).state == ThreadState::Runnable && s.current != Some(t) {
                    push(s, t, false);
                }
            }),
            Request::Release(t, target) => set_affinity(t, target),
        },
    }
}

/// Takes `thread` off this CPU (it must be owned here) and stops it in `state`.
fn stop(s: &mut Sched, thread: ThreadRef, state: ThreadState) {
    unqueue(s, thread);
    if s.current == Some(thread) {
        s.current = None;
    }
    tcb(thread).state = state;
}

/// Stops `thread` from any CPU (suspend). From another CPU than its owner this is
/// a request, and the system call returns only once the owner has stopped it
/// ([`await_stopped`]): after `SUSPEND` returns the thread runs nowhere, as on one
/// CPU.
pub fn suspend(thread: ThreadRef) {
    let owner = tcb(thread).cpu;
    if owner == ramen_arch::percpu::index_fast() {
        // Not running (this CPU runs the caller), and the caller holds `CAP_LOCK`.
        crate::invoke::leave_ipc(thread);
        with_sched(|s| stop(s, thread, ThreadState::Inactive));
    } else {
        post(owner, Request::Suspend(thread, awaited_by(this_cpu())));
    }
}

/// The answer of [`suspend_deferred`] for a thread this CPU owns that may be in IPC.
pub struct NeedsLock;

/// [`suspend`] inside a `CAP_LOCK` read section, of a thread other than the caller:
/// one this CPU owns is stopped here if it is in no IPC (`Ok(None)`), else
/// `Err(NeedsLock)` (the caller suspends it under the write lock instead); another
/// CPU's gets the request, to post after the section, and the system call waits for
/// it as [`suspend`]'s does.
pub fn suspend_deferred(thread: ThreadRef) -> Result<Option<Deferred>, NeedsLock> {
    let owner = tcb(thread).cpu;
    let me = this_cpu();
    if owner == me.local.index {
        return if with_sched(|s| suspend_unlocked(s, thread)) { Ok(None) } else { Err(NeedsLock) };
    }
    Ok(Some(Deferred::new(owner, Request::Suspend(thread, awaited_by(me)))))
}

/// Stops `thread` (owned here and not running) for `SUSPEND` without `CAP_LOCK`, if
/// it is runnable or inactive: such a thread is in no IPC, and stays so, since only
/// the thread itself enters IPC (by running) and other CPUs change the IPC state of
/// blocked and faulted threads only (`RESUME` of a faulted thread takes it out of
/// its fault IPC first, under the write lock, for this). The kernel's invariant check counts any runnable or
/// inactive thread found in IPC. False for a blocked or faulted thread: taking it out
/// of its IPC needs the write lock.
fn suspend_unlocked(s: &mut Sched, thread: ThreadRef) -> bool {
    let t = tcb(thread);
    if !matches!(t.state, ThreadState::Runnable | ThreadState::Inactive) {
        return false;
    }
    stop(s, thread, ThreadState::Inactive);
    true
}

/// A suspend request for `thread` that CPU `waiter` waits for: stops it if it is
/// owned here (then tells the waiter), else follows it to its owner.
fn suspend_for(thread: ThreadRef, waiter: u32) {
    let owner = tcb(thread).cpu;
    if owner != ramen_arch::percpu::index_fast() {
        post(owner, Request::Suspend(thread, waiter));
        return;
    }
    if with_sched(|s| suspend_unlocked(s, thread)) {
        awaited_done(waiter);
        return;
    }
    {
        // Out of any IPC it waits in, and stopped, in one step: it cannot enter IPC
        // again in between (it is not running: this CPU is serving its inbox). The
        // write lock keeps out the other CPUs' IPC with it, and the lock-free paths'
        // read sections. Inbox requests are never served under `CAP_LOCK`.
        let _store = crate::objects::CAP_LOCK.lock();
        crate::invoke::leave_ipc(thread);
        with_sched(|s| stop(s, thread, ThreadState::Inactive));
    }
    awaited_done(waiter);
}

/// A suspend or resume that CPU `waiter` asked for is done (or its thread is gone).
fn awaited_done(waiter: u32) {
    if let Some(cpu) = cpus::cpu(waiter) {
        cpu.requests_awaited.fetch_sub(1, core::sync::atomic::Ordering::Release);
    }
}

/// [`stop_current`] inside a borrow of this CPU's scheduler (the IPC fastpath's).
pub fn stop_current_in(s: &mut Sched, state: ThreadState) {
    if let Some(t) = s.current.take() {
        tcb(t).state = state;
    }
}

/// Blocks or stops the current thread: it stays off the run queue until woken.
pub fn stop_current(state: ThreadState) {
    with_sched(|s| {
        if let Some(t) = s.current.take() {
            tcb(t).state = state;
        }
    });
}

/// Moves `thread` to CPU `target`, whether it is running, runnable or blocked: its
/// owner takes it off its queue (saving its FPU state if it is live there), records
/// the new owner, and the target adopts it. From another CPU this is a request to
/// the owner. A thread current here (inside a system call, or interrupted) is handed
/// over only when this CPU leaves the kernel (`Sched::handoff`); until then it stays
/// this CPU's, so a second move meanwhile only changes where it goes.
pub fn set_affinity(thread: ThreadRef, target: u32) {
    if let Some(request) = set_affinity_deferred(thread, target) {
        request.post();
    }
}

/// [`set_affinity`] up to the request it makes (to the owner, or to the CPU that
/// adopts the thread), which the caller posts: inside a `CAP_LOCK` read section,
/// after it ends.
pub fn set_affinity_deferred(thread: ThreadRef, target: u32) -> Option<Deferred> {
    cpus::cpu(target)?;
    let owner = tcb(thread).cpu;
    let me = ramen_arch::percpu::index_fast();
    if owner != me {
        // Even when it is there already: its owner may be handing it to a third CPU
        // as it leaves the kernel, which this cancels.
        return Some(Deferred::new(owner, Request::Release(thread, target)));
    }
    let adopt = with_sched(|s| {
        if let Some((t, to)) = s.handoff.as_mut()
            && *t == thread
        {
            *to = target;
            return false;
        }
        if target == me {
            return false;
        }
        unqueue(s, thread);
        if s.fpu_owner == Some(thread) {
            // Its registers must travel with it: save them now.
            tcb(thread).fpu.save();
            s.fpu_owner = None;
        }
        if s.current == Some(thread) {
            s.current = None;
            // The thread is inside a system call on this CPU: its result is not in its
            // registers yet. Hand it over only when this CPU leaves the kernel, or the
            // new CPU could run it first with a stale result (regression: the root
            // task moving itself saw its own system-call number as an error code).
            s.handoff = Some((thread, target));
            return false;
        }
        true
    });
    adopt.then(|| hand_over(thread, target))
}

/// Gives `thread`, owned here and on no queue here, to CPU `target`: the adoption
/// request, to post.
fn hand_over(thread: ThreadRef, target: u32) -> Deferred {
    crate::trace::record(
        ramen_perf_record::EventKind::ThreadMigrate,
        [u64::from(crate::trace::thread_id(thread)), u64::from(target)],
    );
    tcb(thread).cpu = target;
    Deferred::new(target, Request::Adopt(thread))
}

/// Puts the current thread at the back of its priority level (yield, end of slice)
/// with a fresh slice for next time.
pub fn rotate_current() {
    with_sched(|s| {
        s.slice_running = false;
        if let Some(t) = s.current.take() {
            tcb(t).slice_end_tsc = 0;
            if tcb(t).state == ThreadState::Runnable {
                push(s, t, false);
            }
        }
    });
}

/// Runs the best thread this CPU has: the current one unless a higher-priority one
/// is ready, otherwise idles. Never returns.
pub fn resume() -> ! {
    match settle() {
        Some(slice) => enter_user(slice),
        None => {
            crate::trace::before_idle();
            ramen_arch::user::idle_on_kernel_stack(idle)
        }
    }
}

/// Everything [`resume`] does before it leaves the kernel: serves the inbox, hands
/// over a thread that moves away, and installs the best thread this CPU has (the
/// current one unless a higher-priority one is ready). Returns what [`install`]
/// returned for it, or `None` when there is nothing to run (the CPU idles). The
/// kernel's host tests call it where the kernel would leave for user mode.
#[inline(always)]
pub(crate) fn settle() -> Option<Option<u64>> {
    loop {
        drain_inbox();
        // After the drain, which may have moved the current thread (a `Release` request).
        if let Some((thread, target)) = with_sched(|s| s.handoff.take()) {
            if target == ramen_arch::percpu::index_fast() {
                // Moved away and back before leaving: it stays, first in line.
                with_sched(|s| {
                    if tcb(thread).state == ThreadState::Runnable {
                        push(s, thread, true);
                    }
                });
            } else {
                hand_over(thread, target).post();
            }
        }
        let me = ramen_arch::percpu::index_fast();
        let next = with_sched(|s| {
            let direct = s.direct.take();
            let current = s.current.filter(|t| tcb(*t).state == ThreadState::Runnable);
            match (current, s.queue.highest()) {
                (Some(t), Some(p)) if p > tcb(t).priority => {
                    push(s, t, true);
                    pop(s)
                }
                (Some(t), _) => Some(t),
                // The caller blocked: the thread its IPC woke runs next unless a
                // thread of higher priority waits (`wake_direct`). Only if this CPU
                // still owns it: the drain above may have handed it to another CPU,
                // which may have queued it there already (queued means queued by its
                // owner; regression: found by the four-CPU host test, the candidate
                // was taken out of this CPU's queue while it sat in another's).
                (None, Some(p)) => match direct {
                    Some(t) if tcb(t).cpu == me && tcb(t).queued && tcb(t).priority >= p => {
                        unqueue(s, t);
                        Some(t)
                    }
                    _ => pop(s),
                },
                (None, None) => None,
            }
        })?;
        if let Some(slice) = prepare_run(next) {
            return Some(slice);
        }
    }
}

/// Installs `thread` on this CPU ([`install`]'s result), or stops it and returns
/// `None` when its context cannot be returned to.
#[inline(always)]
fn prepare_run(thread: ThreadRef) -> Option<Option<u64>> {
    if tcb(thread).cpu != ramen_arch::percpu::index_fast() {
        run_violation(thread);
    }
    if !tcb(thread).context.sanitise() {
        // User-set entry points are checked and `SYSCALL` saves canonical return
        // addresses (see `UserContext::sanitise`); a trap frame could still hold a
        // non-canonical RIP (QEMU saves the target of a jump there). Never `iretq` to
        // one, which would fault in ring 0.
        crate::kprintln!("thread {:#x} has a non-user RIP; stopped", thread.addr());
        with_sched(|s| stop(s, thread, ThreadState::Faulted));
        return None;
    }
    crate::trace::before_run(None, thread);
    Some(with_sched(|s| install(s, thread)))
}

/// Makes `thread` (sanitised, owned here) the current thread: its FPU state, address
/// space and context. Returns the ticks left of its slice when the slice timer must
/// be armed. Shared by [`prepare_run`] and the IPC fastpath's direct switch, so both leave
/// the scheduler in the same state.
#[inline(always)]
fn install(s: &mut Sched, thread: ThreadRef) -> Option<u64> {
    let switched = s.current != Some(thread);
    if switched {
        s.switches += 1;
        s.slice_running = false;
        if let Some(previous) = s.current {
            // A preempted thread that is still runnable goes back in the queue.
            if tcb(previous).state == ThreadState::Runnable {
                push(s, previous, false);
            }
        }
    }
    s.current = Some(thread);
    load(s, thread, switched, crate::tlb::pcid_on())
}

/// The part of [`install`] after `thread` became current (`switched`: it was not
/// before): FPU state, address space, context, slice.
#[inline(always)]
fn load(s: &mut Sched, thread: ThreadRef, switched: bool, pcid: bool) -> Option<u64> {
    let t = tcb(thread);
    if s.fpu_owner != Some(thread) {
        // Eager switch of FPU state, skipped when the thread's state is still in
        // the registers (measured and discussed in docs/concurrency.md).
        // The owner is another thread (or none): two different TCBs.
        FpuArea::switch(s.fpu_owner.map(|previous| &mut tcb(previous).fpu), &t.fpu);
        s.fpu_owner = Some(thread);
    }
    // The CPU block's record of the loaded space is the one copy (others read it
    // for shootdowns).
    let vspace = t.vspace;
    if ramen_arch::percpu::loaded_vspace_fast() != vspace {
        if pcid {
            // Its PCID's entries kept if nothing was removed since (`tlb`).
            crate::tlb::switch_space(&mut s.pcids, vspace);
        } else {
            crate::tlb::loading(vspace);
            crate::objects::activate_vspace(vspace);
        }
    }
    crate::objects::install_context(thread);
    // Time-slice only when someone else is waiting at this priority or above. The
    // slice belongs to the thread: neither its own system calls nor a preemption
    // by a higher-priority thread restart it, or a thread that makes them often
    // would never yield to its equals.
    let contended = s.queue.highest().is_some_and(|p| p >= t.priority);
    if !contended {
        return None;
    }
    let now = cpu::rdtsc();
    if t.slice_end_tsc == 0 || t.slice_end_tsc <= now {
        let slice_ns = this_cpu().slice_ns.load(core::sync::atomic::Ordering::Relaxed);
        t.slice_end_tsc = now + ns_to_ticks(slice_ns, cpus::machine().tsc_hz);
    }
    (switched || !s.slice_running).then(|| {
        s.slice_running = true;
        t.slice_end_tsc - now
    })
}

/// Arms the slice timer if [`install`] asked for it, then returns to the current
/// thread in user mode.
#[inline(always)]
fn enter_user(slice: Option<u64>) -> ! {
    if let Some(left) = slice {
        arm_slice(left);
    }
    ramen_arch::user::return_to_user()
}

#[inline(never)]
fn arm_slice(left: u64) {
    let apic_ticks = || {
        let left_ns = ramen_core::tsc::ticks_to_ns(left, cpus::machine().tsc_hz);
        u32::try_from(left_ns / APIC_TICK_NS).unwrap_or(u32::MAX).max(1)
    };
    this_cpu().lapic.with(|l| l.arm_timer(cpu::rdtsc() + left, apic_ticks));
}

/// Forgets `thread`, which was destroyed, on the CPU that owns it: here at once, or
/// by request (then its memory must wait: `objects::destroyed_thread_in_flight`).
pub fn forget_anywhere(thread: ThreadRef) {
    let owner = tcb(thread).cpu;
    if owner == ramen_arch::percpu::index_fast() {
        forget(thread);
        // Requests other CPUs posted here before the destroy (a wake-up from a
        // signal, say) are dropped; on another CPU, `Forget` queues behind them.
        let dropped = this_cpu().inbox.lock().forget(thread, |request| {
            if let Some(waiter) = request.waiter() {
                awaited_done(waiter);
            }
        });
        if dropped > 0 {
            request_done(thread, u32::try_from(dropped).unwrap_or(u32::MAX));
        }
        // Requests still in other inboxes or being handled elsewhere (a wake-up that
        // a CPU forwards after a migration) keep the memory until they are done.
        if tcb(thread).requests.load(core::sync::atomic::Ordering::Acquire) == 0 {
            return;
        }
        crate::objects::destroyed_thread_in_flight(thread.addr(), false);
    } else {
        // The owner takes it off (following it if it has moved on); until then, and
        // until no request names it, retype refuses the memory. The system call
        // returns only once the owner has taken it off (`await_stopped`).
        post(owner, Request::Forget(thread));
        crate::objects::destroyed_thread_in_flight(thread.addr(), true);
        this_cpu().awaiting.store(true, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Waits until every thread this CPU destroyed while another CPU owned it has been
/// taken off by its owner: a delete or revoke returns to user mode only when the
/// threads it destroyed run nowhere (as on one CPU); likewise `SUSPEND` and
/// `RESUME`. Called
/// after each kernel-object invocation (the only system calls that destroy or
/// suspend threads), with `CAP_LOCK` released (the owners may be waiting for it);
/// drains this CPU's inbox meanwhile (a `Forget` may follow a thread that moved here, and other
/// CPUs may be waiting for this one).
#[inline(always)]
pub fn await_stopped() {
    let me = this_cpu();
    if me.awaiting.load(core::sync::atomic::Ordering::Relaxed) {
        await_slow(me);
    }
}

#[cold]
#[inline(never)]
fn await_slow(me: &'static cpus::Cpu) {
    while crate::objects::destroyed_here_may_run() {
        drain_inbox();
        cpu::relax();
    }
    // Suspends and resumes of threads other CPUs own, likewise (`suspend`,
    // `resume_thread`).
    while me.requests_awaited.load(core::sync::atomic::Ordering::Acquire) != 0 {
        drain_inbox();
        cpu::relax();
    }
    // (Handling requests in the drains above never makes this CPU wait for more.)
    me.awaiting.store(false, core::sync::atomic::Ordering::Relaxed);
}

/// Forgets `thread` on this CPU before its TCB memory is reused: off the run queue
/// and the CPU, and no longer the owner of the FPU registers (else the next switch
/// would save them into whatever the memory became).
pub fn forget(thread: ThreadRef) {
    with_sched(|s| {
        stop(s, thread, ThreadState::Dead);
        if s.fpu_owner == Some(thread) {
            s.fpu_owner = None;
        }
        if s.handoff.is_some_and(|(t, _)| t == thread) {
            s.handoff = None;
        }
    });
}

/// Polls this CPU's inbox up to `IDLE_POLL` times, advertising it so senders skip
/// the IPI; true if a request came (the caller drains instead of halting).
fn poll_inbox() -> bool {
    let polls = IDLE_POLL.load(core::sync::atomic::Ordering::Relaxed);
    if polls == 0 {
        return false;
    }
    let wake = &this_cpu().wake;
    wake.start_polling();
    let mut left = polls;
    while left > 0 && !wake.pending() {
        cpu::relax();
        left -= 1;
    }
    wake.stop_polling()
}

/// The idle loop, on the kernel stack with interrupts enabled only while halted.
extern "C" fn idle() -> ! {
    loop {
        drain_inbox();
        if with_sched(|s| !s.queue.is_empty() || s.handoff.is_some()) {
            resume();
        }
        if poll_inbox() {
            continue;
        }
        if this_cpu().outbox_held.load(core::sync::atomic::Ordering::Relaxed) {
            // Requests for full inboxes are still held: deliver them before halting
            // (nothing would wake this CPU to do it).
            cpu::relax();
            continue;
        }
        cpu::wait_for_interrupt();
    }
}

/// The slice timer fired: rotate the current thread if its slice is really over (the
/// timer may be a stale one armed for another thread).
pub fn slice_expired() {
    let expired = with_sched(|s| {
        s.slice_running = false;
        s.current.is_some_and(|t| tcb(t).slice_end_tsc != 0 && tcb(t).slice_end_tsc <= cpu::rdtsc())
    });
    if expired {
        rotate_current();
    }
}

/// The IPC fastpath's direct switch: with this CPU's scheduler `s` (which the
/// fastpath borrowed for its guards), makes `next` (owned here, not queued, its
/// context sanitised) runnable and current, arming the slice timer if it needs one.
/// `blocked`, the current thread, was just blocked by the fastpath: what [`install`]
/// does first comes down to counting the switch (a blocked thread is not queued
/// again). The fastpath then returns to `next` in user mode.
#[inline(always)]
pub fn switch_in<const PCID: bool>(s: &mut Sched, blocked: ThreadRef, next: ThreadRef) {
    debug_assert!(s.current == Some(blocked) && blocked != next);
    debug_assert!(tcb(blocked).state != ThreadState::Runnable);
    tcb(next).state = ThreadState::Runnable;
    s.switches += 1;
    s.slice_running = false;
    s.current = Some(next);
    if let Some(left) = load(s, next, true, PCID) {
        arm_slice(left);
    }
}

/// The highest priority waiting in `s`'s run queue (the fastpath's view).
#[inline(always)]
pub fn highest_queued(s: &Sched) -> Option<u8> {
    s.queue.highest()
}

/// The thread whose context is installed in `s` (the fastpath's view of [`current`]).
#[inline(always)]
pub fn current_of(s: &Sched) -> Option<ThreadRef> {
    s.current
}

/// Scheduler bugs found on the way: a thread this kernel was about to run on a CPU
/// that does not own it (queued on two CPUs, say), or a thread's request count
/// counted below zero. Counted into `check_queue`'s violations, so tests and the
/// invariant check see them.
static RUN_VIOLATIONS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

#[cold]
#[inline(never)]
fn request_count_violation(thread: ThreadRef, before: u32, count: u32) {
    crate::kprintln!(
        "scheduler invariant broken: thread {:#x} had {} requests counted, {} handled",
        thread.addr(),
        before,
        count
    );
    RUN_VIOLATIONS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
}

#[cold]
#[inline(never)]
fn run_violation(thread: ThreadRef) {
    let t = tcb(thread);
    crate::kprintln!(
        "scheduler invariant broken: thread {:#x} (state {}, owned by CPU {}) about to run here",
        thread.addr(),
        t.state as u8,
        t.cpu
    );
    RUN_VIOLATIONS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
}

/// Checks this CPU's run queue: every queued thread is marked queued, owned here,
/// runnable, in no IPC, at its level's priority, and linked both ways. Returns
/// (violations, threads checked); the violations include every [`RUN_VIOLATIONS`]
/// one so far, on any CPU.
pub fn check_queue() -> (u64, u64) {
    let me = ramen_arch::percpu::index_fast();
    with_sched(|s| {
        let (mut bad, mut seen) = (0, 0);
        for priority in 0..=u8::MAX {
            let mut previous = None;
            let mut cursor = s.queue.head(priority);
            while let Some(t) = cursor {
                seen += 1;
                let tc = tcb(t);
                // A runnable thread is in no IPC (`suspend_unlocked` relies on it).
                let fine = tc.queued
                    && tc.cpu == me
                    && tc.state == ThreadState::Runnable
                    && tc.ipc == crate::objects::IpcState::None
                    && tc.queued_at == priority
                    && tc.links.prev == previous
                    && s.current != Some(t);
                if !fine {
                    bad += 1;
                }
                previous = Some(t);
                cursor = tc.links.next;
                if seen > 1 << 20 {
                    return (bad + 1, seen); // a cycle
                }
            }
        }
        (bad + RUN_VIOLATIONS.load(core::sync::atomic::Ordering::Relaxed), seen)
    })
}
