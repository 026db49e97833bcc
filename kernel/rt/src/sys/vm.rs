//! Turning mappings the kernel confirmed into slices, and the boot-information block.

use ramen_abi::bootinfo::BootInfo;
use ramen_abi::syscall::BOOT_INFO_VADDR;

use crate::vm::Mapping;

/// The bytes of a mapping.
pub fn bytes(mapping: &Mapping) -> &[u8] {
    // SAFETY: a `Mapping` exists only after the kernel mapped every one of its pages
    // at `vaddr`, and `Mapping::unmap` consumes it, so the pages outlive this borrow.
    unsafe { core::slice::from_raw_parts(mapping.vaddr as *const u8, mapping.len()) }
}

/// The bytes of a writable mapping (empty for a read-only one).
pub fn bytes_mut(mapping: &mut Mapping) -> &mut [u8] {
    if !mapping.writable {
        return &mut [];
    }
    // SAFETY: as for `bytes`, and the pages are mapped writable; `&mut` makes this the
    // only reference.
    unsafe { core::slice::from_raw_parts_mut(mapping.vaddr as *mut u8, mapping.len()) }
}

/// The boot-information block the kernel maps for the root task, if `arg` is its
/// address and the magic matches.
pub fn boot_info(arg: u64) -> Option<&'static BootInfo> {
    if arg != BOOT_INFO_VADDR {
        return None;
    }
    // SAFETY: the kernel maps `BootInfo::PAGES` read-only pages at BOOT_INFO_VADDR for
    // the root task and never unmaps or writes them; the struct holds only integers,
    // so any bytes are a valid value, and the magic is checked before use.
    let info = unsafe { &*(BOOT_INFO_VADDR as *const BootInfo) };
    (info.magic == BootInfo::MAGIC && info.version == BootInfo::VERSION).then_some(info)
}
