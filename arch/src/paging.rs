//! Page tables: the kernel address space and the direct map of physical memory.
//!
//! Layout (see `docs/boot.md`):
//! - `PHYS_MAP_BASE` (PML4 slot 256): all RAM and the low 4 GiB, read-write, no-execute.
//! - `MMIO_BASE`: device registers mapped uncached on demand (local APIC, ...).
//! - `STACKS_BASE`: per-CPU kernel and IST stacks, each below an unmapped guard page.
//! - `KERNEL_VMA` (top 2 GiB): the kernel image, text read-execute, rodata read-only,
//!   data and bss read-write no-execute.
//!
//! Until [`KernelSpace::build_and_switch`] runs, the boot tables map the first GiB at
//! `KERNEL_VMA`; page-table frames used before the switch must come from there.

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::structures::paging::PageTableFlags as Flags;

use crate::{KERNEL_VMA, PAGE_SIZE, PHYS_MAP_BASE};

/// Per-CPU stack slots start here (PML4 slot 508).
pub const STACKS_BASE: u64 = 0xffff_fe00_0000_0000;
/// Address space reserved for each CPU's stacks.
pub const STACK_SLOT_BYTES: u64 = 1 << 20;
/// Device-register window (PML4 slot 509).
pub const MMIO_BASE: u64 = 0xffff_fe80_0000_0000;
/// Size of the device-register window.
pub const MMIO_WINDOW_BYTES: u64 = 1 << 30;
/// Bytes the boot tables map at `KERNEL_VMA`; early frames must lie below it.
pub const EARLY_WINDOW: u64 = 1 << 30;

const ENTRIES: usize = 512;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const SIZE_2M: u64 = 1 << 21;
const SIZE_1G: u64 = 1 << 30;

/// Where physical memory is visible: `KERNEL_VMA` during boot, the direct map after
/// (in a hosted test process: where its "physical" memory is mapped).
#[cfg(not(feature = "hosted"))]
static PHYS_OFFSET: AtomicU64 = AtomicU64::new(KERNEL_VMA);
#[cfg(feature = "hosted")]
static PHYS_OFFSET: AtomicU64 = AtomicU64::new(crate::hosted::PHYS_BASE);

/// The kernel-virtual address of physical address `phys`.
#[inline]
pub fn phys_to_virt(phys: u64) -> u64 {
    phys + PHYS_OFFSET.load(Ordering::Relaxed)
}

/// Page sizes the tables can map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    /// 4 KiB.
    Size4K,
    /// 2 MiB.
    Size2M,
    /// 1 GiB.
    Size1G,
}

impl PageSize {
    /// Bytes in a page of this size.
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Size4K => PAGE_SIZE,
            Self::Size2M => SIZE_2M,
            Self::Size1G => SIZE_1G,
        }
    }

    /// Page-table level (1 = PT) of the entry that maps a page of this size.
    const fn level(self) -> u32 {
        match self {
            Self::Size4K => 1,
            Self::Size2M => 2,
            Self::Size1G => 3,
        }
    }
}

/// Why a mapping could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// No frame for a page table.
    OutOfFrames,
    /// A frame for a page table lay outside the reachable window.
    FrameUnreachable(u64),
    /// A larger page already covers the address.
    HugePageInTheWay(u64),
    /// Address or physical address not aligned to the page size.
    Misaligned(u64),
    /// The virtual range already has a mapping.
    AlreadyMapped(u64),
    /// A window (MMIO, stacks) is full or the index is out of range.
    WindowFull,
    /// The page is pinned by a lease of an IPC call in flight.
    Pinned(u64),
}

/// Software bits 52..59 of a leaf entry (ignored by the MMU): how many leases of
/// calls in flight pin the page. A pinned page cannot be unmapped.
const PIN_SHIFT: u32 = 52;
const PIN_MASK: u64 = 0x7f << PIN_SHIFT;
/// Most leases that may pin one page at once.
pub const MAX_PINS: u64 = 0x7f;

/// Why a page cannot be pinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinError {
    /// Not mapped, or not a user page.
    NotMapped,
    /// Mapped read-only where write access was asked for.
    ReadOnly,
    /// Pinned by [`MAX_PINS`] leases already.
    TooManyPins,
}

