//! The packer (host tools only): lays files out exactly as [`crate::Archive::parse`]
//! expects.

use std::vec::Vec;

use crate::{
    BootfsError, ENTRY_BYTES, EntryFlags, HEADER_BYTES, MAGIC, MAX_ENTRIES, NAME_BYTES, PAGE_BYTES,
    ROOT_NAME, VERSION, elf, page_align_up, valid_name,
};

/// Packs `files` (name, contents) into an archive, in order. The first file must be
/// the root task, named [`ROOT_NAME`]. A file that [`elf::Program::parse`] accepts is
/// flagged [`EntryFlags::EXECUTABLE`]; validate programs yourself first if a bad one
/// should be an error rather than a plain data file.
pub fn pack(files: &[(&str, &[u8])]) -> Result<Vec<u8>, BootfsError> {
    let Some((first, _)) = files.first() else { return Err(BootfsError::Empty) };
    if files.len() > MAX_ENTRIES {
        return Err(BootfsError::TooManyEntries(files.len()));
    }
    if *first != ROOT_NAME {
        return Err(BootfsError::RootNotFirst);
    }
    for (entry, (name, _)) in files.iter().enumerate() {
        if !valid_name(name) {
            return Err(BootfsError::BadName { entry });
        }
        if files[..entry].iter().any(|(other, _)| other == name) {
            return Err(BootfsError::DuplicateName { entry });
        }
    }

    let table_end = (HEADER_BYTES + files.len() * ENTRY_BYTES) as u64;
    let mut offset = page_align_up(table_end).ok_or(BootfsError::TooLarge)?;
    let mut table = Vec::with_capacity(files.len() * ENTRY_BYTES);
    for (name, data) in files {
        let mut field = [0u8; NAME_BYTES];
        field[..name.len()].copy_from_slice(name.as_bytes());
        let len = data.len() as u64;
        let flags = if elf::Program::parse(data).is_ok() { EntryFlags::EXECUTABLE } else { EntryFlags(0) };
        table.extend_from_slice(&field);
        table.extend_from_slice(&offset.to_le_bytes());
        table.extend_from_slice(&len.to_le_bytes());
        table.extend_from_slice(&flags.0.to_le_bytes());
        table.extend_from_slice(&0u32.to_le_bytes());
        offset = offset.checked_add(len).and_then(page_align_up).ok_or(BootfsError::TooLarge)?;
    }
    let total = offset;
    let total_usize = usize::try_from(total).map_err(|_| BootfsError::TooLarge)?;

    let mut out = Vec::with_capacity(total_usize);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(&table);
    for (_, data) in files {
        out.resize(out.len().next_multiple_of(PAGE_BYTES as usize), 0);
        out.extend_from_slice(data);
    }
    out.resize(total_usize, 0);
    Ok(out)
}
