//! The PVH `hvm_start_info` block: memory map, command line, RSDP and modules.
//!
//! Read once on the boot CPU while the boot page tables still map the first GiB at
//! `KERNEL_VMA`, and copied into a [`BootParams`] value so nothing later depends on
//! where the loader happened to put it.

use crate::KERNEL_VMA;

/// `hvm_start_info.magic`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
/// Memory-map entries kept; more are counted in `memmap_dropped`.
pub const MAX_MEMMAP: usize = 64;
/// Boot modules kept.
pub const MAX_MODULES: usize = 8;
/// Command-line bytes kept.
pub const MAX_CMDLINE: usize = 512;

/// Bytes the boot page tables map at `KERNEL_VMA`.
const EARLY_WINDOW: u64 = 1 << 30;

/// An E820-style memory-map entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemmapEntry {
    /// Physical start.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
    /// E820 type: 1 RAM, 2 reserved, 3 ACPI reclaimable, 4 ACPI NVS, 5 bad.
    pub kind: u32,
}

/// A module passed with `-initrd`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Module {
    /// Physical start.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Everything the kernel needs from the loader.
#[derive(Clone, Copy, Debug)]
pub struct BootParams {
    /// Physical address of the start-info block itself.
    pub start_info: u64,
    /// Memory map as given by the loader.
    pub memmap: [MemmapEntry; MAX_MEMMAP],
    /// Valid entries in `memmap`.
    pub memmap_len: usize,
    /// Entries that did not fit.
    pub memmap_dropped: usize,
    /// Kernel command line bytes.
    pub cmdline: [u8; MAX_CMDLINE],
    /// Valid bytes in `cmdline`.
    pub cmdline_len: usize,
    /// Physical address of the ACPI RSDP, 0 if none.
    pub rsdp: u64,
    /// Boot modules.
    pub modules: [Module; MAX_MODULES],
    /// Valid entries in `modules`.
    pub modules_len: usize,
}

impl BootParams {
    /// The command line as text (invalid UTF-8 reads as empty).
    pub fn cmdline(&self) -> &str {
        let bytes = self.cmdline.get(..self.cmdline_len).unwrap_or(&[]);
        core::str::from_utf8(bytes).unwrap_or("")
    }

    /// The memory map entries.
    pub fn memmap(&self) -> &[MemmapEntry] {
        self.memmap.get(..self.memmap_len).unwrap_or(&[])
    }

    /// The boot modules.
    pub fn modules(&self) -> &[Module] {
        self.modules.get(..self.modules_len).unwrap_or(&[])
    }
}

/// Why the start-info block was unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartInfoError {
    /// The magic number is wrong: not booted through PVH.
    BadMagic(u32),
    /// The block or something it points to lies outside the early window.
    OutOfReach(u64),
    /// Version 0 blocks carry no memory map, and we need one.
    NoMemoryMap,
}

fn readable(phys: u64, len: u64) -> Result<(), StartInfoError> {
    match phys.checked_add(len) {
        Some(end) if end <= EARLY_WINDOW => Ok(()),
        _ => Err(StartInfoError::OutOfReach(phys)),
    }
}

/// Reads a `T` at a physical address inside the early window.
///
/// # Safety
/// `phys..phys+size_of::<T>()` must be inside the early window (checked by the
/// caller through [`readable`]) and hold a valid `T`; any bit pattern is a valid
/// integer, which is all this module reads.
unsafe fn early_read<T: Copy>(phys: u64) -> T {
    let ptr = (KERNEL_VMA + phys) as *const T;
    // SAFETY: the caller guarantees the range is mapped by the boot tables.
    unsafe { ptr.read_unaligned() }
}

fn read_u32(phys: u64) -> Result<u32, StartInfoError> {
    readable(phys, 4)?;
    // SAFETY: range checked above; any 4 bytes are a valid u32.
    Ok(unsafe { early_read::<u32>(phys) })
}

fn read_u64(phys: u64) -> Result<u64, StartInfoError> {
    readable(phys, 8)?;
    // SAFETY: range checked above; any 8 bytes are a valid u64.
    Ok(unsafe { early_read::<u64>(phys) })
}

fn read_u8(phys: u64) -> Result<u8, StartInfoError> {
    readable(phys, 1)?;
    // SAFETY: range checked above.
    Ok(unsafe { early_read::<u8>(phys) })
}

/// Parses the start-info block at `phys`. Must run while the boot page tables are
/// active (before the kernel switches to its own).
pub fn parse(phys: u64) -> Result<BootParams, StartInfoError> {
    let magic = read_u32(phys)?;
    if magic != START_INFO_MAGIC {
        return Err(StartInfoError::BadMagic(magic));
    }
    let version = read_u32(phys + 4)?;
    let nr_modules = read_u32(phys + 12)?;
    let modlist = read_u64(phys + 16)?;
    let cmdline_phys = read_u64(phys + 24)?;
    let rsdp = read_u64(phys + 32)?;
    if version < 1 {
        return Err(StartInfoError::NoMemoryMap);
    }
    let memmap_phys = read_u64(phys + 40)?;
    let memmap_entries = read_u32(phys + 48)?;

    let mut params = BootParams {
        start_info: phys,
        memmap: [MemmapEntry::default(); MAX_MEMMAP],
        memmap_len: 0,
        memmap_dropped: 0,
        cmdline: [0; MAX_CMDLINE],
        cmdline_len: 0,
        rsdp,
        modules: [Module::default(); MAX_MODULES],
        modules_len: 0,
    };
    for i in 0..u64::from(memmap_entries) {
        let entry = memmap_phys + i * 24;
        let parsed =
            MemmapEntry { addr: read_u64(entry)?, len: read_u64(entry + 8)?, kind: read_u32(entry + 16)? };
        match params.memmap.get_mut(params.memmap_len) {
            Some(slot) => {
                *slot = parsed;
                params.memmap_len += 1;
            }
            None => params.memmap_dropped += 1,
        }
    }
    if cmdline_phys != 0 {
        for i in 0..MAX_CMDLINE as u64 {
            let byte = read_u8(cmdline_phys + i)?;
            if byte == 0 {
                break;
            }
            if let Some(slot) = params.cmdline.get_mut(params.cmdline_len) {
                *slot = byte;
                params.cmdline_len += 1;
            }
        }
    }
    for i in 0..u64::from(nr_modules) {
        let entry = modlist + i * 32;
        let module = Module { addr: read_u64(entry)?, len: read_u64(entry + 8)? };
        if let Some(slot) = params.modules.get_mut(params.modules_len) {
            *slot = module;
            params.modules_len += 1;
        }
    }
    Ok(params)
}
