//! The user-mode test suite, run by the root task when the kernel command line says
//! `test`. Each case drives the kernel through system calls only, as any program
//! would: bad input must come back as the documented error with nothing changed, and
//! the test programs (`spin`, `fpu`, `fault`, `fuzz`, `waiter`) must behave on every
//! CPU. Output: one `test <name> ... ok|FAILED` line per case and a final
//! `user: N passed, M failed` line.

use ramen_abi::bootinfo::BootInfo;
use ramen_abi::invocation::{debug, thread, trace_control};
use ramen_abi::{Error, object, slot};
use ramen_perf_record::Categories;
use ramen_rt::{Message, SysError, call, kobj, println, recv};

use crate::alloc::Alloc;
use crate::loader::{self, Child, FAULT_SLOT, Files, Spawn};

/// Child slots the test programs expect (`ramen_user_tests::REPORT` and `WAIT`).
const REPORT: u64 = 8;
const WAIT: u64 = 9;
/// The `churn` program's region slot, frame window and region size
/// (`ramen_user_tests::CHURN_UNTYPED`, `CHURN_WINDOW`; `churn::REGION_BITS`).
const CHURN_UNTYPED: u64 = 11;
const CHURN_WINDOW: u64 = 0x3100_0000_0000;
const CHURN_REGION_BITS: u64 = 17;
/// The badges a `mirror` badge client's capability takes in turn
/// (`ramen_user_tests::SWAP_BADGES`).
const SWAP_BADGES: [u64; 2] = [0x5a1, 0x5a2];
/// The Foundry `echo` server's lease window, and its size (enough for the client's
/// largest lease); the server learns lease addresses from the kernel.
const ECHO_LEASE_WINDOW: u64 = 0x3000_0000_0000;
const ECHO_LEASE_WINDOW_BYTES: u64 = 16 * 4096;
/// Label of a fault message (`kernel/src/ipc.rs`).
const FAULT_LABEL: u64 = 0xfa17;
/// Priority of test programs: below the root task, which must get to run to receive.
const TEST_PRIORITY: u64 = 10;
/// Default syscalls per CPU for the fuzzer; `fuzz=N` on the command line overrides
/// (the issue's full run is a million per CPU).
const FUZZ_DEFAULT: u64 = 20_000;
/// Default operations per CPU for the `churn` program; `churn=N` overrides.
const CHURN_DEFAULT: u64 = 2_000;

type Outcome = Result<(), &'static str>;

/// Trace categories the tracing tests start (`ramen_perf_record::Categories` bits).
const USER: u64 = Categories::USER.bits() as u64;
const SCHED: u64 = Categories::SCHED.bits() as u64;

struct Ctx {
    alloc: Alloc,
    files: Files,
    /// The endpoint the programs report to (root slot).
    report: u64,
    /// Badges handed out so far (each program gets its own).
    next_badge: u64,
    cpus: u64,
    fuzz_count: u64,
    /// Operations per CPU for the `churn` program (`churn=N`).
    churn_count: u64,
    /// The kernel was built without the IPC fastpath (`expect_slowpath` on the command
    /// line, the fast/slow differential case): no operation may take it.
    expect_slowpath: bool,
    /// TSC ticks per second (boot info; 0 if unknown).
    tsc_hz: u64,
}

fn expect_err<T>(result: Result<T, SysError>, error: Error, what: &'static str) -> Outcome {
    match result {
        Err(e) if e == error => Ok(()),
        _ => Err(what),
    }
}

fn ok<T>(result: Result<T, SysError>, what: &'static str) -> Result<T, &'static str> {
    result.map_err(|_| what)
}

/// Runs every case; returns whether all passed.
pub fn run(info: &'static BootInfo) -> bool {
    let mut alloc = Alloc::new(info);
    let Ok(files) = loader::Files::map(&mut alloc) else {
        println!("user: cannot map the boot archive");
        return false;
    };
    let Ok(report) = alloc.make(object::ENDPOINT, 0) else {
        println!("user: cannot make the report endpoint");
        return false;
    };
    let cmdline = core::str::from_utf8(&info.cmdline).unwrap_or("");
    let number = |key: &str, default: u64| {
        cmdline
            .split_ascii_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|n| n.trim_end_matches('\0').parse().ok())
            .unwrap_or(default)
    };
    let churn_count = number("churn=", CHURN_DEFAULT);
    let fuzz_count = number("fuzz=", FUZZ_DEFAULT);
    let expect_slowpath =
        cmdline.split_ascii_whitespace().any(|w| w.trim_end_matches('\0') == "expect_slowpath");
    let mut ctx = Ctx {
        alloc,
        files,
        report,
        next_badge: 1,
        cpus: u64::from(info.cpu_count),
        fuzz_count,
        churn_count,
        expect_slowpath,
        tsc_hz: info.tsc_hz,
    };

    type Case = (&'static str, fn(&mut Ctx) -> Outcome);
    let cases: [Case; 41] = [
        ("invalid_capability_pointers_are_rejected", invalid_capability_pointers),
        ("hostile_calls_get_their_documented_codes", hostile_calls),
        ("wrong_types_and_labels_are_rejected", wrong_types_and_labels),
        ("retype_rejects_bad_input_and_changes_nothing", retype_bad_input),
        ("copy_mint_delete_revoke", copy_mint_delete_revoke),
        ("missing_rights_are_refused", missing_rights),
        ("mapping_rejects_kernel_and_bad_addresses", mapping_bad_addresses),
        ("preemption_lets_two_busy_threads_progress", preemption),
        ("programs_start_on_every_cpu", every_cpu),
        ("fpu_state_is_private_to_each_thread", fpu_isolation),
        ("user_faults_reach_the_fault_handler", fault_delivery),
        ("resume_restarts_a_thread_waiting_for_its_fault_handler", resume_faulted),
        ("revoke_wakes_a_waiter_on_another_cpu", revoke_across_cores),
        (
            "a_thread_destroyed_while_running_elsewhere_keeps_its_memory_until_stopped",
            destroy_running_elsewhere,
        ),
        ("no_cpu_keeps_a_destroyed_address_space_loaded", destroy_loaded_vspace),
        ("a_thread_moved_twice_at_once_runs_on_one_cpu", quick_migrations),
        ("a_thread_destroyed_while_it_migrates_is_stopped_where_it_went", destroy_migrating),
        ("objects_churn_on_every_cpu_and_the_kernel_stays_sound", churn),
        ("threads_migrate_while_running_and_blocked", migration),
        ("sched_control_sets_each_cpus_slice", sched_control),
        ("foundry_echo_contract_across_cpus", foundry_echo),
        ("irq_control_issues_one_handler_per_line", irq_handlers),
        ("notifications_signal_poll_and_wake_across_cpus", notifications),
        ("bound_notification_wakes_an_endpoint_receiver", bound_notification),
        ("signals_to_a_bound_receiver_take_no_global_lock", bound_signals_lock_free),
        ("a_server_dying_mid_call_wakes_its_caller", dead_server),
        ("long_messages_and_capability_transfer", long_messages),
        ("leases_lend_pinned_memory_for_one_call", leases),
        ("lease_release_shoots_down_cpus_running_the_server", lease_shootdown),
        ("deleting_a_mapped_frame_or_installed_table_unmaps_it", delete_mapped_frame),
        ("tracing_needs_the_trace_control_capability", trace_control),
        ("full_trace_rings_keep_newest_or_oldest_as_asked", trace_ring_policies),
        ("fastpath_and_slow_path_give_identical_registers", fast_slow_differential),
        ("cross_cpu_calls_run_beside_capability_changes", cross_cpu_churn),
        ("a_busy_server_s_callers_queue_without_the_global_lock", busy_server),
        ("moving_and_stopping_threads_takes_no_global_lock", thread_ops_lock_free),
        ("capability_changes_under_calls_take_no_global_lock", capability_changes_under_calls),
        ("notifications_behave_the_same_with_the_fastpath_off", notifications_slow),
        ("thread_names_are_checked", thread_names),
        ("user_trace_buffers_follow_trace_control", user_trace_buffer),
        ("foundry_clients_record_one_span_per_call", foundry_spans),
    ];
    let (mut passed, mut failed) = (0u32, 0u32);
    for (name, case) in
        cases.iter().chain([("fuzzer_leaves_the_kernel_healthy", fuzz as fn(&mut Ctx) -> Outcome)].iter())
    {
        match case(&mut ctx) {
            Ok(()) => {
                passed += 1;
                println!("test {} ... ok", *name);
            }
            Err(why) => {
                failed += 1;
                println!("test {} ... FAILED: {}", *name, why);
            }
        }
    }
    println!("user: {} passed, {} failed", passed, failed);
    failed == 0
}

fn invalid_capability_pointers(_: &mut Ctx) -> Outcome {
    let write = Message::new(debug::WRITE, &[0]);
    expect_err(call(0x3ff, &write), Error::InvalidCapability, "empty slot accepted")?;
    expect_err(call(u64::MAX, &write), Error::InvalidCapability, "guard mismatch accepted")?;
    expect_err(call(slot::NULL, &write), Error::InvalidCapability, "null slot accepted")?;
    // The console still works afterwards: nothing changed.
    ok(call(slot::DEBUG, &write), "console broken after bad pointers").map(drop)
}

fn wrong_types_and_labels(_: &mut Ctx) -> Outcome {
    expect_err(
        kobj::retype(slot::THREAD, object::ENDPOINT, 0, slot::CNODE, 3000, 1),
        Error::IllegalOperation,
        "retype on a thread",
    )?;
    expect_err(
        call(slot::DEBUG, &Message::new(debug::WRITE, &[41])),
        Error::RangeError,
        "41-byte console write",
    )?;
    expect_err(call(slot::DEBUG, &Message::new(0x7777, &[])), Error::IllegalOperation, "unknown label")?;
    let unknown = ramen_rt::raw(99, slot::DEBUG, 0, [0; 6]);
    if unknown.error != Error::UnknownSyscall.code() {
        return Err("unknown system call number accepted");
    }
    expect_err(
        kobj::configure(slot::DEBUG, slot::CNODE, slot::VSPACE, 0, 0),
        Error::IllegalOperation,
        "configure on a console",
    )
}

/// The calls a hostile program written from docs/abi.md found answered wrongly, made
/// from user mode through the real system-call entry: each gets its documented code,
/// an error reply is that code and nothing else, and nothing is made or changed.
/// (The host tests in `kernel/src/hosted_tests/abi.rs` check the same on both paths,
/// byte for byte.)
fn hostile_calls(ctx: &mut Ctx) -> Outcome {
    use ramen_abi::syscall::Sys;
    let bare = |number: Sys, cptr: u64, label: u64, rest: u64, regs: [u64; 6]| {
        ramen_rt::raw(number as u64, cptr, label << 16 | rest, regs)
    };
    let code = |reply: ramen_rt::RawReply, error: Error, what: &'static str| {
        if reply.error != error.code() {
            return Err(what);
        }
        // The code and nothing else: no capability pointer in the badge register.
        if reply.badge != 0 || reply.info != 0 || reply.regs != [0; 6] {
            return Err("an error reply carried more than its code");
        }
        Ok(())
    };
    let empty = ok(ctx.alloc.slot(), "no slot")?;
    let words = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66];
    code(bare(Sys::Call, empty, 0, 6, words), Error::InvalidCapability, "a call through an empty slot")?;
    // An unknown CNode label, with a bad index and depth too.
    code(
        bare(Sys::Call, slot::CNODE, 0x2f, 5, [999, 70, 0, 0, 0, 0]),
        Error::IllegalOperation,
        "unknown CNode label",
    )?;
    // A kernel-object invocation longer than 120 words, or naming a capability.
    code(
        bare(Sys::Call, slot::DEBUG, debug::WRITE, 121, [0; 6]),
        Error::RangeError,
        "a 121-word invocation",
    )?;
    code(
        bare(Sys::Call, slot::DEBUG, debug::WRITE, 1 << 7 | 1, [0; 6]),
        Error::InvalidArgument,
        "an invocation with a capability",
    )?;
    // Retype into a CNode through a capability without the write right: refused, and
    // the slot stays empty.
    let read_only = ok(ctx.alloc.slot(), "no slot")?;
    ok(
        kobj::mint(slot::CNODE, read_only, 64, slot::CNODE, object::rights::READ, 0),
        "mint a read-only CNode",
    )?;
    let untyped = ctx.alloc.info().untyped_first;
    expect_err(
        kobj::retype(untyped, object::ENDPOINT, 0, read_only, empty, 1),
        Error::InsufficientRights,
        "retype through a read-only CNode capability",
    )?;
    expect_err(kobj::delete(slot::CNODE, empty, 64), Error::SlotEmpty, "the refused retype made an object")?;
    // A signal naming a capability; a poll with nothing pending.
    let note = ok(ctx.alloc.make(object::NOTIFICATION, 0), "notification")?;
    code(bare(Sys::NbSend, note, 0, 1 << 7, [0; 6]), Error::InvalidArgument, "a signal with a capability")?;
    code(bare(Sys::NbRecv, note, 0, 0, [0; 6]), Error::Busy, "a poll with nothing pending")?;
    // Five leases (the field has room for seven, the maximum is four).
    let endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "endpoint")?;
    code(bare(Sys::Call, endpoint, 0, 5 << 9, [0; 6]), Error::RangeError, "a call with five leases")?;
    ok(kobj::delete(slot::CNODE, read_only, 64), "delete the read-only copy")
}

