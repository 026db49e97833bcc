//! TLB shootdown for user mappings the kernel removes (unmap and table deletion
//! invocations, a lease's window pages at the end of a call), and PCIDs.
//!
//! Without PCIDs, every CR3 write drops a CPU's non-global TLB entries, and user
//! pages are never global: a CPU can hold a stale entry of an address space only
//! while that space is the one it has loaded. Each CPU publishes the space it has
//! loaded (`CpuLocal::loaded_vspace`, written before its CR3 write, which
//! serialises);
//! the unmapping CPU clears the entries, fences, and then asks exactly the CPUs that
//! show that space to flush, and waits for each to confirm. A CPU confirms on its
//! next kernel entry (the request comes with the wake-up IPI) or while it spins for
//! `CAP_LOCK`, so two CPUs never wait on each other with interrupts off.
//!
//! With PCIDs (where the CPU has them, unless the command line says `nopcid`) a
//! space's entries outlive a switch away from it, under the PCID this CPU gave it
//! (`ramen_core::pcid`). So every space also has a TLB generation (a kernel-only
//! entry of its top-level table, [`GENERATION_INDEX`]): a number from one global
//! counter, new when the space is made and again each time a translation in it is
//! removed, set *before* the shooter reads which CPUs have the space loaded. A
//! switch publishes the space it loads with a full barrier (`xchg`) *before* it reads
//! the generation, and keeps the PCID's entries (CR3 bit 63) only if that PCID last
//! held this space at this generation. So either the shooter sees the switching CPU
//! and interrupts it, or that CPU sees the new generation and flushes; a CPU that
//! merely cached the space flushes when it next loads it ([`switch_space`]).
//!
//! [`sync_all`] reuses the request for a second purpose: tracing waits with it until
//! every CPU has passed a point where it answers requests (`trace::quiesce`).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};

use ramen_arch::apic::WAKE_VECTOR;

use crate::cpus::{self, this_cpu};

/// Most pages flushed one by one before a whole-TLB flush is cheaper.
const INVLPG_LIMIT: usize = 32;

/// The top-level table entry that holds a VSpace's TLB generation (kernel half, not
/// present to the MMU, mapped by nothing: checked by a self-test).
pub const GENERATION_INDEX: usize = 507;

/// The last TLB generation handed out (every generation is used once).
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// PCIDs are on, on every CPU (set by the boot CPU before any other CPU starts).
static PCID: AtomicBool = AtomicBool::new(false);

/// A TLB generation never used before.
pub fn new_generation() -> u64 {
    GENERATION.fetch_add(1, Ordering::AcqRel) + 1
}

/// Whether switches use PCIDs.
#[inline(always)]
pub fn pcid_on() -> bool {
    PCID.load(Ordering::Relaxed)
}

/// Decides, on the boot CPU before the others start, whether every CPU uses PCIDs;
/// each CPU then turns them on in its own CR4 ([`enable_here`]).
pub fn set_pcid(on: bool) {
    PCID.store(on, Ordering::Release);
}

/// Turns PCIDs on for this CPU if the boot CPU chose them.
pub fn enable_here() {
    if PCID.load(Ordering::Acquire) {
        ramen_arch::paging::enable_pcid();
    }
}

/// Loads the space `vspace` on this CPU with PCIDs: publishes it, reads its
/// generation, and writes CR3 with this CPU's PCID for it, keeping the PCID's
/// entries when nothing was removed from the space since they were filled. (0: the
/// kernel's own tables, PCID 0.) Out of line: the CR3 write dwarfs a call, and the
/// switch without PCIDs stays short.
#[inline(never)]
pub fn switch_space(pcids: &mut ramen_core::pcid::PcidSlots, vspace: u64) {
    if vspace == 0 {
        loading(0);
        crate::objects::activate_vspace(0);
        return;
    }
    ramen_arch::percpu::publish_loaded_vspace(vspace);
    let generation = crate::objects::vspace_generation(vspace).load(Ordering::SeqCst);
    let cr3 = pcids.cr3(vspace, generation);
    crate::objects::activate_cr3(cr3);
}

/// Does a flush another CPU asked of this one, if any.
#[inline]
pub fn service() {
    let cpu = this_cpu();
    // A plain load first: the swap (a locked instruction) only when asked.
    if cpu.tlb_flush_requested.load(Ordering::Relaxed)
        && cpu.tlb_flush_requested.swap(false, Ordering::AcqRel)
    {
        let leave = cpu.leave_vspace.swap(0, Ordering::AcqRel);
        if leave != 0 && ramen_arch::percpu::loaded_vspace_fast() == leave {
            unload();
        } else {
            ramen_arch::paging::flush_all_local();
        }
        cpu.tlb_flushes.fetch_add(1, Ordering::Release);
    }
}

/// Records that this CPU is about to load `vspace` (before the CR3 write).
#[inline(always)]
pub fn loading(vspace: u64) {
    ramen_arch::percpu::set_loaded_vspace(vspace);
}

