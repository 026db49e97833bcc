//! Starting programs from the boot archive: each gets its own address space, CNode
//! and thread, built from the root task's untyped memory.

use ramen_abi::{object, slot};
use ramen_bootfs::Archive;
use ramen_bootfs::elf::Program;
use ramen_rt::vm::{self, Mapping, PAGE};
use ramen_rt::{SysError, kobj};

use crate::alloc::Alloc;

/// Radix of a program's CNode (256 slots), and the guard that makes small numbers
/// address it directly with full-depth (64-bit) capability pointers.
const CHILD_RADIX: u64 = 8;
/// Where a program's stack ends, and how many pages it has; its IPC buffer (the
/// runtime's convention, so its threads find their buffers).
const STACK_TOP: u64 = ramen_rt::msgbuf::PROGRAM_STACK_TOP;
const STACK_PAGES: u64 = 16;
const IPC_BUFFER: u64 = ramen_rt::msgbuf::PROGRAM_IPC_BUFFER;
/// Where the root task maps a fresh frame to fill it.
const SCRATCH: u64 = 0x0000_5000_0000_0000;
/// Child slot of the fault endpoint (see `ramen_user_tests::REPORT`/`WAIT` for 8, 9).
pub const FAULT_SLOT: u64 = 7;

/// Capabilities the root task keeps to a program it started.
#[derive(Clone, Copy, Debug)]
pub struct Child {
    /// Its thread.
    pub tcb: u64,
    /// Its address space.
    pub vspace: u64,
    /// Its CSpace root (the guarded CNode capability).
    pub cspace: u64,
    /// Its ELF entry point.
    pub entry: u64,
    /// Its file name (cut to a thread name's length): further threads are named
    /// after it.
    name: [u8; ramen_abi::invocation::thread::NAME_MAX],
    name_len: usize,
}

impl Child {
    /// The program's name.
    pub fn name(&self) -> &str {
        core::str::from_utf8(self.name.get(..self.name_len).unwrap_or(&[])).unwrap_or("")
    }
}

/// `program` and `/index` in a thread name's length (the program's name is cut to
/// make room): "bench-ipc/1".
fn extra_thread_name(
    program: &str,
    index: u64,
    out: &mut [u8; ramen_abi::invocation::thread::NAME_MAX],
) -> usize {
    let mut suffix = [0u8; 21];
    let mut at = suffix.len();
    let mut n = index;
    loop {
        at -= 1;
        suffix[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    at -= 1;
    suffix[at] = b'/';
    let suffix = &suffix[at..];
    let keep = thread_name(program).len().min(out.len().saturating_sub(suffix.len()));
    let mut keep_end = keep;
    while !program.is_char_boundary(keep_end) {
        keep_end -= 1;
    }
    let mut len = 0;
    for byte in program.as_bytes().iter().take(keep_end).chain(suffix) {
        if let Some(slot) = out.get_mut(len) {
            *slot = *byte;
            len += 1;
        }
    }
    len
}

/// What to give a program.
pub struct Spawn<'a> {
    /// File name in the archive.
    pub name: &'a str,
    /// Argument word (RDI).
    pub arg: u64,
    /// CPU to run on.
    pub cpu: u64,
    /// Priority.
    pub priority: u64,
    /// Root-CSpace slots to copy into the program's CSpace, as (child slot, root slot).
    pub grants: &'a [(u64, u64)],
    /// Whether faults go to the capability granted at [`FAULT_SLOT`].
    pub fault_handler: bool,
}

/// The archive, mapped read-only into the root task.
pub struct Files {
    mapping: Mapping,
    len: usize,
}

/// Where the archive is mapped in the root task.
const ARCHIVE_VADDR: u64 = 0x0000_4000_0000_0000;

impl Files {
    /// Maps the boot archive's frames.
    pub fn map(alloc: &mut Alloc) -> Result<Self, SysError> {
        let info = alloc.info();
        let mapping = Mapping::new(info.archive_first, info.archive_frames, ARCHIVE_VADDR, false, alloc)?;
        Ok(Self { mapping, len: info.archive_bytes as usize })
    }

    /// The parsed archive.
    pub fn archive(&self) -> Option<Archive<'_>> {
        Archive::parse(self.mapping.bytes().get(..self.len)?).ok()
    }
}

/// Copies `bytes` into `frame` at `offset` (mapped at a scratch address meanwhile).
pub fn fill_frame(alloc: &mut Alloc, frame: u64, bytes: &[u8], offset: usize) -> Result<(), SysError> {
    let mut scratch = Mapping::new(frame, 1, SCRATCH, true, alloc)?;
    if let Some(dest) = scratch.bytes_mut().get_mut(offset..offset + bytes.len()) {
        dest.copy_from_slice(bytes);
    }
    scratch.unmap()
}

/// A program's thread name in traces: its file name, cut to what the kernel keeps.
fn thread_name(file: &str) -> &str {
    let mut end = file.len().min(ramen_abi::invocation::thread::NAME_MAX);
    while !file.is_char_boundary(end) {
        end -= 1;
    }
    file.get(..end).unwrap_or("")
}

/// Loads and starts a program (its thread named after the file).
pub fn spawn(alloc: &mut Alloc, files: &Files, spec: &Spawn<'_>) -> Result<Child, SysError> {
    let vspace = alloc.make(object::VSPACE, 0)?;
    spawn_in(alloc, files, spec, vspace)
}

