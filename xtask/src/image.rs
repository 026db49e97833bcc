//! Building the kernel image: the bare-metal flags and target directory live here only.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The package and binary name of the kernel image.
pub const KERNEL_PACKAGE: &str = "ramen-kernel";

/// The host triple: the kernel links against its precompiled `core` (no `rust-src` here).
pub const BARE_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Codegen and link flags for the freestanding kernel (see docs: platform notes).
///
/// `-C target-feature=-sse,...` only stops our own code from using SIMD; the precompiled
/// `core` still contains it, which is why `cargo xtask check` scans the linked image.
/// The linker script comes from `kernel/build.rs`, not from here.
pub const BARE_RUSTFLAGS: &str = "-C relocation-model=static -C code-model=kernel \
-C no-redzone=yes -C target-feature=+crt-static,-sse,-sse2,-avx,-avx2 \
-C link-arg=-nostartfiles -C link-arg=-nostdlib -C link-arg=-static \
-C link-arg=-Wl,--build-id=none -C link-arg=-Wl,-z,max-page-size=4096 \
-C link-arg=-Wl,--gc-sections";

/// `core`'s panic entry points that format numbers or `Debug` values, and the
/// non-formatting stub in `arch::panic_paths` each is linked to instead.
///
/// `core` is precompiled with SSE: a reference to, say, `panic_bounds_check` links in
/// integer `Display` and `Formatter::pad`, which use XMM registers, and the kernel
/// image must hold no SIMD instruction. Every kernel object is linked with
/// `--wrap=<symbol>`, and `__wrap_<symbol>` is defined as the stub.
pub const WRAPPED_PANICS: &[(&str, &str)] = &[
    ("core::panicking::panic_bounds_check", "ramen_panic_bounds"),
    ("core::slice::index::slice_index_fail", "ramen_panic_slice"),
    ("core::option::expect_failed", "ramen_panic_expect"),
    ("core::result::unwrap_failed", "ramen_panic_unwrap"),
    ("core::str::slice_error_fail", "ramen_panic_str"),
    ("core::cell::panic_already_borrowed", "ramen_panic_borrow"),
    ("core::cell::panic_already_mutably_borrowed", "ramen_panic_borrow"),
    ("core::panicking::assert_failed_inner", "ramen_panic_assert"),
];

/// The sysroot's precompiled `core` for the bare target.
fn core_rlib() -> anyhow::Result<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc)
        .current_dir(repo_root())
        .args(["--print", "sysroot"])
        .output()
        .context("could not run rustc --print sysroot")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let dir = sysroot.join("lib/rustlib").join(BARE_TARGET).join("lib");
    let entries = std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("libcore-") && name.ends_with(".rlib") {
            return Ok(entry.path());
        }
    }
    bail!("no libcore-*.rlib in {}", dir.display())
}

/// Mangled names of the defined global symbols in an rlib whose demangled path (hash
/// removed) is in `wanted`, as (path, mangled).
pub fn find_symbols(rlib: &[u8], wanted: &[&str]) -> anyhow::Result<Vec<(String, String)>> {
    use object::{Object, ObjectSymbol};
    let archive = object::read::archive::ArchiveFile::parse(rlib).context("not an rlib archive")?;
    let mut found = Vec::new();
    for member in archive.members() {
        let member = member.context("bad archive member")?;
        let Ok(data) = member.data(rlib) else { continue };
        let Ok(file) = object::File::parse(data) else { continue };
        for symbol in file.symbols().filter(|s| s.is_global() && s.is_definition()) {
            let Ok(mangled) = symbol.name() else { continue };
            let path = format!("{:#}", rustc_demangle::demangle(mangled));
            if wanted.contains(&path.as_str()) {
                found.push((path, mangled.to_string()));
            }
        }
    }
    Ok(found)
}

/// The `--wrap`/`--defsym` link arguments for [`WRAPPED_PANICS`], looked up in this
/// toolchain's `core` (the mangled names carry a per-build hash). A wrapped symbol
/// missing from `core` is an error: the toolchain changed and the list needs a look.
pub fn wrapped_panic_flags() -> anyhow::Result<String> {
    let rlib = core_rlib()?;
    let bytes = std::fs::read(&rlib).with_context(|| format!("cannot read {}", rlib.display()))?;
    let wanted: Vec<&str> = WRAPPED_PANICS.iter().map(|(path, _)| *path).collect();
    let found = find_symbols(&bytes, &wanted)?;
    let mut flags = String::new();
    for (path, stub) in WRAPPED_PANICS {
        let Some((_, mangled)) = found.iter().find(|(p, _)| p == path) else {
            bail!("{path} not found in {}: update WRAPPED_PANICS for this toolchain", rlib.display());
        };
        flags.push_str(&format!(
            " -C link-arg=-Wl,--wrap={mangled} -C link-arg=-Wl,--defsym=__wrap_{mangled}={stub}"
        ));
    }
    Ok(flags)
}