fn retype_bad_input(ctx: &mut Ctx) -> Outcome {
    let info = ctx.alloc.info();
    let untyped = info.untyped_first;
    let dest = ok(ctx.alloc.slot(), "no slot")?;
    expect_err(kobj::retype(untyped, 99, 0, slot::CNODE, dest, 1), Error::InvalidArgument, "unknown type")?;
    expect_err(
        kobj::retype(untyped, object::ENDPOINT, 0, slot::CNODE, dest, 0),
        Error::RangeError,
        "count 0",
    )?;
    expect_err(
        kobj::retype(untyped, object::UNTYPED, 60, slot::CNODE, dest, 1),
        Error::RangeError,
        "2^60 untyped",
    )?;
    expect_err(
        kobj::retype(untyped, object::ENDPOINT, 0, slot::CNODE, slot::THREAD, 1),
        Error::SlotOccupied,
        "occupied slot",
    )?;
    expect_err(
        kobj::retype(untyped, object::ENDPOINT, 0, slot::CNODE, 1 << 20, 1),
        Error::RangeError,
        "slot past the CNode",
    )?;
    // An untyped too small for the object: find the smallest region.
    let (smallest, bits) = (0..info.untyped_count as usize)
        .filter_map(|i| info.untyped.get(i).map(|u| (info.untyped_first + i as u64, u.size_bits)))
        .min_by_key(|(_, bits)| *bits)
        .ok_or("no untyped")?;
    if bits < 21 {
        expect_err(
            kobj::retype(smallest, object::FRAME_2M, 0, slot::CNODE, dest, 1),
            Error::NotEnoughMemory,
            "exhausted untyped",
        )?;
    }
    // Nothing was created: the destination slot is still empty.
    expect_err(
        call(dest, &Message::new(0, &[])),
        Error::InvalidCapability,
        "a failed retype left a capability",
    )?;
    // And retype still works there.
    ok(ctx.alloc.make_at(object::ENDPOINT, 0, dest), "retype after errors")?;
    ok(kobj::delete(slot::CNODE, dest, 64), "delete")
}

fn copy_mint_delete_revoke(ctx: &mut Ctx) -> Outcome {
    let endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "no endpoint")?;
    let copy = ok(ctx.alloc.slot(), "no slot")?;
    let minted = ok(ctx.alloc.slot(), "no slot")?;
    ok(kobj::copy(slot::CNODE, copy, 64, endpoint), "copy")?;
    expect_err(kobj::copy(slot::CNODE, copy, 64, endpoint), Error::SlotOccupied, "copy over a capability")?;
    ok(kobj::mint(slot::CNODE, minted, 64, endpoint, object::rights::WRITE, 0x42), "mint")?;
    expect_err(
        kobj::mint(slot::CNODE, ok(ctx.alloc.slot(), "slot")?, 64, minted, object::rights::WRITE, 7),
        Error::InvalidArgument,
        "re-badge",
    )?;
    // Untyped memory is never copied.
    expect_err(
        kobj::copy(slot::CNODE, ok(ctx.alloc.slot(), "slot")?, 64, ctx.alloc.info().untyped_first),
        Error::IllegalOperation,
        "untyped copied",
    )?;
    ok(kobj::delete(slot::CNODE, copy, 64), "delete")?;
    expect_err(kobj::delete(slot::CNODE, copy, 64), Error::SlotEmpty, "double delete")?;
    // Revoke removes the minted child; the original stays.
    ok(kobj::revoke(slot::CNODE, endpoint, 64), "revoke")?;
    expect_err(
        ramen_rt::nb_send(minted, &Message::new(0, &[])),
        Error::InvalidCapability,
        "revoked child still works",
    )?;
    ok(ramen_rt::nb_send(endpoint, &Message::new(0, &[])), "original gone after revoke").map(drop)
}

fn missing_rights(ctx: &mut Ctx) -> Outcome {
    let read_only_thread = ok(ctx.alloc.slot(), "slot")?;
    ok(kobj::mint(slot::CNODE, read_only_thread, 64, slot::THREAD, object::rights::READ, 0), "mint thread")?;
    expect_err(kobj::set_priority(read_only_thread, 1), Error::InsufficientRights, "priority without write")?;
    let endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "endpoint")?;
    let receive_only = ok(ctx.alloc.slot(), "slot")?;
    ok(kobj::mint(slot::CNODE, receive_only, 64, endpoint, object::rights::READ, 0), "mint endpoint")?;
    expect_err(
        ramen_rt::nb_send(receive_only, &Message::new(0, &[])),
        Error::InsufficientRights,
        "send without write",
    )?;
    // Rights never grow.
    let widened = ok(ctx.alloc.slot(), "slot")?;
    expect_err(
        kobj::mint(slot::CNODE, widened, 64, receive_only, object::rights::ALL, 0),
        Error::InsufficientRights,
        "rights grew",
    )
}

fn mapping_bad_addresses(ctx: &mut Ctx) -> Outcome {
    let frame = ok(ctx.alloc.make(object::FRAME_4K, 0), "frame")?;
    expect_err(
        kobj::map_frame(frame, slot::VSPACE, 0xffff_8000_0000_0000, 0),
        Error::RangeError,
        "kernel address",
    )?;
    expect_err(
        kobj::map_frame(frame, slot::VSPACE, 0x0000_8000_0000_0000, 0),
        Error::RangeError,
        "non-canonical",
    )?;
    // The lower half's top page is never user memory (a `SYSCALL` ending there would
    // save a non-canonical return address; the fastpath relies on it).
    expect_err(
        kobj::map_frame(frame, slot::VSPACE, 0x0000_7fff_ffff_f000, 0),
        Error::RangeError,
        "the top page of the lower half",
    )?;
    expect_err(kobj::map_frame(frame, slot::VSPACE, 0x1000, 0), Error::RangeError, "below USER_BASE")?;
    expect_err(
        kobj::map_frame(frame, slot::VSPACE, 0x6000_0000_0123, 0),
        Error::AlignmentError,
        "misaligned",
    )?;
    expect_err(
        kobj::map_frame(frame, slot::VSPACE, 0x6000_0000_0000, 3),
        Error::InvalidArgument,
        "write+execute",
    )?;
    expect_err(kobj::map_frame(frame, slot::THREAD, 0x6000_0000_0000, 0), Error::WrongType, "not a VSpace")?;
    expect_err(
        kobj::map_frame(frame, slot::VSPACE, 0x6000_0000_0000, 0),
        Error::MissingPageTable,
        "no page table",
    )?;
    ok(ramen_rt::vm::map_page(slot::VSPACE, frame, 0x6000_0000_0000, 1, &mut ctx.alloc), "map with tables")?;
    expect_err(
        kobj::map_frame(frame, slot::VSPACE, 0x6000_0000_1000, 1),
        Error::AlreadyMapped,
        "one capability, two mappings",
    )?;
    expect_err(
        kobj::unmap_frame(frame, slot::VSPACE, 0x6000_0000_1000),
        Error::InvalidArgument,
        "unmap elsewhere",
    )?;
    let moved = ok(ctx.alloc.slot(), "slot")?;
    expect_err(
        kobj::move_cap(slot::CNODE, moved, 64, frame),
        Error::IllegalOperation,
        "moving a mapped frame",
    )?;
    // A copy starts unmapped and maps the same frame a second time.
    let copy = ok(ctx.alloc.slot(), "slot")?;
    ok(kobj::copy(slot::CNODE, copy, 64, frame), "copy a mapped frame")?;
    ok(kobj::map_frame(copy, slot::VSPACE, 0x6000_0000_1000, 1), "map the copy")?;
    ok(kobj::unmap_frame(copy, slot::VSPACE, 0x6000_0000_1000), "unmap the copy")?;
    ok(kobj::unmap_frame(frame, slot::VSPACE, 0x6000_0000_0000), "unmap")?;
    ok(kobj::move_cap(slot::CNODE, moved, 64, frame), "moving an unmapped frame").map(drop)
}

/// A badged copy of the report endpoint for one program: (root slot, badge).
fn report_cap(ctx: &mut Ctx) -> Result<(u64, u64), &'static str> {
    let badge = ctx.next_badge;
    ctx.next_badge += 1;
    let slot = ok(ctx.alloc.slot(), "slot")?;
    ok(
        kobj::mint(
            slot::CNODE,
            slot,
            64,
            ctx.report,
            object::rights::WRITE | object::rights::GRANT_REPLY,
            badge,
        ),
        "mint report",
    )?;
    Ok((slot, badge))
}

fn start(
    ctx: &mut Ctx,
    name: &str,
    arg: u64,
    cpu: u64,
    extra: &[(u64, u64)],
    fault: bool,
) -> Result<(Child, u64), &'static str> {
    let (report, badge) = report_cap(ctx)?;
    let mut grants = [(REPORT, report), (0, 0), (0, 0)];
    for (g, e) in grants.iter_mut().skip(1).zip(extra) {
        *g = *e;
    }
    let count = 1 + extra.len().min(2);
    let spec = Spawn {
        name,
        arg,
        cpu,
        priority: TEST_PRIORITY,
        grants: grants.get(..count).unwrap_or(&[]),
        fault_handler: fault,
    };
    let child = loader::spawn(&mut ctx.alloc, &ctx.files, &spec).map_err(|_| "cannot start a program")?;
    Ok((child, badge))
}

/// Receives reports until `done(badge, message)` says stop, at most `limit` messages.
fn collect(ctx: &Ctx, limit: u32, mut done: impl FnMut(u64, &Message) -> bool) -> bool {
    for _ in 0..limit {
        match recv(ctx.report) {
            Ok((badge, message)) if done(badge, &message) => return true,
            _ => {}
        }
    }
    false
}

fn stop(child: &Child) {
    let _ = kobj::suspend(child.tcb);
}

fn preemption(ctx: &mut Ctx) -> Outcome {
    // Both on the last CPU, same priority, neither ever yields: only the timer can
    // let the second one run.
    let cpu = ctx.cpus - 1;
    let (a, badge_a) = start(ctx, "spin", 200_000, cpu, &[], false)?;
    let (b, badge_b) = start(ctx, "spin", 200_000, cpu, &[], false)?;
    let (mut seen_a, mut seen_b) = (0, 0);
    let both = collect(ctx, 4000, |badge, _| {
        if badge == badge_a {
            seen_a += 1;
        } else if badge == badge_b {
            seen_b += 1;
        }
        seen_a >= 3 && seen_b >= 3
    });
    stop(&a);
    stop(&b);
    if both { Ok(()) } else { Err("one busy thread starved the other") }
}

fn every_cpu(ctx: &mut Ctx) -> Outcome {
    let mut children = [None; 64];
    let mut badges = [0u64; 64];
    let cpus = ctx.cpus.min(64);
    for cpu in 0..cpus {
        let (child, badge) = start(ctx, "spin", 100_000, cpu, &[], false)?;
        children[cpu as usize] = Some(child);
        badges[cpu as usize] = badge;
    }
    let mut seen = [false; 64];
    let all = collect(ctx, 4000, |badge, _| {
        if let Some(i) = badges.iter().take(cpus as usize).position(|b| *b == badge) {
            seen[i] = true;
        }
        seen.iter().take(cpus as usize).all(|s| *s)
    });
    children.iter().flatten().for_each(stop);
    if all { Ok(()) } else { Err("a program did not run on its CPU") }
}

fn fpu_isolation(ctx: &mut Ctx) -> Outcome {
    let cpu = ctx.cpus - 1;
    let (a, badge_a) = start(ctx, "fpu", 20 | (1 << 16), cpu, &[], false)?;
    let (b, badge_b) = start(ctx, "fpu", 20 | (7 << 16), cpu, &[], false)?;
    let (mut ok_a, mut ok_b, mut bad) = (false, false, false);
    collect(ctx, 200, |badge, message| {
        if badge == badge_a || badge == badge_b {
            if message.label() != 1 {
                bad = true;
            } else if badge == badge_a {
                ok_a = true;
            } else {
                ok_b = true;
            }
        }
        bad || (ok_a && ok_b)
    });
    stop(&a);
    stop(&b);
    if bad {
        Err("an FPU thread saw corrupted registers")
    } else if ok_a && ok_b {
        Ok(())
    } else {
        Err("FPU threads did not finish")
    }
}

fn fault_delivery(ctx: &mut Ctx) -> Outcome {
    let handler = ok(ctx.alloc.make(object::ENDPOINT, 0), "endpoint")?;
    let kernel_address = 0xffff_ffff_8000_0000u64;
    for (mode, vector, address) in [(0u64, 14u64, Some(kernel_address)), (1, 14, Some(0)), (2, 6, None)] {
        let badged = ok(ctx.alloc.slot(), "slot")?;
        ok(
            kobj::mint(
                slot::CNODE,
                badged,
                64,
                handler,
                object::rights::WRITE | object::rights::GRANT_REPLY,
                100 + mode,
            ),
            "mint",
        )?;
        let cpu = mode % ctx.cpus;
        let (child, _) = start(ctx, "fault", mode, cpu, &[(FAULT_SLOT, badged)], true)?;
        let (badge, message) = ok(recv(handler), "no fault message")?;
        stop(&child);
        let words = message.words();
        if badge != 100 + mode || message.label() != FAULT_LABEL {
            return Err("fault message has the wrong badge or label");
        }
        if words.first() != Some(&vector) {
            return Err("fault message has the wrong vector");
        }
        if let Some(address) = address
            && words.get(3) != Some(&address)
        {
            return Err("fault message has the wrong address");
        }
    }
    Ok(())
}

