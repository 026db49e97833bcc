//! Bring-up: from the PVH entry to every CPU online.
//!
//! Order matters and is documented in `docs/boot.md`: protections, frames, kernel
//! page tables (the boot tables only map the first GiB), the boot CPU's per-CPU block
//! and IDT (from here on a fault is reported, not a triple fault), TSC, firmware
//! tables and topology, local APIC, then each AP in turn.

use core::sync::atomic::{AtomicU64, Ordering};

use ramen_arch::acpi::{self, Firmware};
use ramen_arch::apic::{self, Lapic};
use ramen_arch::cpu::{self, Features};
use ramen_arch::exit::{ExitCode, exit_qemu};
use ramen_arch::paging::{EARLY_WINDOW, KernelSpace, phys_to_virt};
use ramen_arch::percpu::{self, CPU_LOCAL_BYTES, CpuIdentity, CpuLocal};
use ramen_arch::pvh::{BootParams, StartInfoError};
use ramen_arch::smp::{ApStarter, StartTiming};
use ramen_arch::trap::fatal_early;
use ramen_core::cmdline::{Cmdline, InjectedFault};
use ramen_core::memory::{FRAME_BYTES, FrameAllocator};
use ramen_core::topology::{CpuTopo, MAX_CPUS, Slit, Srat, Topology};
use ramen_core::tsc::{self, TscSource};
use spin::{Mutex, Once};

use crate::cpus::{self, MACHINE, MAX_MEMORY_NODES, Machine};
use crate::kprintln;

/// Physical memory below this is left to firmware and the AP trampoline.
const LOW_MEMORY_BYTES: u64 = 1 << 20;
/// Ranges of RAM and firmware memory the direct map covers, at most.
const MAX_DIRECT_RANGES: usize = 64;
/// 4 GiB: CR3 for the AP trampoline must be below it.
const BELOW_4G: u64 = 1 << 32;

/// Boot parameters, kept for the life of the kernel (the command line borrows them).
static BOOT: Once<BootParams> = Once::new();
/// Free physical memory.
pub static FRAMES: Mutex<FrameAllocator> = Mutex::new(FrameAllocator::new());
/// The kernel address space.
pub static KERNEL_SPACE: Once<Mutex<KernelSpace>> = Once::new();

/// What an AP needs from the boot CPU to come up: its block and identity.
#[derive(Clone, Copy)]
struct ApPlan {
    block: u64,
    identity: CpuIdentity,
}

static AP_PLAN: Mutex<Option<ApPlan>> = Mutex::new(None);

/// Takes a frame for early page tables (inside the boot window).
fn early_frame() -> Option<u64> {
    FRAMES.lock().alloc_below(EARLY_WINDOW)
}

fn any_frame() -> Option<u64> {
    FRAMES.lock().alloc()
}

fn start_info_error(e: StartInfoError) -> &'static str {
    match e {
        StartInfoError::BadMagic(_) => "start-info magic is wrong: not booted through PVH",
        StartInfoError::OutOfReach(_) => "start-info block or its tables lie above 1 GiB",
        StartInfoError::NoMemoryMap => "start-info version 0 carries no memory map",
    }
}

