//! The SIMD-free image check: disassemble every executable section of the linked kernel and
//! flag each SIMD or x87 instruction.
//!
//! The kernel never saves user FPU/SIMD state on entry, so a single `movaps` in the kernel
//! (typically from the precompiled `core`, e.g. `core::fmt`) silently corrupts user state.
//! Compiler flags cannot stop that code being linked; only scanning the image can.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use iced_x86::{
    CpuidFeature, Decoder, DecoderOptions, Formatter, GasFormatter, Instruction, InstructionInfoFactory,
    Mnemonic, Register,
};
use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};

/// Instructions the kernel may contain although their CPUID features are FPU/SIMD ones.
/// The first group saves, restores and initialises user FPU state (the kernel needs them,
/// and none computes with or leaves kernel data in vector registers); the legacy
/// `fxsave`/`fxrstor` forms (no REX.W) are the same transfer with a 32-bit pointer layout.
pub const ALLOWED_MNEMONICS: &[Mnemonic] = &[
    Mnemonic::Fxsave,
    Mnemonic::Fxsave64,
    Mnemonic::Fxrstor,
    Mnemonic::Fxrstor64,
    Mnemonic::Xsave,
    Mnemonic::Xsave64,
    Mnemonic::Xsavec,
    Mnemonic::Xsavec64,
    Mnemonic::Xsaves,
    Mnemonic::Xsaves64,
    Mnemonic::Xsaveopt,
    Mnemonic::Xsaveopt64,
    Mnemonic::Xrstor,
    Mnemonic::Xrstor64,
    Mnemonic::Xrstors,
    Mnemonic::Xrstors64,
    // Resets the x87 unit to its default state for a new user thread.
    Mnemonic::Fninit,
    // Loads the default MXCSR for a new user thread.
    Mnemonic::Ldmxcsr,
    // These carry an SSE-family CPUID bit but work only on memory ordering, caches or
    // general-purpose registers, never on SIMD/x87 state (e.g. `lfence` around `rdtsc`).
    Mnemonic::Lfence,
    Mnemonic::Mfence,
    Mnemonic::Sfence,
    Mnemonic::Prefetchnta,
    Mnemonic::Prefetcht0,
    Mnemonic::Prefetcht1,
    Mnemonic::Prefetcht2,
    Mnemonic::Movnti,
    Mnemonic::Crc32,
];

/// How many offending instructions to list one by one; the per-function counts are complete.
const MAX_LISTED: usize = 200;

/// Code in the image that does not run in 64-bit mode, bounded by linker-script symbols
/// (see `kernel/linker.ld`). Decoding it as 64-bit code would misread it, so each region is
/// decoded at its own width; everything else in an executable section is 64-bit.
#[derive(Debug)]
struct CodeRegion {
    start_symbol: &'static str,
    end_symbol: &'static str,
    bitness: u32,
}

const NON_64_BIT_REGIONS: &[CodeRegion] = &[
    // PVH enters in 32-bit protected mode (the region also holds the boot page tables).
    CodeRegion { start_symbol: "__boot_start", end_symbol: "__boot_end", bitness: 32 },
    // Application processors start in real mode.
    CodeRegion { start_symbol: "__trampoline_start", end_symbol: "__trampoline_end", bitness: 16 },
];

/// A run of code decoded at one width: `[start, end)` at `bitness`.
type Segment = (u64, u64, u32);

/// Splits `[start, end)` into segments: the parts inside `regions` (sorted, disjoint) at
/// their width, the rest at 64 bits.
fn segments(start: u64, end: u64, regions: &[Segment]) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut cursor = start;
    for &(region_start, region_end, bitness) in regions {
        let (clipped_start, clipped_end) = (region_start.max(cursor), region_end.min(end));
        if clipped_start >= clipped_end {
            continue;
        }
        if cursor < clipped_start {
            segments.push((cursor, clipped_start, 64));
        }
        segments.push((clipped_start, clipped_end, bitness));
        cursor = clipped_end;
    }
    if cursor < end {
        segments.push((cursor, end, 64));
    }
    segments
}

