//! Creating the root task: the only program the kernel loads.
//!
//! From the boot archive (the `-initrd` module) the kernel takes the file `root`,
//! builds its CNode, TCB and address space from boot memory, maps its segments, a
//! stack, an IPC buffer and the boot-information pages, and fills its CSpace: its own
//! thread, CNode and VSpace, the debug console, IRQ control, trace control, the I/O
//! port space, one
//! scheduling-control capability per CPU, read-only frames covering the whole archive
//! (so it can load the other programs), and untyped capabilities to all remaining
//! memory. After that the kernel's frame allocator is empty for good: every later
//! kernel object is paid for by someone's untyped memory.

use ramen_abi::bootinfo::{BootInfo, CMDLINE_BYTES, MAX_FILES, MAX_UNTYPED, NAME_BYTES};
use ramen_abi::slot;
use ramen_abi::syscall::{BOOT_INFO_VADDR, ROOT_IPC_BUFFER, ROOT_STACK_PAGES, ROOT_STACK_TOP};
use ramen_arch::paging::{AddressSpace, PageSize, user_flags};
use ramen_arch::pvh::BootParams;
use ramen_arch::user::UserContext;
use ramen_bootfs::Archive;
use ramen_bootfs::elf::Program;
use ramen_core::cap::Cap;
use ramen_core::cnode as ops;
use ramen_core::memory::FrameAllocator;
use ramen_core::object::{
    CapType, MAX_UNTYPED_BITS, ObjRef, ObjectStore, PAGE_TABLE_BITS, PhysAddr, SLOT_BITS, SlotRef, TCB_BITS,
};
use ramen_core::runqueue::ThreadRef;

use crate::boot::FRAMES;
use crate::cpus::{self, machine};
use crate::kprintln;
use crate::objects::{self, CAP_LOCK, Store, cspace_slot, tcb};

/// Radix of the root CNode: 16,384 slots (a benchmark boot starts dozens of programs
/// and the root task cannot reclaim slots yet).
pub const ROOT_CNODE_RADIX: u8 = 14;
/// First slot for archive frames.
const ARCHIVE_FIRST_SLOT: u64 = 512;
/// Smallest untyped region handed out.
const MIN_UNTYPED_BITS: u32 = 12;
/// The root task runs at the highest priority.
const ROOT_PRIORITY: u8 = 255;

const PAGE: u64 = 4096;

/// Why the root task could not be created.
pub type RootError = &'static str;

fn frame() -> Result<u64, RootError> {
    let frame = FRAMES.lock().alloc().ok_or("out of boot memory")?;
    objects::zero_frame(PhysAddr(frame), PAGE);
    Ok(frame)
}

fn table_frame() -> Option<u64> {
    FRAMES.lock().alloc()
}

fn slot_at(cnode: u64, index: u64) -> Result<SlotRef, RootError> {
    SlotRef::in_cnode(PhysAddr(cnode), index).ok_or("slot address overflow")
}

fn insert(store: &mut Store, cnode: u64, index: u64, cap: Cap) -> Result<(), RootError> {
    ops::insert_initial(store, slot_at(cnode, index)?, cap).map_err(|_| "cannot place a root capability")
}

fn map(
    space: &mut AddressSpace,
    vaddr: u64,
    frame: u64,
    writable: bool,
    executable: bool,
) -> Result<(), RootError> {
    let mut tables = table_frame;
    space
        .map(vaddr, frame, PageSize::Size4K, user_flags(writable, executable), &mut tables)
        .map_err(|_| "cannot map the root task")
}

