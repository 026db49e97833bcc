//! In-kernel test cases, run when the command line says `test`.
//!
//! Each case checks real hardware state after bring-up: page-table permissions,
//! CPU protections, per-CPU blocks, interrupts and IPIs on every CPU. The output is
//! one `test <name> ... ok|FAILED` line per case and a final `N passed, M failed`
//! line, unprefixed so scripts can read them; xtask checks both and the exit status.

use core::sync::atomic::Ordering;

use ramen_arch::PHYS_MAP_BASE;
use ramen_arch::apic::TEST_VECTOR;
use ramen_arch::cpu;
use ramen_arch::paging::STACKS_BASE;
use ramen_arch::serial::Console;
use ramen_core::tsc::ns_to_ticks;
use x86_64::structures::paging::PageTableFlags as Flags;

use crate::boot::{FRAMES, KERNEL_SPACE};
use crate::cpus::{self, machine};

type TestResult = Result<(), &'static str>;
type TestCase = (&'static str, fn() -> TestResult);

const TESTS: &[TestCase] = &[
    ("kernel_sections_have_least_privilege", kernel_sections_have_least_privilege),
    ("cpu_protections_are_on", cpu_protections_are_on),
    ("frames_are_distinct_and_aligned", frames_are_distinct_and_aligned),
    ("stack_guard_pages_are_unmapped", stack_guard_pages_are_unmapped),
    ("every_cpu_came_online", every_cpu_came_online),
    ("per_cpu_blocks_match_topology", per_cpu_blocks_match_topology),
    ("breakpoint_is_handled_and_resumes", breakpoint_is_handled_and_resumes),
    ("tsc_is_plausible_and_monotonic", tsc_is_plausible_and_monotonic),
    ("apic_timer_fires", apic_timer_fires),
    ("ipi_reaches_every_cpu", ipi_reaches_every_cpu),
    ("asid_tag_entry_is_unused_by_the_kernel", asid_tag_entry_is_unused_by_the_kernel),
    ("tlb_generation_entry_is_unused_by_the_kernel", tlb_generation_entry_is_unused_by_the_kernel),
    ("per_cpu_data_is_node_local", per_cpu_data_is_node_local),
];

/// Each CPU's kernel data (scheduler, inbox, lookup cache, trace ring) lies in
/// memory of its own NUMA node, when the firmware describes the nodes' memory.
fn per_cpu_data_is_node_local() -> TestResult {
    let m = machine();
    if m.memory_node_count == 0 {
        return Ok(());
    }
    for index in 0..ramen_core::topology::MAX_CPUS as u32 {
        if let Some(cpu) = cpus::cpu(index) {
            let node = cpu.local.node.load(Ordering::Relaxed);
            check(m.node_of_memory(cpu.home) == node, "a CPU's data lies on another node")?;
        }
    }
    Ok(())
}

/// Every VSpace keeps its ASID in top-level entry `asid::TAG_INDEX`, copied from the
/// kernel's half: the kernel must never map anything there.
fn asid_tag_entry_is_unused_by_the_kernel() -> TestResult {
    check(crate::objects::vspace_tag(machine().kernel_root) == 0, "the kernel maps the ASID tag entry")
}

/// Every VSpace keeps its TLB generation in top-level entry `tlb::GENERATION_INDEX`,
/// which the kernel's own tables (whose upper half every VSpace copies) must leave
/// empty.
fn tlb_generation_entry_is_unused_by_the_kernel() -> TestResult {
    let entry = crate::objects::vspace_generation(machine().kernel_root).load(Ordering::Relaxed);
    check(entry == 0, "the kernel maps the TLB generation entry")
}

/// Runs every case; returns whether all passed.
pub fn run_all() -> bool {
    let (mut passed, mut failed) = (0u32, 0u32);
    for (name, case) in TESTS {
        let result = case();
        let mut console = Console::lock();
        match result {
            Ok(()) => {
                passed += 1;
                let _ = ufmt::uwriteln!(console, "test {} ... ok", *name);
            }
            Err(why) => {
                failed += 1;
                let _ = ufmt::uwriteln!(console, "test {} ... FAILED: {}", *name, why);
            }
        }
    }
    let mut console = Console::lock();
    let _ = ufmt::uwriteln!(console, "kernel: {} passed, {} failed", passed, failed);
    failed == 0
}

fn check(condition: bool, why: &'static str) -> TestResult {
    if condition { Ok(()) } else { Err(why) }
}

fn translate(virt: u64) -> Option<(u64, Flags)> {
    KERNEL_SPACE.get()?.lock().translate(virt)
}

fn kernel_sections_have_least_privilege() -> TestResult {
    let image = ramen_arch::paging::image_layout();
    let (_, text) = translate(image.text.start).ok_or("text unmapped")?;
    check(!text.contains(Flags::WRITABLE), "text is writable")?;
    check(!text.contains(Flags::NO_EXECUTE), "text is not executable")?;
    let (_, rodata) = translate(image.rodata.start).ok_or("rodata unmapped")?;
    check(!rodata.contains(Flags::WRITABLE), "rodata is writable")?;
    check(rodata.contains(Flags::NO_EXECUTE), "rodata is executable")?;
    let (_, data) = translate(image.data.start).ok_or("data unmapped")?;
    check(data.contains(Flags::WRITABLE) && data.contains(Flags::NO_EXECUTE), "data is not RW+NX")?;
    let (phys, direct) = translate(PHYS_MAP_BASE + 0x10_0000).ok_or("direct map missing")?;
    check(phys == 0x10_0000, "direct map translates to the wrong frame")?;
    check(direct.contains(Flags::NO_EXECUTE), "direct map is executable")?;
    check(!direct.contains(Flags::USER_ACCESSIBLE), "direct map is user-accessible")?;
    check(translate(0).is_none(), "page zero is mapped")?;
    check(translate(0x20_0000).is_none(), "the low identity map survived boot")
}

fn cpu_protections_are_on() -> TestResult {
    let p = cpu::protections();
    let f = &machine().features;
    check(p.nx && p.write_protect, "NX or WP is off")?;
    check(p.smep == f.smep, "SMEP state does not match the CPU's support")?;
    check(p.smap == f.smap, "SMAP state does not match the CPU's support")
}

fn frames_are_distinct_and_aligned() -> TestResult {
    let mut got = [0u64; 16];
    let mut frames = FRAMES.lock();
    let before = frames.free_bytes();
    for slot in got.iter_mut() {
        *slot = frames.alloc().ok_or("out of frames")?;
    }
    check(before - frames.free_bytes() == 16 * 4096, "free bytes not accounted")?;
    for (i, a) in got.iter().enumerate() {
        check(a % 4096 == 0, "frame not aligned")?;
        check(*a >= 1 << 20, "frame in reserved low memory")?;
        check(!got.iter().skip(i + 1).any(|b| b == a), "frame handed out twice")?;
    }
    // Give them back: they are contiguous or not, `add` merges either way.
    for a in got {
        frames.add(a, 4096).map_err(|_| "cannot return frames")?;
    }
    check(frames.free_bytes() == before, "frames not returned")
}

fn stack_guard_pages_are_unmapped() -> TestResult {
    let me = cpus::this_cpu().local;
    let slot = STACKS_BASE;
    check(translate(slot).is_none(), "guard page below CPU 0's kernel stack is mapped")?;
    check(translate(slot + 4096).is_some(), "CPU 0's kernel stack is unmapped")?;
    check(translate(me.kernel_stack_top - 8).is_some(), "kernel stack top unmapped")?;
    for top in me.ist_tops {
        check(translate(top - 8).is_some(), "IST stack unmapped")?;
    }
    Ok(())
}

fn every_cpu_came_online() -> TestResult {
    let m = machine();
    let listed = m.topology.cpus().len() as u32;
    let failed = cpus::FAILED.load(Ordering::Acquire);
    check(failed == m.phantom_cpus, "a real CPU failed to start, or a phantom one was not reported")?;
    check(cpus::ONLINE.load(Ordering::Acquire) + failed == listed, "a CPU is neither online nor reported")
}

fn per_cpu_blocks_match_topology() -> TestResult {
    check(cpus::this_cpu().local.index == 0, "boot CPU's GS block is not index 0")?;
    for c in machine().topology.cpus().iter().filter(|c| cpus::is_online(c.index)) {
        let cpu = cpus::cpu(c.index).ok_or("CPU table entry missing")?;
        check(cpu.local.index == c.index, "block index differs from topology")?;
        check(cpu.local.apic_id == c.apic_id, "block APIC id differs from topology")?;
        check(cpu.reported_apic_id == c.apic_id, "local APIC reports another id")?;
        check(cpu.local.package.load(Ordering::Relaxed) == c.package, "package differs")?;
        check(cpu.local.node.load(Ordering::Relaxed) == c.node, "node differs")?;
    }
    Ok(())
}

fn breakpoint_is_handled_and_resumes() -> TestResult {
    let me = cpus::this_cpu().local;
    let before = me.breakpoints.load(Ordering::Relaxed);
    ramen_arch::trap::selftest::breakpoint();
    ramen_arch::trap::selftest::breakpoint();
    check(me.breakpoints.load(Ordering::Relaxed) == before + 2, "breakpoints not counted")
}

fn tsc_is_plausible_and_monotonic() -> TestResult {
    let hz = machine().tsc_hz;
    check((10_000_000..=20_000_000_000).contains(&hz), "TSC frequency outside 10 MHz..20 GHz")?;
    let mut last = cpu::rdtsc();
    for _ in 0..1000 {
        let now = cpu::rdtsc();
        check(now >= last, "TSC went backwards")?;
        last = now;
    }
    Ok(())
}

/// Waits (with interrupts enabled, halting) until `done` holds or `ns` pass.
fn wait_until(ns: u64, done: impl Fn() -> bool) -> bool {
    let deadline = ns_to_ticks(ns, machine().tsc_hz);
    let start = cpu::rdtsc();
    while !done() {
        if cpu::rdtsc().wrapping_sub(start) > deadline {
            return false;
        }
        // Re-arm a wake-up so `hlt` cannot sleep past the deadline.
        let now = cpu::rdtsc();
        cpus::this_cpu().lapic.with(|l| l.arm_timer(now + deadline / 8, || 100_000));
        cpu::wait_for_interrupt();
    }
    true
}

fn apic_timer_fires() -> TestResult {
    let me = cpus::this_cpu();
    let before = me.timer_ticks.load(Ordering::Relaxed);
    let fired = wait_until(1_000_000_000, || me.timer_ticks.load(Ordering::Relaxed) > before);
    check(fired, "no timer interrupt within a second")
}

fn ipi_reaches_every_cpu() -> TestResult {
    for c in machine().topology.cpus().iter().skip(1).filter(|c| cpus::is_online(c.index)) {
        let target = cpus::cpu(c.index).ok_or("CPU not online")?;
        let before = target.test_ipis.load(Ordering::Relaxed);
        cpus::this_cpu().lapic.with(|l| l.send_ipi(TEST_VECTOR, c.apic_id));
        let arrived = wait_until(1_000_000_000, || target.test_ipis.load(Ordering::Relaxed) > before);
        check(arrived, "an AP did not take the test IPI")?;
    }
    Ok(())
}
