//! Exception and interrupt entry: 256 stubs, one IDT, the fault reporter.
//!
//! Every vector enters through a 16-byte stub that pushes a uniform frame (a zero
//! error code where the CPU pushes none, then the vector), and a common path that
//! saves the general registers and calls [`dispatch`]. All gates use IST stacks
//! (see `gdt`). A fault in kernel mode is fatal: the reporter prints vector, error
//! code, RIP, CR2 and every register, and ends the QEMU run with a failure status.
//! `#BP` in kernel mode is counted and resumed, which lets a test exercise the
//! whole entry and `iretq` path. Vectors 32 and up go to the handler the kernel
//! registers with [`set_interrupt_handler`].

use core::arch::global_asm;
use core::sync::atomic::Ordering;

use spin::Once;
use ufmt::uwriteln;
use x86_64::instructions::tables::lidt;
use x86_64::structures::DescriptorTablePointer;

use crate::exit::{ExitCode, exit_qemu};
use crate::gdt::{IST_DOUBLE_FAULT, IST_GENERAL, IST_MACHINE_CHECK, IST_NMI, KERNEL_CS};
use crate::serial::Console;

/// Number of IDT vectors.
const VECTORS: usize = 256;
/// Bytes per entry stub (each is `.p2align 4`).
const STUB_BYTES: u64 = 16;

/// Vector numbers with a name.
pub mod vector {
    /// Breakpoint.
    pub const BREAKPOINT: u8 = 3;
    /// Non-maskable interrupt.
    pub const NMI: u8 = 2;
    /// Double fault.
    pub const DOUBLE_FAULT: u8 = 8;
    /// Page fault.
    pub const PAGE_FAULT: u8 = 14;
    /// Machine check.
    pub const MACHINE_CHECK: u8 = 18;
    /// First vector not reserved for exceptions.
    pub const FIRST_EXTERNAL: u8 = 32;
}

/// What the entry code saved, in memory order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapFrame {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    /// Vector number pushed by the stub.
    pub vector: u64,
    /// Error code (zero for vectors without one).
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl TrapFrame {
    /// True if the trap came from user mode.
    pub fn from_user(&self) -> bool {
        self.cs & 3 != 0
    }
}

global_asm!(
    r#"
    .section .text.ramen_traps, "ax"
    .p2align 4
    .global ramen_trap_stubs
ramen_trap_stubs:
    .set vec, 0
    .rept 256
    .p2align 4
    .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    push $0
    .endif
    push $vec
    jmp ramen_trap_common
    .set vec, vec + 1
    .endr

    .p2align 4
ramen_trap_common:
    testb $3, 24(%rsp)
    jz 1f
    swapgs
1:
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
    cld
    mov %rsp, %rdi
    call {dispatch}
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
    testb $3, 24(%rsp)
    jz 2f
    swapgs
2:
    add $16, %rsp
    iretq
"#,
    dispatch = sym dispatch,
    options(att_syntax)
);

unsafe extern "C" {
    /// First of the 256 entry stubs, `STUB_BYTES` apart.
    static ramen_trap_stubs: [u8; 0];
}

/// An IDT gate descriptor.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

/// Present, DPL 0, 64-bit interrupt gate (interrupts stay off in handlers).
const INTERRUPT_GATE: u8 = 0x8e;

#[repr(C, align(16))]
struct Idt([Gate; VECTORS]);

static IDT: Once<Idt> = Once::new();

fn ist_for(vector: usize) -> u16 {
    match vector as u8 {
        vector::NMI => IST_NMI,
        vector::DOUBLE_FAULT => IST_DOUBLE_FAULT,
        vector::MACHINE_CHECK => IST_MACHINE_CHECK,
        _ => IST_GENERAL,
    }
}

/// Loads the IDT on the running CPU (building it on first use).
pub fn load_idt() {
    let idt = IDT.call_once(|| {
        let base = core::ptr::addr_of!(ramen_trap_stubs) as u64;
        let mut gates = [Gate::default(); VECTORS];
        for (vector, gate) in gates.iter_mut().enumerate() {
            let addr = base + vector as u64 * STUB_BYTES;
            *gate = Gate {
                offset_low: addr as u16,
                selector: KERNEL_CS,
                ist: ist_for(vector) as u8,
                attributes: INTERRUPT_GATE,
                offset_mid: (addr >> 16) as u16,
                offset_high: (addr >> 32) as u32,
                reserved: 0,
            };
        }
        Idt(gates)
    });
    let pointer = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: x86_64::VirtAddr::new(idt as *const Idt as u64),
    };
    // SAFETY: the IDT is a static that lives forever and every gate points at a stub.
    unsafe { lidt(&pointer) };
}

/// Handler for vectors 32 and up; it must acknowledge the interrupt (EOI) itself.
pub type InterruptHandler = fn(vector: u8, frame: &mut TrapFrame);

static INTERRUPT_HANDLER: Once<InterruptHandler> = Once::new();

/// Registers the kernel's handler for external interrupts and IPIs (once).
pub fn set_interrupt_handler(handler: InterruptHandler) {
    INTERRUPT_HANDLER.call_once(|| handler);
}

