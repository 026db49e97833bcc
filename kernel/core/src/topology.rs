//! Machine topology: which CPUs exist, their package (socket) and NUMA node.
//!
//! The ACPI SRAT (CPU and memory affinity) and SLIT (node distances) are parsed here
//! from raw table bytes, so every malformed-table case is a host test; arch finds
//! the tables and the MADT through the `acpi` crate and hands over the bytes.
//! Sized for large machines: up to [`MAX_CPUS`] CPUs and [`MAX_NODES`] nodes.

/// Most CPUs the kernel supports.
pub const MAX_CPUS: usize = 256;
/// Most NUMA nodes the kernel supports.
pub const MAX_NODES: usize = 64;
/// Most SRAT memory-affinity ranges kept.
pub const MAX_MEM_RANGES: usize = 128;

/// Length of the common ACPI table header.
const SDT_HEADER_BYTES: usize = 36;
/// SRAT: header, 4-byte revision and 8 reserved bytes, then entries.
const SRAT_ENTRIES_OFFSET: usize = 48;
/// SLIT: header, then the 8-byte locality count, then the matrix.
const SLIT_MATRIX_OFFSET: usize = 44;

/// A table that cannot be used, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// Shorter than its header, or than its declared length.
    Truncated,
    /// Wrong signature.
    BadSignature,
    /// Bytes do not sum to zero.
    BadChecksum,
    /// An entry's length field is impossible (too short or runs past the end).
    BadEntry {
        /// Byte offset of the entry in the table.
        offset: usize,
    },
    /// More entries than the kernel keeps.
    TooMany,
}

impl TableError {
    /// A short description for the boot log.
    pub const fn describe(&self) -> &'static str {
        match self {
            Self::Truncated => "table truncated",
            Self::BadSignature => "wrong signature",
            Self::BadChecksum => "bad checksum",
            Self::BadEntry { .. } => "malformed entry",
            Self::TooMany => "more entries than supported",
        }
    }
}

fn u8_at(b: &[u8], off: usize) -> Result<u8, TableError> {
    b.get(off).copied().ok_or(TableError::Truncated)
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, TableError> {
    let s = b.get(off..off + 4).ok_or(TableError::Truncated)?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], off: usize) -> Result<u64, TableError> {
    let lo = u64::from(u32_at(b, off)?);
    let hi = u64::from(u32_at(b, off + 4)?);
    Ok(lo | (hi << 32))
}

/// Checks signature, declared length and checksum; returns the table cut to its
/// declared length.
pub fn validate<'a>(bytes: &'a [u8], signature: &[u8; 4]) -> Result<&'a [u8], TableError> {
    if bytes.get(..4) != Some(signature.as_slice()) {
        return Err(if bytes.len() < 4 { TableError::Truncated } else { TableError::BadSignature });
    }
    let len = u32_at(bytes, 4)? as usize;
    if len < SDT_HEADER_BYTES {
        return Err(TableError::Truncated);
    }
    let table = bytes.get(..len).ok_or(TableError::Truncated)?;
    if table.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)) != 0 {
        return Err(TableError::BadChecksum);
    }
    Ok(table)
}

/// A CPU's proximity domain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuAffinity {
    /// Local APIC (or x2APIC) id.
    pub apic_id: u32,
    /// ACPI proximity domain.
    pub domain: u32,
}

/// A memory range's proximity domain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemAffinity {
    /// ACPI proximity domain.
    pub domain: u32,
    /// Physical base.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
}

/// The parsed SRAT (enabled entries only).
#[derive(Clone, Copy, Debug)]
pub struct Srat {
    cpus: [CpuAffinity; MAX_CPUS],
    cpu_count: usize,
    mem: [MemAffinity; MAX_MEM_RANGES],
    mem_count: usize,
}