/// [`spawn`] into an address space the caller made (in the root CNode's slot
/// `vspace`), for tests that choose where its memory comes from.
pub fn spawn_in(alloc: &mut Alloc, files: &Files, spec: &Spawn<'_>, vspace: u64) -> Result<Child, SysError> {
    let bad = || SysError(ramen_abi::Error::InvalidArgument.code());
    let archive = files.archive().ok_or_else(bad)?;
    let file = archive.find(spec.name).ok_or_else(bad)?;
    let program = Program::parse(file.data()).map_err(|_| bad())?;

    let cnode = alloc.make(object::CNODE, CHILD_RADIX)?;
    let tcb = alloc.make(object::THREAD, 0)?;

    for segment in program.segments() {
        let data = program.file_data(segment).ok_or_else(bad)?;
        let rights = u64::from(segment.flags.writable()) | (u64::from(segment.flags.executable()) << 1);
        let mut page = segment.page_start();
        while page < segment.page_end() {
            let frame = alloc.make(object::FRAME_4K, 0)?;
            let from = page.max(segment.vaddr);
            let to = (page + PAGE).min(segment.vaddr + segment.file_bytes);
            if from < to {
                let bytes =
                    data.get((from - segment.vaddr) as usize..(to - segment.vaddr) as usize).unwrap_or(&[]);
                fill_frame(alloc, frame, bytes, (from - page) as usize)?;
            }
            vm::map_page(vspace, frame, page, rights, alloc)?;
            page += PAGE;
        }
    }
    for i in 0..STACK_PAGES {
        let frame = alloc.make(object::FRAME_4K, 0)?;
        vm::map_page(vspace, frame, STACK_TOP - (i + 1) * PAGE, 1, alloc)?;
    }
    let ipc = alloc.make(object::FRAME_4K, 0)?;
    vm::map_page(vspace, ipc, IPC_BUFFER, 1, alloc)?;

    // The program's CSpace: a guarded copy of its CNode as root, its own thread,
    // CNode, VSpace, the console, and whatever the caller grants.
    let root = alloc.slot()?;
    let guard = object::guard(0, 64 - CHILD_RADIX);
    kobj::mint(slot::CNODE, root, 64, cnode, object::rights::ALL, guard)?;
    let depth = CHILD_RADIX;
    kobj::copy(cnode, slot::THREAD, depth, tcb)?;
    kobj::copy(cnode, slot::CNODE, depth, root)?;
    kobj::copy(cnode, slot::VSPACE, depth, vspace)?;
    kobj::copy(cnode, slot::DEBUG, depth, slot::DEBUG)?;
    for &(child_slot, root_slot) in spec.grants {
        kobj::copy(cnode, child_slot, depth, root_slot)?;
    }
    let fault = if spec.fault_handler { FAULT_SLOT } else { 0 };
    kobj::configure(tcb, root, vspace, fault, IPC_BUFFER)?;
    kobj::set_name(tcb, thread_name(spec.name))?;
    kobj::write_entry(tcb, program.entry(), STACK_TOP, spec.arg)?;
    kobj::set_priority(tcb, spec.priority)?;
    kobj::set_affinity(tcb, spec.cpu)?;
    kobj::resume(tcb)?;
    let mut name = [0u8; ramen_abi::invocation::thread::NAME_MAX];
    let short = thread_name(spec.name);
    name.get_mut(..short.len()).unwrap_or(&mut []).copy_from_slice(short.as_bytes());
    Ok(Child { tcb, vspace, cspace: root, entry: program.entry(), name, name_len: short.len() })
}

/// A further thread's stack and IPC buffer sit this far below the previous thread's.
const THREAD_SPACING: u64 = ramen_rt::msgbuf::THREAD_SPACING;

/// Starts another thread of the program `child` (named `<program>/<index>`) at its
/// entry point with argument `arg`: same address space and CSpace, its own stack and
/// IPC buffer. `index`
/// (1, 2, ...) numbers the program's extra threads and picks where those go.
pub fn spawn_thread(
    alloc: &mut Alloc,
    child: &Child,
    index: u64,
    arg: u64,
    cpu: u64,
    priority: u64,
) -> Result<Child, SysError> {
    let tcb = alloc.make(object::THREAD, 0)?;
    start_thread_in(alloc, child, tcb, index, arg, cpu, priority)
}

/// [`spawn_thread`] with a thread object the caller made (in the root CNode's slot
/// `tcb`), for tests that choose where its memory comes from.
pub fn start_thread_in(
    alloc: &mut Alloc,
    child: &Child,
    tcb: u64,
    index: u64,
    arg: u64,
    cpu: u64,
    priority: u64,
) -> Result<Child, SysError> {
    let offset = index.checked_mul(THREAD_SPACING).ok_or(SysError(ramen_abi::Error::RangeError.code()))?;
    let stack_top = STACK_TOP - offset;
    let ipc_buffer = IPC_BUFFER - offset;
    for i in 0..STACK_PAGES {
        let frame = alloc.make(object::FRAME_4K, 0)?;
        vm::map_page(child.vspace, frame, stack_top - (i + 1) * PAGE, 1, alloc)?;
    }
    let ipc = alloc.make(object::FRAME_4K, 0)?;
    vm::map_page(child.vspace, ipc, ipc_buffer, 1, alloc)?;
    kobj::configure(tcb, child.cspace, child.vspace, 0, ipc_buffer)?;
    kobj::write_entry(tcb, child.entry, stack_top, arg)?;
    kobj::set_priority(tcb, priority)?;
    kobj::set_affinity(tcb, cpu)?;
    let mut name = [0u8; ramen_abi::invocation::thread::NAME_MAX];
    let len = extra_thread_name(child.name(), index, &mut name);
    if let Ok(text) = core::str::from_utf8(name.get(..len).unwrap_or(&[])) {
        kobj::set_name(tcb, text)?;
    }
    kobj::resume(tcb)?;
    Ok(Child { tcb, ..*child })
}
