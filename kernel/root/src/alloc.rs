//! Kernel objects for the root task, retyped from the untyped memory the kernel gave
//! it, into the free slots of its own CNode.

use ramen_abi::bootinfo::BootInfo;
use ramen_abi::{Error, object, slot};
use ramen_rt::{SysError, kobj, vm};

/// Hands out slots and objects.
pub struct Alloc {
    info: &'static BootInfo,
    next_slot: u64,
    end_slot: u64,
    untyped: usize,
    spare_tables: [Option<u64>; 3],
}

impl Alloc {
    /// Starts at the first free slot the boot information names.
    pub fn new(info: &'static BootInfo) -> Self {
        Self {
            info,
            next_slot: info.first_free_slot,
            end_slot: 1 << info.cnode_radix,
            untyped: 0,
            spare_tables: [None; 3],
        }
    }

    /// A free slot of the root CNode.
    pub fn slot(&mut self) -> Result<u64, SysError> {
        if self.next_slot >= self.end_slot {
            return Err(Error::RangeError.into());
        }
        self.next_slot += 1;
        Ok(self.next_slot - 1)
    }

    /// One object of type `kind` (an `object` code) and `size_bits`, in a new slot.
    pub fn make(&mut self, kind: u64, size_bits: u64) -> Result<u64, SysError> {
        let dest = self.slot()?;
        self.make_at(kind, size_bits, dest)?;
        Ok(dest)
    }

    /// One object of type `kind` and `size_bits` into the root CNode's slot `dest`,
    /// from the first untyped region with room.
    pub fn make_at(&mut self, kind: u64, size_bits: u64, dest: u64) -> Result<u64, SysError> {
        // A region without an aligned 2 MiB hole may still hold small objects: large
        // frames search every region and leave the small-object cursor alone.
        if kind == object::FRAME_2M {
            for index in self.untyped..self.info.untyped_count as usize {
                let untyped = self.info.untyped_first + index as u64;
                match retype_retrying(untyped, kind, size_bits, dest) {
                    Ok(()) => return Ok(dest),
                    Err(e) if e == Error::NotEnoughMemory => {}
                    Err(e) => return Err(e),
                }
            }
            return Err(Error::NotEnoughMemory.into());
        }
        while self.untyped < self.info.untyped_count as usize {
            let untyped = self.info.untyped_first + self.untyped as u64;
            match retype_retrying(untyped, kind, size_bits, dest) {
                Ok(()) => return Ok(dest),
                // This region is used up for objects of this size: try the next.
                Err(e) if e == Error::NotEnoughMemory => self.untyped += 1,
                Err(e) => return Err(e),
            }
        }
        Err(Error::NotEnoughMemory.into())
    }

    /// The boot information.
    pub fn info(&self) -> &'static BootInfo {
        self.info
    }
}

/// One retype into the root CNode's slot `dest`. `Busy` means a thread destroyed
/// in that memory may still be in use for a moment (its CPU has not taken it off, or
/// a request naming it is on its way): yield and try again. Under emulation with
/// more CPUs than host cores that moment can be long (a CPU's host thread waits for
/// a host core): a thousand quick tries were not always enough after the churn test.
fn retype_retrying(untyped: u64, kind: u64, size_bits: u64, dest: u64) -> Result<(), SysError> {
    for _ in 0..1_000_000 {
        match kobj::retype(untyped, kind, size_bits, slot::CNODE, dest, 1) {
            Err(e) if e == Error::Busy => ramen_rt::yield_now(),
            other => return other,
        }
    }
    kobj::retype(untyped, kind, size_bits, slot::CNODE, dest, 1)
}

impl vm::Tables for Alloc {
    fn take(&mut self, level: u32) -> Result<u64, SysError> {
        let index = (level as usize).saturating_sub(1).min(2);
        if let Some(table) = self.spare_tables.get_mut(index).and_then(Option::take) {
            return Ok(table);
        }
        let kind = match level {
            1 => object::PAGE_TABLE,
            2 => object::PAGE_DIRECTORY,
            _ => object::PDPT,
        };
        self.make(kind, 0)
    }

    fn give_back(&mut self, level: u32, table: u64) {
        let index = (level as usize).saturating_sub(1).min(2);
        if let Some(spare) = self.spare_tables.get_mut(index) {
            *spare = Some(table);
        }
    }
}