impl Srat {
    /// Parses a SRAT from its bytes (as found in memory, header included).
    pub fn parse(bytes: &[u8]) -> Result<Self, TableError> {
        let table = validate(bytes, b"SRAT")?;
        let mut srat = Self {
            cpus: [CpuAffinity::default(); MAX_CPUS],
            cpu_count: 0,
            mem: [MemAffinity::default(); MAX_MEM_RANGES],
            mem_count: 0,
        };
        let mut off = SRAT_ENTRIES_OFFSET;
        while off < table.len() {
            let kind = u8_at(table, off)?;
            let len = usize::from(u8_at(table, off + 1)?);
            let entry = match off.checked_add(len) {
                Some(end) if len >= 2 => table.get(off..end),
                _ => None,
            }
            .ok_or(TableError::BadEntry { offset: off })?;
            let short = TableError::BadEntry { offset: off };
            match kind {
                // Processor local APIC affinity.
                0 => {
                    if entry.len() < 16 {
                        return Err(short);
                    }
                    let lo = u32::from(u8_at(entry, 2)?);
                    let hi = u32_at(entry, 8)? >> 8; // bytes 9..12
                    if u32_at(entry, 4)? & 1 != 0 {
                        srat.push_cpu(CpuAffinity {
                            apic_id: u32::from(u8_at(entry, 3)?),
                            domain: lo | (hi << 8),
                        })?;
                    }
                }
                // Memory affinity.
                1 => {
                    if entry.len() < 40 {
                        return Err(short);
                    }
                    if u32_at(entry, 28)? & 1 != 0 {
                        srat.push_mem(MemAffinity {
                            domain: u32_at(entry, 2)?,
                            base: u64_at(entry, 8)?,
                            len: u64_at(entry, 16)?,
                        })?;
                    }
                }
                // Processor local x2APIC affinity.
                2 => {
                    if entry.len() < 24 {
                        return Err(short);
                    }
                    if u32_at(entry, 12)? & 1 != 0 {
                        srat.push_cpu(CpuAffinity { apic_id: u32_at(entry, 8)?, domain: u32_at(entry, 4)? })?;
                    }
                }
                // GICC, ITS, generic initiators: not for x86 CPUs; skip.
                _ => {}
            }
            off += len;
        }
        Ok(srat)
    }

    fn push_cpu(&mut self, cpu: CpuAffinity) -> Result<(), TableError> {
        let slot = self.cpus.get_mut(self.cpu_count).ok_or(TableError::TooMany)?;
        *slot = cpu;
        self.cpu_count += 1;
        Ok(())
    }

    fn push_mem(&mut self, mem: MemAffinity) -> Result<(), TableError> {
        let slot = self.mem.get_mut(self.mem_count).ok_or(TableError::TooMany)?;
        *slot = mem;
        self.mem_count += 1;
        Ok(())
    }

    /// Enabled CPU entries.
    pub fn cpus(&self) -> &[CpuAffinity] {
        self.cpus.get(..self.cpu_count).unwrap_or(&[])
    }

    /// Enabled memory entries.
    pub fn memory(&self) -> &[MemAffinity] {
        self.mem.get(..self.mem_count).unwrap_or(&[])
    }

    /// The proximity domain of a CPU, if the SRAT lists it.
    pub fn domain_of(&self, apic_id: u32) -> Option<u32> {
        self.cpus().iter().find(|c| c.apic_id == apic_id).map(|c| c.domain)
    }
}

/// The parsed SLIT: relative distances between proximity domains (10 = local).
#[derive(Clone, Copy, Debug)]
pub struct Slit<'a> {
    localities: usize,
    matrix: &'a [u8],
}

impl<'a> Slit<'a> {
    /// Parses a SLIT from its bytes.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, TableError> {
        let table = validate(bytes, b"SLIT")?;
        let n = u64_at(table, SDT_HEADER_BYTES)?;
        let n = usize::try_from(n).map_err(|_| TableError::Truncated)?;
        if n > MAX_NODES {
            return Err(TableError::TooMany);
        }
        let matrix =
            table.get(SLIT_MATRIX_OFFSET..SLIT_MATRIX_OFFSET + n * n).ok_or(TableError::Truncated)?;
        Ok(Self { localities: n, matrix })
    }

    /// Number of localities (proximity domains) in the matrix.
    pub fn localities(&self) -> usize {
        self.localities
    }

    /// Distance from domain `from` to domain `to`, if both are in the table.
    pub fn distance(&self, from: usize, to: usize) -> Option<u8> {
        if from >= self.localities || to >= self.localities {
            return None;
        }
        self.matrix.get(from * self.localities + to).copied()
    }
}

/// One CPU as the kernel knows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTopo {
    /// Dense CPU index; the boot CPU is 0.
    pub index: u32,
    /// Local APIC id.
    pub apic_id: u32,
    /// Package (socket) id: the APIC id shifted right by the package shift.
    pub package: u32,
    /// Dense NUMA node index (0 when the machine has no SRAT).
    pub node: u32,
    /// ACPI proximity domain behind `node`.
    pub domain: u32,
}

/// All CPUs the firmware lists, boot CPU first, with their sockets and nodes.
#[derive(Clone, Copy, Debug)]
pub struct Topology {
    cpus: [CpuTopo; MAX_CPUS],
    len: usize,
    /// APIC ids listed but not kept (beyond [`MAX_CPUS`]).
    pub dropped: usize,
    domains: [u32; MAX_NODES],
    node_count: usize,
}

