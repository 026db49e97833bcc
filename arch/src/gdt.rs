//! gdt
