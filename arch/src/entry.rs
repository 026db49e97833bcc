//! From the assembly entry points into the kernel.
//!
//! The kernel binary provides `ramen_kernel_main` (boot CPU) and
//! `ramen_kernel_ap_main` (every other CPU); arch calls them once its own early
//! set-up is done.

use crate::pvh::{BootParams, StartInfoError};

unsafe extern "Rust" {
    /// The kernel's boot-CPU entry, defined by the kernel binary.
    safe fn ramen_kernel_main(boot: Result<BootParams, StartInfoError>) -> !;
}

/// Called by the PVH entry code on the boot stack, paging on, boot tables active.
pub(crate) extern "C" fn bsp_entry(start_info_phys: u32) -> ! {
    crate::serial::init();
    let boot = crate::pvh::parse(u64::from(start_info_phys));
    ramen_kernel_main(boot)
}