impl Topology {
    /// Builds the topology from the APIC ids of enabled CPUs (any order, the boot CPU
    /// among them), the CPU's package shift and the SRAT if there is one. Duplicate
    /// APIC ids are kept once.
    pub fn build(apic_ids: &[u32], boot_apic_id: u32, package_shift: u32, srat: Option<&Srat>) -> Self {
        let mut topo = Self {
            cpus: [CpuTopo::default(); MAX_CPUS],
            len: 0,
            dropped: 0,
            domains: [0; MAX_NODES],
            node_count: 0,
        };
        // Nodes are numbered in proximity-domain order, so the numbering does not
        // depend on the order the firmware lists CPUs in.
        if let Some(srat) = srat {
            let domains =
                || srat.cpus().iter().map(|c| c.domain).chain(srat.memory().iter().map(|m| m.domain));
            while topo.node_count < MAX_NODES {
                let Some(next) = domains().filter(|d| !topo.domains().contains(d)).min() else { break };
                if let Some(slot) = topo.domains.get_mut(topo.node_count) {
                    *slot = next;
                }
                topo.node_count += 1;
            }
        }
        let boot_first =
            core::iter::once(boot_apic_id).chain(apic_ids.iter().copied().filter(|&id| id != boot_apic_id));
        for apic_id in boot_first {
            if topo.cpus().iter().any(|c| c.apic_id == apic_id) {
                continue;
            }
            let domain = srat.and_then(|s| s.domain_of(apic_id)).unwrap_or(0);
            let node = topo.domains().iter().position(|&d| d == domain).unwrap_or(0) as u32;
            let package = apic_id.checked_shr(package_shift).unwrap_or(0);
            let index = topo.len as u32;
            match topo.cpus.get_mut(topo.len) {
                Some(slot) => {
                    *slot = CpuTopo { index, apic_id, package, node, domain };
                    topo.len += 1;
                }
                None => topo.dropped += 1,
            }
        }
        topo
    }

    /// The CPUs, boot CPU first.
    pub fn cpus(&self) -> &[CpuTopo] {
        self.cpus.get(..self.len).unwrap_or(&[])
    }

    /// Proximity domains, indexed by node.
    pub fn domains(&self) -> &[u32] {
        self.domains.get(..self.node_count).unwrap_or(&[])
    }

    /// Number of NUMA nodes (at least 1).
    pub fn node_count(&self) -> usize {
        self.node_count.max(1)
    }

    /// Counts the distinct sockets and nodes among the CPUs for which `online`
    /// holds (nodes with memory but no online CPU count too).
    pub fn summary(&self, online: impl Fn(&CpuTopo) -> bool) -> Summary {
        let mut cpus = 0;
        let mut sockets = 0;
        let mut cpu_nodes = 0u64;
        for (i, cpu) in self.cpus().iter().enumerate() {
            if !online(cpu) {
                continue;
            }
            cpus += 1;
            let first_of_package = !self.cpus().iter().take(i).any(|c| c.package == cpu.package && online(c));
            if first_of_package {
                sockets += 1;
            }
            cpu_nodes |= 1u64.checked_shl(cpu.node).unwrap_or(0);
        }
        let nodes =
            if self.node_count == 0 { 1 } else { self.node_count.max(cpu_nodes.count_ones() as usize) };
        Summary { cpus, sockets, nodes }
    }
}