/// Whether a CPUID feature marks an instruction as SIMD, x87 or vector-register crypto.
fn is_forbidden_feature(feature: CpuidFeature) -> bool {
    use CpuidFeature as F;
    matches!(
        feature,
        F::FPU
            | F::FPU287
            | F::FPU287XL_ONLY
            | F::FPU387
            | F::FPU387SL_ONLY
            | F::CYRIX_FPU
            | F::MMX
            | F::CYRIX_EMMI
            | F::D3NOW
            | F::D3NOWEXT
            | F::CYRIX_D3NOW
            | F::SSE
            | F::SSE2
            | F::SSE3
            | F::SSSE3
            | F::SSE4_1
            | F::SSE4_2
            | F::SSE4A
            | F::AVX
            | F::AVX2
            | F::AVX512F
            | F::AVX512BW
            | F::AVX512CD
            | F::AVX512DQ
            | F::AVX512ER
            | F::AVX512PF
            | F::AVX512VL
            | F::AVX512_4FMAPS
            | F::AVX512_4VNNIW
            | F::AVX512_BF16
            | F::AVX512_BITALG
            | F::AVX512_IFMA
            | F::AVX512_VBMI
            | F::AVX512_VBMI2
            | F::AVX512_VNNI
            | F::AVX512_VP2INTERSECT
            | F::AVX512_VPOPCNTDQ
            | F::AVX512_FP16
            | F::AVX_VNNI
            | F::AVX_IFMA
            | F::AVX_NE_CONVERT
            | F::AVX_VNNI_INT8
            | F::KNC
            | F::FMA
            | F::FMA4
            | F::F16C
            | F::XOP
            | F::AES
            | F::VAES
            | F::PCLMULQDQ
            | F::VPCLMULQDQ
            | F::SHA
            | F::SHA512
            | F::GFNI
            | F::KL
            | F::AESKLE
            | F::WIDE_KL
            | F::AMX_BF16
            | F::AMX_TILE
            | F::AMX_INT8
            | F::AMX_FP16
            | F::AMX_COMPLEX
    )
}

/// Whether a register belongs to the x87/MMX/SSE/AVX/AVX-512/AMX register files.
fn is_simd_register(register: Register) -> bool {
    register.is_xmm()
        || register.is_ymm()
        || register.is_zmm()
        || register.is_k()
        || register.is_mm()
        || register.is_st()
        || register.is_tmm()
}

/// Why `instruction` is forbidden in the kernel, or `None` if it is fine. Checks the CPUID
/// features first and, as a second net, every register it reads or writes (explicit or
/// implicit, including vector memory indices).
pub fn forbidden_reason(instruction: &Instruction, info: &mut InstructionInfoFactory) -> Option<String> {
    if ALLOWED_MNEMONICS.contains(&instruction.mnemonic()) {
        return None;
    }
    let features: Vec<String> = instruction
        .cpuid_features()
        .iter()
        .filter(|&&feature| is_forbidden_feature(feature))
        .map(|feature| format!("{feature:?}"))
        .collect();
    if !features.is_empty() {
        return Some(features.join(","));
    }
    info.info(instruction)
        .used_registers()
        .iter()
        .map(|used| used.register())
        .find(|&register| is_simd_register(register))
        .map(|register| format!("uses {register:?}"))
}

/// One forbidden instruction in the image.
#[derive(Debug)]
pub struct Finding {
    pub address: u64,
    pub disassembly: String,
    pub reason: String,
    /// The demangled function it sits in (nearest preceding function symbol).
    pub function: String,
}

/// The result of scanning an image.
#[derive(Debug, Default)]
pub struct Scan {
    pub instructions: usize,
    pub findings: Vec<Finding>,
}

/// Decodes `code` (loaded at `address`) as `bitness`-bit code and returns how many
/// instructions it holds and the forbidden ones with their reasons. Undecodable bytes
/// (padding, data) are skipped.
pub fn scan_code(code: &[u8], address: u64, bitness: u32) -> (usize, Vec<(Instruction, String)>) {
    let mut decoder = Decoder::with_ip(bitness, code, address, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    let mut instruction = Instruction::default();
    let mut count = 0;
    let mut forbidden = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if instruction.is_invalid() {
            continue;
        }
        count += 1;
        if let Some(reason) = forbidden_reason(&instruction, &mut info) {
            forbidden.push((instruction, reason));
        }
    }
    (count, forbidden)
}

/// Function symbols sorted by address, demangled, for attributing findings.
struct Functions(Vec<(u64, String)>);

impl Functions {
    fn of(file: &object::File) -> Self {
        let mut functions: Vec<(u64, String)> = file
            .symbols()
            .filter(|symbol| symbol.kind() == SymbolKind::Text && symbol.is_definition())
            .filter_map(|symbol| {
                let name = symbol.name().ok()?;
                Some((symbol.address(), format!("{:#}", rustc_demangle::demangle(name))))
            })
            .collect();
        functions.sort();
        Self(functions)
    }

    fn containing(&self, address: u64) -> String {
        let index = self.0.partition_point(|(start, _)| *start <= address);
        match index.checked_sub(1).and_then(|i| self.0.get(i)) {
            Some((_, name)) => name.clone(),
            None => "<no symbol>".into(),
        }
    }
}