/// Per-target rustflags: with an explicit `--target` they reach only target artifacts,
/// so build scripts and proc-macros keep linking as normal host programs.
const BARE_RUSTFLAGS_VAR: &str = "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS";

/// Variables that take precedence over `BARE_RUSTFLAGS_VAR` in cargo and would silently
/// replace the kernel flags if the user's shell set them.
const OVERRIDING_RUSTFLAGS_VARS: &[&str] = &["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS"];

/// The workspace root (xtask lives one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask has a parent directory").to_path_buf()
}

/// The bare-metal target directory, separate so host `cargo test` never rebuilds for it.
pub fn bare_target_dir() -> PathBuf {
    repo_root().join("target").join("bare")
}

/// Where `build_kernel` leaves the kernel ELF.
pub fn kernel_elf_path() -> PathBuf {
    bare_target_dir().join(BARE_TARGET).join("release").join(KERNEL_PACKAGE)
}

/// A `cargo` command run from the workspace root, using the same cargo that runs xtask.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(repo_root());
    command
}

/// `cargo <subcommand> --release -p ramen-kernel` for the bare target with the kernel flags.
/// The flags are set on this child only, never in xtask's own environment.
pub fn bare_cargo(subcommand: &str) -> anyhow::Result<Command> {
    bare_cargo_in(subcommand, &bare_target_dir())
}

/// [`bare_cargo`] with its own target directory.
fn bare_cargo_in(subcommand: &str, target_dir: &std::path::Path) -> anyhow::Result<Command> {
    let flags = format!("{BARE_RUSTFLAGS}{}", wrapped_panic_flags()?);
    let mut command = cargo();
    command
        .arg(subcommand)
        .args(["--release", "-p", KERNEL_PACKAGE, "--target", BARE_TARGET])
        .arg("--target-dir")
        .arg(target_dir);
    set_target_rustflags(&mut command, &flags);
    Ok(command)
}

/// Sets `flags` as the bare target's rustflags on `command` (a cargo child with an
/// explicit `--target`), removing the variables that would override them.
pub fn set_target_rustflags(command: &mut Command, flags: &str) {
    command.env(BARE_RUSTFLAGS_VAR, flags);
    for var in OVERRIDING_RUSTFLAGS_VARS {
        command.env_remove(var);
    }
}

/// Builds the kernel with the IPC fastpath compiled out (feature `slowpath-only`), in
/// its own target directory, and returns the path of its ELF.
pub fn build_slowpath_kernel() -> anyhow::Result<PathBuf> {
    build_kernel_variant("slowpath-only", "bare-slowpath")
}

/// Builds the kernel with its trace points compiled out (feature `trace-compiled-out`).
pub fn build_untraced_kernel() -> anyhow::Result<PathBuf> {
    build_kernel_variant("trace-compiled-out", "bare-untraced")
}

/// Builds the kernel with `feature` in `target/<dir_name>`; returns the ELF's path.
fn build_kernel_variant(feature: &str, dir_name: &str) -> anyhow::Result<PathBuf> {
    eprintln!("build: {KERNEL_PACKAGE} with --features {feature}");
    let dir = repo_root().join("target").join(dir_name);
    let mut command = bare_cargo_in("build", &dir)?;
    command.args(["--features", feature]);
    let status = command.status().context("could not start cargo")?;
    if !status.success() {
        bail!("the kernel with feature {feature} did not build; see errors above");
    }
    let elf = dir.join(BARE_TARGET).join("release").join(KERNEL_PACKAGE);
    if !elf.is_file() {
        bail!("cargo reported success but {} does not exist", elf.display());
    }
    Ok(elf)
}

/// Builds the kernel image and returns the path of its ELF.
pub fn build_kernel() -> anyhow::Result<PathBuf> {
    // Progress goes to stderr so that `cargo xtask build` prints only the path on stdout.
    eprintln!("build: {KERNEL_PACKAGE} ({BARE_TARGET}, release, bare flags)");
    let status = bare_cargo("build")?.status().context("could not start cargo")?;
    if !status.success() {
        bail!("kernel did not build; see errors above");
    }
    let elf = kernel_elf_path();
    if !elf.is_file() {
        bail!("cargo reported success but {} does not exist", elf.display());
    }
    Ok(elf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every wrapped panic path exists in the pinned toolchain's `core`, so a toolchain
    /// bump that renames one fails here rather than silently re-admitting SIMD code.
    #[test]
    fn every_wrapped_panic_is_in_core() {
        let flags = wrapped_panic_flags().expect("all wrapped symbols found");
        for (_, stub) in WRAPPED_PANICS {
            assert!(flags.contains(stub), "{stub} missing from {flags}");
        }
    }
}