/// The boot CPU's path from PVH entry to all CPUs online, then the requested work.
pub fn bsp_main(boot: Result<BootParams, StartInfoError>) -> ! {
    let params = match boot {
        Ok(p) => BOOT.call_once(|| p),
        Err(e) => fatal_early(start_info_error(e)),
    };
    kprintln!("RamenOS {} booting; command line \"{}\"", env!("CARGO_PKG_VERSION"), params.cmdline());
    let cmdline = Cmdline::parse(params.cmdline());
    for word in cmdline.unknown() {
        kprintln!("warning: unknown command-line word \"{}\" ignored", *word);
    }
    if let Some(polls) = cmdline.idle_poll {
        crate::sched::IDLE_POLL.store(polls, core::sync::atomic::Ordering::Relaxed);
    }

    let features = Features::detect();
    if !features.nx {
        fatal_early("this CPU has no NX bit; RamenOS maps all data no-execute and needs it");
    }
    cpu::enable_protections(&features);

    init_frames(params);
    let space = init_kernel_space(params, &features);
    let kernel_root = space.root();
    KERNEL_SPACE.call_once(|| Mutex::new(space));

    // The boot CPU's block. Package and node are filled in from the firmware tables.
    let bsp_apic_id = cpu::apic_id_from_cpuid();
    let local = install_cpu(CpuIdentity { index: 0, apic_id: bsp_apic_id, ..CpuIdentity::default() });
    ramen_arch::trap::load_idt();
    ramen_arch::trap::set_interrupt_handler(crate::interrupts::handle);
    // Decided once, before any other CPU starts; each turns PCIDs on itself
    // (`enable_user_mode`), and the system-call entry is the build for it.
    crate::tlb::set_pcid(features.pcid && !cmdline.nopcid);
    let syscall = match crate::tlb::pcid_on() {
        true => crate::syscall::handle_syscall::<false, true>,
        false => crate::syscall::handle_syscall::<false, false>,
    };
    ramen_arch::user::set_handlers(syscall, crate::syscall::handle_user_trap);
    apic::disable_legacy_pic();
    enable_user_mode(&features);
    let p = cpu::protections();
    kprintln!(
        "protections: nx {} wp {} smep {} smap {} (pcid available {}, in use {})",
        p.nx,
        p.write_protect,
        p.smep,
        p.smap,
        features.pcid,
        crate::tlb::pcid_on()
    );

    let tsc_hz = measure_tsc(&features);
    let (topology, lapic_phys, memory_nodes, memory_node_count) =
        read_topology(params, bsp_apic_id, cmdline.phantom_cpu);
    if let Some(me) = topology.cpus().first() {
        local.package.store(me.package, Ordering::Relaxed);
        local.node.store(me.node, Ordering::Relaxed);
    }

    let xapic_virt = if features.x2apic {
        0
    } else {
        let mut frames = any_frame;
        match KERNEL_SPACE.get().map(|s| s.lock().map_mmio(lapic_phys, apic::XAPIC_MMIO_BYTES, &mut frames)) {
            Some(Ok(virt)) => virt,
            _ => fatal_early("cannot map the local APIC registers"),
        }
    };
    let phantom_cpus = u32::from(cmdline.phantom_cpu.is_some());
    MACHINE.call_once(|| Machine {
        features,
        topology,
        tsc_hz,
        xapic_virt,
        kernel_root,
        phantom_cpus,
        memory_nodes,
        memory_node_count,
    });
    let lapic = init_lapic();
    kprintln!(
        "local APIC id {}: {} mode, timer {}",
        lapic.id(),
        if lapic.mode().x2apic { "x2APIC" } else { "xAPIC" },
        if lapic.mode().tsc_deadline { "TSC-deadline" } else { "one-shot" }
    );
    cpus::register(local, lapic);

    start_aps();
    let m = cpus::machine();
    let summary = m.topology.summary(|c: &CpuTopo| cpus::is_online(c.index));
    {
        // The one line scripts read: exactly this form, no CPU prefix.
        let mut console = ramen_arch::serial::Console::lock();
        let _ = ufmt::uwriteln!(
            console,
            "cpus online: {} sockets: {} nodes: {}",
            summary.cpus,
            summary.sockets,
            summary.nodes
        );
    }

    if let Some(fault) = cmdline.fault {
        kprintln!("injecting a kernel fault as asked by the command line");
        match fault {
            InjectedFault::PageFault => ramen_arch::trap::selftest::page_fault(),
            InjectedFault::InvalidOpcode => ramen_arch::trap::selftest::invalid_opcode(),
            InjectedFault::GeneralProtection => ramen_arch::trap::selftest::general_protection(),
            InjectedFault::Panic => panic!("deliberate panic requested on the command line"),
            InjectedFault::IndexOutOfBounds => {
                let table = [1u8, 2, 3];
                let index = core::hint::black_box(params.cmdline_len + table.len());
                let value = table[index];
                kprintln!("unreachable: read {}", value);
            }
        }
    }
    if cmdline.test && !crate::selftest::run_all() {
        exit_qemu(ExitCode::Failure);
    }
    if params.modules().is_empty() {
        kprintln!("boot complete; no boot archive (-initrd), so no user space: shutting down");
        exit_qemu(ExitCode::Success);
    }
    match crate::roottask::create(params) {
        Ok(_) => crate::sched::resume(),
        Err(why) => {
            kprintln!("FATAL: cannot start the root task: {}", why);
            exit_qemu(ExitCode::Failure)
        }
    }
}

