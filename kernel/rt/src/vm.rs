//! Memory a program maps into its own address space, as safe slices.
//!
//! A [`Mapping`] exists only after the kernel confirmed every page mapped (through the
//! program's own VSpace capability), and [`Mapping::unmap`] consumes it, so no slice
//! can outlive its pages. Page tables come from a [`Tables`] source the program
//! provides (they are kernel objects it pays for with its untyped memory).

use ramen_abi::{Error, slot};

use crate::{SysError, kobj, sys};

/// Page size.
pub const PAGE: u64 = 4096;

/// Where page-table objects come from: `take(level)` hands out a capability to a
/// fresh table of that level (1 = page table, 2 = page directory, 3 = PDPT);
/// `give_back` returns one that turned out not to be needed, for next time.
pub trait Tables {
    /// A table capability of `level`.
    fn take(&mut self, level: u32) -> Result<u64, SysError>;
    /// Returns an unused table.
    fn give_back(&mut self, level: u32, table: u64);
}

/// Maps `frame` at `vaddr` in `vspace_cap` (`rights`: bit 0 write, bit 1 execute),
/// installing the page tables the kernel reports missing.
pub fn map_page(
    vspace_cap: u64,
    frame: u64,
    vaddr: u64,
    rights: u64,
    tables: &mut dyn Tables,
) -> Result<(), SysError> {
    // At most three tables can be missing (PDPT, directory, table).
    for _ in 0..4 {
        match kobj::map_frame(frame, vspace_cap, vaddr, rights) {
            Err(e) if e == Error::MissingPageTable => install_one(vspace_cap, vaddr, tables)?,
            other => return other,
        }
    }
    Err(Error::MissingPageTable.into())
}

/// Installs every page table `[vaddr, vaddr + len)` needs, mapping nothing: for a
/// lease window, which the kernel fills without allocating.
pub fn install_tables(
    vspace_cap: u64,
    vaddr: u64,
    len: u64,
    tables: &mut dyn Tables,
) -> Result<(), SysError> {
    const TABLE_SPAN: u64 = 1 << 21;
    let mut at = vaddr & !(TABLE_SPAN - 1);
    while at < vaddr.saturating_add(len) {
        // Each round installs the lowest missing table; the last-level table's
        // `AlreadyMapped` says the span is covered.
        for _ in 0..4 {
            let table = tables.take(1)?;
            match kobj::map_table(table, vspace_cap, at) {
                Ok(()) => break,
                Err(e) if e == Error::AlreadyMapped => {
                    tables.give_back(1, table);
                    break;
                }
                Err(e) if e == Error::MissingPageTable => {
                    tables.give_back(1, table);
                    install_one(vspace_cap, at, tables)?;
                }
                Err(e) => {
                    tables.give_back(1, table);
                    return Err(e);
                }
            }
        }
        at += TABLE_SPAN;
    }
    Ok(())
}

/// Installs the lowest missing table whose parent exists.
fn install_one(vspace_cap: u64, vaddr: u64, tables: &mut dyn Tables) -> Result<(), SysError> {
    for level in 1..=3u32 {
        let table = tables.take(level)?;
        match kobj::map_table(table, vspace_cap, vaddr) {
            Ok(()) => return Ok(()),
            Err(e) if e == Error::MissingPageTable || e == Error::AlreadyMapped => {
                tables.give_back(level, table)
            }
            Err(e) => {
                tables.give_back(level, table);
                return Err(e);
            }
        }
    }
    Err(Error::MissingPageTable.into())
}

/// Consecutive frame capabilities mapped at a fixed address in this program.
pub struct Mapping {
    first_frame: u64,
    pages: u64,
    pub(crate) vaddr: u64,
    pub(crate) writable: bool,
}

impl Mapping {
    /// Maps the frames in slots `first_frame..first_frame + pages` at `vaddr` in this
    /// program's own address space. On failure nothing stays mapped.
    pub fn new(
        first_frame: u64,
        pages: u64,
        vaddr: u64,
        writable: bool,
        tables: &mut dyn Tables,
    ) -> Result<Self, SysError> {
        for i in 0..pages {
            if let Err(e) =
                map_page(slot::VSPACE, first_frame + i, vaddr + i * PAGE, u64::from(writable), tables)
            {
                for j in 0..i {
                    let _ = kobj::unmap_frame(first_frame + j, slot::VSPACE, vaddr + j * PAGE);
                }
                return Err(e);
            }
        }
        Ok(Self { first_frame, pages, vaddr, writable })
    }

    pub(crate) fn len(&self) -> usize {
        (self.pages * PAGE) as usize
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        sys::vm::bytes(self)
    }

    /// The mapped bytes, writable (empty for a read-only mapping).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        sys::vm::bytes_mut(self)
    }

    /// Unmaps every page.
    pub fn unmap(self) -> Result<(), SysError> {
        for i in 0..self.pages {
            kobj::unmap_frame(self.first_frame + i, slot::VSPACE, self.vaddr + i * PAGE)?;
        }
        Ok(())
    }
}