/// `RESUME` of a thread waiting for its fault handler takes it out of that IPC first,
/// as in seL4 (the handler no longer owes it a reply): it restarts at the faulting
/// instruction, faults again and sends one new fault message. Before, it ran while
/// still queued on the handler's endpoint (or still owed a reply), and a runnable
/// thread in IPC is what a suspend without the global lock must never meet.
fn resume_faulted(ctx: &mut Ctx) -> Outcome {
    let handler = ok(ctx.alloc.make(object::ENDPOINT, 0), "endpoint")?;
    let badged = ok(ctx.alloc.slot(), "slot")?;
    let rights = object::rights::WRITE | object::rights::GRANT_REPLY;
    ok(kobj::mint(slot::CNODE, badged, 64, handler, rights, 200), "mint")?;
    let (child, _) = start(ctx, "fault", 1, ctx.cpus - 1, &[(FAULT_SLOT, badged)], true)?;
    let outcome = (|| {
        let (badge, message) = ok(recv(handler), "no fault message")?;
        if badge != 200 || message.label() != FAULT_LABEL {
            return Err("the fault message has the wrong badge or label");
        }
        // Received, so it waits for the reply: out of that call, it restarts and
        // faults again, and its message waits on the endpoint (nobody receives).
        ok(kobj::resume(child.tcb), "resume while the reply is owed")?;
        // 20 ms (no way to see it queued without receiving it).
        let until = ramen_rt::tsc::rdtsc() + ctx.tsc_hz / 50;
        for round in 0.. {
            if round >= 200 && ramen_rt::tsc::rdtsc() >= until {
                break;
            }
            ramen_rt::yield_now();
        }
        // Out of the endpoint's queue, it restarts and faults again (before, it ran
        // while still queued, and its next fault queued it a second time).
        ok(kobj::resume(child.tcb), "resume while the fault message is queued")?;
        ok(recv(handler), "no fault message after the resumes")?;
        expect_err(ramen_rt::nb_recv(handler), Error::Busy, "a fault message more than the faults made")
    })();
    stop(&child);
    outcome
}

/// The scheduling invocations of a thread (`SUSPEND` of a running thread, `RESUME`,
/// `SET_PRIORITY`, `SET_AFFINITY`) run in a read section of the capability lock, not
/// under its write side: a spinning thread is stopped, reprioritised, moved round
/// the CPUs and restarted, many times, with no write acquisition anywhere, and it
/// still runs where it was last sent. (Before, each of them took the write lock.)
fn thread_ops_lock_free(ctx: &mut Ctx) -> Outcome {
    const ROUNDS: u64 = 40;
    let (child, badge) = start(ctx, "spin", 20_000, 1 % ctx.cpus, &[], false)?;
    let outcome = (|| {
        if !collect(ctx, 1000, |b, _| b == badge) {
            return Err("the spinning thread never ran");
        }
        let before = ok(kobj::cap_lock_writes(slot::DEBUG), "IPC_STATS failed")?;
        let mut cpu = 0;
        for round in 0..ROUNDS {
            cpu = (round + 2) % ctx.cpus;
            ok(kobj::suspend(child.tcb), "suspend")?;
            ok(kobj::set_priority(child.tcb, TEST_PRIORITY - round % 2), "set priority")?;
            ok(kobj::set_affinity(child.tcb, cpu), "set affinity")?;
            ok(kobj::resume(child.tcb), "resume")?;
        }
        let writes = ok(kobj::cap_lock_writes(slot::DEBUG), "IPC_STATS failed")? - before;
        println!(
            "    {} rounds of suspend, set priority, move, resume: {} write acquisitions",
            ROUNDS, writes
        );
        // (Without the lock-free IPC paths the spinning thread's progress reports
        // take the write lock themselves.)
        if writes != 0 && !ctx.expect_slowpath {
            return Err("thread invocations took the capability lock's write side");
        }
        let cpu_after = |_: u64, m: &Message| m.words().get(1) == Some(&cpu);
        if !collect(ctx, 1000, |b, m| b == badge && cpu_after(b, m)) {
            return Err("the thread does not run on the CPU it was moved to last");
        }
        Ok(())
    })();
    stop(&child);
    outcome
}

fn revoke_across_cores(ctx: &mut Ctx) -> Outcome {
    let endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "endpoint")?;
    let cpu = ctx.cpus - 1;
    let (waiter, badge) = start(ctx, "waiter", 0, cpu, &[(WAIT, endpoint)], false)?;
    // Let it block (if it has not yet, its receive fails the same way).
    for _ in 0..50 {
        ramen_rt::yield_now();
    }
    ok(kobj::revoke(slot::CNODE, endpoint, 64), "revoke")?;
    ok(kobj::delete(slot::CNODE, endpoint, 64), "delete")?;
    let mut code = u64::MAX;
    let got = collect(ctx, 100, |b, message| {
        if b == badge && message.label() == 2 {
            code = message.words().first().copied().unwrap_or(0);
            return true;
        }
        false
    });
    stop(&waiter);
    if !got {
        Err("the waiter never woke")
    } else if code != Error::InvalidCapability.code() {
        Err("the waiter woke without InvalidCapability")
    } else {
        Ok(())
    }
}

/// A thread destroyed while it runs on another CPU: its memory must not be handed
/// out again until that CPU has taken it off (the revoke now waits for that before
/// it returns; retype answers `Busy` while a request naming it is still on its way). Each round makes a thread
/// in a 4 KiB untyped of its own, starts it spinning on the last CPU, revokes the
/// untyped as soon as the thread has reported, and at once retypes the same memory
/// into the next round's thread, retrying while `Busy`. Whether a retype ever finds
/// the window open depends on timing (printed, not required); what is required is that
/// every retype either waits with `Busy` or succeeds, and the kernel stays sound (the
/// fuzzer's invariant check runs after all cases).
fn destroy_running_elsewhere(ctx: &mut Ctx) -> Outcome {
    const ROUNDS: u64 = 12;
    let cpu = ctx.cpus - 1;
    // A program whose CSpace and address space the threads share; its own thread is
    // stopped at once, so every report comes from the round's thread.
    let (child, badge) = start(ctx, "spin", 20_000, cpu, &[], false)?;
    stop(&child);
    let untyped = ok(ctx.alloc.make(object::UNTYPED, 12), "a 4 KiB untyped")?;
    let tcb = ok(ctx.alloc.slot(), "slot")?;
    let mut busy = 0u64;
    for round in 0..ROUNDS {
        let mut tries = 0;
        loop {
            match kobj::retype(untyped, object::THREAD, 0, slot::CNODE, tcb, 1) {
                Ok(()) => break,
                Err(e) if e == Error::Busy && tries < 100_000 => {
                    busy += 1;
                    tries += 1;
                    ramen_rt::yield_now();
                }
                Err(e) if e == Error::Busy => return Err("the memory stayed Busy"),
                Err(_) => return Err("retyping the destroyed thread's memory failed"),
            }
        }
        ok(
            loader::start_thread_in(&mut ctx.alloc, &child, tcb, round + 1, 20_000, cpu, TEST_PRIORITY),
            "start the round's thread",
        )?;
        if !collect(ctx, 1000, |b, _| b == badge) {
            return Err("the round's thread never ran");
        }
        // Destroys the thread (its only capability), running or about to run there.
        ok(kobj::revoke(slot::CNODE, untyped, 64), "revoke")?;
    }
    println!("    {} rounds on cpu {}: the retype found the memory busy {} times", ROUNDS, cpu, busy);
    // The last round's thread is gone too. Its CPU must not still count it as the
    // owner of its FPU registers, or the next switch there would save them into
    // whatever its memory becomes: make that a frame full of a pattern, run another
    // thread there, and look.
    let frame = ok(ctx.alloc.slot(), "slot")?;
    let mut tries = 0;
    while let Err(e) = kobj::retype(untyped, object::FRAME_4K, 0, slot::CNODE, frame, 1) {
        tries += 1;
        if e != Error::Busy || tries > 100_000 {
            return Err("retyping the last thread's memory into a frame failed");
        }
        ramen_rt::yield_now();
    }
    let mut page = ok(ramen_rt::vm::Mapping::new(frame, 1, 0x6200_0000_0000, true, &mut ctx.alloc), "map")?;
    page.bytes_mut().fill(0xa5);
    let (other, other_badge) = start(ctx, "spin", 20_000, cpu, &[], false)?;
    let ran = collect(ctx, 1000, |b, _| b == other_badge);
    stop(&other);
    let intact = page.bytes().iter().all(|b| *b == 0xa5);
    ok(page.unmap(), "unmap")?;
    ok(kobj::revoke(slot::CNODE, untyped, 64), "revoke the frame")?;
    if !ran {
        Err("the thread after the destroyed one never ran")
    } else if !intact {
        Err("the kernel wrote into the memory of a destroyed thread")
    } else {
        Ok(())
    }
}

/// An address space destroyed while a CPU still has it loaded (the last space that
/// CPU ran: it keeps it while it idles) must not stay loaded there once its memory
/// can be reused. A program runs in a space made from a 4 KiB untyped of its own on
/// the last CPU; its thread is stopped and moved to another space, the space's
/// capabilities are deleted, the untyped is revoked and its memory becomes a frame
/// full of ones, and another program is started on that CPU: a CPU still walking
/// the old tables would fault in the kernel.
fn destroy_loaded_vspace(ctx: &mut Ctx) -> Outcome {
    let cpu = ctx.cpus - 1;
    let untyped = ok(ctx.alloc.make(object::UNTYPED, 12), "a 4 KiB untyped")?;
    let vspace = ok(ctx.alloc.slot(), "slot")?;
    ok(kobj::retype(untyped, object::VSPACE, 0, slot::CNODE, vspace, 1), "make the address space")?;
    let (report, badge) = report_cap(ctx)?;
    let spec = Spawn {
        name: "spin",
        arg: 20_000,
        cpu,
        priority: TEST_PRIORITY,
        grants: &[(REPORT, report)],
        fault_handler: false,
    };
    let child = ok(loader::spawn_in(&mut ctx.alloc, &ctx.files, &spec, vspace), "start in it")?;
    if !collect(ctx, 1000, |b, _| b == badge) {
        return Err("the program never ran");
    }
    stop(&child);
    // The suspend returned with the thread stopped; move it out so that nothing keeps
    // the space (retrying on `WrongThreadState` all the same).
    let mut tries = 0;
    while let Err(e) = kobj::configure(child.tcb, child.cspace, slot::VSPACE, 0, 0) {
        tries += 1;
        if e != Error::WrongThreadState || tries > 100_000 {
            return Err("move the thread out");
        }
        ramen_rt::yield_now();
    }
    ok(kobj::delete(child.cspace, slot::VSPACE, 64), "delete the program's copy")?;
    ok(kobj::delete(slot::CNODE, vspace, 64), "delete the last capability")?;
    ok(kobj::revoke(slot::CNODE, untyped, 64), "revoke")?;
    let frame = ok(ctx.alloc.slot(), "slot")?;
    ok(kobj::retype(untyped, object::FRAME_4K, 0, slot::CNODE, frame, 1), "reuse the memory")?;
    let mut page = ok(ramen_rt::vm::Mapping::new(frame, 1, 0x6300_0000_0000, true, &mut ctx.alloc), "map")?;
    page.bytes_mut().fill(0xff);
    // The last CPU has to run the kernel again: another program there.
    let (other, other_badge) = start(ctx, "spin", 20_000, cpu, &[], false)?;
    let ran = collect(ctx, 1000, |b, _| b == other_badge);
    stop(&other);
    ok(page.unmap(), "unmap")?;
    ok(kobj::revoke(slot::CNODE, untyped, 64), "revoke the frame")?;
    if ran { Ok(()) } else { Err("the program after the destroyed space never ran") }
}

/// The CPUs a migration test moves a thread between: its first CPU (the last one),
/// the one it is moved to (the next lower, or 0 on two CPUs).
fn migration_cpus(ctx: &Ctx) -> (u64, u64) {
    let first = ctx.cpus - 1;
    (first, if ctx.cpus >= 3 { first - 1 } else { 0 })
}

/// Counts reports from `badge` (and those from CPU `from`) among the next `window`
/// reports of the control program `control`.
fn reports_beside(ctx: &Ctx, control: u64, window: u32, badge: u64, from: u64) -> Option<(u64, u64)> {
    let (mut seen, mut controls, mut all, mut there) = (0u32, 0u32, 0u64, 0u64);
    while controls < window {
        seen += 1;
        // The host may run the control program's CPU seldom (fewer host cores than
        // CPUs): a generous bound, only so that a lost control program fails.
        if seen > 500 * window {
            return None;
        }
        let Ok((b, message)) = recv(ctx.report) else { continue };
        if b == control {
            controls += 1;
        } else if b == badge {
            all += 1;
            if message.words().get(1) == Some(&from) {
                there += 1;
            }
        }
    }
    Some((all, there))
}

/// A running thread moved twice in a row (there and back) before its CPU has seen
/// the first move: the second request chases the thread to the CPU it went to, which
/// sends it back; the thread must run on one CPU only, and a suspend must have
/// stopped it when it returns.
/// (Regression: the CPU that the thread went to first queued it on its own adoption
/// request although it had moved on already, so the thread ran on two CPUs at once
/// and kept running there after a suspend.)
fn quick_migrations(ctx: &mut Ctx) -> Outcome {
    const ROUNDS: u64 = 12;
    if ctx.cpus < 2 {
        println!("(one CPU: migration has nowhere to go; checked on multi-CPU boots)");
        return Ok(());
    }
    let (home, away) = migration_cpus(ctx);
    let (control, control_badge) = start(ctx, "spin", 20_000, away, &[], false)?;
    let mut outcome = Ok(());
    for _ in 0..ROUNDS {
        let (mover, badge) = start(ctx, "spin", 20_000, home, &[], false)?;
        if !report_from_cpu(ctx, badge, home) {
            outcome = Err("the thread never ran");
        }
        ok(kobj::set_affinity(mover.tcb, away), "move away")?;
        ok(kobj::set_affinity(mover.tcb, home), "move back")?;
        if outcome.is_ok() && !report_from_cpu(ctx, badge, home) {
            outcome = Err("the thread never came back");
        }
        // Settled at home: nothing may come from the other CPU any more.
        match reports_beside(ctx, control_badge, 20, badge, away) {
            Some((_, 0)) => {}
            Some(_) => outcome = outcome.and(Err("a thread moved back ran on two CPUs")),
            None => outcome = outcome.and(Err("the control program stopped reporting")),
        }
        // A suspend returns once the thread's CPU has stopped it (the root task is in
        // the system call meanwhile, so no report can be on its way): nothing may come
        // from it after that (a thread queued on two CPUs keeps reporting).
        stop(&mover);
        match reports_beside(ctx, control_badge, 20, badge, away) {
            Some((0, _)) => {}
            Some(_) => outcome = outcome.and(Err("a suspended thread kept running")),
            None => outcome = outcome.and(Err("the control program stopped reporting")),
        }
        if outcome.is_err() {
            break;
        }
    }
    stop(&control);
    outcome
}