/// Per-CPU set-up for running user code: `SYSCALL`, the FPU, and PCIDs if in use.
fn enable_user_mode(features: &Features) {
    ramen_arch::user::init_cpu();
    crate::tlb::enable_here();
    if let Err(ramen_arch::fpu::FpuError::AreaTooLarge(bytes)) = ramen_arch::fpu::init(features) {
        kprintln!("FATAL: this CPU's XSAVE area needs {} bytes, more than a TCB holds", bytes);
        exit_qemu(ExitCode::Failure);
    }
}

/// Builds the free-frame set from the memory map, minus low memory, the kernel image,
/// the start-info block and boot modules.
fn init_frames(params: &BootParams) {
    let mut frames = FRAMES.lock();
    let mut ram = 0u64;
    for entry in params.memmap() {
        if entry.kind == 1 {
            ram = ram.saturating_add(entry.len);
            if frames.add(entry.addr, entry.len).is_err() {
                kprintln!("warning: memory map too fragmented; some RAM left unused");
            }
        }
    }
    let image = ramen_arch::paging::image_layout();
    let reservations = [
        (0, LOW_MEMORY_BYTES),
        (image.phys_start, image.phys_end - image.phys_start),
        (params.start_info, FRAME_BYTES),
    ];
    let modules = params.modules().iter().map(|m| (m.addr, m.len));
    for (start, len) in reservations.into_iter().chain(modules) {
        if frames.reserve(start, len).is_err() {
            fatal_early("memory map too fragmented to reserve the kernel image");
        }
    }
    if params.memmap_dropped > 0 {
        kprintln!(
            "warning: {} memory-map entries beyond the first {} ignored",
            params.memmap_dropped,
            params.memmap_len
        );
    }
    kprintln!(
        "memory: {} MiB RAM, {} MiB free in {} ranges",
        ram >> 20,
        frames.free_bytes() >> 20,
        frames.free_ranges().len()
    );
}

fn init_kernel_space(params: &BootParams, features: &Features) -> KernelSpace {
    // The direct map covers RAM and ACPI memory (types 1, 3, 4); arch adds the low
    // 4 GiB, where firmware tables and device registers live.
    let mut direct = [(0u64, 0u64); MAX_DIRECT_RANGES];
    let mut count = 0;
    for entry in params.memmap().iter().filter(|e| matches!(e.kind, 1 | 3 | 4)) {
        if let Some(slot) = direct.get_mut(count) {
            *slot = (entry.addr, entry.addr.saturating_add(entry.len));
            count += 1;
        }
    }
    let mut frames = early_frame;
    match KernelSpace::build_and_switch(direct.get(..count).unwrap_or(&[]), features.huge_pages, &mut frames)
    {
        Ok(space) => space,
        Err(_) => fatal_early("cannot build the kernel page tables"),
    }
}

/// Maps stacks for a CPU and creates its per-CPU block, then installs it if it is
/// the running CPU (index 0), or records the plan for the AP.
fn prepare_cpu(identity: CpuIdentity) -> Result<(u64, CpuIdentity), &'static str> {
    let space = KERNEL_SPACE.get().ok_or("kernel space missing")?;
    let mut frames = any_frame;
    let (kernel_top, ist) =
        space.lock().map_cpu_stacks(identity.index, &mut frames).map_err(|_| "cannot map stacks")?;
    let pages = (CPU_LOCAL_BYTES as u64).div_ceil(FRAME_BYTES);
    let block_phys = FRAMES
        .lock()
        .alloc_contiguous(pages, FRAME_BYTES, u64::MAX)
        .ok_or("out of memory for a per-CPU block")?;
    Ok((phys_to_virt(block_phys), CpuIdentity { kernel_stack_top: kernel_top, ist_tops: ist, ..identity }))
}

