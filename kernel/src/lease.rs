//! Leases: bulk memory a call lends its server, pinned in place for the call.
//!
//! The caller names up to `MSG_MAX_LEASES` ranges of its own memory in its IPC
//! buffer (`ramen_abi::lease`). Before anything changes, every page of every range is
//! checked: mapped, user, writable where the lease is read-write, not pinned too
//! often (`check`). When the call reaches a receiver (`grant`), each page is pinned
//! in the caller's page tables (a count in the entry's software bits: a pinned page
//! cannot be unmapped, and the capability of a mapped frame that is pinned cannot be
//! deleted or revoked) and mapped at the next free place of the receiver's lease
//! window, read-only or read-write; the receiver finds where in its IPC buffer. The
//! window entries are pinned too, so the window's page tables cannot be deleted
//! under them. No byte is copied.
//!
//! The reply (or the end of the call any other way: a caller or server deleted, a
//! reply abandoned) releases them (`release`): the window entries are cleared, every
//! CPU that may cache them flushes (`tlb::shoot_down`: only CPUs that have the
//! receiver's space loaded), and only then are the caller's pages unpinned.
//!
//! The caller's TCB remembers what it lent ([`Held`]); a thread has at most one call
//! in flight, so that is enough. All of this runs under `CAP_LOCK`.

use ramen_abi::ipc_buffer::LEASES;
use ramen_abi::lease::{LEN_MASK, MAX_BYTES, WRITABLE};
use ramen_abi::syscall::USER_TOP;
use ramen_abi::{Error, MSG_MAX_LEASES, MessageInfo};
use ramen_arch::paging::{PinError, user_flags};
use ramen_core::runqueue::ThreadRef;

use crate::objects::{IpcBufferPage, address_space, tcb};

const PAGE: u64 = 4096;

/// One lease of a call in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    /// First page in the caller's address space.
    start: u64,
    /// Pages.
    pages: u64,
    /// Where the receiver sees the first page.
    window: u64,
}

/// The leases a caller has lent, and to which address space.
#[derive(Clone, Copy, Debug, Default)]
pub struct Held {
    server_vspace: u64,
    count: usize,
    list: [Lease; MSG_MAX_LEASES],
}

impl Held {
    /// Nothing lent.
    pub const fn none() -> Self {
        Self { server_vspace: 0, count: 0, list: [Lease { start: 0, pages: 0, window: 0 }; MSG_MAX_LEASES] }
    }

    /// True while leases are lent.
    pub fn any(&self) -> bool {
        self.count > 0
    }
}

/// A lease as the caller described it, checked for shape.
struct Request {
    start: u64,
    offset: u64,
    len: u64,
    pages: u64,
    writable: bool,
}

fn request(buffer: IpcBufferPage, index: usize) -> Result<Request, Error> {
    let addr = buffer.read(LEASES + 2 * index);
    let word = buffer.read(LEASES + 2 * index + 1);
    if word & !(WRITABLE | LEN_MASK) != 0 {
        return Err(Error::InvalidArgument);
    }
    let len = word & LEN_MASK;
    if len == 0 {
        return Err(Error::InvalidArgument);
    }
    if len > MAX_BYTES {
        return Err(Error::RangeError);
    }
    // The whole range must be user space: a lease over kernel memory is refused.
    let end = addr.checked_add(len).filter(|end| *end <= USER_TOP).ok_or(Error::InvalidArgument)?;
    let start = addr & !(PAGE - 1);
    Ok(Request {
        start,
        offset: addr - start,
        len,
        pages: (end - start).div_ceil(PAGE),
        writable: word & WRITABLE != 0,
    })
}

fn pin_error(error: PinError) -> Error {
    match error {
        PinError::NotMapped => Error::InvalidArgument,
        PinError::ReadOnly => Error::InsufficientRights,
        PinError::TooManyPins => Error::Busy,
    }
}

/// Checks the leases of the message in `thread`'s registers; changes nothing.
/// Errors: `InvalidArgument` (no IPC buffer, reserved bits, an empty lease, a page
/// not mapped for user space, kernel memory), `RangeError` (too long),
/// `InsufficientRights` (read-write over read-only memory), `Busy` (a page pinned by
/// too many calls).
pub fn check(thread: ThreadRef, info: MessageInfo) -> Result<(), Error> {
    if info.leases() == 0 {
        return Ok(());
    }
    let buffer = IpcBufferPage::of(thread).ok_or(Error::InvalidArgument)?;
    let space = address_space(tcb(thread).vspace);
    for index in 0..info.leases() {
        let lease = request(buffer, index)?;
        for page in 0..lease.pages {
            space.can_pin(lease.start + page * PAGE, lease.writable).map_err(pin_error)?;
        }
    }
    Ok(())
}

