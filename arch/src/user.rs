//! Entering and leaving user mode: `SYSCALL` entry, the common return path, and the
//! hand-off of traps taken in user mode.
//!
//! The kernel has one stack per CPU (as seL4 does), not one per thread: every entry
//! from user mode saves the user registers into the running thread's context (a
//! [`UserContext`] inside its TCB, found through `gs:24`), runs the kernel on the
//! CPU's kernel stack or an IST stack, and leaves through [`return_to_user`], which
//! restores whichever thread is current by then with `iretq`. Switching threads is
//! therefore just changing the context pointer. `SYSCALL` entry masks IF, DF, TF and
//! AC (so SMAP stays armed); the return path builds RFLAGS from the context, which the
//! kernel sanitises ([`UserContext::sanitise`]) before every return.

use core::arch::global_asm;
use core::sync::atomic::{AtomicPtr, Ordering};

use spin::Once;
use x86_64::VirtAddr;
use x86_64::registers::model_specific::{Efer, EferFlags, LStar, SFMask, Star};
use x86_64::registers::rflags::RFlags;
use x86_64::structures::gdt::SegmentSelector;

use crate::gdt::{KERNEL_CS, KERNEL_DS, USER_CS, USER_DS};
pub use crate::trap::TrapFrame as UserContext;

/// Bytes of a saved user context.
pub const CONTEXT_BYTES: u64 = core::mem::size_of::<UserContext>() as u64;

/// The `vector` value of a context saved by `SYSCALL` (exceptions use 0..=255).
pub const SYSCALL_VECTOR: u64 = 0x100;

/// RFLAGS bits user code may control; everything else (IOPL, NT, VM, ...) is forced.
const USER_RFLAGS_MASK: u64 = 0x0000_0000_0000_0cd5; // CF PF AF ZF SF TF DF OF
/// RFLAGS bits always set in user mode: IF and the reserved bit 1.
const USER_RFLAGS_FORCED: u64 = 0x202;

global_asm!(
    r#"
    .section .text.ramen_user, "ax"
    .global ramen_syscall_entry
ramen_syscall_entry:
    swapgs
    mov %rsp, %gs:16
    mov %gs:24, %rsp
    and ${rflags_mask}, %r11
    or ${rflags_forced}, %r11
    pushq ${user_ds}
    pushq %gs:16
    push %r11
    pushq ${user_cs}
    push %rcx
    pushq $0
    pushq ${syscall_vector}
    push %r15
    push %r14
    push %r13
    push %r12
    push %r11
    push %r10
    push %r9
    push %r8
    push %rbp
    push %rdi
    push %rsi
    push %rdx
    push %rcx
    push %rbx
    push %rax
    mov %rsp, %rdi
    mov %gs:8, %rsp
    call *{syscall}(%rip)
    ud2

    .global ramen_return_to_user
ramen_return_to_user:
    mov %gs:24, %rsp
    sub ${context_bytes}, %rsp
    pop %rax
    pop %rbx
    pop %rcx
    pop %rdx
    pop %rsi
    pop %rdi
    pop %rbp
    pop %r8
    pop %r9
    pop %r10
    pop %r11
    pop %r12
    pop %r13
    pop %r14
    pop %r15
    add $16, %rsp
    swapgs
    iretq

    .global ramen_sysret_to_user
ramen_sysret_to_user:
    mov %gs:24, %rsp
    mov {o_rax}(%rsp), %rax
    mov {o_rbx}(%rsp), %rbx
    mov {o_rip}(%rsp), %rcx
    mov {o_rdx}(%rsp), %rdx
    mov {o_rsi}(%rsp), %rsi
    mov {o_rdi}(%rsp), %rdi
    mov {o_rbp}(%rsp), %rbp
    mov {o_r8}(%rsp), %r8
    mov {o_r9}(%rsp), %r9
    mov {o_r10}(%rsp), %r10
    mov {o_rflags}(%rsp), %r11
    mov {o_r12}(%rsp), %r12
    mov {o_r13}(%rsp), %r13
    mov {o_r14}(%rsp), %r14
    mov {o_r15}(%rsp), %r15
    mov {o_rsp}(%rsp), %rsp
    swapgs
    sysretq
"#,
    user_ds = const USER_DS,
    user_cs = const USER_CS,
    syscall_vector = const SYSCALL_VECTOR,
    context_bytes = const CONTEXT_BYTES,
    rflags_mask = const USER_RFLAGS_MASK,
    rflags_forced = const USER_RFLAGS_FORCED,
    syscall = sym SYSCALL_HANDLER,
    o_rax = const from_end(core::mem::offset_of!(UserContext, rax)),
    o_rbx = const from_end(core::mem::offset_of!(UserContext, rbx)),
    o_rdx = const from_end(core::mem::offset_of!(UserContext, rdx)),
    o_rsi = const from_end(core::mem::offset_of!(UserContext, rsi)),
    o_rdi = const from_end(core::mem::offset_of!(UserContext, rdi)),
    o_rbp = const from_end(core::mem::offset_of!(UserContext, rbp)),
    o_r8 = const from_end(core::mem::offset_of!(UserContext, r8)),
    o_r9 = const from_end(core::mem::offset_of!(UserContext, r9)),
    o_r10 = const from_end(core::mem::offset_of!(UserContext, r10)),
    o_r12 = const from_end(core::mem::offset_of!(UserContext, r12)),
    o_r13 = const from_end(core::mem::offset_of!(UserContext, r13)),
    o_r14 = const from_end(core::mem::offset_of!(UserContext, r14)),
    o_r15 = const from_end(core::mem::offset_of!(UserContext, r15)),
    o_rip = const from_end(core::mem::offset_of!(UserContext, rip)),
    o_rflags = const from_end(core::mem::offset_of!(UserContext, rflags)),
    o_rsp = const from_end(core::mem::offset_of!(UserContext, rsp)),
    options(att_syntax)
);