/// A running thread moved to another CPU and destroyed at once, before its CPU has
/// seen the move: the destroy's request to the CPU it names must follow the thread
/// to where it went, and its memory must not be reused before then. Each round
/// reuses the memory as a frame full of a pattern while a control program runs on
/// the CPU the thread went to; the pattern must stay, and the thread must not report.
/// (Regression: the old CPU forgot the thread and released its memory while the new
/// CPU adopted and ran it, saving its registers into the reused memory.)
fn destroy_migrating(ctx: &mut Ctx) -> Outcome {
    const ROUNDS: u64 = 12;
    if ctx.cpus < 2 {
        println!("(one CPU: migration has nowhere to go; checked on multi-CPU boots)");
        return Ok(());
    }
    let (home, away) = migration_cpus(ctx);
    let (child, badge) = start(ctx, "spin", 20_000, home, &[], false)?;
    stop(&child);
    let (control, control_badge) = start(ctx, "spin", 20_000, away, &[], false)?;
    let untyped = ok(ctx.alloc.make(object::UNTYPED, 12), "a 4 KiB untyped")?;
    let (tcb, frame) = (ok(ctx.alloc.slot(), "slot")?, ok(ctx.alloc.slot(), "slot")?);
    let retype = |kind: u64, dest: u64| -> Outcome {
        let mut tries = 0;
        loop {
            match kobj::retype(untyped, kind, 0, slot::CNODE, dest, 1) {
                Ok(()) => return Ok(()),
                Err(e) if e == Error::Busy && tries < 100_000 => {
                    tries += 1;
                    ramen_rt::yield_now();
                }
                Err(_) => return Err("retyping the untyped failed"),
            }
        }
    };
    let mut outcome = Ok(());
    for round in 0..ROUNDS {
        retype(object::THREAD, tcb)?;
        ok(
            loader::start_thread_in(&mut ctx.alloc, &child, tcb, round + 1, 20_000, home, TEST_PRIORITY),
            "start the round's thread",
        )?;
        if !report_from_cpu(ctx, badge, home) {
            outcome = Err("the round's thread never ran");
        }
        ok(kobj::set_affinity(tcb, away), "move")?;
        ok(kobj::revoke(slot::CNODE, untyped, 64), "revoke")?;
        retype(object::FRAME_4K, frame)?;
        let mut page =
            ok(ramen_rt::vm::Mapping::new(frame, 1, 0x6400_0000_0000, true, &mut ctx.alloc), "map")?;
        page.bytes_mut().fill(0xa5);
        // Time for the thread's new CPU to run (and switch) a while.
        let _ = reports_beside(ctx, control_badge, 4, badge, away);
        match reports_beside(ctx, control_badge, 20, badge, away) {
            Some((0, _)) => {}
            Some(_) => outcome = outcome.and(Err("a destroyed thread kept running")),
            None => outcome = outcome.and(Err("the control program stopped reporting")),
        }
        if !page.bytes().iter().all(|b| *b == 0xa5) {
            outcome = outcome.and(Err("the kernel wrote into the memory of a destroyed thread"));
        }
        ok(page.unmap(), "unmap")?;
        ok(kobj::revoke(slot::CNODE, untyped, 64), "revoke the frame")?;
        if outcome.is_err() {
            break;
        }
    }
    stop(&control);
    outcome
}

/// Object lifecycles under load on every CPU at once (`churn`, one per CPU, each
/// in an untyped region of its own): threads made, moved, suspended, destroyed
/// while running and their memory reused; notifications, endpoints and their copies
/// deleted and revoked under waiting, signalling and calling workers; frames that
/// must keep their pattern. Afterwards the kernel's invariants hold on every CPU and
/// every CPU still runs programs.
fn churn(ctx: &mut Ctx) -> Outcome {
    let cpus = ctx.cpus.min(64);
    let ops = ctx.churn_count.clamp(1, 0xffff_ffff);
    let mut badges = [0u64; 64];
    let mut children = [None; 64];
    for cpu in 0..cpus {
        let go = ok(ctx.alloc.make(object::ENDPOINT, 0), "endpoint")?;
        let (child, badge) = start(ctx, "churn", ops | cpus << 32, cpu, &[(WAIT, go)], false)?;
        ok(
            ramen_rt::vm::install_tables(child.vspace, CHURN_WINDOW, 64 * 4096, &mut ctx.alloc),
            "tables for the frame window",
        )?;
        let region = ok(ctx.alloc.make(object::UNTYPED, CHURN_REGION_BITS), "region")?;
        ok(kobj::move_cap(child.cspace, CHURN_UNTYPED, 64, region), "hand over the region")?;
        ok(ramen_rt::send(go, &Message::new(0, &[])), "go")?;
        badges[cpu as usize] = badge;
        children[cpu as usize] = Some(child);
    }
    let unlocked_before = ok(kobj::cap_changes_unlocked(slot::DEBUG), "IPC_STATS failed")?;
    let writes_before = ok(kobj::cap_lock_writes(slot::DEBUG), "IPC_STATS failed")?;
    let mut done = [false; 64];
    let (mut total_ops, mut errors, mut busy, mut corrupt, mut broken) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let finished = collect(ctx, 100_000, |badge, message| {
        if message.label() == 1
            && let Some(i) = badges.iter().take(cpus as usize).position(|b| *b == badge)
        {
            done[i] = true;
            let w = |n: usize| message.words().get(n).copied().unwrap_or(0);
            total_ops += w(0);
            errors += w(1);
            busy += w(2);
            corrupt += w(3);
            broken += w(4);
        }
        done.iter().take(cpus as usize).all(|d| *d)
    });
    // (Every capability operation and thread invocation of the churn, made before the
    // last report: the workers' IPC too.)
    let unlocked = ok(kobj::cap_changes_unlocked(slot::DEBUG), "IPC_STATS failed")? - unlocked_before;
    let writes = ok(kobj::cap_lock_writes(slot::DEBUG), "IPC_STATS failed")? - writes_before;
    // Stop the drivers, then destroy everything they made (their workers too).
    for child in children.iter().flatten() {
        stop(child);
        ok(kobj::revoke(child.cspace, CHURN_UNTYPED, 64), "revoke a region")?;
    }
    if !finished {
        return Err("a churn program did not finish");
    }
    println!(
        "    {} operations on {} CPUs: {} refused ({} Busy), {} corrupted frames, {} broken invariants; \
         {} capability changes without the write lock, {} write acquisitions",
        total_ops, cpus, errors, busy, corrupt, broken, unlocked, writes
    );
    if corrupt != 0 {
        return Err("the kernel wrote into a frame (memory an object left behind)");
    }
    if broken != 0 {
        return Err("kernel invariants broke during the churn");
    }
    for cpu in (0..ctx.cpus).rev() {
        ok(kobj::set_affinity(slot::THREAD, cpu), "move the root task")?;
        let (violations, slots, _) = ok(kobj::check_invariants(slot::DEBUG), "check invariants")?;
        if violations != 0 {
            println!("invariant check on CPU {}: {} violations in {} slots", cpu, violations, slots);
            return Err("kernel invariants broken after the churn");
        }
    }
    ok(kobj::set_affinity(slot::THREAD, 0), "move the root task home")?;
    every_cpu(ctx)
}

fn fuzz(ctx: &mut Ctx) -> Outcome {
    let cpus = ctx.cpus.min(64);
    let mut badges = [0u64; 64];
    let mut children = [None; 64];
    let mut partners = [None; 64];
    for cpu in 0..cpus {
        // Each fuzzer gets an IPC partner on its CPU: a lease server with a window.
        let endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "endpoint")?;
        let (partner, _) = start(ctx, "leasesrv", 0, cpu, &[(WAIT, endpoint)], false)?;
        ok(
            ramen_rt::vm::install_tables(partner.vspace, SHOOTDOWN_WINDOW, 1 << 20, &mut ctx.alloc),
            "tables",
        )?;
        ok(kobj::set_lease_window(partner.tcb, SHOOTDOWN_WINDOW, 1 << 20), "window")?;
        partners[cpu as usize] = Some(partner);
        let (child, badge) = start(ctx, "fuzz", ctx.fuzz_count, cpu, &[(WAIT, endpoint)], false)?;
        badges[cpu as usize] = badge;
        children[cpu as usize] = Some(child);
    }
    let mut done = [false; 64];
    let finished = collect(ctx, 100_000, |badge, message| {
        if message.label() == 1
            && let Some(i) = badges.iter().take(cpus as usize).position(|b| *b == badge)
        {
            done[i] = true;
        }
        done.iter().take(cpus as usize).all(|d| *d)
    });
    children.iter().chain(partners.iter()).flatten().for_each(stop);
    if !finished {
        return Err("a fuzzer did not finish");
    }
    // The kernel still works: retype, map, delete, console.
    let frame = ok(ctx.alloc.make(object::FRAME_4K, 0), "retype after fuzzing")?;
    ok(
        ramen_rt::vm::map_page(slot::VSPACE, frame, 0x6100_0000_0000, 1, &mut ctx.alloc),
        "map after fuzzing",
    )?;
    ok(kobj::unmap_frame(frame, slot::VSPACE, 0x6100_0000_0000), "unmap after fuzzing")?;
    ok(kobj::delete(slot::CNODE, frame, 64), "delete after fuzzing")?;
    ok(call(slot::DEBUG, &Message::new(debug::WRITE, &[0])), "console after fuzzing")?;
    // The kernel's own invariants, checked from every CPU (the root task moves itself).
    for cpu in (0..ctx.cpus).rev() {
        ok(kobj::set_affinity(slot::THREAD, cpu), "move the root task")?;
        let (violations, slots, _) = ok(kobj::check_invariants(slot::DEBUG), "check invariants")?;
        if violations != 0 {
            println!("invariant check on CPU {}: {} violations in {} slots", cpu, violations, slots);
            return Err("kernel invariants broken after fuzzing");
        }
    }
    let _ = thread::SUSPEND;
    Ok(())
}

/// Waits for a report from `badge` whose second word (the CPU, from `rdtscp`) is `cpu`.
fn report_from_cpu(ctx: &Ctx, badge: u64, cpu: u64) -> bool {
    collect(ctx, 2000, |b, message| b == badge && message.words().get(1) == Some(&cpu))
}

fn migration(ctx: &mut Ctx) -> Outcome {
    if ctx.cpus < 2 {
        println!("(one CPU: migration has nowhere to go; checked on multi-CPU boots)");
        return Ok(());
    }
    let last = ctx.cpus - 1;
    // A running thread.
    let (spinner, badge) = start(ctx, "spin", 100_000, 0, &[], false)?;
    if !report_from_cpu(ctx, badge, 0) {
        stop(&spinner);
        return Err("the thread never ran on CPU 0");
    }
    ok(kobj::set_affinity(spinner.tcb, last), "affinity of a running thread")?;
    let moved = report_from_cpu(ctx, badge, last);
    stop(&spinner);
    if !moved {
        return Err("a running thread did not move");
    }
    // A blocked thread: it receives on its new CPU.
    let endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "endpoint")?;
    let (waiter, badge) = start(ctx, "waiter", 0, 0, &[(WAIT, endpoint)], false)?;
    for _ in 0..50 {
        ramen_rt::yield_now();
    }
    ok(kobj::set_affinity(waiter.tcb, last), "affinity of a blocked thread")?;
    ok(ramen_rt::send(endpoint, &Message::new(0, &[])), "send to the waiter")?;
    let mut report = (u64::MAX, u64::MAX);
    collect(ctx, 100, |b, message| {
        if b == badge {
            report =
                (message.words().first().copied().unwrap_or(1), message.words().get(1).copied().unwrap_or(0));
            return true;
        }
        false
    });
    stop(&waiter);
    match report {
        (0, cpu) if cpu == last => Ok(()),
        (0, _) => Err("a blocked thread woke on its old CPU"),
        _ => Err("the migrated waiter did not receive"),
    }
}

fn sched_control(ctx: &mut Ctx) -> Outcome {
    let last = slot::SCHED_CONTROL_BASE + ctx.cpus - 1;
    expect_err(kobj::set_slice(last, 10), Error::RangeError, "a 10 ns slice")?;
    expect_err(
        kobj::set_slice(slot::SCHED_CONTROL_BASE + 200, 1_000_000),
        Error::InvalidCapability,
        "a CPU that does not exist",
    )?;
    let old = ok(kobj::set_slice(last, 2_000_000), "set a 2 ms slice")?;
    let back = ok(kobj::set_slice(last, old), "restore the slice")?;
    if back != 2_000_000 { Err("the slice did not change") } else { Ok(()) }
}

/// The Foundry-generated echo client and server over a real endpoint, once on the
/// same CPU (where register-sized calls and replies take the fastpath's direct
/// switch) and once on different CPUs (register-sized ones take its cross-CPU
/// hand-over, the rest the slow path): the same calls must give the same, correct
/// answers either way.
fn foundry_echo(ctx: &mut Ctx) -> Outcome {
    let (fast_before, _) = ok(kobj::ipc_stats(slot::DEBUG), "ipc stats")?;
    echo_round(ctx, 0)?;
    let (fast_after, slow_mid) = ok(kobj::ipc_stats(slot::DEBUG), "ipc stats")?;
    if ctx.expect_slowpath {
        // The same answers from the slow path alone.
        if fast_after != fast_before {
            return Err("an IPC took the fastpath in the kernel built without it");
        }
    } else if fast_after < fast_before + 6 {
        return Err("same-CPU echo calls did not take the fastpath");
    }
    if ctx.cpus > 1 {
        echo_round(ctx, ctx.cpus - 1)?;
        let (_, slow_after) = ok(kobj::ipc_stats(slot::DEBUG), "ipc stats")?;
        // Buffer words, capabilities and leases always go the slow way.
        if slow_after < slow_mid + 6 {
            return Err(
                "cross-CPU echo calls with buffer words, capabilities or leases did not take the slow path",
            );
        }
    }
    Ok(())
}

