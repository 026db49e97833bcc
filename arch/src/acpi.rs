//! Finding the firmware's ACPI tables, through the `acpi` crate.
//!
//! The crate validates the RSDP, the XSDT/RSDT and each table's checksum; the MADT
//! gives the local APIC ids of the CPUs. The SRAT and SLIT (which the crate does not
//! parse) are located here and handed to `ramen-core::topology` as bytes. Physical
//! memory is read through the direct map, so "mapping" a region is an address
//! computation and the slices handed out live forever.

use core::ptr::NonNull;

use acpi::madt::{Madt, MadtEntry};
use acpi::sdt::{SdtHeader, Signature};
use acpi::{AcpiHandler, AcpiTable, AcpiTables, PhysicalMapping};

use crate::paging::phys_to_virt;

/// Most CPUs collected from the MADT.
pub const MAX_MADT_CPUS: usize = 1024;

/// Reads ACPI tables through the direct map.
#[derive(Clone, Copy, Debug)]
struct DirectMap;

impl AcpiHandler for DirectMap {
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let virt = phys_to_virt(physical_address as u64) as *mut T;
        // SAFETY: the direct map covers the low 4 GiB and all RAM, where firmware
        // tables live; the pointer is non-null because the direct map is in the upper
        // half. The acpi crate promises a region that holds a `T`.
        unsafe { PhysicalMapping::new(physical_address, NonNull::new_unchecked(virt), size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// A table the `acpi` crate does not know, located by signature; only its header is
/// typed, the body is read as bytes.
#[repr(C, packed)]
struct RawTable<const SRAT: bool> {
    header: SdtHeader,
}

// SAFETY: the type is exactly the common header, which every table starts with.
unsafe impl AcpiTable for RawTable<true> {
    const SIGNATURE: Signature = Signature::SRAT;
    fn header(&self) -> &SdtHeader {
        &self.header
    }
}

// SAFETY: as above.
unsafe impl AcpiTable for RawTable<false> {
    const SIGNATURE: Signature = Signature::SLIT;
    fn header(&self) -> &SdtHeader {
        &self.header
    }
}

/// What the firmware tables say about the CPUs.
#[derive(Clone, Copy, Debug)]
pub struct Firmware {
    /// APIC ids of enabled CPUs, in MADT order.
    pub apic_ids: [u32; MAX_MADT_CPUS],
    /// Valid entries of `apic_ids`.
    pub cpu_count: usize,
    /// CPUs the MADT lists as present but disabled.
    pub disabled_cpus: usize,
    /// The SRAT's bytes, if there is one.
    pub srat: Option<&'static [u8]>,
    /// The SLIT's bytes, if there is one.
    pub slit: Option<&'static [u8]>,
    /// Physical address of the local APIC registers the MADT names.
    pub lapic_phys: u64,
}

impl Firmware {
    /// APIC ids of enabled CPUs.
    pub fn apic_ids(&self) -> &[u32] {
        self.apic_ids.get(..self.cpu_count).unwrap_or(&[])
    }
}

/// Why the tables could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirmwareError {
    /// The loader passed no RSDP.
    NoRsdp,
    /// The RSDP or root table is invalid.
    BadRoot,
    /// No valid MADT.
    NoMadt,
    /// The MADT lists no enabled CPU.
    NoCpus,
}

impl FirmwareError {
    /// A short description for the boot log.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::NoRsdp => "no RSDP from the loader (ACPI disabled?)",
            Self::BadRoot => "RSDP or XSDT/RSDT invalid",
            Self::NoMadt => "no valid MADT",
            Self::NoCpus => "MADT lists no enabled CPU",
        }
    }
}

fn table_bytes<T: AcpiTable>(tables: &AcpiTables<DirectMap>) -> Option<&'static [u8]> {
    let mapping = tables.find_table::<T>().ok()?;
    let len = mapping.region_length();
    let virt = phys_to_virt(mapping.physical_start() as u64) as *const u8;
    // SAFETY: the table was validated by the crate (signature, length, checksum) and
    // lies in firmware memory that the direct map covers permanently and that nothing
    // ever writes.
    Some(unsafe { core::slice::from_raw_parts(virt, len) })
}

/// Reads the MADT, SRAT and SLIT. Must run after the direct map is active.
pub fn discover(rsdp: u64) -> Result<Firmware, FirmwareError> {
    if rsdp == 0 {
        return Err(FirmwareError::NoRsdp);
    }
    // SAFETY: the RSDP address comes from the loader; the crate validates signature
    // and checksum before trusting anything it points to.
    let tables =
        unsafe { AcpiTables::from_rsdp(DirectMap, rsdp as usize) }.map_err(|_| FirmwareError::BadRoot)?;
    let madt = tables.find_table::<Madt>().map_err(|_| FirmwareError::NoMadt)?;
    let mut fw = Firmware {
        apic_ids: [0; MAX_MADT_CPUS],
        cpu_count: 0,
        disabled_cpus: 0,
        srat: None,
        slit: None,
        lapic_phys: u64::from(madt.get().local_apic_address),
    };
    for entry in madt.get().entries() {
        let (id, flags) = match entry {
            MadtEntry::LocalApic(e) => (u32::from(e.apic_id), e.flags),
            MadtEntry::LocalX2Apic(e) => (e.x2apic_id, e.flags),
            MadtEntry::LocalApicAddressOverride(e) => {
                fw.lapic_phys = e.local_apic_address;
                continue;
            }
            _ => continue,
        };
        if flags & 1 == 0 {
            fw.disabled_cpus += 1;
            continue;
        }
        if let Some(slot) = fw.apic_ids.get_mut(fw.cpu_count) {
            *slot = id;
            fw.cpu_count += 1;
        }
    }
    if fw.cpu_count == 0 {
        return Err(FirmwareError::NoCpus);
    }
    fw.srat = table_bytes::<RawTable<true>>(&tables);
    fw.slit = table_bytes::<RawTable<false>>(&tables);
    Ok(fw)
}