global_asm!(
    r#"
    .section .text.ramen_user, "ax"
    .global ramen_on_kernel_stack
ramen_on_kernel_stack:
    mov %gs:8, %rsp
    xor %ebp, %ebp
    call *%rdi
    ud2
"#,
    options(att_syntax)
);

/// Where a field of the current context lies relative to `gs:24` (its end).
const fn from_end(offset: usize) -> i64 {
    offset as i64 - CONTEXT_BYTES as i64
}

unsafe extern "C" {
    fn ramen_syscall_entry();
    fn ramen_return_to_user() -> !;
    fn ramen_sysret_to_user() -> !;
    fn ramen_on_kernel_stack(f: extern "C" fn() -> !) -> !;
}

/// Abandons whatever stack the kernel is on (the kernel keeps no state on it between
/// entries) and runs `f` at the top of this CPU's kernel stack. The idle loop runs
/// this way: it enables interrupts, so it must not sit on an IST stack.
pub fn idle_on_kernel_stack(f: extern "C" fn() -> !) -> ! {
    // SAFETY: gs:8 holds this CPU's kernel stack top (set by `percpu::install`);
    // nothing on the current stack is used after the switch.
    unsafe { ramen_on_kernel_stack(f) }
}

/// What the kernel does with a system call or a trap from user mode. It runs on the
/// CPU's kernel stack (system calls) or an IST stack (traps) with interrupts off,
/// edits the current context or switches to another thread's with
/// [`set_current_context`], and returns; the thread current then is resumed.
pub type UserEntryHandler = fn(context: &mut UserContext);

/// The system-call handler, with the C calling convention because the entry stub
/// calls it directly (context in RDI). It never returns: it ends in
/// [`return_to_user`], so it has no registers of its caller to keep (the stub has
/// saved all of the user's) and no epilogue.
pub type SyscallHandler = extern "C" fn(context: &mut UserContext) -> !;