fn echo_round(ctx: &mut Ctx, server_cpu: u64) -> Outcome {
    let endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "endpoint")?;
    let (server, _) = start(ctx, "echo", 0, server_cpu, &[(WAIT, endpoint)], false)?;
    // The server borrows the client's buffers (`sum`, `fill`) through a lease window,
    // whose page tables are paid for with the root task's memory.
    let window = ok(
        ramen_rt::vm::install_tables(
            server.vspace,
            ECHO_LEASE_WINDOW,
            ECHO_LEASE_WINDOW_BYTES,
            &mut ctx.alloc,
        ),
        "echo window tables",
    )
    .and_then(|()| {
        ok(
            kobj::set_lease_window(server.tcb, ECHO_LEASE_WINDOW, ECHO_LEASE_WINDOW_BYTES),
            "echo lease window",
        )
    });
    if let Err(error) = window {
        stop(&server);
        return Err(error);
    }
    let (client, badge) = start(ctx, "echo", 1, 0, &[(WAIT, endpoint)], false)?;
    let mut verdict = None;
    collect(ctx, 100, |b, message| {
        if b == badge {
            verdict = Some(message.label());
            return true;
        }
        false
    });
    stop(&client);
    stop(&server);
    match verdict {
        Some(1) => Ok(()),
        Some(_) => Err("the echo client got a wrong answer"),
        None => Err("the echo client never finished"),
    }
}

fn irq_handlers(ctx: &mut Ctx) -> Outcome {
    let first = ok(ctx.alloc.slot(), "slot")?;
    let second = ok(ctx.alloc.slot(), "slot")?;
    ok(kobj::issue_irq_handler(slot::IRQ_CONTROL, 5, first), "issue IRQ 5")?;
    expect_err(
        kobj::issue_irq_handler(slot::IRQ_CONTROL, 5, second),
        Error::Busy,
        "second handler for IRQ 5",
    )?;
    expect_err(kobj::issue_irq_handler(slot::IRQ_CONTROL, 9999, second), Error::RangeError, "IRQ 9999")?;
    expect_err(
        kobj::issue_irq_handler(slot::THREAD, 6, second),
        Error::IllegalOperation,
        "issue through a thread",
    )?;
    // The control capability is unique: it cannot be copied.
    expect_err(
        kobj::copy(slot::CNODE, second, 64, slot::IRQ_CONTROL),
        Error::IllegalOperation,
        "IRQ control copied",
    )?;
    // Deleting the handler frees the line.
    ok(kobj::delete(slot::CNODE, first, 64), "delete handler")?;
    ok(kobj::issue_irq_handler(slot::IRQ_CONTROL, 5, second), "re-issue IRQ 5")
}

const NOTIFICATION_LABEL: u64 = ramen_abi::syscall::NOTIFICATION_LABEL;

/// The waiter's report: (error code, CPU, badge, label).
fn waiter_report(ctx: &Ctx, badge: u64) -> Option<(u64, u64, u64, u64)> {
    let mut report = None;
    collect(ctx, 100, |b, message| {
        if b == badge && message.label() == 2 {
            let w = message.words();
            let word = |i: usize| w.get(i).copied().unwrap_or(u64::MAX);
            report = Some((word(0), word(1), word(2), word(3)));
            return true;
        }
        false
    });
    report
}

fn notifications(ctx: &mut Ctx) -> Outcome {
    let note = ok(ctx.alloc.make(object::NOTIFICATION, 0), "notification")?;
    let signaller = ok(ctx.alloc.slot(), "slot")?;
    ok(kobj::mint(slot::CNODE, signaller, 64, note, object::rights::WRITE, 0x4), "mint")?;
    // Signal, then poll: the bits come back once.
    ok(ramen_rt::nb_send(signaller, &Message::new(0, &[])), "signal")?;
    let (bits, message) = ok(ramen_rt::nb_recv(note), "poll")?;
    if bits != 0x4 || message.label() != NOTIFICATION_LABEL {
        return Err("poll did not return the signalled bits");
    }
    // Nothing pending: a poll is `Busy`, as on an endpoint with nobody queued.
    expect_err(ramen_rt::nb_recv(note), Error::Busy, "a poll with nothing pending (bits survived a poll?)")?;
    // Waiting on one CPU, signalled from another.
    let (waiter, badge) = start(ctx, "waiter", 0, ctx.cpus - 1, &[(WAIT, note)], false)?;
    for _ in 0..50 {
        ramen_rt::yield_now();
    }
    let second = ok(ctx.alloc.slot(), "slot")?;
    ok(kobj::mint(slot::CNODE, second, 64, note, object::rights::WRITE, 0x10), "mint")?;
    ok(ramen_rt::nb_send(second, &Message::new(0, &[])), "signal the waiter")?;
    let report = waiter_report(ctx, badge);
    stop(&waiter);
    match report {
        Some((0, _, 0x10, NOTIFICATION_LABEL)) => {}
        _ => return Err("the waiter did not get the signal"),
    }
    // A receive-only capability cannot signal.
    let receive_only = ok(ctx.alloc.slot(), "slot")?;
    ok(kobj::mint(slot::CNODE, receive_only, 64, note, object::rights::READ, 0), "mint")?;
    expect_err(
        ramen_rt::nb_send(receive_only, &Message::new(0, &[])),
        Error::InsufficientRights,
        "signal without write",
    )
}

/// [`notifications`] and [`bound_notification`] again with the fastpath switched off
/// (`SET_FASTPATH`): signal, poll and wait then all take the slow path under the
/// write lock, and must behave exactly as they do without it.
fn notifications_slow(ctx: &mut Ctx) -> Outcome {
    ok(kobj::set_fastpath(slot::TRACE_CONTROL, false), "SET_FASTPATH off")?;
    let (fast_before, _) = ok(kobj::ipc_stats(slot::DEBUG), "IPC_STATS")?;
    let result = notifications(ctx).and_then(|()| bound_notification(ctx));
    let (fast_after, _) = ok(kobj::ipc_stats(slot::DEBUG), "IPC_STATS")?;
    ok(kobj::set_fastpath(slot::TRACE_CONTROL, true), "SET_FASTPATH on")?;
    result?;
    if fast_after != fast_before {
        return Err("a notification operation took the fastpath while it was off");
    }
    Ok(())
}

fn bound_notification(ctx: &mut Ctx) -> Outcome {
    let endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "endpoint")?;
    let note = ok(ctx.alloc.make(object::NOTIFICATION, 0), "notification")?;
    let (waiter, badge) = start(ctx, "waiter", 0, ctx.cpus - 1, &[(WAIT, endpoint)], false)?;
    ok(kobj::bind_notification(waiter.tcb, note), "bind")?;
    expect_err(kobj::bind_notification(waiter.tcb, endpoint), Error::WrongType, "bind an endpoint")?;
    for _ in 0..50 {
        ramen_rt::yield_now();
    }
    ok(ramen_rt::nb_send(note, &Message::new(0, &[])), "signal")?;
    let report = waiter_report(ctx, badge);
    stop(&waiter);
    match report {
        Some((0, _, 1, NOTIFICATION_LABEL)) => Ok(()),
        _ => Err("the endpoint receiver was not woken by its bound notification"),
    }
}

/// A driver's loop, the way interrupts will reach user-space drivers: a thread on
/// the last CPU receives on its endpoint with a notification bound to it, and the
/// root task signals the notification from CPU 0 again and again, then stops it with
/// a message on the endpoint. Signals that find it waiting on the endpoint take it
/// off the endpoint's queue and wake it (with the notification's and the endpoint's
/// locks, in a read section); its receives take a pending signal, or queue it on the
/// endpoint: none of it takes the capability lock's write side. (Before, every
/// receive of a bound thread and every signal that woke one took it.)
fn bound_signals_lock_free(ctx: &mut Ctx) -> Outcome {
    const SIGNALS: u64 = 200;
    let endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "endpoint")?;
    let note = ok(ctx.alloc.make(object::NOTIFICATION, 0), "notification")?;
    let (driver, badge) = start(ctx, "waiter", 2, ctx.cpus - 1, &[(WAIT, endpoint)], false)?;
    ok(kobj::bind_notification(driver.tcb, note), "bind")?;
    let outcome = (|| {
        let before = ok(kobj::cap_lock_writes(slot::DEBUG), "IPC_STATS failed")?;
        for _ in 0..SIGNALS {
            ok(ramen_rt::nb_send(note, &Message::new(0, &[])), "signal")?;
            ramen_rt::yield_now();
        }
        ok(ramen_rt::send(endpoint, &Message::new(9, &[])), "stop message")?;
        let mut signals = None;
        collect(ctx, 100, |b, message| {
            if b == badge && message.label() == 4 {
                signals = message.words().first().copied();
                return true;
            }
            false
        });
        let writes = ok(kobj::cap_lock_writes(slot::DEBUG), "IPC_STATS failed")? - before;
        let signals = signals.ok_or("the driver never reported")?;
        println!(
            "    {} signals sent, {} taken by the bound receiver, {} write acquisitions",
            SIGNALS, signals, writes
        );
        if signals == 0 || signals > SIGNALS {
            return Err("the bound receiver took no signal (or more than were sent)");
        }
        if writes != 0 && !ctx.expect_slowpath {
            return Err("signals to a bound receiver took the capability lock's write side");
        }
        Ok(())
    })();
    stop(&driver);
    outcome
}

fn dead_server(ctx: &mut Ctx) -> Outcome {
    let endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "endpoint")?;
    // The server takes the call, reports, and ends without replying.
    let (server, server_badge) = start(ctx, "waiter", 0, 0, &[(WAIT, endpoint)], false)?;
    let (client, client_badge) = start(ctx, "waiter", 1, ctx.cpus - 1, &[(WAIT, endpoint)], false)?;
    if waiter_report(ctx, server_badge).is_none() {
        stop(&client);
        return Err("the server never received the call");
    }
    // Destroy the server's thread: revoke its own copy, delete the original.
    ok(kobj::revoke(slot::CNODE, server.tcb, 64), "revoke the server's thread")?;
    ok(kobj::delete(slot::CNODE, server.tcb, 64), "delete the server's thread")?;
    let mut code = None;
    collect(ctx, 100, |b, message| {
        if b == client_badge && message.label() == 3 {
            code = message.words().first().copied();
            return true;
        }
        false
    });
    stop(&client);
    match code {
        Some(c) if c == Error::InvalidCapability.code() => Ok(()),
        Some(_) => Err("the caller woke with the wrong result"),
        None => Err("the caller of a dead server never woke"),
    }
}

/// Label the `longmsg` server answers by signalling the notification it received.
const LONGMSG_SIGNAL: u64 = 0x5161;

fn long_messages(ctx: &mut Ctx) -> Outcome {
    long_message_round(ctx, 0)?;
    if ctx.cpus > 1 {
        long_message_round(ctx, ctx.cpus - 1)?;
    }
    Ok(())
}

/// Calls `request` and checks the `longmsg` server's answer: same label and length,
/// word 0 the number of capabilities that arrived, every other word plus one.
fn long_call(endpoint: u64, label: u64, words: &[u64], caps: &[u64], arrived: u64) -> Outcome {
    use ramen_abi::MSG_MAX_WORDS;
    let mut buf = ramen_rt::msgbuf::MessageBuffer::root();
    let request = buf.message(label, words, caps).map_err(|_| "cannot build the message")?;
    let reply = ok(call(endpoint, &request), "long call failed")?;
    let mut got = [0u64; MSG_MAX_WORDS];
    let len = buf.read_words(&reply, &mut got);
    if reply.label() != label || len != words.len() {
        return Err("the reply has the wrong label or length");
    }
    if !words.is_empty() && got[0] != arrived {
        return Err("the server received a wrong number of capabilities");
    }
    if words.iter().zip(&got).skip(1).any(|(sent, back)| back.wrapping_sub(*sent) != 1) {
        return Err("a word of a long message was lost or changed");
    }
    Ok(())
}