fn install_cpu(identity: CpuIdentity) -> &'static CpuLocal {
    let (block, identity) = match prepare_cpu(identity) {
        Ok(plan) => plan,
        Err(e) => fatal_early(e),
    };
    install_block(block, identity)
}

#[allow(unsafe_code)]
fn install_block(block: u64, identity: CpuIdentity) -> &'static CpuLocal {
    // SAFETY: `block` is fresh memory from the frame allocator, page-aligned, large
    // enough for a CpuLocal, used for nothing else, and this runs once on the CPU
    // that owns it.
    unsafe { percpu::install(block, identity) }
}

fn measure_tsc(features: &Features) -> u64 {
    let leaves = ramen_arch::tsc::cpuid_tsc();
    let (hz, source) =
        if let Some(hz) = tsc::from_leaf_15(leaves.denominator, leaves.numerator, leaves.crystal_hz) {
            (hz, TscSource::CpuidCrystal)
        } else if let Some(hz) = tsc::from_leaf_16(leaves.base_mhz) {
            (hz, TscSource::CpuidBase)
        } else {
            let (tsc_ticks, pit_ticks) = ramen_arch::tsc::measure_against_pit();
            match tsc::from_pit(tsc_ticks, pit_ticks) {
                Some(hz) => (hz, TscSource::PitCalibration),
                None => fatal_early("TSC calibration against the PIT failed"),
            }
        };
    let how = match source {
        TscSource::CpuidCrystal => "CPUID leaf 0x15",
        TscSource::CpuidBase => "CPUID leaf 0x16",
        TscSource::PitCalibration => "PIT calibration",
    };
    kprintln!("tsc: {} kHz from {}, invariant {}", hz / 1000, how, features.invariant_tsc);
    hz
}

/// Reads the MADT, SRAT and SLIT; falls back to a single-CPU, single-node machine
/// with a clear message when the tables are missing or malformed.
type MemoryNodes = [(u64, u64, u32); MAX_MEMORY_NODES];

fn read_topology(
    params: &BootParams,
    bsp_apic_id: u32,
    phantom: Option<u32>,
) -> (Topology, u64, MemoryNodes, usize) {
    let shift = cpu::package_shift();
    let mut memory_nodes = [(0u64, 0u64, 0u32); MAX_MEMORY_NODES];
    let single = |why: &str| {
        kprintln!("ACPI: {}; booting on the boot CPU only", why);
        (Topology::build(&[bsp_apic_id], bsp_apic_id, shift, None), apic::xapic_phys(), memory_nodes, 0)
    };
    let fw: Firmware = match acpi::discover(params.rsdp) {
        Ok(fw) => fw,
        Err(e) => return single(e.describe()),
    };
    if !fw.apic_ids().contains(&bsp_apic_id) {
        return single("the MADT does not list the boot CPU");
    }
    let srat = match fw.srat.map(Srat::parse) {
        Some(Ok(srat)) => Some(srat),
        Some(Err(e)) => {
            kprintln!("ACPI: SRAT unusable ({}); treating the machine as one NUMA node", e.describe());
            None
        }
        None => None,
    };
    let mut ids = [0u32; MAX_CPUS];
    let mut count = 0;
    for id in fw.apic_ids().iter().copied().chain(phantom) {
        if let Some(slot) = ids.get_mut(count) {
            *slot = id;
            count += 1;
        }
    }
    if let Some(id) = phantom {
        kprintln!("test: pretending the firmware lists a CPU with APIC id {}", id);
    }
    let topology = Topology::build(ids.get(..count).unwrap_or(&[]), bsp_apic_id, shift, srat.as_ref());
    kprintln!(
        "ACPI: MADT lists {} CPUs ({} disabled), SRAT {}, {} NUMA nodes",
        fw.cpu_count,
        fw.disabled_cpus,
        if srat.is_some() { "present" } else { "absent" },
        topology.node_count()
    );
    if let Some(bytes) = fw.slit {
        match Slit::parse(bytes) {
            Ok(slit) => {
                for from in 0..slit.localities() {
                    for to in 0..slit.localities() {
                        let d = slit.distance(from, to).unwrap_or(0);
                        kprintln!("ACPI: SLIT distance {} -> {} = {}", from, to, d);
                    }
                }
            }
            Err(e) => kprintln!("ACPI: SLIT unusable ({}); distances unknown", e.describe()),
        }
    }
    for c in topology.cpus() {
        kprintln!("cpu {}: apic id {} package {} node {}", c.index, c.apic_id, c.package, c.node);
    }
    let mut count = 0;
    if let Some(srat) = srat.as_ref() {
        for (slot, m) in memory_nodes.iter_mut().zip(srat.memory()) {
            let node = topology.domains().iter().position(|d| *d == m.domain).unwrap_or(0) as u32;
            *slot = (m.base, m.len, node);
            count += 1;
        }
    }
    (topology, fw.lapic_phys, memory_nodes, count)
}