extern "C" fn dispatch(frame: &mut TrapFrame) {
    if frame.from_user() {
        crate::user::user_trap(&crate::user::TrapFrameRef(frame));
    }
    let vector = frame.vector as u8;
    if let Some(local) = crate::percpu::try_current() {
        local.count_interrupt();
        if vector == vector::BREAKPOINT && !frame.from_user() {
            local.breakpoints.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    if vector >= vector::FIRST_EXTERNAL {
        if let Some(handler) = INTERRUPT_HANDLER.get() {
            handler(vector, frame);
        }
        return;
    }
    fatal_trap(frame)
}

/// Mnemonic and description of an exception vector.
pub fn exception_name(vector: u8) -> (&'static str, &'static str) {
    match vector {
        0 => ("#DE", "divide error"),
        1 => ("#DB", "debug"),
        2 => ("NMI", "non-maskable interrupt"),
        3 => ("#BP", "breakpoint"),
        4 => ("#OF", "overflow"),
        5 => ("#BR", "bound range exceeded"),
        6 => ("#UD", "invalid opcode"),
        7 => ("#NM", "device not available"),
        8 => ("#DF", "double fault"),
        9 => ("#CSO", "coprocessor segment overrun"),
        10 => ("#TS", "invalid TSS"),
        11 => ("#NP", "segment not present"),
        12 => ("#SS", "stack-segment fault"),
        13 => ("#GP", "general protection"),
        14 => ("#PF", "page fault"),
        16 => ("#MF", "x87 floating-point error"),
        17 => ("#AC", "alignment check"),
        18 => ("#MC", "machine check"),
        19 => ("#XM", "SIMD floating-point error"),
        20 => ("#VE", "virtualization exception"),
        21 => ("#CP", "control protection"),
        28 => ("#HV", "hypervisor injection"),
        29 => ("#VC", "VMM communication"),
        30 => ("#SX", "security exception"),
        _ => ("#??", "reserved vector"),
    }
}

/// Stops the machine after a fault the kernel cannot survive: prints everything and
/// exits QEMU with a failure status.
pub fn fatal_trap(frame: &TrapFrame) -> ! {
    let cpu = enter_fatal();
    let (name, what) = exception_name(frame.vector as u8);
    let mode = if frame.from_user() { "user" } else { "kernel" };
    let mut c = Console::emergency();
    let f = frame;
    let _ = uwriteln!(c, "[cpu{}] EXCEPTION {} ({}, vector {}) in {} mode", cpu, name, what, f.vector, mode);
    let _ = uwriteln!(
        c,
        "[cpu{}]   error={:#x} RIP={:#018x} CS={:#x} RFLAGS={:#x}",
        cpu,
        f.error,
        f.rip,
        f.cs,
        f.rflags
    );
    let _ = uwriteln!(
        c,
        "[cpu{}]   CR2={:#018x} CR3={:#018x} RSP={:#018x} SS={:#x}",
        cpu,
        crate::cpu::cr2(),
        crate::cpu::cr3(),
        f.rsp,
        f.ss
    );
    let _ = uwriteln!(
        c,
        "[cpu{}]   RAX={:#018x} RBX={:#018x} RCX={:#018x} RDX={:#018x}",
        cpu,
        f.rax,
        f.rbx,
        f.rcx,
        f.rdx
    );
    let _ = uwriteln!(
        c,
        "[cpu{}]   RSI={:#018x} RDI={:#018x} RBP={:#018x} R8 ={:#018x}",
        cpu,
        f.rsi,
        f.rdi,
        f.rbp,
        f.r8
    );
    let _ = uwriteln!(
        c,
        "[cpu{}]   R9 ={:#018x} R10={:#018x} R11={:#018x} R12={:#018x}",
        cpu,
        f.r9,
        f.r10,
        f.r11,
        f.r12
    );
    let _ = uwriteln!(c, "[cpu{}]   R13={:#018x} R14={:#018x} R15={:#018x}", cpu, f.r13, f.r14, f.r15);
    drop(c);
    exit_qemu(ExitCode::Failure)
}

/// Marks this CPU as reporting a fatal error and returns its index. A second fatal
/// error while reporting (the reporter itself faulted) exits at once.
pub fn enter_fatal() -> u32 {
    if let Some(local) = crate::percpu::try_current() {
        if local.in_fatal.swap(true, Ordering::SeqCst) {
            exit_qemu(ExitCode::Failure);
        }
        return local.index;
    }
    0
}

/// A fatal error before the per-CPU block exists.
pub fn fatal_early(message: &str) -> ! {
    // A hosted test process has no exit device: the test panics with the message.
    #[cfg(feature = "hosted")]
    panic!("kernel fatal error: {message}");
    #[cfg(not(feature = "hosted"))]
    {
        let mut c = Console::emergency();
        let _ = uwriteln!(c, "[cpu?] FATAL: {}", message);
        drop(c);
        exit_qemu(ExitCode::Failure)
    }
}

/// Deliberate faults, for testing the fault reporter end to end.
pub mod selftest {
    /// Writes to an unmapped kernel address: #PF.
    pub fn page_fault() -> ! {
        let unmapped = 0xffff_fd00_dead_b000u64 as *mut u64;
        // SAFETY: deliberately faults; the fault is fatal and never returns here.
        unsafe { unmapped.write_volatile(0x5a5a) };
        crate::trap::fatal_early("page-fault self-test did not fault")
    }

    /// Executes `ud2`: #UD.
    pub fn invalid_opcode() -> ! {
        // SAFETY: deliberately raises #UD, which is fatal and never returns here.
        unsafe { core::arch::asm!("ud2", options(noreturn)) }
    }

    /// Reads through a non-canonical address: #GP.
    pub fn general_protection() -> ! {
        let bad = 0x8000_0000_0000_0000u64 as *const u64;
        // SAFETY: deliberately faults (#GP); fatal, never returns here.
        let _ = unsafe { bad.read_volatile() };
        crate::trap::fatal_early("general-protection self-test did not fault")
    }

    /// `int3`: the handler counts it and resumes.
    pub fn breakpoint() {
        x86_64::instructions::interrupts::int3();
    }
}