/// Loads the root task from the boot archive and makes it runnable on CPU 0.
pub fn create(params: &BootParams) -> Result<ThreadRef, RootError> {
    let module = params.modules().first().ok_or("no boot archive (-initrd)")?;
    let archive_bytes = objects::module_bytes(module.addr, module.len);
    let archive = Archive::parse(archive_bytes).map_err(|_| "the boot archive is malformed")?;
    let root = archive.root().ok_or("the boot archive has no `root`")?;
    let program = Program::parse(root.data()).map_err(|_| "the root task is not a valid RamenOS program")?;

    let mut store = CAP_LOCK.lock();
    // The three objects every thread needs, from boot memory.
    let cnode_bits = u32::from(ROOT_CNODE_RADIX) + u32::from(SLOT_BITS);
    let cnode = FRAMES
        .lock()
        .alloc_contiguous(1 << (cnode_bits - 12), 1 << cnode_bits, u64::MAX)
        .ok_or("out of memory for the root CNode")?;
    store.init_object(ObjRef { addr: PhysAddr(cnode), kind: CapType::CNode, size_bits: cnode_bits as u8 });
    let tcb_addr = frame()?;
    store.init_object(ObjRef { addr: PhysAddr(tcb_addr), kind: CapType::Thread, size_bits: TCB_BITS });
    let pml4 = frame()?;
    store.init_object(ObjRef { addr: PhysAddr(pml4), kind: CapType::VSpace, size_bits: PAGE_TABLE_BITS });
    let mut space = objects::address_space(pml4);

    // The program image: every page of every segment gets its own zeroed frame with
    // the file's bytes copied in (W^X was checked by the parser).
    for segment in program.segments() {
        let data = program.file_data(segment).ok_or("segment outside the file")?;
        let mut page = segment.page_start();
        while page < segment.page_end() {
            let frame = frame()?;
            let file_end = segment.vaddr + segment.file_bytes;
            let from = page.max(segment.vaddr);
            let to = (page + PAGE).min(file_end);
            if from < to {
                let bytes =
                    data.get((from - segment.vaddr) as usize..(to - segment.vaddr) as usize).unwrap_or(&[]);
                objects::copy_to_frame(PhysAddr(frame), from - page, bytes);
            }
            map(&mut space, page, frame, segment.flags.writable(), segment.flags.executable())?;
            page += PAGE;
        }
    }
    for i in 0..ROOT_STACK_PAGES {
        map(&mut space, ROOT_STACK_TOP - (i + 1) * PAGE, frame()?, true, false)?;
    }
    map(&mut space, ROOT_IPC_BUFFER, frame()?, true, false)?;

    // Boot information, read-only for the root task.
    let info_pages = BootInfo::PAGES as u64;
    let info =
        FRAMES.lock().alloc_contiguous(info_pages, PAGE, u64::MAX).ok_or("out of memory for boot info")?;
    objects::zero_frame(PhysAddr(info), info_pages * PAGE);
    for i in 0..info_pages {
        map(&mut space, BOOT_INFO_VADDR + i * PAGE, info + i * PAGE, false, false)?;
    }

    // Capabilities.
    let cnode_cap = Cap::try_cnode(PhysAddr(cnode), ROOT_CNODE_RADIX, 0, 64 - ROOT_CNODE_RADIX)
        .map_err(|_| "bad root CNode capability")?;
    insert(&mut store, cnode, slot::CNODE, cnode_cap)?;
    let thread_cap = Cap::try_object(CapType::Thread, PhysAddr(tcb_addr)).map_err(|_| "bad TCB cap")?;
    insert(&mut store, cnode, slot::THREAD, thread_cap)?;
    let vspace_cap = Cap::try_object(CapType::VSpace, PhysAddr(pml4)).map_err(|_| "bad VSpace cap")?;
    insert(&mut store, cnode, slot::VSPACE, vspace_cap)?;
    insert(&mut store, cnode, slot::DEBUG, Cap::debug_console())?;
    insert(&mut store, cnode, slot::IRQ_CONTROL, Cap::irq_control())?;
    insert(&mut store, cnode, slot::TRACE_CONTROL, Cap::trace_control())?;
    insert(&mut store, cnode, slot::IO_PORTS, Cap::io_port(0, u16::MAX).ok_or("bad I/O port range")?)?;
    let m = machine();
    let online: u32 = cpus::ONLINE.load(core::sync::atomic::Ordering::Acquire);
    for cpu in 0..online {
        insert(&mut store, cnode, slot::SCHED_CONTROL_BASE + u64::from(cpu), Cap::sched_control(cpu))?;
    }
    let archive_frames = module.len.div_ceil(PAGE);
    let archive_end_slot = ARCHIVE_FIRST_SLOT + archive_frames;
    if archive_end_slot >= 1 << ROOT_CNODE_RADIX {
        return Err("boot archive too large for the root CNode");
    }
    for i in 0..archive_frames {
        let cap = Cap::try_object(CapType::Frame4K, PhysAddr(module.addr + i * PAGE))
            .map_err(|_| "bad archive frame")?;
        insert(&mut store, cnode, ARCHIVE_FIRST_SLOT + i, cap)?;
    }

    // The thread.
    let thread = ThreadRef::new(tcb_addr).ok_or("TCB at address zero")?;
    ops::copy(&mut *store, slot_at(cnode, slot::CNODE)?, cspace_slot(thread).ok_or("no CSpace slot")?)
        .map_err(|_| "cannot give the root task its CSpace")?;
    let t = tcb(thread);
    t.priority = ROOT_PRIORITY;
    t.cpu = 0;
    t.vspace = pml4;
    crate::asid::thread_added(&mut store, pml4);
    t.ipc_buffer = ROOT_IPC_BUFFER;
    t.context = UserContext::new_user(program.entry(), ROOT_STACK_TOP, BOOT_INFO_VADDR);
    crate::trace::set_name(thread, crate::trace::ThreadName::new(b"root").unwrap_or_default());

    // Everything left becomes untyped memory; the kernel keeps none.
    let first_untyped = archive_end_slot;
    let frames = core::mem::replace(&mut *FRAMES.lock(), FrameAllocator::new());
    let info_block = objects::boot_info(info);
    let mut count = 0usize;
    for range in frames.free_ranges() {
        let mut start = range.start;
        while start < range.end && count < MAX_UNTYPED {
            let align_bits = start.trailing_zeros();
            let size_bits =
                (63 - (range.end - start).leading_zeros()).min(align_bits).min(u32::from(MAX_UNTYPED_BITS));
            if size_bits < MIN_UNTYPED_BITS {
                break;
            }
            let index = first_untyped + count as u64;
            if index >= 1 << ROOT_CNODE_RADIX {
                break;
            }
            let cap = Cap::try_untyped(PhysAddr(start), size_bits as u8, false).map_err(|_| "bad untyped")?;
            insert(&mut store, cnode, index, cap)?;
            if let Some(entry) = info_block.untyped.get_mut(count) {
                entry.paddr = start;
                entry.size_bits = size_bits as u8;
                entry.node = m.node_of_memory(start);
            }
            count += 1;
            start += 1 << size_bits;
        }
    }
    // Memory that did not fit the CNode or the table stays unused; say so.
    let handed = info_block.untyped.iter().take(count).map(|u| 1u64 << u.size_bits).sum::<u64>();
    let lost = frames.free_bytes().saturating_sub(handed);

    // Boot information.
    info_block.magic = BootInfo::MAGIC;
    info_block.version = BootInfo::VERSION;
    info_block.tsc_hz = m.tsc_hz;
    let summary = m.topology.summary(|c| cpus::is_online(c.index));
    info_block.cpu_count = summary.cpus as u32;
    info_block.socket_count = summary.sockets as u32;
    info_block.node_count = summary.nodes as u32;
    for (out, c) in
        info_block.cpus.iter_mut().zip(m.topology.cpus().iter().filter(|c| cpus::is_online(c.index)))
    {
        out.index = c.index;
        out.apic_id = c.apic_id;
        out.package = c.package;
        out.node = c.node;
    }
    info_block.untyped_count = count as u32;
    info_block.untyped_first = first_untyped;
    info_block.archive_first = ARCHIVE_FIRST_SLOT;
    info_block.archive_frames = archive_frames;
    info_block.archive_bytes = module.len;
    info_block.first_free_slot = first_untyped + count as u64;
    info_block.cnode_radix = u64::from(ROOT_CNODE_RADIX);
    for (out, entry) in info_block.files.iter_mut().zip(archive.entries()).take(MAX_FILES) {
        let name = entry.name().as_bytes();
        for (o, b) in out.name.iter_mut().zip(name.iter().take(NAME_BYTES)) {
            *o = *b;
        }
        out.offset = entry.offset();
        out.len = entry.data().len() as u64;
    }
    info_block.file_count = archive.len().min(MAX_FILES) as u64;
    for (o, b) in
        info_block.cmdline.iter_mut().zip(params.cmdline().as_bytes().iter().take(CMDLINE_BYTES - 1))
    {
        *o = *b;
    }
    drop(store);

    kprintln!(
        "root task: entry {:#x}, {} untyped regions ({} MiB), {} archive frames{}",
        program.entry(),
        count,
        handed >> 20,
        archive_frames,
        if lost > 0 { ", some memory left unused (CNode full)" } else { "" }
    );
    crate::sched::wake(thread);
    Ok(thread)
}