/// The system-call handler the entry stub calls through (`call *SYSCALL_HANDLER`):
/// one indirect call, no check on the way. Until [`set_handlers`] it ignores the
/// call (no user thread runs before then).
static SYSCALL_HANDLER: AtomicPtr<()> = AtomicPtr::new(no_syscall_handler as *mut ());
static USER_TRAP_HANDLER: Once<UserEntryHandler> = Once::new();

/// Registers the system-call and user-trap handlers (once, at boot, before any user
/// thread runs).
pub fn set_handlers(syscall: SyscallHandler, trap: UserEntryHandler) {
    set_syscall_handler(syscall);
    USER_TRAP_HANDLER.call_once(|| trap);
}

/// Replaces the system-call handler on every CPU: each system call from now on goes
/// to `syscall` (one already in the old handler finishes there). The kernel swaps
/// between two builds of its handler this way (with and without trace points), so
/// the one in use carries no check for the other's work.
pub fn set_syscall_handler(syscall: SyscallHandler) {
    SYSCALL_HANDLER.store(syscall as *mut (), Ordering::Release);
}

extern "C" fn no_syscall_handler(_context: &mut UserContext) -> ! {
    return_to_user()
}

/// Called by the trap dispatcher for a trap taken in user mode: copies the frame
/// into the thread's context, lets the kernel handle it, and resumes the current
/// thread. Never returns to the trap stub.
pub(crate) fn user_trap(frame: &TrapFrameRef) -> ! {
    let local = crate::percpu::current();
    let end = local.current_context_end.load(Ordering::Relaxed);
    let context = (end - CONTEXT_BYTES) as *mut UserContext;
    // SAFETY: `current_context_end` always points one past a live UserContext inside
    // the running thread's TCB (set by `set_current_context`), which nothing else
    // touches while this CPU runs the kernel.
    let context = unsafe {
        context.write(*frame.0);
        &mut *context
    };
    if let Some(handler) = USER_TRAP_HANDLER.get() {
        handler(context);
    }
    return_to_user()
}

/// A trap frame on an IST stack, borrowed for the copy.
pub(crate) struct TrapFrameRef<'a>(pub &'a UserContext);

/// Makes `context` the one the next return to user mode restores.
///
/// # Safety
/// `context` must point to a `UserContext` that stays valid and is not otherwise
/// accessed until another context replaces it on this CPU.
#[inline]
pub unsafe fn set_current_context(context: *mut UserContext) {
    let end = context as u64 + CONTEXT_BYTES;
    // SAFETY: gs:24 is this CPU's `current_context_end` (offset asserted in percpu);
    // only this CPU writes it, and the return path reads it.
    unsafe {
        core::arch::asm!("mov gs:[24], {}", in(reg) end, options(nostack, preserves_flags));
    }
}

/// Resumes the current thread in user mode; never returns. Requires a current
/// context (see [`set_current_context`]). Inlined: the fastpath ends here, and a
/// wrapper would cost it a call of its own.
#[inline(always)]
pub fn return_to_user() -> ! {
    // SAFETY: the return path restores the context `gs:24` names, which
    // `set_current_context`'s contract keeps valid; the kernel has sanitised it.
    unsafe { ramen_return_to_user() }
}

/// Resumes the current thread in user mode with `sysretq`, which is much cheaper than
/// `iretq` on hardware (the same 19-20 instructions under icount): RCX and R11 get
/// the saved RIP and RFLAGS (the thread's own RCX and R11 are not restored; the
/// system-call ABI clobbers them), CS and SS come from STAR. The IPC fastpath leaves
/// this way.
///
/// # Safety
/// Besides [`return_to_user`]'s requirements, the current context must have been
/// saved by `SYSCALL` (the thread blocked in a system call, and nothing rewrote its
/// context since but the message registers), so that its RIP is canonical: `sysretq`
/// to a non-canonical RIP faults in ring 0 on Intel, on the user's stack
/// (CVE-2012-0217). `SYSCALL` saves the address after the instruction, and no user
/// page lies at or above `ramen_abi::syscall::USER_TOP`, so it always is.
#[inline(always)]
pub unsafe fn sysret_to_user() -> ! {
    // SAFETY: as for `return_to_user`, plus the caller's promise of a canonical RIP
    // and sanitised RFLAGS in the current context.
    unsafe { ramen_sysret_to_user() }
}

