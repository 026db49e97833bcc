//! A tiny ELF64 builder for tests: a real, minimal x86_64 executable layout.
#![allow(dead_code)]

pub const PT_LOAD: u32 = 1;
pub const R: u32 = 4;
pub const W: u32 = 2;
pub const X: u32 = 1;

/// One program header: (type, flags, offset, vaddr, filesz, memsz).
pub type Phdr = (u32, u32, u64, u64, u64, u64);

/// An ELF64 x86_64 ET_EXEC with `phdrs` at offset 64, `file_len` bytes long.
pub fn elf(entry: u64, phdrs: &[Phdr], file_len: usize) -> Vec<u8> {
    let mut out = vec![0u8; file_len.max(64 + 56 * phdrs.len())];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = 2; // ELFCLASS64
    out[5] = 1; // little-endian
    out[6] = 1; // EV_CURRENT
    out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    out[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[24..32].copy_from_slice(&entry.to_le_bytes());
    out[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    out[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    out[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    out[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
    for (i, &(p_type, flags, offset, vaddr, filesz, memsz)) in phdrs.iter().enumerate() {
        let at = 64 + 56 * i;
        out[at..at + 4].copy_from_slice(&p_type.to_le_bytes());
        out[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
        out[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
        out[at + 16..at + 24].copy_from_slice(&vaddr.to_le_bytes());
        out[at + 24..at + 32].copy_from_slice(&vaddr.to_le_bytes()); // p_paddr
        out[at + 32..at + 40].copy_from_slice(&filesz.to_le_bytes());
        out[at + 40..at + 48].copy_from_slice(&memsz.to_le_bytes());
        out[at + 48..at + 56].copy_from_slice(&4096u64.to_le_bytes());
    }
    out
}

/// The usual shape our linker script produces: RX text, R rodata, RW data + bss.
pub fn valid_elf() -> Vec<u8> {
    let mut bytes = elf(
        0x40_1000,
        &[
            (PT_LOAD, R | X, 0x1000, 0x40_1000, 0x20, 0x20),
            (PT_LOAD, R, 0x2000, 0x40_2000, 0x10, 0x10),
            (PT_LOAD, R | W, 0x3000, 0x40_3000, 0x8, 0x2000),
            (0x6474_e551, R | W, 0, 0, 0, 0), // PT_GNU_STACK: ignored
        ],
        0x3008,
    );
    // `xor edi, edi; jmp $`: something executable at the entry point.
    bytes[0x1000..0x1004].copy_from_slice(&[0x31, 0xff, 0xeb, 0xfe]);
    bytes
}
