//! The time-stamp counter, for benchmarks: `rdtsc` before the operation timed,
//! `rdtscp` after it (it waits for earlier instructions to finish), as sel4bench does.

/// The time-stamp counter. Not ordered against earlier instructions: read it just
/// before the operation to time.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc only reads the TSC; the kernel leaves CR4.TSD clear, so it is
    // allowed in user mode and cannot fault.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The time-stamp counter, read after every earlier instruction has executed: read it
/// just after the operation to time. (The CPU index the kernel keeps in
/// `IA32_TSC_AUX` is dropped; `current_cpu` returns it.)
#[inline(always)]
pub fn rdtscp() -> u64 {
    let mut aux = 0u32;
    // SAFETY: rdtscp only reads the TSC and IA32_TSC_AUX into registers and writes
    // `aux`, a local this function owns; CR4.TSD is clear, so it is allowed in user mode.
    unsafe { core::arch::x86_64::__rdtscp(&mut aux) }
}

/// The low 32 bits of [`rdtsc`]: what a latency sample keeps (a window is far shorter
/// than 2^32 ticks), without combining EDX into the result inside the timed window.
#[inline(always)]
pub fn rdtsc32() -> u32 {
    let low: u32;
    // SAFETY: as for `rdtsc`; EDX (the high half) is declared clobbered and dropped.
    unsafe {
        core::arch::asm!("rdtsc", out("eax") low, out("edx") _, options(nomem, nostack, preserves_flags));
    }
    low
}

/// The low 32 bits of [`rdtscp`].
#[inline(always)]
pub fn rdtscp32() -> u32 {
    let low: u32;
    // SAFETY: as for `rdtscp`; EDX and ECX (high half, TSC_AUX) are clobbered and dropped.
    unsafe {
        core::arch::asm!(
            "rdtscp",
            out("eax") low,
            out("edx") _,
            out("ecx") _,
            options(nomem, nostack, preserves_flags)
        );
    }
    low
}
