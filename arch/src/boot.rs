//! PVH entry: from 32-bit protected mode with paging off to 64-bit Rust in the
//! higher half.
//!
//! QEMU (and Xen, Firecracker, cloud-hypervisor) load the ELF at its physical
//! addresses and jump to the address in the `XEN_ELFNOTE_PHYS32_ENTRY` note with
//! `%ebx` pointing at the `hvm_start_info` block. The code below zeroes `.bss`, turns
//! on long mode with boot page tables that map the first GiB twice (identity, and at
//! `KERNEL_VMA`), and calls [`crate::entry::bsp_entry`] on the boot stack. The
//! boot tables are replaced by the kernel's own as soon as Rust runs; see
//! `docs/boot.md`.

use core::arch::global_asm;

/// Size of the boot CPU's initial stack; it becomes CPU 0's kernel stack.
pub const BOOT_STACK_BYTES: usize = 64 * 1024;

global_asm!(
    r#"
    .set KERNEL_VMA, 0xffffffff80000000

    /* The PVH note: name "Xen", type 18 = XEN_ELFNOTE_PHYS32_ENTRY. */
    .section .note.Xen, "a"
    .p2align 2
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .p2align 2
    .long _start32
    .p2align 2

    .section .text.boot, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    mov %ebx, %esi

    /* Zero .bss (it holds the boot stack and the kernel's statics). */
    mov $__bss_start_phys, %edi
    mov $__bss_end_phys, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb

    /* CR4.PAE, then the boot tables, then EFER.LME. */
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr

    /* CR0: PG | WP | PE. */
    mov %cr0, %eax
    or $0x80010001, %eax
    mov %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $start64_low

    .code64
start64_low:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    movabs $start64_high, %rax
    jmp *%rax

    .section .data.boot, "aw"
    .p2align 12
boot_pml4:
    .quad boot_pdpt_low + 0x3
    .fill 510, 8, 0
    .quad boot_pdpt_high + 0x3
boot_pdpt_low:
    .quad boot_pd + 0x3
    .fill 511, 8, 0
boot_pdpt_high:
    .fill 510, 8, 0
    .quad boot_pd + 0x3
    .quad 0
boot_pd:
    .set page, 0
    .rept 512
    .quad (page << 21) + 0x83
    .set page, page + 1
    .endr

    .p2align 3
boot_gdt:
    .quad 0
    .quad 0x00209A0000000000
    .quad 0x0000920000000000
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .text.ramen_start64, "ax"
    .code64
start64_high:
    lea {stack}+{stack_bytes}(%rip), %rsp
    xor %ebp, %ebp
    mov %esi, %edi
    call {entry}
    ud2
"#,
    stack = sym BOOT_STACK,
    stack_bytes = const BOOT_STACK_BYTES,
    entry = sym crate::entry::bsp_entry,
    options(att_syntax)
);

/// The boot CPU's stack, 16-byte aligned.
#[repr(C, align(4096))]
pub(crate) struct BootStack(pub [u8; BOOT_STACK_BYTES]);

/// Lives in `.bss`; the entry code zeroes it before use.
pub(crate) static mut BOOT_STACK: BootStack = BootStack([0; BOOT_STACK_BYTES]);

/// Top of the boot stack (the BSP's kernel stack for the whole boot).
pub fn boot_stack_top() -> u64 {
    core::ptr::addr_of!(BOOT_STACK) as u64 + BOOT_STACK_BYTES as u64
}
