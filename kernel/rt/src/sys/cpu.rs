//! Which CPU this thread is running on, from `rdtscp` (the kernel puts each CPU's
//! index in `IA32_TSC_AUX`).

/// The index of the CPU the thread ran on at the moment of the call (it may move right
/// after).
pub fn current_cpu() -> u32 {
    let mut aux = 0u32;
    // SAFETY: rdtscp only reads the TSC and IA32_TSC_AUX; the kernel leaves CR4.TSD
    // clear, so it is allowed in user mode.
    unsafe { core::arch::x86_64::__rdtscp(&mut aux) };
    aux
}