fn long_message_round(ctx: &mut Ctx, server_cpu: u64) -> Outcome {
    use ramen_abi::{MSG_MAX_WORDS, MessageInfo};
    let endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "endpoint")?;
    let (server, _) = start(ctx, "longmsg", 0, server_cpu, &[(WAIT, endpoint)], false)?;
    let words: [u64; MSG_MAX_WORDS] = core::array::from_fn(|i| 0x1000 + 7 * i as u64);
    // Register-only, just past the registers, and the longest message.
    for len in [3, 7, 40, MSG_MAX_WORDS] {
        long_call(endpoint, 0x77, &words[..len], &[], 0)?;
    }
    // Bad input fails before anything changes: the server keeps waiting, and the
    // next good call works.
    let raw = |info: u64| Message { info: MessageInfo(info), regs: [0; 6] };
    expect_err(call(endpoint, &raw((0x77 << 16) | 121)), Error::RangeError, "121 words accepted")?;
    let lease = MessageInfo::try_new(0x77, 1, 0, 1).map_or(0, |i| i.0);
    expect_err(call(endpoint, &raw(lease)), Error::InvalidArgument, "an empty lease accepted")?;
    let bad_cap = MessageInfo::try_new(0x77, 8, 1, 0).map_or(0, |i| i.0);
    let mut buf = ramen_rt::msgbuf::MessageBuffer::root();
    buf.set_word(ramen_abi::ipc_buffer::SEND_CAPS, u64::MAX);
    expect_err(call(endpoint, &raw(bad_cap)), Error::InvalidCapability, "a bad pointer transferred")?;
    let no_grant = ok(ctx.alloc.slot(), "slot")?;
    let rights = object::rights::READ | object::rights::WRITE | object::rights::GRANT_REPLY;
    ok(kobj::mint(slot::CNODE, no_grant, 64, endpoint, rights, 0), "mint without grant")?;
    let note = ok(ctx.alloc.make(object::NOTIFICATION, 0), "notification")?;
    let mut buf = ramen_rt::msgbuf::MessageBuffer::root();
    let with_cap = buf.message(0x77, &words[..2], &[note]).map_err(|_| "build")?;
    expect_err(call(no_grant, &with_cap), Error::InsufficientRights, "a capability sent without grant")?;
    long_call(no_grant, 0x77, &words[..9], &[], 0)?;

    // A capability arrives and works: the server signals the notification with it.
    long_call(endpoint, LONGMSG_SIGNAL, &words[..8], &[note], 1)?;
    match ramen_rt::nb_recv(note) {
        Ok((1, _)) => {}
        _ => return Err("the transferred notification capability did not signal"),
    }
    // Into an occupied slot it does not go, and the message still arrives.
    long_call(endpoint, 0x77, &words[..8], &[note], 1)?;
    long_call(endpoint, 0x77, &words[..8], &[note], 0)?;
    // The copy is a child of ours: revoking ours removes it, and the slot takes
    // a capability again.
    ok(kobj::revoke(slot::CNODE, note, 64), "revoke")?;
    long_call(endpoint, 0x77, &words[..8], &[note], 1)?;
    stop(&server);
    Ok(())
}

/// Where the `leaser` program's lent pages go in its address space.
const LEASE_AREA: u64 = 0x2000_0000_0000;
/// The root task's lease window, and its size.
const LEASE_WINDOW: u64 = 0x3000_0000_0000;
const LEASE_WINDOW_BYTES: u64 = 16 * 4096;
/// Where the root task maps a lent frame to look at it after the call.
const LEASE_CHECK: u64 = 0x3100_0000_0000;

/// Byte `i` of the lent area's pattern.
fn lease_pattern(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 8)) as u8
}

fn leases(ctx: &mut Ctx) -> Outcome {
    ok(
        ramen_rt::vm::install_tables(slot::VSPACE, LEASE_WINDOW, LEASE_WINDOW_BYTES, &mut ctx.alloc),
        "window tables",
    )?;
    expect_err(
        kobj::set_lease_window(slot::THREAD, LEASE_WINDOW + 1, 4096),
        Error::AlignmentError,
        "odd window",
    )?;
    expect_err(
        kobj::set_lease_window(slot::THREAD, 0xffff_8000_0000_0000, 4096),
        Error::InvalidArgument,
        "kernel window",
    )?;
    ok(kobj::set_lease_window(slot::THREAD, LEASE_WINDOW, LEASE_WINDOW_BYTES), "set the lease window")?;
    lease_round(ctx, 0, false)?;
    if ctx.cpus > 1 {
        lease_round(ctx, ctx.cpus - 1, false)?;
    }
    lease_round(ctx, ctx.cpus - 1, true)
}

/// The root task serves one call of the `leaser` program (on `cpu`) that lends
/// three read-write pages (from byte 100) and a read-only page. With `caller_dies`
/// it suspends the caller mid-call instead of answering: that ends the call and
/// must release the leases.
fn lease_round(ctx: &mut Ctx, cpu: u64, caller_dies: bool) -> Outcome {
    use ramen_rt::msgbuf::MessageBuffer;
    const PAGE: u64 = 4096;
    let endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "endpoint")?;
    let (child, _) = start(ctx, "leaser", 0, cpu, &[(WAIT, endpoint)], false)?;
    let mut frames = [0u64; 4];
    for (i, frame) in frames.iter_mut().enumerate() {
        *frame = ok(ctx.alloc.make(object::FRAME_4K, 0), "frame")?;
        let bytes: [u8; PAGE as usize] = core::array::from_fn(|j| lease_pattern(i as u64 * PAGE + j as u64));
        ok(loader::fill_frame(&mut ctx.alloc, *frame, &bytes, 0), "fill a frame")?;
        let rights = u64::from(i < 3);
        let at = LEASE_AREA + i as u64 * PAGE;
        ok(ramen_rt::vm::map_page(child.vspace, *frame, at, rights, &mut ctx.alloc), "map into the leaser")?;
    }
    ok(ramen_rt::send(endpoint, &Message::new(1, &[LEASE_AREA, LEASE_AREA + 3 * PAGE])), "go")?;
    let (_, request) = ok(recv(endpoint), "receive the call")?;
    let buf = MessageBuffer::root();
    let (Some(rw), Some(ro)) = (buf.lease(&request, 0), buf.lease(&request, 1)) else {
        stop(&child);
        return Err("the call arrived without its two leases");
    };
    if caller_dies {
        stop(&child);
        ok(kobj::unmap_frame(frames[0], child.vspace, LEASE_AREA), "unmap after the caller died")?;
        return expect_err(
            ramen_rt::reply(&Message::new(1, &[])),
            Error::InvalidCapability,
            "reply to the dead",
        );
    }
    let served = serve_lease_call(&child, &frames, rw, ro);
    ok(ramen_rt::reply(&Message::new(1, &[])), "reply")?;
    served?;
    // The reply unpinned the pages; the server's write is in the caller's frame.
    ok(kobj::unmap_frame(frames[0], child.vspace, LEASE_AREA), "unmap after the reply")?;
    let view =
        ok(ramen_rt::vm::Mapping::new(frames[0], 1, LEASE_CHECK, false, &mut ctx.alloc), "map to check")?;
    let written = view.bytes().get(100).copied();
    ok(view.unmap(), "unmap the check mapping")?;
    if written != Some(0xab) {
        stop(&child);
        return Err("the server's write through the lease is not in the caller's memory");
    }
    let mut verdict = None;
    for _ in 0..16 {
        match recv(endpoint) {
            Ok((_, m)) if m.label() == 2 => {
                verdict = Some((m.regs[0], m.regs[1]));
                break;
            }
            _ => {}
        }
    }
    stop(&child);
    match verdict {
        Some((1, _)) => Ok(()),
        Some((_, 0)) => Err("the leaser's call failed"),
        Some(_) => Err("a bad lease was not refused with its documented error"),
        None => Err("the leaser never reported"),
    }
}

/// What the server checks while it holds the call.
fn serve_lease_call(
    child: &Child,
    frames: &[u64; 4],
    rw: ramen_rt::msgbuf::Lease,
    ro: ramen_rt::msgbuf::Lease,
) -> Outcome {
    const PAGE: u64 = 4096;
    if !rw.writable || rw.len != 3 * PAGE - 200 || rw.addr % PAGE != 100 || ro.writable || ro.len != PAGE {
        return Err("the leases arrived with the wrong shape");
    }
    if !(LEASE_WINDOW..LEASE_WINDOW + LEASE_WINDOW_BYTES).contains(&rw.addr) {
        return Err("a lease is outside the window");
    }
    // The server reads the caller's bytes in place.
    for offset in [0, 1, 4000, 8000, rw.len - 1] {
        if rw.read(offset) != Some(lease_pattern(100 + offset)) {
            return Err("a byte read through the lease differs from the caller's");
        }
    }
    if ro.read(17) != Some(lease_pattern(3 * PAGE + 17)) || ro.write(0, 1) {
        return Err("the read-only lease is wrong");
    }
    if !rw.write(0, 0xab) {
        return Err("cannot write through the read-write lease");
    }
    // Pinned for the call: neither unmapped nor deleted, and the window stays.
    expect_err(
        kobj::unmap_frame(frames[0], child.vspace, LEASE_AREA),
        Error::Busy,
        "a leased page unmapped",
    )?;
    expect_err(kobj::delete(slot::CNODE, frames[1], 64), Error::Busy, "a leased frame deleted")?;
    expect_err(kobj::set_lease_window(slot::THREAD, 0, 0), Error::Busy, "the window moved mid-call")?;
    Ok(())
}

/// Where the shootdown test's server sees leases, and where the root task keeps the
/// data it lends.
const SHOOTDOWN_WINDOW: u64 = 0x3000_0000_0000;
const SHOOTDOWN_DATA: u64 = 0x3200_0000_0000;

/// A lease server whose address space is also running on another CPU (a second,
/// spinning thread): releasing the lease must make that CPU flush its TLB, and the
/// kernel must not deadlock doing it.
fn lease_shootdown(ctx: &mut Ctx) -> Outcome {
    if ctx.cpus < 2 {
        return Ok(());
    }
    let endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "endpoint")?;
    let (server, badge) = start(ctx, "leasesrv", 0, 0, &[(WAIT, endpoint)], false)?;
    ok(ramen_rt::vm::install_tables(server.vspace, SHOOTDOWN_WINDOW, 4096, &mut ctx.alloc), "window tables")?;
    ok(kobj::set_lease_window(server.tcb, SHOOTDOWN_WINDOW, 4096), "window")?;
    let spinner = loader::spawn_thread(&mut ctx.alloc, &server, 1, 1, ctx.cpus - 1, TEST_PRIORITY)
        .map_err(|_| "cannot start the spinning thread")?;
    let running = collect(ctx, 100, |b, message| b == badge && message.label() == 3);
    let result = if running { lend_to(ctx, endpoint) } else { Err("the spinning thread never ran") };
    stop(&spinner);
    stop(&server);
    let (sum, before, after) = result?;
    if sum != (0..64).sum::<u64>() {
        return Err("the server read the lease wrong");
    }
    if after <= before {
        return Err("the CPU running the server's address space was not asked to flush");
    }
    Ok(())
}

/// Lends 64 bytes (0, 1, 2, ...) to the server behind `endpoint`; returns its sum
/// and the shootdown counter before and after.
fn lend_to(ctx: &mut Ctx, endpoint: u64) -> Result<(u64, u64, u64), &'static str> {
    use ramen_rt::msgbuf::{Lease, MessageBuffer};
    let frame = ok(ctx.alloc.make(object::FRAME_4K, 0), "frame")?;
    let mut data =
        ok(ramen_rt::vm::Mapping::new(frame, 1, SHOOTDOWN_DATA, true, &mut ctx.alloc), "map data")?;
    for (i, byte) in data.bytes_mut().iter_mut().take(64).enumerate() {
        *byte = i as u8;
    }
    let before = ok(kobj::tlb_shootdowns(slot::DEBUG), "stats")?;
    let message = MessageBuffer::root()
        .message_with_leases(1, &[], &[], &[Lease::read_only(SHOOTDOWN_DATA, 64)])
        .map_err(|_| "build")?;
    let reply = call(endpoint, &message);
    let after = ok(kobj::tlb_shootdowns(slot::DEBUG), "stats")?;
    ok(data.unmap(), "unmap data")?;
    let reply = ok(reply, "the lending call failed")?;
    Ok((reply.regs[0], before, after))
}

/// Deleting a mapped frame's capability removes the mapping (the address takes
/// another frame); once the address space itself is gone, the record is stale and
/// deleting the frame touches nothing.
fn delete_mapped_frame(ctx: &mut Ctx) -> Outcome {
    const AT: u64 = 0x10_0000_0000;
    let vspace = ok(ctx.alloc.make(object::VSPACE, 0), "vspace")?;
    let first = ok(ctx.alloc.make(object::FRAME_4K, 0), "frame")?;
    ok(ramen_rt::vm::map_page(vspace, first, AT, 1, &mut ctx.alloc), "map")?;
    let second = ok(ctx.alloc.make(object::FRAME_4K, 0), "frame")?;
    expect_err(kobj::map_frame(second, vspace, AT, 1), Error::AlreadyMapped, "two frames at one address")?;
    ok(kobj::delete(slot::CNODE, first, 64), "delete the mapped frame")?;
    ok(kobj::map_frame(second, vspace, AT, 1), "the address stayed mapped after its frame was deleted")?;
    ok(kobj::delete(slot::CNODE, vspace, 64), "delete the address space")?;
    ok(kobj::delete(slot::CNODE, second, 64), "delete a frame of a deleted address space")?;
    expect_err(kobj::delete(slot::CNODE, second, 64), Error::SlotEmpty, "second delete")?;
    delete_installed_table(ctx)
}

/// Deleting an installed page table's capability unlinks it from its parent: what
/// it mapped is gone, and the place takes a new table.
fn delete_installed_table(ctx: &mut Ctx) -> Outcome {
    const AT: u64 = 0x20_0000_0000;
    let vspace = ok(ctx.alloc.make(object::VSPACE, 0), "vspace")?;
    for kind in [object::PDPT, object::PAGE_DIRECTORY] {
        let table = ok(ctx.alloc.make(kind, 0), "table")?;
        ok(kobj::map_table(table, vspace, AT), "install a table")?;
    }
    let table = ok(ctx.alloc.make(object::PAGE_TABLE, 0), "table")?;
    ok(kobj::map_table(table, vspace, AT), "install the page table")?;
    expect_err(
        kobj::map_table(table, vspace, AT + (1 << 21)),
        Error::AlreadyMapped,
        "one table installed twice",
    )?;
    let frame = ok(ctx.alloc.make(object::FRAME_4K, 0), "frame")?;
    ok(kobj::map_frame(frame, vspace, AT, 1), "map through the table")?;
    ok(kobj::delete(slot::CNODE, table, 64), "delete the installed table")?;
    let other = ok(ctx.alloc.make(object::FRAME_4K, 0), "frame")?;
    expect_err(
        kobj::map_frame(other, vspace, AT + 4096, 1),
        Error::MissingPageTable,
        "the table stayed linked",
    )?;
    let fresh = ok(ctx.alloc.make(object::PAGE_TABLE, 0), "table")?;
    ok(kobj::map_table(fresh, vspace, AT), "a new table where the old one was")?;
    ok(kobj::map_frame(other, vspace, AT + 4096, 1), "map through the new table")?;
    // The frame mapped through the deleted table: its record no longer matches
    // anything, and deleting it touches nothing.
    ok(kobj::delete(slot::CNODE, frame, 64), "delete a frame whose table went")?;
    vspace_in_use(ctx)
}