fn init_lapic() -> Lapic {
    let m = cpus::machine();
    match Lapic::init(m.xapic_virt, &m.features) {
        Ok(lapic) => lapic,
        Err(e) => fatal_early(e),
    }
}

/// Starts every AP the topology lists, one at a time. A CPU that does not come up
/// is reported by APIC id and the rest carry on.
fn start_aps() {
    let m = cpus::machine();
    if m.topology.cpus().len() <= 1 {
        return;
    }
    let mut frames = || FRAMES.lock().alloc_below(BELOW_4G);
    let mut starter = match ApStarter::prepare(m.kernel_root, &mut frames) {
        Ok(s) => s,
        Err(_) => {
            kprintln!("SMP: cannot prepare the AP trampoline; running on the boot CPU only");
            return;
        }
    };
    let timing = StartTiming {
        after_init: tsc::ns_to_ticks(10_000_000, m.tsc_hz),
        after_sipi: tsc::ns_to_ticks(200_000, m.tsc_hz),
        timeout: tsc::ns_to_ticks(1_000_000_000, m.tsc_hz),
    };
    for c in m.topology.cpus().iter().skip(1) {
        let identity = CpuIdentity {
            index: c.index,
            apic_id: c.apic_id,
            package: c.package,
            node: c.node,
            ..CpuIdentity::default()
        };
        let (block, identity) = match prepare_cpu(identity) {
            Ok(plan) => plan,
            Err(e) => {
                kprintln!("SMP: cpu {} (APIC id {}) not started: {}", c.index, c.apic_id, e);
                cpus::FAILED.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        *AP_PLAN.lock() = Some(ApPlan { block, identity });
        let up = cpus::this_cpu().lapic.with(|lapic| {
            starter.start(lapic, c.apic_id, identity.kernel_stack_top, ap_main, u64::from(c.index), timing)
        });
        if !up {
            kprintln!("SMP: CPU with APIC id {} did not start; continuing without it", c.apic_id);
            cpus::FAILED.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        // Wait until it registered (it reports alive before finishing set-up).
        let start = cpu::rdtsc();
        while !cpus::is_online(c.index) {
            if cpu::rdtsc().wrapping_sub(start) > timing.timeout {
                kprintln!("SMP: CPU with APIC id {} started but did not finish bring-up", c.apic_id);
                cpus::FAILED.fetch_add(1, Ordering::Relaxed);
                break;
            }
            cpu::relax();
        }
        if cpus::is_online(c.index) {
            measure_tsc_offset(c.index, timing.timeout);
        }
    }
}

/// Rounds of the TSC offset handshake; the one with the shortest round trip counts.
const TSC_SYNC_ROUNDS: u64 = 16;
/// The boot CPU's request number (0: none yet, `u64::MAX`: done).
static TSC_REQUEST: AtomicU64 = AtomicU64::new(0);
/// The AP's TSC read in answer to the latest request (0: not yet).
static TSC_RESPONSE: AtomicU64 = AtomicU64::new(0);

/// Boot CPU side: asks the AP for its TSC a few times and keeps the estimate from the
/// fastest exchange: offset = AP's reading - the midpoint of the boot CPU's two reads.
fn measure_tsc_offset(index: u32, timeout: u64) {
    let mut best: Option<(u64, i64)> = None;
    for round in 1..=TSC_SYNC_ROUNDS {
        TSC_RESPONSE.store(0, Ordering::Release);
        let before = cpu::rdtsc();
        TSC_REQUEST.store(round, Ordering::Release);
        let answer = loop {
            let answer = TSC_RESPONSE.load(Ordering::Acquire);
            if answer != 0 || cpu::rdtsc().wrapping_sub(before) > timeout {
                break answer;
            }
            cpu::relax();
        };
        let after = cpu::rdtsc();
        if answer == 0 {
            break;
        }
        let round_trip = after.wrapping_sub(before);
        let midpoint = before.wrapping_add(round_trip / 2);
        let offset = answer.wrapping_sub(midpoint) as i64;
        if best.is_none_or(|(fastest, _)| round_trip < fastest) {
            best = Some((round_trip, offset));
        }
    }
    TSC_REQUEST.store(u64::MAX, Ordering::Release);
    if let (Some((round_trip, offset)), Some(entry)) = (best, cpus::cpu(index)) {
        // An offset inside the measurement's own uncertainty is noise, not skew:
        // applying it would only move events around.
        let significant = offset.unsigned_abs() > round_trip / 2;
        entry.tsc_offset.store(if significant { offset } else { 0 }, Ordering::Relaxed);
        let magnitude = offset.unsigned_abs();
        let sign = if offset < 0 { "-" } else { "" };
        kprintln!(
            "cpu {}: TSC offset {}{} ticks (+/- {}){}",
            index,
            sign,
            magnitude,
            round_trip / 2,
            if significant { "" } else { ", within the noise: using 0" }
        );
    }
}

/// AP side of the handshake: answers every new request with a TSC read until the boot
/// CPU says it is done (or stops asking).
fn answer_tsc_requests(timeout: u64) {
    let mut last = 0;
    let mut idle_since = cpu::rdtsc();
    loop {
        let request = TSC_REQUEST.load(Ordering::Acquire);
        if request == u64::MAX {
            break;
        }
        if request != last {
            TSC_RESPONSE.store(cpu::rdtsc().max(1), Ordering::Release);
            last = request;
            idle_since = cpu::rdtsc();
        } else if cpu::rdtsc().wrapping_sub(idle_since) > timeout {
            break;
        }
        cpu::relax();
    }
}

/// An AP's path into the kernel, on its own kernel stack and the kernel page tables.
fn ap_main(index: u64) -> ! {
    let plan = AP_PLAN.lock().take();
    let Some(plan) = plan.filter(|p| u64::from(p.identity.index) == index) else {
        fatal_early("AP started without a matching plan");
    };
    let m = cpus::machine();
    cpu::enable_protections(&m.features);
    let local = install_block(plan.block, plan.identity);
    ramen_arch::trap::load_idt();
    let lapic = init_lapic();
    let reported = lapic.id();
    if reported != plan.identity.apic_id {
        kprintln!("warning: local APIC reports id {}, firmware said {}", reported, plan.identity.apic_id);
    }
    enable_user_mode(&m.features);
    // The handshake state is reset before the boot CPU starts the next AP.
    TSC_REQUEST.store(0, Ordering::Release);
    cpus::register(local, lapic);
    answer_tsc_requests(tsc::ns_to_ticks(1_000_000_000, m.tsc_hz));
    kprintln!(
        "online: apic id {} package {} node {}",
        plan.identity.apic_id,
        plan.identity.package,
        plan.identity.node
    );
    crate::sched::resume()
}