/// A source of zeroed-on-use 4 KiB frames for page tables.
pub type FrameSource<'a> = &'a mut dyn FnMut() -> Option<u64>;

fn table(phys: u64) -> *mut [u64; ENTRIES] {
    phys_to_virt(phys) as *mut [u64; ENTRIES]
}

fn alloc_table(frames: FrameSource<'_>) -> Result<u64, MapError> {
    let phys = frames().ok_or(MapError::OutOfFrames)?;
    if PHYS_OFFSET.load(Ordering::Relaxed) == KERNEL_VMA && phys + PAGE_SIZE > EARLY_WINDOW {
        return Err(MapError::FrameUnreachable(phys));
    }
    // SAFETY: the frame was just handed to us by the allocator (owned, unused) and is
    // reachable through the current physical window (checked above for boot).
    unsafe { table(phys).write([0; ENTRIES]) };
    Ok(phys)
}

fn index(virt: u64, level: u32) -> usize {
    ((virt >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

/// A 4-level page-table hierarchy.
#[derive(Debug)]
pub struct AddressSpace {
    pml4: u64,
}

impl AddressSpace {
    /// A new, empty hierarchy.
    pub fn new(frames: FrameSource<'_>) -> Result<Self, MapError> {
        Ok(Self { pml4: alloc_table(frames)? })
    }

    /// The hierarchy whose top-level table is at `root`.
    ///
    /// # Safety
    /// `root` must be a page-table frame that only this value (and the CPUs running
    /// on it) uses as a PML4, and its tables must have come from `map`.
    pub unsafe fn from_root(root: u64) -> Self {
        Self { pml4: root }
    }

    /// Physical address of the top-level table (the CR3 value).
    pub fn root(&self) -> u64 {
        self.pml4
    }

    /// Maps one page. Intermediate tables are created as needed; they allow
    /// everything and leave permissions to the leaf.
    pub fn map(
        &mut self,
        virt: u64,
        phys: u64,
        size: PageSize,
        flags: Flags,
        frames: FrameSource<'_>,
    ) -> Result<(), MapError> {
        if !virt.is_multiple_of(size.bytes()) || !phys.is_multiple_of(size.bytes()) {
            return Err(MapError::Misaligned(virt));
        }
        let mut table_phys = self.pml4;
        let mut level = 4;
        while level > size.level() {
            let slot = index(virt, level);
            // SAFETY: `table_phys` is a page table of this hierarchy, reachable through
            // the physical window; we hold `&mut self`, so no one else edits it.
            let entry = unsafe { &mut (*table(table_phys))[slot] };
            if *entry & Flags::PRESENT.bits() == 0 {
                let next = alloc_table(frames)?;
                let mut inter = Flags::PRESENT | Flags::WRITABLE;
                if flags.contains(Flags::USER_ACCESSIBLE) {
                    inter |= Flags::USER_ACCESSIBLE;
                }
                *entry = next | inter.bits();
            } else if *entry & Flags::HUGE_PAGE.bits() != 0 {
                return Err(MapError::HugePageInTheWay(virt));
            }
            table_phys = *entry & ADDR_MASK;
            level -= 1;
        }
        let slot = index(virt, level);
        // SAFETY: as above.
        let entry = unsafe { &mut (*table(table_phys))[slot] };
        if *entry & Flags::PRESENT.bits() != 0 {
            return Err(MapError::AlreadyMapped(virt));
        }
        let huge = if size == PageSize::Size4K { Flags::empty() } else { Flags::HUGE_PAGE };
        *entry = phys | (flags | huge | Flags::PRESENT).bits();
        Ok(())
    }

    /// Installs the page table at `table` (a zeroed frame) as the level-`level` table
    /// (1 = last-level page table, 2 = page directory, 3 = PDPT) covering `virt`.
    /// The tables above it must exist: `OutOfFrames` otherwise (no table is created).
    pub fn install_table(&mut self, virt: u64, level: u32, table: u64) -> Result<(), MapError> {
        if !(1..=3).contains(&level) || !table.is_multiple_of(PAGE_SIZE) {
            return Err(MapError::Misaligned(table));
        }
        let mut table_phys = self.pml4;
        let mut current = 4;
        while current > level + 1 {
            // SAFETY: a table of this hierarchy, reachable through the direct map.
            let entry = unsafe { (*self::table(table_phys))[index(virt, current)] };
            if entry & Flags::PRESENT.bits() == 0 {
                return Err(MapError::OutOfFrames);
            }
            if entry & Flags::HUGE_PAGE.bits() != 0 {
                return Err(MapError::HugePageInTheWay(virt));
            }
            table_phys = entry & ADDR_MASK;
            current -= 1;
        }
        // SAFETY: as above; `&mut self` excludes other editors.
        let entry = unsafe { &mut (*self::table(table_phys))[index(virt, current)] };
        if *entry & Flags::PRESENT.bits() != 0 {
            return Err(MapError::AlreadyMapped(virt));
        }
        *entry = table | (Flags::PRESENT | Flags::WRITABLE | Flags::USER_ACCESSIBLE).bits();
        Ok(())
    }

    /// Unlinks the level-`level` table at `table` from the entry covering `virt`, if
    /// that entry still points to it; true if it did. The caller flushes TLBs.
    pub fn uninstall_table(&mut self, virt: u64, level: u32, table: u64) -> bool {
        let mut table_phys = self.pml4;
        let mut current = 4;
        while current > level + 1 {
            // SAFETY: a table of this hierarchy, reachable through the direct map.
            let entry = unsafe { (*self::table(table_phys))[index(virt, current)] };
            if entry & Flags::PRESENT.bits() == 0 || entry & Flags::HUGE_PAGE.bits() != 0 {
                return false;
            }
            table_phys = entry & ADDR_MASK;
            current -= 1;
        }
        // SAFETY: as above; `&mut self` excludes other editors.
        let entry = unsafe { &mut (*self::table(table_phys))[index(virt, current)] };
        let linked = *entry & Flags::PRESENT.bits() != 0
            && *entry & Flags::HUGE_PAGE.bits() == 0
            && *entry & ADDR_MASK == table;
        if linked {
            *entry = 0;
        }
        linked
    }

    /// Removes the leaf mapping of `virt` (of the given size). The caller flushes
    /// TLBs on every CPU that may cache it.
    pub fn unmap(&mut self, virt: u64, size: PageSize) -> Result<(), MapError> {
        let mut table_phys = self.pml4;
        let mut level = 4;
        while level > size.level() {
            // SAFETY: a table of this hierarchy.
            let entry = unsafe { (*self::table(table_phys))[index(virt, level)] };
            if entry & Flags::PRESENT.bits() == 0 || entry & Flags::HUGE_PAGE.bits() != 0 {
                return Err(MapError::Misaligned(virt));
            }
            table_phys = entry & ADDR_MASK;
            level -= 1;
        }
        // SAFETY: as above; `&mut self` excludes other editors.
        let entry = unsafe { &mut (*self::table(table_phys))[index(virt, level)] };
        if *entry & Flags::PRESENT.bits() == 0 {
            return Err(MapError::Misaligned(virt));
        }
        if *entry & PIN_MASK != 0 {
            return Err(MapError::Pinned(virt));
        }
        *entry = 0;
        Ok(())
    }

    /// The leaf entry that maps `virt` (any page size), if present, and the size of
    /// the page it maps.
    fn leaf(&self, virt: u64) -> Option<(*mut u64, u64)> {
        let mut table_phys = self.pml4;
        for level in (1..=4).rev() {
            // SAFETY: a table of this hierarchy, reachable through the direct map.
            let entry = unsafe { &mut (*table(table_phys))[index(virt, level)] };
            if *entry & Flags::PRESENT.bits() == 0 {
                return None;
            }
            if level == 1 || *entry & Flags::HUGE_PAGE.bits() != 0 {
                return Some((entry as *mut u64, 1 << (12 + 9 * (level - 1))));
            }
            table_phys = *entry & ADDR_MASK;
        }
        None
    }

    /// Checks a leaf entry for pinning; returns the 4 KiB physical page of `virt`.
    fn check_pin(value: u64, bytes: u64, virt: u64, write: bool) -> Result<u64, PinError> {
        if value & Flags::USER_ACCESSIBLE.bits() == 0 {
            return Err(PinError::NotMapped);
        }
        if write && value & Flags::WRITABLE.bits() == 0 {
            return Err(PinError::ReadOnly);
        }
        if (value & PIN_MASK) >> PIN_SHIFT >= MAX_PINS {
            return Err(PinError::TooManyPins);
        }
        Ok((value & ADDR_MASK & !(bytes - 1)) + (virt & (bytes - 1) & !(PAGE_SIZE - 1)))
    }

    /// Checks that the user page at `virt` can be pinned (`write`: for writing):
    /// mapped, user-accessible, writable if asked, not pinned too often. Changes
    /// nothing; returns the physical address of its 4 KiB page.
    pub fn can_pin(&self, virt: u64, write: bool) -> Result<u64, PinError> {
        let (entry, bytes) = self.leaf(virt).ok_or(PinError::NotMapped)?;
        // SAFETY: `leaf` returned an entry of this hierarchy.
        Self::check_pin(unsafe { *entry }, bytes, virt, write)
    }

    /// Pins the page (leaf) that maps `virt` for a lease whose first page is
    /// `first`: a leaf is counted once per lease, at the lease's first page in it.
    /// One table walk; returns the physical address of `virt`'s 4 KiB page.
    pub fn pin(&mut self, virt: u64, first: u64, write: bool) -> Result<u64, PinError> {
        let (entry, bytes) = self.leaf(virt).ok_or(PinError::NotMapped)?;
        // SAFETY: an entry of this hierarchy; `&mut self` excludes other editors.
        unsafe {
            let phys = Self::check_pin(*entry, bytes, virt, write)?;
            if virt == first || virt.is_multiple_of(bytes) {
                *entry += 1 << PIN_SHIFT;
            }
            Ok(phys)
        }
    }

    /// Undoes [`Self::pin`] for the same `virt` and `first`.
    pub fn unpin(&mut self, virt: u64, first: u64) {
        if let Some((entry, bytes)) = self.leaf(virt)
            && (virt == first || virt.is_multiple_of(bytes))
        {
            // SAFETY: as in `pin`.
            unsafe {
                if *entry & PIN_MASK != 0 {
                    *entry -= 1 << PIN_SHIFT;
                }
            }
        }
    }

    /// Maps the 4 KiB page `virt` to `phys`, pinned (a lease's window page): the page
    /// table must exist (nothing is allocated) and the place be free.
    pub fn map_pinned(&mut self, virt: u64, phys: u64, flags: Flags) -> Result<(), MapError> {
        let mut table_phys = self.pml4;
        for level in (2..=4).rev() {
            // SAFETY: a table of this hierarchy, reachable through the direct map.
            let entry = unsafe { (*table(table_phys))[index(virt, level)] };
            if entry & Flags::PRESENT.bits() == 0 {
                return Err(MapError::OutOfFrames);
            }
            if entry & Flags::HUGE_PAGE.bits() != 0 {
                return Err(MapError::HugePageInTheWay(virt));
            }
            table_phys = entry & ADDR_MASK;
        }
        // SAFETY: as above; `&mut self` excludes other editors.
        let entry = unsafe { &mut (*table(table_phys))[index(virt, 1)] };
        if *entry & Flags::PRESENT.bits() != 0 {
            return Err(MapError::AlreadyMapped(virt));
        }
        *entry = (phys & ADDR_MASK) | (flags | Flags::PRESENT).bits() | (1 << PIN_SHIFT);
        Ok(())
    }

    /// Clears a 4 KiB entry [`Self::map_pinned`] made, pinned or not.
    pub fn unmap_pinned(&mut self, virt: u64) {
        if let Some((entry, PAGE_SIZE)) = self.leaf(virt) {
            // SAFETY: as in `pin`.
            unsafe { *entry = 0 };
        }
    }

    /// The size of the page (leaf) that maps `virt`, if mapped: 4 KiB, 2 MiB or 1 GiB.
    pub fn leaf_bytes(&self, virt: u64) -> Option<u64> {
        self.leaf(virt).map(|(_, bytes)| bytes)
    }

    /// True if the page at `virt` is pinned.
    pub fn is_pinned(&self, virt: u64) -> bool {
        // SAFETY: `leaf` returned an entry of this hierarchy.
        self.leaf(virt).is_some_and(|(entry, _)| unsafe { *entry } & PIN_MASK != 0)
    }

    /// Maps `[virt, virt+len)` to `[phys, phys+len)` with 4 KiB pages.
    pub fn map_range(
        &mut self,
        virt: u64,
        phys: u64,
        len: u64,
        flags: Flags,
        frames: FrameSource<'_>,
    ) -> Result<(), MapError> {
        let mut off = 0;
        while off < len {
            self.map(virt + off, phys + off, PageSize::Size4K, flags, frames)?;
            off += PAGE_SIZE;
        }
        Ok(())
    }

    /// The physical address and leaf flags that `virt` translates to.
    pub fn translate(&self, virt: u64) -> Option<(u64, Flags)> {
        let mut table_phys = self.pml4;
        for level in (1..=4).rev() {
            // SAFETY: reading an entry of a table of this hierarchy.
            let entry = unsafe { (*table(table_phys))[index(virt, level)] };
            if entry & Flags::PRESENT.bits() == 0 {
                return None;
            }
            let is_leaf = level == 1 || entry & Flags::HUGE_PAGE.bits() != 0;
            if is_leaf {
                let page = 1u64 << (12 + 9 * (level - 1));
                let base = entry & ADDR_MASK & !(page - 1);
                return Some((base + (virt & (page - 1)), Flags::from_bits_truncate(entry)));
            }
            table_phys = entry & ADDR_MASK;
        }
        None
    }
}

unsafe extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __kernel_end: u8;
    static __boot_start: u8;
}

/// A section of the kernel image, by virtual address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    /// First byte.
    pub start: u64,
    /// One past the last byte (page-aligned by the linker script).
    pub end: u64,
}

/// The kernel image's sections.
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    /// Code.
    pub text: Section,
    /// Read-only data.
    pub rodata: Section,
    /// Data and bss.
    pub data: Section,
    /// Physical range the whole image (boot code included) occupies.
    pub phys_start: u64,
    /// One past its end.
    pub phys_end: u64,
}