/// What the boot log's summary line reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// CPUs online.
    pub cpus: usize,
    /// Distinct packages among them.
    pub sockets: usize,
    /// NUMA nodes.
    pub nodes: usize,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    fn finish(mut t: Vec<u8>) -> Vec<u8> {
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        let sum = t.iter().fold(0u8, |s, b| s.wrapping_add(*b));
        t[9] = t[9].wrapping_sub(sum);
        t
    }

    fn header(sig: &[u8; 4]) -> Vec<u8> {
        let mut t = std::vec![0u8; SDT_HEADER_BYTES];
        t[..4].copy_from_slice(sig);
        t
    }

    /// A SRAT like QEMU's for `-smp 4,sockets=2 -numa node x2`.
    pub fn two_node_srat() -> Vec<u8> {
        let mut t = header(b"SRAT");
        t.extend_from_slice(&[1, 0, 0, 0]);
        t.extend_from_slice(&[0; 8]);
        for (apic, dom) in [(0u8, 0u8), (1, 0), (2, 1), (3, 1)] {
            let mut e = std::vec![0u8; 16];
            e[0] = 0;
            e[1] = 16;
            e[2] = dom;
            e[3] = apic;
            e[4] = 1;
            t.extend_from_slice(&e);
        }
        for (dom, base) in [(0u32, 0u64), (1, 0x1000_0000)] {
            let mut e = std::vec![0u8; 40];
            e[0] = 1;
            e[1] = 40;
            e[2..6].copy_from_slice(&dom.to_le_bytes());
            e[8..16].copy_from_slice(&base.to_le_bytes());
            e[16..24].copy_from_slice(&0x1000_0000u64.to_le_bytes());
            e[28] = 1;
            t.extend_from_slice(&e);
        }
        // A disabled CPU entry must be ignored.
        let mut e = std::vec![0u8; 24];
        e[0] = 2;
        e[1] = 24;
        e[8] = 9;
        t.extend_from_slice(&e);
        finish(t)
    }

    fn slit(n: usize) -> Vec<u8> {
        let mut t = header(b"SLIT");
        t.extend_from_slice(&(n as u64).to_le_bytes());
        for i in 0..n {
            for j in 0..n {
                t.push(if i == j { 10 } else { 21 });
            }
        }
        finish(t)
    }

    #[test]
    fn parses_qemu_like_srat() {
        let srat = Srat::parse(&two_node_srat()).unwrap();
        assert_eq!(srat.cpus().len(), 4);
        assert_eq!(srat.memory().len(), 2);
        assert_eq!(srat.domain_of(2), Some(1));
        assert_eq!(srat.domain_of(9), None);
    }

    #[test]
    fn topology_counts_sockets_and_nodes() {
        let srat = Srat::parse(&two_node_srat()).unwrap();
        let topo = Topology::build(&[3, 2, 1, 0], 0, 1, Some(&srat));
        assert_eq!(topo.cpus()[0].apic_id, 0);
        assert_eq!(topo.summary(|_| true), Summary { cpus: 4, sockets: 2, nodes: 2 });
        let packages: Vec<u32> = topo.cpus().iter().map(|c| c.package).collect();
        assert_eq!(packages, [0, 1, 1, 0]);
        assert_eq!(topo.summary(|c| c.apic_id < 2), Summary { cpus: 2, sockets: 1, nodes: 2 });
    }

    #[test]
    fn no_srat_is_one_node() {
        let topo = Topology::build(&[0, 1], 0, 0, None);
        assert_eq!(topo.summary(|_| true), Summary { cpus: 2, sockets: 2, nodes: 1 });
        let topo = Topology::build(&[0, 1, 1], 0, 4, None);
        assert_eq!(topo.summary(|_| true), Summary { cpus: 2, sockets: 1, nodes: 1 });
    }

    #[test]
    fn slit_distances() {
        let bytes = slit(2);
        let s = Slit::parse(&bytes).unwrap();
        assert_eq!(s.distance(0, 0), Some(10));
        assert_eq!(s.distance(0, 1), Some(21));
        assert_eq!(s.distance(2, 0), None);
    }

    #[test]
    fn malformed_tables_are_errors() {
        let good = two_node_srat();
        assert_eq!(Srat::parse(&good[..20]).unwrap_err(), TableError::Truncated);
        assert_eq!(Srat::parse(b"SR").unwrap_err(), TableError::Truncated);
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(Srat::parse(&bad).unwrap_err(), TableError::BadSignature);
        let mut bad = good.clone();
        bad[50] ^= 0xff;
        assert_eq!(Srat::parse(&bad).unwrap_err(), TableError::BadChecksum);
        // An entry whose length runs past the end of the table.
        let mut bad = good.clone();
        bad[SRAT_ENTRIES_OFFSET + 1] = 250;
        let bad = finish(bad);
        assert_eq!(Srat::parse(&bad).unwrap_err(), TableError::BadEntry { offset: SRAT_ENTRIES_OFFSET });
        // A zero-length entry would loop forever if accepted.
        let mut bad = good;
        bad[SRAT_ENTRIES_OFFSET + 1] = 0;
        let bad = finish(bad);
        assert!(matches!(Srat::parse(&bad), Err(TableError::BadEntry { .. })));
        // A SLIT declaring more localities than it holds.
        let mut bad = slit(2);
        bad[36] = 9;
        let bad = finish(bad);
        assert_eq!(Slit::parse(&bad).unwrap_err(), TableError::Truncated);
    }

    proptest::proptest! {
        /// Random bytes after a valid header never panic the parsers.
        #[test]
        fn random_tables_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut t = header(b"SRAT");
            t.extend_from_slice(&body);
            let t = finish(t);
            let _ = Srat::parse(&t);
            let mut s = header(b"SLIT");
            s.extend_from_slice(&body);
            let s = finish(s);
            let _ = Slit::parse(&s);
        }
    }
}
