//! User FPU/SSE/AVX state: enabling it and saving/restoring it per thread.
//!
//! The kernel itself never touches the FPU (the image is checked to contain no SIMD
//! instruction); it saves the user's state with `XSAVE` (or `FXSAVE` on CPUs without
//! it) when a different thread is about to run on the CPU, and restores the next
//! thread's. Save areas live in TCBs, which only the kernel can write, so a restore
//! never reads user-controlled bytes. Area sizes come from CPUID leaf 0xD.

use core::sync::atomic::{AtomicU64, Ordering};

use raw_cpuid::CpuId;
use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
use x86_64::registers::xcontrol::{XCr0, XCr0Flags};

/// Largest save area the kernel reserves in a TCB.
pub const MAX_AREA_BYTES: u64 = 3072;
/// Offset of MXCSR in the legacy (FXSAVE) region.
const MXCSR_OFFSET: usize = 24;
/// MXCSR with all exceptions masked: the processor's reset value.
const MXCSR_DEFAULT: u32 = 0x1f80;
/// x87 control word with all exceptions masked.
const FCW_DEFAULT: u16 = 0x037f;

/// Save-area size in use (0 until `init`).
static AREA_BYTES: AtomicU64 = AtomicU64::new(0);
/// The XCR0 components saved, 0 when falling back to FXSAVE.
static XSAVE_MASK: AtomicU64 = AtomicU64::new(0);

/// Why the FPU could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FpuError {
    /// The XSAVE area the CPU needs exceeds what a TCB reserves.
    AreaTooLarge(u64),
}

/// Enables SSE (and XSAVE with x87/SSE/AVX state where present) on this CPU. The
/// same configuration on every CPU: the boot CPU's CPUID decides.
pub fn init(features: &crate::cpu::Features) -> Result<(), FpuError> {
    // SAFETY: enabling FXSR/XMMEXCPT and clearing EM/TS only lets user code run SSE
    // instructions; the kernel saves their state on every thread switch.
    unsafe {
        Cr0::update(|f| {
            f.remove(Cr0Flags::EMULATE_COPROCESSOR | Cr0Flags::TASK_SWITCHED);
            f.insert(Cr0Flags::MONITOR_COPROCESSOR);
        });
        Cr4::update(|f| f.insert(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE));
    }
    if !features.xsave {
        AREA_BYTES.store(512, Ordering::Relaxed);
        return Ok(());
    }
    // SAFETY: OSXSAVE enables XGETBV/XSETBV/XSAVE, which the CPU supports.
    unsafe { Cr4::update(|f| f.insert(Cr4Flags::OSXSAVE)) };
    let cpuid = CpuId::new();
    let supported = cpuid.get_extended_state_info().map_or(0b11, |s| {
        let mut mask = 0b11u64; // x87 | SSE
        if s.xcr0_supports_avx_256() {
            mask |= 0b100;
        }
        mask
    });
    let flags = XCr0Flags::from_bits_truncate(supported);
    // SAFETY: the mask only holds components the CPU reports as supported, always
    // including x87 and SSE, as XSETBV requires.
    unsafe { XCr0::write(flags) };
    let size =
        cpuid.get_extended_state_info().map_or(512, |s| u64::from(s.xsave_area_size_enabled_features()));
    if size > MAX_AREA_BYTES {
        return Err(FpuError::AreaTooLarge(size));
    }
    AREA_BYTES.store(size, Ordering::Relaxed);
    XSAVE_MASK.store(supported, Ordering::Relaxed);
    Ok(())
}

/// Bytes of save area in use.
pub fn area_bytes() -> u64 {
    AREA_BYTES.load(Ordering::Relaxed)
}

/// A per-thread save area, 64-byte aligned as XSAVE requires.
#[repr(C, align(64))]
pub struct FpuArea(pub [u8; MAX_AREA_BYTES as usize]);