/// Lends `count` leases of `caller` (described in its buffer `src`) to `receiver`:
/// pins and maps them into the receiver's window and describes them in its buffer
/// `dst`. Leases that do not fit the window (or whose pages changed since the check)
/// are not lent, nor any after them. Returns how many were.
pub fn grant(
    caller: ThreadRef,
    src: IpcBufferPage,
    receiver: ThreadRef,
    dst: IpcBufferPage,
    count: usize,
) -> usize {
    // A reply the receiver still owes someone else is abandoned by this call (as
    // `ipc::set_caller` records next): that call's leases leave the window first.
    if let Some(old) = tcb(receiver).caller.filter(|old| *old != caller) {
        release(old);
    }
    let (window, window_pages) = (tcb(receiver).lease_window, tcb(receiver).lease_window_pages);
    let server_vspace = tcb(receiver).vspace;
    if window == 0 || server_vspace == 0 || tcb(caller).leases.any() {
        return 0;
    }
    let mut held = Held { server_vspace, ..Held::none() };
    let mut used = 0;
    for index in 0..count.min(MSG_MAX_LEASES) {
        let Ok(lease) = request(src, index) else {
            break;
        };
        if used + lease.pages > window_pages {
            break;
        }
        let base = window + used * PAGE;
        if !map_lease(caller, server_vspace, &lease, base) {
            break;
        }
        held.list[index] = Lease { start: lease.start, pages: lease.pages, window: base };
        held.count += 1;
        dst.write(LEASES + 2 * index, base + lease.offset);
        dst.write(LEASES + 2 * index + 1, lease.len | if lease.writable { WRITABLE } else { 0 });
        used += lease.pages;
    }
    tcb(caller).leases = held;
    held.count
}

/// Pins and maps one lease, page by page (one table walk each side); on any
/// failure undoes its own pages.
fn map_lease(caller: ThreadRef, server_vspace: u64, lease: &Request, base: u64) -> bool {
    let mut caller_space = address_space(tcb(caller).vspace);
    let mut server_space = address_space(server_vspace);
    let flags = user_flags(lease.writable, false);
    for page in 0..lease.pages {
        let (from, to) = (lease.start + page * PAGE, base + page * PAGE);
        let Ok(phys) = caller_space.pin(from, lease.start, lease.writable) else {
            unmap_pages(caller, server_vspace, &Lease { start: lease.start, pages: page, window: base });
            return false;
        };
        // No frame source: a missing page table fails the lease, never allocates.
        if server_space.map_pinned(to, phys, flags).is_err() {
            caller_space.unpin(from, lease.start);
            unmap_pages(caller, server_vspace, &Lease { start: lease.start, pages: page, window: base });
            return false;
        }
    }
    true
}

/// Clears the window entries of `lease`, flushes them everywhere, unpins the
/// caller's pages.
fn unmap_pages(caller: ThreadRef, server_vspace: u64, lease: &Lease) {
    let mut server_space = address_space(server_vspace);
    let pages = (0..lease.pages).map(|page| lease.window + page * PAGE);
    for page in pages.clone() {
        server_space.unmap_pinned(page);
    }
    crate::tlb::shoot_down(server_vspace, pages);
    let mut caller_space = address_space(tcb(caller).vspace);
    for page in 0..lease.pages {
        caller_space.unpin(lease.start + page * PAGE, lease.start);
    }
}

/// Ends every lease `caller` has lent (reply, or the call ended otherwise).
pub fn release(caller: ThreadRef) {
    let held = tcb(caller).leases;
    if !held.any() {
        return;
    }
    tcb(caller).leases = Held::none();
    for lease in held.list.iter().take(held.count) {
        unmap_pages(caller, held.server_vspace, lease);
    }
}

/// Sets `thread`'s lease window (`invocation::thread::SET_LEASE_WINDOW`).
pub fn set_window(thread: ThreadRef, start: u64, bytes: u64) -> Result<(), Error> {
    if start == 0 && bytes == 0 {
        tcb(thread).lease_window = 0;
        tcb(thread).lease_window_pages = 0;
        return Ok(());
    }
    if !start.is_multiple_of(PAGE) || !bytes.is_multiple_of(PAGE) {
        return Err(Error::AlignmentError);
    }
    if bytes == 0 || bytes > ramen_abi::lease::MAX_WINDOW_BYTES {
        return Err(Error::RangeError);
    }
    let end = start.checked_add(bytes).ok_or(Error::InvalidArgument)?;
    if start < ramen_abi::syscall::USER_BASE || end > USER_TOP {
        return Err(Error::InvalidArgument);
    }
    tcb(thread).lease_window = start;
    tcb(thread).lease_window_pages = bytes / PAGE;
    Ok(())
}