/// The last capability of an address space a thread is configured to run in cannot
/// be deleted (`Busy`): the thread would run on a freed top-level table. Once the
/// thread is gone, it can.
fn vspace_in_use(ctx: &mut Ctx) -> Outcome {
    let vspace = ok(ctx.alloc.make(object::VSPACE, 0), "vspace")?;
    let thread = ok(ctx.alloc.make(object::THREAD, 0), "thread")?;
    ok(kobj::configure(thread, slot::CNODE, vspace, 0, 0), "configure a thread in it")?;
    expect_err(kobj::delete(slot::CNODE, vspace, 64), Error::Busy, "an address space in use deleted")?;
    // Moving the thread to another address space releases the first.
    let other = ok(ctx.alloc.make(object::VSPACE, 0), "vspace")?;
    ok(kobj::configure(thread, slot::CNODE, other, 0, 0), "reconfigure the thread")?;
    ok(kobj::delete(slot::CNODE, vspace, 64), "delete the address space the thread left")?;
    expect_err(kobj::delete(slot::CNODE, other, 64), Error::Busy, "the new one deleted under the thread")?;
    ok(kobj::delete(slot::CNODE, thread, 64), "delete the thread")?;
    ok(kobj::delete(slot::CNODE, other, 64), "delete the address space after its thread")
}

/// Only the holder of the TraceControl capability starts, stops or reads tracing: a
/// program without it gets `IllegalOperation` for the labels the debug console used to
/// take (and for trace-control labels on other capabilities) and `InvalidCapability`
/// for the empty trace-control slot. (Tracing control used to ride on the debug
/// console, which every program gets.)
fn trace_control(ctx: &mut Ctx) -> Outcome {
    let (child, badge) = start(ctx, "notrace", 0, ctx.cpus - 1, &[], false)?;
    let mut codes = None;
    collect(ctx, 100, |b, message| {
        if b == badge && message.label() == 4 {
            let mut words = [0u64; 6];
            for (word, got) in words.iter_mut().zip(message.words()) {
                *word = *got;
            }
            codes = Some((message.words().len(), words));
            return true;
        }
        false
    });
    stop(&child);
    let illegal = Error::IllegalOperation.code();
    let expected = [illegal, illegal, illegal, illegal, illegal, Error::InvalidCapability.code()];
    match codes {
        Some((6, codes)) if codes == expected => {}
        Some(_) => return Err("a program without TraceControl was not refused as documented"),
        None => return Err("the notrace program never reported"),
    }
    // The holder can: bad categories are refused, a start and a stop work.
    let start_with =
        |categories| call(slot::TRACE_CONTROL, &Message::new(trace_control::START, &[categories]));
    expect_err(start_with(1 << 31), Error::InvalidArgument, "unknown category bits accepted")?;
    expect_err(
        call(slot::TRACE_CONTROL, &Message::new(0x7f, &[])),
        Error::IllegalOperation,
        "unknown trace-control label accepted",
    )?;
    ok(kobj::trace_start(slot::TRACE_CONTROL, SCHED), "the root task cannot start tracing")?;
    ok(kobj::trace_stop(slot::TRACE_CONTROL), "the root task cannot stop tracing")
}

/// A full kernel trace ring overwrites its oldest records, or with `KEEP_OLDEST`
/// drops new ones, and `STATS` counts each kind of loss; bad flags, a running trace
/// and a CPU that is not there are refused.
fn trace_ring_policies(ctx: &mut Ctx) -> Outcome {
    const SYSCALL: u64 = Categories::SYSCALL.bits() as u64;
    // Two records (entry, exit) per call: more than a ring holds (4096).
    const CALLS: u64 = 3000;
    let tc = slot::TRACE_CONTROL;
    expect_err(
        kobj::trace_start_with(tc, SYSCALL, 2),
        Error::InvalidArgument,
        "unknown START flag accepted",
    )?;
    expect_err(kobj::trace_stats(tc, ctx.cpus), Error::RangeError, "STATS of a missing CPU")?;
    let here = u64::from(ramen_rt::current_cpu());
    let mut seen = [(0, 0, 0); 2];
    for (flags, seen) in [0, trace_control::KEEP_OLDEST].into_iter().zip(&mut seen) {
        ok(kobj::trace_start_with(tc, SYSCALL, flags), "START refused")?;
        expect_err(kobj::trace_stats(tc, here), Error::Busy, "STATS while tracing runs")?;
        for _ in 0..CALLS {
            ok(kobj::ipc_stats(slot::DEBUG), "IPC_STATS failed")?;
        }
        ok(kobj::trace_stop(tc), "STOP refused")?;
        *seen = ok(kobj::trace_stats(tc, here), "STATS refused")?;
    }
    let [(held, dropped, overwritten), (kept, refused, replaced)] = seen;
    let full = 4096;
    if held != full || dropped != 0 || overwritten < 2 * CALLS - full {
        println!("    overwrite: held {} dropped {} overwritten {}", held, dropped, overwritten);
        return Err("a full ring in overwrite mode did not keep the newest records");
    }
    if kept != full || replaced != 0 || refused < 2 * CALLS - full {
        println!("    keep oldest: held {} dropped {} overwritten {}", kept, refused, replaced);
        return Err("a full ring in KEEP_OLDEST mode did not drop the new records");
    }
    Ok(())
}

/// The same calls, once with the IPC fastpath on and once with it switched off
/// (`SET_FASTPATH`): the `mirror` client folds every register of every reply into a
/// digest, and the server's replies depend on every register it received, so equal
/// digests mean both paths handed over the same registers in both directions. Run
/// with the server on the client's CPU (the direct switch) and, with two CPUs or
/// more, on another (the cross-CPU hand-over with a remote wake-up). The kernel's
/// counters show which path ran: nearly all fast, then none.
fn fast_slow_differential(ctx: &mut Ctx) -> Outcome {
    const ROUNDS: u64 = 210;
    let tc = slot::TRACE_CONTROL;
    expect_err(
        call(tc, &Message::new(trace_control::SET_FASTPATH, &[2])),
        Error::InvalidArgument,
        "SET_FASTPATH 2 accepted",
    )?;
    let here = u64::from(ramen_rt::current_cpu());
    let other = (here + 1) % ctx.cpus;
    let placements: &[u64] = if other == here { &[here] } else { &[here, other] };
    for (&server_cpu, one_way) in placements.iter().flat_map(|c| [(c, false), (c, true)]) {
        let mut runs = [(0u64, 0u64); 2];
        for (on, run) in [true, false].into_iter().zip(&mut runs) {
            ok(kobj::set_fastpath(tc, on), "SET_FASTPATH refused")?;
            *run = mirror_run(ctx, ROUNDS, here, server_cpu, one_way);
            ok(kobj::set_fastpath(tc, true), "SET_FASTPATH back on refused")?;
        }
        let [(fast_digest, fast_ops), (slow_digest, slow_ops)] = runs;
        println!(
            "    {} server on cpu {} (client {}): fastpath on: {} fast operations; off: {}",
            if one_way { "send/recv" } else { "call" },
            server_cpu,
            here,
            fast_ops,
            slow_ops
        );
        if fast_digest == 0 || slow_digest == 0 {
            return Err("a mirror client failed or never reported");
        }
        // (A kernel built without the fastpath takes the slow path both times.)
        if ctx.expect_slowpath && fast_ops != 0 {
            return Err("a kernel built without the fastpath took it");
        }
        // Every fourth call sets reserved info bits and takes the slow path (which
        // clears them); the others and every reply take the fastpath.
        if !ctx.expect_slowpath && fast_ops < 2 * ROUNDS - (ROUNDS / 4 + 1) - 4 {
            return Err("with the fastpath on, the calls did not take it");
        }
        if slow_ops != 0 {
            return Err("with the fastpath off, an operation took it");
        }
        if fast_digest != slow_digest {
            return Err("the fastpath and the slow path handed over different registers");
        }
    }
    Ok(())
}

/// Clients on every CPU (four at least) call one server at once, so callers queue
/// on its endpoint while it answers another (`crate::contended`). With the fastpath
/// on, a queued `Call` and a `ReplyRecv` that finds callers waiting stay off the
/// slow path and off `CAP_LOCK`'s write side: neither is taken more than once per
/// hundred round trips (0 in every run so far; the margin is for an inbox found
/// full). With it off every call and reply takes the write lock, which shows the
/// count is real. Every client must make all its calls.
fn busy_server(ctx: &mut Ctx) -> Outcome {
    const ROUNDS: u64 = 1500;
    let clients = ctx.cpus.clamp(4, 8);
    let server_cpu = ctx.cpus - 1;
    let mut runs = [crate::contended::Contended::default(); 2];
    let mut next = runs.iter_mut();
    crate::contended::run(
        &mut ctx.alloc,
        &ctx.files,
        ctx.report,
        (server_cpu, ctx.cpus),
        (clients, ROUNDS),
        &[true, false],
        |_, run| {
            if let Some(slot) = next.next() {
                *slot = run;
            }
            Ok(())
        },
    )?;
    let [on, off] = runs;
    for (what, run) in [("on", on), ("off", off)] {
        println!(
            "    fastpath {}: {} clients, {} round trips, {} slow-path IPC calls, {} CAP_LOCK writes",
            what, run.clients, run.round_trips, run.slow, run.cap_writes
        );
        if run.round_trips != clients * ROUNDS {
            return Err("a client did not make all its calls");
        }
    }
    if off.cap_writes < off.round_trips || off.slow < off.round_trips {
        return Err("with the fastpath off, calls did not take the slow path's write lock");
    }
    if !ctx.expect_slowpath && (on.cap_writes * 100 > on.round_trips || on.slow * 100 > on.round_trips) {
        return Err("callers queued on a busy server took the slow path or the global lock");
    }
    Ok(())
}

/// Cross-CPU calls on every CPU but the root task's, in a ring (the client on CPU
/// `i` calls a server on the next, by `Call` or by `Send` + `Recv` in turn; a
/// notification ping-pong runs the other way),
/// while the root task changes capabilities (copy
/// and delete, each taking `CAP_LOCK`'s write side, which waits out every CPU's
/// fastpath read section) as fast as it can. Every client must finish with the digest
/// a lone run gives (the calls are the same). Needs three CPUs or more.
fn cross_cpu_churn(ctx: &mut Ctx) -> Outcome {
    const ROUNDS: u64 = 1000;
    const MAX_PAIRS: usize = 8;
    let here = u64::from(ramen_rt::current_cpu());
    let others: heapless_cpus::List = heapless_cpus::others(ctx.cpus, here);
    if others.len() < 2 {
        return Ok(());
    }
    // Call pairs and one-way (`Send` + `Recv`) pairs alternate round the ring.
    let (call_reference, _) = mirror_run(ctx, ROUNDS, others.get(0), others.get(1), false);
    let (one_way_reference, _) = mirror_run(ctx, ROUNDS, others.get(0), others.get(1), true);
    if call_reference == 0 || one_way_reference == 0 {
        return Err("a reference mirror run failed");
    }
    let pairs = others.len().min(MAX_PAIRS);
    let mut children: [Option<(Child, Child, u64, u64)>; MAX_PAIRS] = [const { None }; MAX_PAIRS];
    let mut notes: [Option<(Child, Child, u64)>; MAX_PAIRS] = [const { None }; MAX_PAIRS];
    for (i, (pair, note)) in children.iter_mut().zip(&mut notes).enumerate().take(pairs) {
        let (client_cpu, server_cpu) = (others.get(i), others.get((i + 1) % pairs));
        let endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "endpoint")?;
        let back = ok(ctx.alloc.make(object::ENDPOINT, 0), "endpoint")?;
        let grants = [(WAIT, endpoint), (MIRROR_PONG, back)];
        let (modes, expected) =
            if i % 2 == 1 { ((4, 5), one_way_reference) } else { ((0, 1), call_reference) };
        let (server, _) = start(ctx, "mirror", modes.0, server_cpu, &grants, false)?;
        let (client, badge) = start(ctx, "mirror", ROUNDS << 3 | modes.1, client_cpu, &grants, false)?;
        *pair = Some((client, server, badge, expected));
        // Beside it, a notification ping-pong the other way round the ring.
        let ping = ok(ctx.alloc.make(object::NOTIFICATION, 0), "notification")?;
        let pong = ok(ctx.alloc.make(object::NOTIFICATION, 0), "notification")?;
        let grants = [(WAIT, ping), (MIRROR_PONG, pong)];
        let (server, _) = start(ctx, "mirror", 2, client_cpu, &grants, false)?;
        let (client, badge) = start(ctx, "mirror", ROUNDS << 3 | 3, server_cpu, &grants, false)?;
        *note = Some((client, server, badge));
    }
    // Churn: copy a capability into a free slot and delete it again, until every
    // client has reported.
    let source = ok(ctx.alloc.make(object::ENDPOINT, 0), "churn endpoint")?;
    let spare = ok(ctx.alloc.slot(), "churn slot")?;
    let (mut reported, mut wrong, mut changes) = (0usize, 0usize, 0u64);
    let mut spins = 0u64;
    while reported < 2 * pairs && spins < 2_000_000 {
        spins += 1;
        ok(kobj::copy(slot::CNODE, spare, 64, source), "churn copy")?;
        ok(kobj::delete(slot::CNODE, spare, 64), "churn delete")?;
        changes += 1;
        if let Ok((badge, message)) = ramen_rt::nb_recv(ctx.report) {
            if let Some((_, _, _, expected)) = children.iter().flatten().find(|(_, _, b, _)| *b == badge) {
                reported += 1;
                if message.label() != 1 || message.words().first() != Some(expected) {
                    wrong += 1;
                }
            } else if notes.iter().flatten().any(|(_, _, b)| *b == badge) {
                reported += 1;
                if message.label() != 1 || message.words().first() != Some(&ROUNDS) {
                    wrong += 1;
                }
            }
        }
    }
    for (client, server, _, _) in children.iter().flatten() {
        stop(client);
        stop(server);
    }
    for (client, server, _) in notes.iter().flatten() {
        stop(client);
        stop(server);
    }
    println!(
        "    {} cross-CPU call and send/recv pairs and {} notification pairs, {} capability changes meanwhile",
        pairs, pairs, changes
    );
    if reported < 2 * pairs {
        return Err("a cross-CPU client never finished");
    }
    if wrong > 0 {
        return Err("a cross-CPU client got different answers than a lone run");
    }
    Ok(())
}