/// Reads the layout from the linker script's symbols.
pub fn image_layout() -> ImageLayout {
    // SAFETY: only the addresses of linker-defined symbols are taken.
    let addr = |s: &u8| s as *const u8 as u64;
    // SAFETY: as above; the symbols exist in every kernel link (linker.ld).
    unsafe {
        ImageLayout {
            text: Section { start: addr(&__text_start), end: addr(&__text_end) },
            rodata: Section { start: addr(&__rodata_start), end: addr(&__rodata_end) },
            data: Section { start: addr(&__data_start), end: addr(&__kernel_end) },
            phys_start: addr(&__boot_start),
            phys_end: addr(&__kernel_end) - KERNEL_VMA,
        }
    }
}

const fn page_up(x: u64) -> u64 {
    (x + PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

/// The kernel's own address space, shared by all CPUs (upper half).
#[derive(Debug)]
pub struct KernelSpace {
    space: AddressSpace,
    mmio_next: u64,
}

impl KernelSpace {
    /// Builds the kernel address space (image with per-section permissions, direct
    /// map of `direct_ranges` plus the low 4 GiB) and switches this CPU to it. Page
    /// tables come from `frames`, which must hand out frames below [`EARLY_WINDOW`].
    /// `huge_pages` selects 1 GiB pages for the direct map.
    pub fn build_and_switch(
        direct_ranges: &[(u64, u64)],
        huge_pages: bool,
        frames: FrameSource<'_>,
    ) -> Result<Self, MapError> {
        let mut space = AddressSpace::new(frames)?;
        let image = image_layout();
        let global = Flags::GLOBAL;
        let sections = [
            (image.text, global),
            (image.rodata, global | Flags::NO_EXECUTE),
            (image.data, global | Flags::WRITABLE | Flags::NO_EXECUTE),
        ];
        for (section, flags) in sections {
            let start = section.start & !(PAGE_SIZE - 1);
            let len = page_up(section.end) - start;
            space.map_range(start, start - KERNEL_VMA, len, flags, frames)?;
        }
        let step = if huge_pages { PageSize::Size1G } else { PageSize::Size2M };
        let direct = global | Flags::WRITABLE | Flags::NO_EXECUTE;
        let low = [(0u64, 1u64 << 32)];
        for &(start, end) in low.iter().chain(direct_ranges) {
            let mut page = start & !(step.bytes() - 1);
            while page < end {
                match space.map(PHYS_MAP_BASE + page, page, step, direct, frames) {
                    Ok(()) | Err(MapError::AlreadyMapped(_)) => {}
                    Err(e) => return Err(e),
                }
                page += step.bytes();
            }
        }
        // SAFETY: the new tables map the whole image (code we run, the boot stack in
        // bss, all statics) at the same addresses as the boot tables, and the direct
        // map covers every frame the tables themselves use; nothing the kernel touches
        // after the switch lived only in the low identity map.
        unsafe { switch_to(space.root()) };
        PHYS_OFFSET.store(PHYS_MAP_BASE, Ordering::Relaxed);
        Ok(Self { space, mmio_next: MMIO_BASE })
    }

    /// The CR3 value of the kernel space (for other CPUs to load).
    pub fn root(&self) -> u64 {
        self.space.root()
    }

    /// Leaf translation of a kernel virtual address.
    pub fn translate(&self, virt: u64) -> Option<(u64, Flags)> {
        self.space.translate(virt)
    }

    /// Maps device registers `[phys, phys+len)` uncached into the MMIO window and
    /// returns the virtual address of `phys`.
    pub fn map_mmio(&mut self, phys: u64, len: u64, frames: FrameSource<'_>) -> Result<u64, MapError> {
        let base = phys & !(PAGE_SIZE - 1);
        let span = page_up(phys + len) - base;
        let virt = self.mmio_next;
        if virt + span > MMIO_BASE + MMIO_WINDOW_BYTES {
            return Err(MapError::WindowFull);
        }
        let flags =
            Flags::GLOBAL | Flags::WRITABLE | Flags::NO_EXECUTE | Flags::NO_CACHE | Flags::WRITE_THROUGH;
        self.space.map_range(virt, base, span, flags, frames)?;
        self.mmio_next = virt + span;
        Ok(virt + (phys - base))
    }

    /// Maps the kernel stack and IST stacks of CPU `index` from `frames`, each below
    /// an unmapped guard page, and returns their tops: (kernel, [IST1..IST4]).
    pub fn map_cpu_stacks(
        &mut self,
        index: u32,
        frames: FrameSource<'_>,
    ) -> Result<(u64, [u64; crate::gdt::IST_COUNT]), MapError> {
        const KERNEL_STACK: u64 = 64 * 1024;
        const IST_STACKS: [u64; crate::gdt::IST_COUNT] = [16 * 1024, 8 * 1024, 8 * 1024, 8 * 1024];
        let slot = STACKS_BASE
            .checked_add(u64::from(index) * STACK_SLOT_BYTES)
            .filter(|s| *s < MMIO_BASE)
            .ok_or(MapError::WindowFull)?;
        let flags = Flags::GLOBAL | Flags::WRITABLE | Flags::NO_EXECUTE;
        let mut cursor = slot;
        let mut place = |bytes: u64, space: &mut AddressSpace| -> Result<u64, MapError> {
            cursor += PAGE_SIZE; // guard page
            let bottom = cursor;
            let mut off = 0;
            while off < bytes {
                let frame = frames().ok_or(MapError::OutOfFrames)?;
                space.map(bottom + off, frame, PageSize::Size4K, flags, frames)?;
                off += PAGE_SIZE;
            }
            cursor += bytes;
            Ok(cursor)
        };
        let kernel_top = place(KERNEL_STACK, &mut self.space)?;
        let mut ist = [0; crate::gdt::IST_COUNT];
        for (top, bytes) in ist.iter_mut().zip(IST_STACKS) {
            *top = place(bytes, &mut self.space)?;
        }
        Ok((kernel_top, ist))
    }
}

/// Loads CR3.
///
/// # Safety
/// `root` must be a complete hierarchy mapping everything the kernel will touch
/// from now on, including the code executing this.
pub unsafe fn switch_to(root: u64) {
    // A hosted test process records the write (`hosted::tlb_events`).
    #[cfg(feature = "hosted")]
    crate::hosted::record_tlb(crate::hosted::TlbEvent::Cr3(root));
    #[cfg(not(feature = "hosted"))]
    // SAFETY: guaranteed by the caller.
    unsafe {
        core::arch::asm!("mov cr3, {}", in(reg) root, options(nostack, preserves_flags));
    }
}

/// Turns on process-context identifiers on this CPU (CR4.PCIDE): from now on CR3's
/// low 12 bits tag TLB entries, and a CR3 write with bit 63 keeps the new PCID's.
/// Call once per CPU, with a CR3 whose PCID bits are 0 (the kernel's tables), on a
/// CPU whose CPUID reports PCID.
pub fn enable_pcid() {
    use x86_64::registers::control::{Cr4, Cr4Flags};
    // SAFETY: the caller checked CPUID; the loaded CR3 has PCID 0 (every table root is
    // 4 KiB aligned and the kernel writes PCID bits only once this is on), which the
    // architecture requires for setting the bit; kernel mappings are global, so they
    // stay valid under every PCID.
    unsafe { Cr4::update(|f| f.insert(Cr4Flags::PCID)) };
}

/// Makes the upper half of the top-level table `root` (a fresh user address space)
/// the same as the kernel's, so the kernel stays mapped while it runs on that CR3.
///
/// # Safety
/// `root` must be a zeroed page-table frame owned by the caller; `kernel_root` the
/// kernel's PML4. The kernel never adds PML4 entries after boot (every upper-half
/// region it uses exists by then), so the copy stays current.
pub unsafe fn copy_kernel_half(root: u64, kernel_root: u64) {
    let src = phys_to_virt(kernel_root) as *const u64;
    let dst = phys_to_virt(root) as *mut u64;
    // SAFETY: both are 512-entry tables reachable through the direct map; the caller
    // owns `root`.
    unsafe { core::ptr::copy_nonoverlapping(src.add(256), dst.add(256), 256) };
}

/// Leaf flags for a user page.
pub fn user_flags(writable: bool, executable: bool) -> Flags {
    let mut flags = Flags::USER_ACCESSIBLE;
    if writable {
        flags |= Flags::WRITABLE;
    }
    if !executable {
        flags |= Flags::NO_EXECUTE;
    }
    flags
}

/// Drops this CPU's TLB entry for `virt`.
pub fn flush_local(virt: u64) {
    #[cfg(feature = "hosted")]
    crate::hosted::record_tlb(crate::hosted::TlbEvent::FlushPage(virt));
    #[cfg(not(feature = "hosted"))]
    x86_64::instructions::tlb::flush(x86_64::VirtAddr::new_truncate(virt));
}

/// Drops every non-global TLB entry of this CPU (reloads CR3; with PCIDs, those of
/// the loaded PCID).
pub fn flush_all_local() {
    #[cfg(feature = "hosted")]
    crate::hosted::record_tlb(crate::hosted::TlbEvent::FlushAll);
    // CR3 written back exactly as read, PCID bits included (a read never shows bit 63):
    // `x86_64::instructions::tlb::flush_all` rebuilds the value without the PCID, which
    // would move the running space to PCID 0.
    #[cfg(not(feature = "hosted"))]
    // SAFETY: reloading the current CR3 changes nothing but the TLB.
    unsafe {
        core::arch::asm!("mov {0}, cr3", "mov cr3, {0}", out(reg) _, options(nostack, preserves_flags));
    }
}

/// True if the page table at `table_phys` (of `level`: 4 = PML4, whose kernel half
/// is skipped, down to 1) or any table below it maps a pinned page.
pub fn table_has_pins(table_phys: u64, level: u32) -> bool {
    let entries = if level == 4 { ENTRIES / 2 } else { ENTRIES };
    (0..entries).any(|i| {
        // SAFETY: `table_phys` is a page-table object (capability-checked by the
        // caller) or a table installed below one, reachable through the direct map.
        let entry = unsafe { (*table(table_phys))[i] };
        if entry & Flags::PRESENT.bits() == 0 {
            false
        } else if level == 1 || entry & Flags::HUGE_PAGE.bits() != 0 {
            entry & PIN_MASK != 0
        } else {
            table_has_pins(entry & ADDR_MASK, level - 1)
        }
    })
}