/// The `NON_64_BIT_REGIONS` present in `file`, as sorted segments.
fn non_64_bit_regions(file: &object::File) -> Vec<Segment> {
    let address_of =
        |name: &str| file.symbols().find(|symbol| symbol.name() == Ok(name)).map(|symbol| symbol.address());
    let mut regions: Vec<Segment> = NON_64_BIT_REGIONS
        .iter()
        .filter_map(|region| {
            let start = address_of(region.start_symbol)?;
            let end = address_of(region.end_symbol)?;
            Some((start, end, region.bitness))
        })
        .collect();
    regions.sort();
    regions
}

/// Scans every executable section of an ELF image.
pub fn scan_elf(data: &[u8]) -> anyhow::Result<Scan> {
    let file = object::File::parse(data).context("not an object file")?;
    let functions = Functions::of(&file);
    let regions = non_64_bit_regions(&file);
    let mut formatter = GasFormatter::new();
    let mut scan = Scan::default();
    for section in file.sections().filter(|section| section.kind() == SectionKind::Text) {
        let code = section.data().context("reading an executable section")?;
        let base = section.address();
        for (start, end, bitness) in segments(base, base + code.len() as u64, &regions) {
            let bytes = &code[(start - base) as usize..(end - base) as usize];
            let (count, forbidden) = scan_code(bytes, start, bitness);
            scan.instructions += count;
            for (instruction, reason) in forbidden {
                let mut disassembly = String::new();
                formatter.format(&instruction, &mut disassembly);
                scan.findings.push(Finding {
                    address: instruction.ip(),
                    disassembly,
                    reason,
                    function: functions.containing(instruction.ip()),
                });
            }
        }
    }
    Ok(scan)
}