/// Makes every CPU forget the translations of `pages` (page addresses) in the
/// address space `vspace`, whose entries the caller has just cleared. Returns once
/// no CPU can use them any more.
pub fn shoot_down(vspace: u64, pages: impl Iterator<Item = u64> + Clone) {
    shoot_down_inner(Some(vspace), pages, false);
}

/// [`shoot_down`] for a change that may affect any address of the space (a page
/// table unlinked): every CPU that has it loaded flushes everything.
pub fn shoot_down_all(vspace: u64) {
    shoot_down_inner(Some(vspace), core::iter::empty(), true);
}

/// Makes sure no CPU has the address space `vspace` loaded any more, before its
/// tables are freed: a CPU keeps the last space it ran loaded while it idles (or
/// runs the kernel), and would otherwise walk freed memory (memory that may become a
/// frame user space writes). Every CPU showing `vspace` switches to the kernel's
/// tables, this one at once, the others when they answer the request, which this
/// waits for. Threads configured in a space keep it alive (`Store::may_delete`), so
/// no CPU can be about to load it.
pub fn leave(vspace: u64) {
    if vspace == 0 {
        return;
    }
    if ramen_arch::percpu::loaded_vspace_fast() == vspace {
        unload();
    }
    // Ask, then request the flush that carries the ask (`service` reads it after
    // taking a request). A CPU that answered an older request just before the ask
    // may be counted as done while still showing the space: look again until none
    // does.
    loop {
        fence(Ordering::SeqCst);
        let mut asked = false;
        let bound = cpus::INDEX_BOUND.load(Ordering::Acquire);
        for index in 0..bound {
            if let Some(cpu) = cpus::cpu(index)
                && cpu.local.loaded_vspace.load(Ordering::SeqCst) == vspace
            {
                cpu.leave_vspace.store(vspace, Ordering::Release);
                asked = true;
            }
        }
        if !asked {
            return;
        }
        shoot_down_all(vspace);
    }
}

/// Switches this CPU to the kernel's tables (which every space shares the upper half
/// of), recording that it has no user space loaded.
fn unload() {
    loading(0);
    crate::objects::activate_vspace(0);
}

/// Makes every other CPU answer a flush request and waits for all of them: when it
/// returns, each has been, since the call began, at a point where it answers
/// requests (a kernel entry, or a spin for a lock or the inbox). Tracing uses it to
/// know that no CPU is still inside a record.
pub fn sync_all() {
    shoot_down_inner(None, core::iter::empty(), true);
}

/// Flushes `pages` (or everything, `all`) of `vspace` on the CPUs that have it
/// loaded; `None`: every other CPU flushes everything.
fn shoot_down_inner(vspace: Option<u64>, pages: impl Iterator<Item = u64> + Clone, all: bool) {
    // A new generation first: a CPU that merely cached the space flushes it when it
    // loads it next. Only with PCIDs (nothing reads it otherwise, and the counter is
    // a line every CPU would write: a lease's release shoots down on every call).
    if let Some(v) = vspace
        && pcid_on()
    {
        crate::objects::vspace_generation(v).store(new_generation(), Ordering::SeqCst);
        // The host tests' TLB model starts the shootdown here.
        #[cfg(test)]
        ramen_arch::hosted::record_tlb(ramen_arch::hosted::TlbEvent::Removed(v));
    }
    // The cleared entries and the generation must be visible before we read who has
    // the space loaded.
    fence(Ordering::SeqCst);
    let here = ramen_arch::percpu::index_fast();
    if vspace.is_some_and(|v| this_cpu().local.loaded_vspace.load(Ordering::Relaxed) == v) {
        if all || pages.clone().count() > INVLPG_LIMIT {
            ramen_arch::paging::flush_all_local();
        } else {
            pages.for_each(ramen_arch::paging::flush_local);
        }
    }
    let mut waiting = [None; ramen_core::topology::MAX_CPUS];
    let bound = cpus::INDEX_BOUND.load(Ordering::Acquire) as usize;
    for (index, slot) in waiting.iter_mut().enumerate().take(bound) {
        let index = index as u32;
        let Some(cpu) = cpus::cpu(index).filter(|_| index != here) else {
            continue;
        };
        if vspace.is_some_and(|v| cpu.local.loaded_vspace.load(Ordering::SeqCst) != v) {
            continue;
        }
        // Any flush that completes from now on is after the entries were cleared.
        let done = cpu.tlb_flushes.load(Ordering::Acquire);
        cpu.tlb_flush_requested.store(true, Ordering::Release);
        let apic_id = cpu.local.apic_id;
        this_cpu().lapic.with(|l| l.send_ipi(WAKE_VECTOR, apic_id));
        *slot = Some((cpu, done));
    }
    for (cpu, done) in waiting.iter().flatten() {
        while cpu.tlb_flushes.load(Ordering::Acquire) == *done {
            service();
            core::hint::spin_loop();
        }
    }
    #[cfg(test)]
    if let Some(v) = vspace {
        ramen_arch::hosted::record_tlb(ramen_arch::hosted::TlbEvent::Done(v));
    }
}