/// Enables `SYSCALL`/`SYSRET` on this CPU and points it at the entry stub.
pub fn init_cpu() {
    // SAFETY: enabling SCE only makes the SYSCALL instruction usable; LSTAR points at
    // the entry stub, STAR holds this GDT's selectors, and SFMASK clears IF, DF, TF,
    // AC, NT and IOPL on entry so the kernel runs with interrupts off and SMAP armed.
    unsafe {
        Efer::update(|f| f.insert(EferFlags::SYSTEM_CALL_EXTENSIONS));
    }
    LStar::write(VirtAddr::new(ramen_syscall_entry as *const () as u64));
    let star = Star::write(
        SegmentSelector(USER_CS),
        SegmentSelector(USER_DS),
        SegmentSelector(KERNEL_CS),
        SegmentSelector(KERNEL_DS),
    );
    if star.is_err() {
        crate::trap::fatal_early("GDT layout does not fit SYSCALL/SYSRET");
    }
    // NT too: the kernel leaves through `iretq`, which with NT set in the kernel's own
    // RFLAGS attempts a task return and faults in ring 0 (a thread sets NT with `popf`
    // and then makes a system call: the `mirror` test program does). IOPL as Linux
    // does, so the kernel never runs with a user-chosen value there either.
    SFMask::write(
        RFlags::INTERRUPT_FLAG
            | RFlags::DIRECTION_FLAG
            | RFlags::TRAP_FLAG
            | RFlags::ALIGNMENT_CHECK
            | RFlags::NESTED_TASK
            | RFlags::IOPL_HIGH
            | RFlags::IOPL_LOW,
    );
}

impl UserContext {
    /// A context that starts user code at `rip` with stack `rsp` and `arg` in RDI.
    pub fn new_user(rip: u64, rsp: u64, arg: u64) -> Self {
        Self {
            rip,
            rsp,
            rdi: arg,
            cs: u64::from(USER_CS),
            ss: u64::from(USER_DS),
            rflags: USER_RFLAGS_FORCED,
            ..Self::default()
        }
    }

    /// Forces the fields user code must not control: user code and stack selectors,
    /// RFLAGS with IF set, IOPL 0 and NT clear. Returns false if RIP is not a
    /// canonical user address (the caller then treats the thread as faulted, never
    /// returning to a non-canonical RIP: `iretq` faults on one in ring 0). RSP is the
    /// thread's own business: `iretq` loads any value, and a bad one faults on the
    /// thread's first stack access, in user mode.
    ///
    /// A context saved by `SYSCALL` is already sane ([`UserContext::is_sane`]): the
    /// entry stub forces the flags, the selectors are constants, and RIP is the
    /// address after a `SYSCALL` instruction, below `ramen_abi::syscall::USER_TOP` (the
    /// top page of the lower half is never mapped for user code). The IPC fastpath
    /// relies on that for the threads it switches to, which always blocked in a
    /// system call.
    pub fn sanitise(&mut self) -> bool {
        self.cs = u64::from(USER_CS);
        self.ss = u64::from(USER_DS);
        self.rflags = (self.rflags & USER_RFLAGS_MASK) | USER_RFLAGS_FORCED;
        is_user_address(self.rip)
    }

    /// Whether [`sanitise`](Self::sanitise) would change nothing and succeed.
    pub fn is_sane(&self) -> bool {
        let mut sanitised = *self;
        sanitised.sanitise()
            && (sanitised.cs, sanitised.ss, sanitised.rflags) == (self.cs, self.ss, self.rflags)
    }
}

/// True for addresses in the canonical lower half.
pub const fn is_user_address(addr: u64) -> bool {
    addr < 0x0000_8000_0000_0000
}