/// Scans the ELF at `path` and prints the verdict; returns whether it is SIMD-free.
pub fn check_elf(path: &Path) -> anyhow::Result<bool> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let scan = scan_elf(&data).with_context(|| format!("scanning {}", path.display()))?;
    if scan.findings.is_empty() {
        println!("simd check: ok ({} instructions scanned)", scan.instructions);
        return Ok(true);
    }
    println!(
        "simd check: FAILED: {} SIMD/x87 instructions in {} ({} scanned)",
        scan.findings.len(),
        path.display(),
        scan.instructions
    );
    for finding in scan.findings.iter().take(MAX_LISTED) {
        println!(
            "  {:#018x}  {:<40} [{}] in {}",
            finding.address, finding.disassembly, finding.reason, finding.function
        );
    }
    if scan.findings.len() > MAX_LISTED {
        println!("  ... and {} more", scan.findings.len() - MAX_LISTED);
    }
    let mut per_function: BTreeMap<&str, usize> = BTreeMap::new();
    for finding in &scan.findings {
        *per_function.entry(&finding.function).or_default() += 1;
    }
    let mut per_function: Vec<_> = per_function.into_iter().collect();
    per_function.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    println!("simd check: offending instructions per function:");
    for (function, count) in per_function {
        println!("  {count:>6}  {function}");
    }
    println!(
        "simd check: the kernel must not touch SIMD/x87 state (it would clobber user state); \
         avoid core::fmt number formatting and other SIMD-using core code"
    );
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verdict for the single instruction encoded by `bytes`.
    fn classify(bytes: &[u8]) -> Option<String> {
        let (count, forbidden) = scan_code(bytes, 0x1000, 64);
        assert_eq!(count, 1, "{bytes:02x?} is not exactly one instruction");
        forbidden.into_iter().next().map(|(_, reason)| reason)
    }

    #[test]
    fn flags_sse_and_avx() {
        assert_eq!(classify(&[0x0f, 0x28, 0xc1]).as_deref(), Some("SSE")); // movaps xmm0, xmm1
        assert!(classify(&[0x66, 0x0f, 0xef, 0xc0]).is_some()); // pxor xmm0, xmm0
        assert!(classify(&[0xc5, 0xf8, 0x77]).is_some()); // vzeroupper
        assert!(classify(&[0xc5, 0xfc, 0x28, 0xc1]).is_some()); // vmovaps ymm0, ymm1
    }

    #[test]
    fn flags_x87_and_mmx() {
        assert!(classify(&[0xd9, 0xc9]).is_some()); // fxch st(1)
        assert!(classify(&[0xdd, 0x04, 0x24]).is_some()); // fld qword [rsp]
        assert!(classify(&[0x0f, 0x6f, 0xc1]).is_some()); // movq mm0, mm1
        assert!(classify(&[0x0f, 0x77]).is_some()); // emms
    }

    #[test]
    fn accepts_integer_and_system_code() {
        assert_eq!(classify(&[0x48, 0x89, 0xc3]), None); // mov rbx, rax
        assert_eq!(classify(&[0xf3, 0xa4]), None); // rep movsb
        assert_eq!(classify(&[0x0f, 0x01, 0xd1]), None); // xsetbv
        assert_eq!(classify(&[0x0f, 0xa2]), None); // cpuid
        assert_eq!(classify(&[0xf3, 0x48, 0x0f, 0xb8, 0xc1]), None); // popcnt rax, rcx
        assert_eq!(classify(&[0xf3, 0x90]), None); // pause
    }

    #[test]
    fn allows_sse_tagged_instructions_that_touch_no_simd_state() {
        assert_eq!(classify(&[0x0f, 0xae, 0xe8]), None); // lfence
        assert_eq!(classify(&[0x0f, 0xae, 0xf0]), None); // mfence
        assert_eq!(classify(&[0x0f, 0xae, 0xf8]), None); // sfence
        assert_eq!(classify(&[0x0f, 0x18, 0x08]), None); // prefetcht0 [rax]
        assert_eq!(classify(&[0x48, 0x0f, 0xc3, 0x00]), None); // movnti [rax], rax
        assert_eq!(classify(&[0xf2, 0x0f, 0x38, 0xf1, 0xc1]), None); // crc32 eax, ecx
    }

    #[test]
    fn allows_the_fpu_state_instructions() {
        assert_eq!(classify(&[0x0f, 0xae, 0x00]), None); // fxsave [rax]
        assert_eq!(classify(&[0x48, 0x0f, 0xae, 0x08]), None); // fxrstor64 [rax]
        assert_eq!(classify(&[0x48, 0x0f, 0xae, 0x20]), None); // xsave64 [rax]
        assert_eq!(classify(&[0x48, 0x0f, 0xae, 0x28]), None); // xrstor64 [rax]
        assert_eq!(classify(&[0x48, 0x0f, 0xae, 0x30]), None); // xsaveopt64 [rax]
        assert_eq!(classify(&[0xdb, 0xe3]), None); // fninit
        assert_eq!(classify(&[0x0f, 0xae, 0x10]), None); // ldmxcsr [rax]
        assert!(classify(&[0x0f, 0xae, 0x18]).is_some()); // stmxcsr [rax]: not needed
    }

    #[test]
    fn counts_and_locates_a_mixed_stream() {
        // mov rbx, rax; movaps xmm0, xmm1; ret
        let code = [0x48, 0x89, 0xc3, 0x0f, 0x28, 0xc1, 0xc3];
        let (count, forbidden) = scan_code(&code, 0x1000, 64);
        assert_eq!(count, 3);
        assert_eq!(forbidden.len(), 1);
        assert_eq!(forbidden[0].0.ip(), 0x1003);
    }

    #[test]
    fn the_decoding_width_matters() {
        // As 16-bit code: mov $0x9090,%ax; movaps %xmm1,%xmm0. As 64-bit code the mov
        // takes a 32-bit immediate and swallows the movaps.
        let code = [0xb8, 0x90, 0x90, 0x0f, 0x28, 0xc1];
        assert_eq!(scan_code(&code, 0, 16).1.len(), 1);
        assert_eq!(scan_code(&code, 0, 64).1.len(), 0);
    }

    #[test]
    fn splits_sections_into_segments() {
        assert_eq!(segments(0, 100, &[]), [(0, 100, 64)]);
        assert_eq!(
            segments(0, 100, &[(10, 20, 32), (50, 60, 16)]),
            [(0, 10, 64), (10, 20, 32), (20, 50, 64), (50, 60, 16), (60, 100, 64)]
        );
        // Regions outside the section, or overlapping its ends, are clipped.
        assert_eq!(segments(0, 100, &[(200, 300, 16)]), [(0, 100, 64)]);
        assert_eq!(segments(10, 20, &[(0, 15, 32)]), [(10, 15, 32), (15, 20, 64)]);
        assert_eq!(segments(10, 20, &[(0, 30, 32)]), [(10, 20, 32)]);
    }

    #[test]
    fn attributes_findings_to_the_preceding_function() {
        let functions = Functions(vec![(0x1000, "a".into()), (0x2000, "b".into())]);
        assert_eq!(functions.containing(0x1fff), "a");
        assert_eq!(functions.containing(0x2000), "b");
        assert_eq!(functions.containing(0x0fff), "<no symbol>");
    }
}