/// A client calls a server (both on other CPUs than the root task's) through the
/// capability in its `WAIT` slot, `ROUNDS` times, while the root task deletes that
/// capability and mints it again from the endpoint's original, with the other of two
/// badges each time, as fast as it can: changes of an endpoint capability that leave
/// the endpoint other capabilities, which the kernel makes holding single slots in a
/// read section (`ramen_core::light`), while the client's calls read the same slot on
/// the fastpath (a seqlock read, or its lookup memo checked against the slot's
/// version). Every answer must carry one of the two badges (a capability read half
/// old and half new would carry another, or none), both must occur (a memo that
/// missed the change would keep the first), and the changes must take no write
/// acquisition of `CAP_LOCK`: all of them on the lock-free path. The `slowpath-only`
/// kernel (no lock-free paths) makes every change under the write lock instead, and
/// the test checks that too. Needs two CPUs.
fn capability_changes_under_calls(ctx: &mut Ctx) -> Outcome {
    const ROUNDS: u64 = 20_000;
    let here = u64::from(ramen_rt::current_cpu());
    let others = heapless_cpus::others(ctx.cpus, here);
    if others.len() == 0 {
        return Ok(());
    }
    let endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "endpoint")?;
    let badged = ok(ctx.alloc.slot(), "slot")?;
    ok(kobj::mint(slot::CNODE, badged, 64, endpoint, object::rights::ALL, SWAP_BADGES[0]), "mint")?;
    let (server_cpu, client_cpu) = (others.get(others.len() - 1), others.get(0));
    let (server, _) = start(ctx, "mirror", 0, server_cpu, &[(WAIT, endpoint)], false)?;
    let (client, badge) = start(ctx, "mirror", ROUNDS << 3 | 6, client_cpu, &[(WAIT, badged)], false)?;
    let outcome = (|| {
        let writes_before = ok(kobj::cap_lock_writes(slot::DEBUG), "IPC_STATS failed")?;
        let unlocked_before = ok(kobj::cap_changes_unlocked(slot::DEBUG), "IPC_STATS failed")?;
        let (mut changes, mut report) = (0u64, None);
        while report.is_none() && changes < 4_000_000 {
            ok(kobj::delete(client.cspace, WAIT, 64), "delete the client's capability")?;
            let next = SWAP_BADGES[((changes / 2 + 1) % 2) as usize];
            ok(kobj::mint(client.cspace, WAIT, 64, endpoint, object::rights::ALL, next), "mint it again")?;
            changes += 2;
            if let Ok((b, message)) = ramen_rt::nb_recv(ctx.report)
                && b == badge
            {
                report = Some(message);
            }
        }
        let writes = ok(kobj::cap_lock_writes(slot::DEBUG), "IPC_STATS failed")? - writes_before;
        let unlocked = ok(kobj::cap_changes_unlocked(slot::DEBUG), "IPC_STATS failed")? - unlocked_before;
        let report = report.ok_or("the client never reported")?;
        let [first, second, other, refused] = match report.words() {
            &[a, b, c, d] => [a, b, c, d],
            _ => return Err("the client's report is malformed"),
        };
        println!(
            "    {} calls: {} / {} with either badge, {} refused, {} otherwise; {} capability changes meanwhile, \
             {} without the write lock, {} write acquisitions",
            ROUNDS, first, second, refused, other, changes, unlocked, writes
        );
        if other != 0 {
            return Err("a call carried a badge the capability never had");
        }
        if first + second + refused != ROUNDS || first == 0 || second == 0 {
            return Err("the client did not see both badges (a stale capability?)");
        }
        if ctx.expect_slowpath {
            if unlocked != 0 || writes < changes {
                return Err("the slow-path kernel changed capabilities without the write lock");
            }
        } else if unlocked < changes || writes * 100 > changes {
            return Err("capability changes took the capability lock's write side");
        }
        Ok(())
    })();
    stop(&client);
    stop(&server);
    outcome
}

/// CPU lists without allocation.
mod heapless_cpus {
    /// Up to 64 CPU indices.
    pub struct List {
        cpus: [u64; 64],
        len: usize,
    }

    impl List {
        pub fn len(&self) -> usize {
            self.len
        }

        pub fn get(&self, i: usize) -> u64 {
            self.cpus.get(i % self.len.max(1)).copied().unwrap_or(0)
        }
    }

    /// Every CPU below `count` but `except`.
    pub fn others(count: u64, except: u64) -> List {
        let mut list = List { cpus: [0; 64], len: 0 };
        for cpu in (0..count).filter(|c| *c != except).take(64) {
            if let Some(slot) = list.cpus.get_mut(list.len) {
                *slot = cpu;
                list.len += 1;
            }
        }
        list
    }
}

/// Child slot of the `mirror` notification ping-pong's second notification.
const MIRROR_PONG: u64 = 11;

/// One `mirror` pair: the client on `client_cpu` makes `rounds` calls to a server on
/// `server_cpu` (`one_way`: as `Send` + `Recv` over two endpoints). Returns the
/// client's digest (0: it failed) and the fastpath operations the kernel counted
/// meanwhile.
fn mirror_run(ctx: &mut Ctx, rounds: u64, client_cpu: u64, server_cpu: u64, one_way: bool) -> (u64, u64) {
    let (Ok(endpoint), Ok(back)) = (ctx.alloc.make(object::ENDPOINT, 0), ctx.alloc.make(object::ENDPOINT, 0))
    else {
        return (0, 0);
    };
    let grants = [(WAIT, endpoint), (MIRROR_PONG, back)];
    let (server_mode, client_mode) = if one_way { (4, 5) } else { (0, 1) };
    let Ok((server, _)) = start(ctx, "mirror", server_mode, server_cpu, &grants, false) else {
        return (0, 0);
    };
    let (fast_before, _) = kobj::ipc_stats(slot::DEBUG).unwrap_or((0, 0));
    let client = start(ctx, "mirror", rounds << 3 | client_mode, client_cpu, &grants, false);
    let mut digest = 0;
    if let Ok((_, badge)) = client {
        collect(ctx, 100, |b, message| {
            if b == badge {
                if message.label() == 1 {
                    digest = message.words().first().copied().unwrap_or(0);
                }
                return true;
            }
            false
        });
    }
    let (fast_after, _) = kobj::ipc_stats(slot::DEBUG).unwrap_or((0, 0));
    if let Ok((client, _)) = client {
        stop(&client);
    }
    stop(&server);
    (digest, fast_after - fast_before)
}

/// `SET_NAME` takes at most 16 bytes of UTF-8 without NUL and changes nothing on error.
fn thread_names(ctx: &mut Ctx) -> Outcome {
    let set = |len, a, b| call(slot::THREAD, &Message::new(thread::SET_NAME, &[len, a, b]));
    expect_err(set(17, 0, 0), Error::RangeError, "a 17-byte name accepted")?;
    expect_err(set(2, 0xffff, 0), Error::InvalidArgument, "a name that is not UTF-8 accepted")?;
    expect_err(set(3, u64::from_le_bytes(*b"a\0b\0\0\0\0\0"), 0), Error::InvalidArgument, "a NUL accepted")?;
    expect_err(
        call(slot::DEBUG, &Message::new(thread::SET_NAME, &[1, 0x41, 0])),
        Error::IllegalOperation,
        "SET_NAME on the console accepted",
    )?;
    ok(kobj::set_name(slot::THREAD, "root (tests)"), "a good name refused")?;
    ok(kobj::set_name(slot::THREAD, "root"), "renaming refused")?;
    // Another thread only while it is suspended (its TCB is its CPU's to touch): a
    // `spin` that has reported is surely running.
    let (spinner, badge) = start(ctx, "spin", 100_000, ctx.cpus - 1, &[], false)?;
    let running = collect(ctx, 1000, |b, _| b == badge);
    let named = kobj::set_name(spinner.tcb, "running");
    stop(&spinner);
    if !running {
        return Err("the spin program never reported");
    }
    // (Naming a suspended thread is what the loader does for every program it starts.
    // Suspending one on another CPU is asynchronous, so it is not repeated here.)
    expect_err(named, Error::WrongThreadState, "named a thread that was not suspended")
}

/// A user trace buffer: bad frames are refused; recording (no system call) happens
/// only while tracing runs with `USER`, because the kernel flips the flag in the shared
/// header; each start empties the buffer.
fn user_trace_buffer(ctx: &mut Ctx) -> Outcome {
    use ramen_rt::trace::{Tracer, label};
    // The page after the root task's IPC buffer, whose page table the kernel installed.
    const BUFFER: u64 = ramen_abi::syscall::ROOT_IPC_BUFFER + ramen_rt::vm::PAGE;
    let frame = ok(ctx.alloc.make(object::FRAME_4K, 0), "frame")?;
    let endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "endpoint")?;
    let read_only = ok(ctx.alloc.slot(), "slot")?;
    ok(kobj::mint(slot::CNODE, read_only, 64, frame, object::rights::READ, 0), "read-only copy")?;
    expect_err(kobj::set_trace_buffer(slot::THREAD, endpoint), Error::WrongType, "an endpoint as buffer")?;
    expect_err(
        kobj::set_trace_buffer(slot::THREAD, read_only),
        Error::InsufficientRights,
        "a read-only frame",
    )?;
    let empty = ok(ctx.alloc.slot(), "slot")?;
    expect_err(kobj::set_trace_buffer(slot::THREAD, empty), Error::InvalidCapability, "an empty slot")?;

    let mut tracer = ok(Tracer::attach(slot::THREAD, frame, BUFFER), "attach a buffer")?;
    let call = label("call");
    if tracer.instant(call, 0) {
        return Err("recorded while tracing was off");
    }
    ok(kobj::trace_start(slot::TRACE_CONTROL, USER), "start user tracing")?;
    let recorded = tracer.begin(call, 1) && tracer.counter(label("depth"), 3) && tracer.end(call, 1);
    let count = tracer.recorded();
    ok(kobj::trace_stop(slot::TRACE_CONTROL), "stop tracing")?;
    if !recorded || count != 3 {
        return Err("records refused or miscounted while user tracing ran");
    }
    if tracer.instant(call, 2) {
        return Err("recorded after tracing stopped");
    }
    ok(kobj::trace_start(slot::TRACE_CONTROL, SCHED), "start without USER")?;
    let (emptied, refused) = (tracer.recorded() == 0, !tracer.instant(call, 3));
    ok(kobj::trace_stop(slot::TRACE_CONTROL), "stop tracing")?;
    if !emptied || !refused {
        return Err("a start without USER left the buffer full or recording");
    }
    ok(tracer.detach(slot::THREAD), "detach")?;
    // A registered frame whose last capabilities are deleted is forgotten: tracing
    // starts and stops afterwards without touching it.
    ok(kobj::set_trace_buffer(slot::THREAD, frame), "register again")?;
    ok(kobj::delete(slot::CNODE, read_only, 64), "delete the copy")?;
    ok(kobj::delete(slot::CNODE, frame, 64), "delete the frame")?;
    ok(kobj::trace_start(slot::TRACE_CONTROL, USER), "start after the delete")?;
    ok(kobj::trace_stop(slot::TRACE_CONTROL), "stop after the delete")?;
    ok(kobj::set_trace_buffer(slot::THREAD, 0), "nothing left to take away")
}

/// A Foundry client given a tracer (`ramen_rt::trace::CallSpans`) records a begin and
/// an end per call into its user trace buffer while user tracing runs.
fn foundry_spans(ctx: &mut Ctx) -> Outcome {
    /// The echo client's calls (`kernel/user-tests/src/bin/echo.rs`).
    const CALLS: u64 = 7;
    /// Child slot of the buffer's frame (`ramen_user_tests::TRACE_FRAME`).
    const TRACE_FRAME: u64 = 10;
    let endpoint = ok(ctx.alloc.make(object::ENDPOINT, 0), "endpoint")?;
    let frame = ok(ctx.alloc.make(object::FRAME_4K, 0), "frame")?;
    let (server, _) = start(ctx, "echo", 0, 0, &[(WAIT, endpoint)], false)?;
    ok(kobj::trace_start(slot::TRACE_CONTROL, USER), "start user tracing")?;
    let client = start(ctx, "echo", 2, 0, &[(WAIT, endpoint), (TRACE_FRAME, frame)], false);
    let mut verdict = None;
    if let Ok((_, badge)) = client {
        collect(ctx, 100, |b, message| {
            if b == badge {
                verdict = Some((message.label(), message.words().first().copied()));
                return true;
            }
            false
        });
    }
    let _ = kobj::trace_stop(slot::TRACE_CONTROL);
    if let Ok((client, _)) = client {
        stop(&client);
    }
    stop(&server);
    match verdict {
        Some((1, Some(recorded))) if recorded == 2 * CALLS => Ok(()),
        Some((1, _)) => Err("the traced client did not record a begin and an end per call"),
        Some(_) => Err("the traced echo client got a wrong answer"),
        None => Err("the traced echo client never finished"),
    }
}