impl FpuArea {
    /// The state a new thread starts with: everything in its initial configuration
    /// (all registers zero, exceptions masked).
    pub fn initial() -> Self {
        let mut area = [0u8; MAX_AREA_BYTES as usize];
        if let Some(fcw) = area.get_mut(0..2) {
            fcw.copy_from_slice(&FCW_DEFAULT.to_le_bytes());
        }
        if let Some(mxcsr) = area.get_mut(MXCSR_OFFSET..MXCSR_OFFSET + 4) {
            mxcsr.copy_from_slice(&MXCSR_DEFAULT.to_le_bytes());
        }
        // An all-zero XSAVE header (bytes 512..576) marks every component as in its
        // initial state, which XRSTOR then loads.
        Self(area)
    }

    /// Saves the running CPU's user FPU state here.
    #[inline]
    pub fn save(&mut self) {
        // A hosted test process's FPU is its own (see `hosted`).
        if cfg!(feature = "hosted") {
            return;
        }
        let mask = XSAVE_MASK.load(Ordering::Relaxed);
        let ptr = self.0.as_mut_ptr();
        // SAFETY: the area is 64-byte aligned and at least as large as the size CPUID
        // reported for the enabled components (checked in `init`).
        unsafe {
            if mask == 0 {
                core::arch::asm!("fxsave64 [{}]", in(reg) ptr, options(nostack));
            } else {
                core::arch::asm!("xsave64 [{}]", in(reg) ptr, in("eax") mask as u32,
                    in("edx") (mask >> 32) as u32, options(nostack));
            }
        }
    }

    /// A thread switch: saves the running CPU's user FPU state into `from` (the area
    /// of the thread whose state is live, if any) and loads `to`. The same as
    /// [`save`](Self::save) then [`restore`](Self::restore), reading the feature mask
    /// once (the IPC fastpath switches on every call).
    #[inline(always)]
    pub fn switch(from: Option<&mut FpuArea>, to: &FpuArea) {
        // A hosted test process's FPU is its own (see `hosted`).
        if cfg!(feature = "hosted") {
            return;
        }
        let mask = XSAVE_MASK.load(Ordering::Relaxed);
        let (lo, hi) = (mask as u32, (mask >> 32) as u32);
        let to = to.0.as_ptr();
        // SAFETY: as for `save` and `restore`: both areas are 64-byte aligned and large
        // enough; `to` was produced by `initial` or `save`.
        unsafe {
            if mask == 0 {
                if let Some(from) = from {
                    core::arch::asm!("fxsave64 [{}]", in(reg) from.0.as_mut_ptr(), options(nostack));
                }
                core::arch::asm!("fxrstor64 [{}]", in(reg) to, options(nostack));
            } else {
                if let Some(from) = from {
                    core::arch::asm!("xsave64 [{}]", in(reg) from.0.as_mut_ptr(), in("eax") lo,
                        in("edx") hi, options(nostack));
                }
                core::arch::asm!("xrstor64 [{}]", in(reg) to, in("eax") lo, in("edx") hi,
                    options(nostack));
            }
        }
    }

    /// Loads this area into the running CPU's FPU.
    #[inline]
    pub fn restore(&self) {
        // A hosted test process's FPU is its own (see `hosted`).
        if cfg!(feature = "hosted") {
            return;
        }
        let mask = XSAVE_MASK.load(Ordering::Relaxed);
        let ptr = self.0.as_ptr();
        // SAFETY: as for `save`; the area was produced by `initial` or `save` and is
        // only ever written by the kernel, so it is a valid image for XRSTOR/FXRSTOR.
        unsafe {
            if mask == 0 {
                core::arch::asm!("fxrstor64 [{}]", in(reg) ptr, options(nostack));
            } else {
                core::arch::asm!("xrstor64 [{}]", in(reg) ptr, in("eax") mask as u32,
                    in("edx") (mask >> 32) as u32, options(nostack));
            }
        }
    }
}
