//! Building the user programs and packing them into the boot archive.
//!
//! The user programs (`kernel/root`, `kernel/user-tests`, `benches/ipc`) are
//! freestanding static ELFs for the host triple, like the kernel, but with user-space
//! flags: ordinary code model, red zone and SSE allowed, linked at `USER_BASE` by
//! `kernel/rt/user.ld` (passed by each crate's build.rs). Every program is checked
//! with the same ELF parser the loader uses before it goes into the archive, so a
//! program the kernel or root task would refuse is a build error here.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ramen_bootfs::elf::Program;

use crate::image::{self, BARE_TARGET};

/// The user packages `cargo xtask build` builds (never host-tested or host-clippied).
pub const USER_PACKAGES: &[&str] = &["ramen-root", "ramen-user-tests", "ramen-bench-ipc"];

/// The archive's files in order, as (name in the archive, binary name): the root task
/// first, as the format requires.
pub const BOOT_PROGRAMS: &[(&str, &str)] = &[
    ("root", "ramen-root"),
    ("spin", "spin"),
    ("fpu", "fpu"),
    ("fault", "fault"),
    ("fuzz", "fuzz"),
    ("waiter", "waiter"),
    ("echo", "echo"),
    ("pingpong", "pingpong"),
    ("longmsg", "longmsg"),
    ("leaser", "leaser"),
    ("leasesrv", "leasesrv"),
    ("notrace", "notrace"),
    ("mirror", "mirror"),
    ("churn", "churn"),
    ("bench-ipc", "bench-ipc"),
];

/// Codegen and link flags for user programs: static, non-PIE, no C runtime, 4 KiB
/// segment alignment (the loader maps file pages directly). DWARF is stripped (symbols
/// stay, for reading fault addresses): it would make the boot archive ten times larger.
pub const USER_RUSTFLAGS: &str = "-C relocation-model=static -C target-feature=+crt-static \
-C strip=debuginfo -C link-arg=-nostartfiles -C link-arg=-nostdlib -C link-arg=-static \
-C link-arg=-Wl,--build-id=none -C link-arg=-Wl,-z,max-page-size=4096 \
-C link-arg=-Wl,--gc-sections";

/// The user programs' own target directory (their flags differ from the kernel's).
pub fn user_target_dir() -> PathBuf {
    image::repo_root().join("target").join("user")
}

/// Where `build_boot_archive` leaves the archive (next to the kernel ELF's target dir).
pub fn boot_archive_path() -> PathBuf {
    image::bare_target_dir().join("boot.rfs")
}

/// `cargo <subcommand> --release -p <user packages>` for the bare target with the user
/// flags, set on this child only.
pub fn user_cargo(subcommand: &str) -> std::process::Command {
    let mut command = image::cargo();
    command.arg(subcommand).arg("--release");
    for package in USER_PACKAGES {
        command.args(["-p", package]);
    }
    command.args(["--target", BARE_TARGET]).arg("--target-dir").arg(user_target_dir());
    image::set_target_rustflags(&mut command, USER_RUSTFLAGS);
    command
}

/// Checks every program with the loader's ELF parser and packs them, in order.
/// `programs` holds (archive name, path shown in errors, contents).
pub fn pack_programs(programs: &[(&str, &Path, &[u8])]) -> anyhow::Result<Vec<u8>> {
    for (name, path, bytes) in programs {
        if let Err(error) = Program::parse(bytes) {
            bail!("user program `{name}` ({}) would be refused by the loader: {error}", path.display());
        }
    }
    let files: Vec<(&str, &[u8])> = programs.iter().map(|(name, _, bytes)| (*name, *bytes)).collect();
    ramen_bootfs::pack(&files).map_err(|error| anyhow::anyhow!("cannot pack the boot archive: {error}"))
}

/// Builds the user programs and writes the boot archive; returns its path.
pub fn build_boot_archive() -> anyhow::Result<PathBuf> {
    eprintln!("build: {} ({BARE_TARGET}, release, user flags)", USER_PACKAGES.join(", "));
    let status = user_cargo("build").status().context("could not start cargo")?;
    if !status.success() {
        bail!("user programs did not build; see errors above");
    }
    let bin_dir = user_target_dir().join(BARE_TARGET).join("release");
    let mut programs = Vec::new();
    for (name, binary) in BOOT_PROGRAMS {
        let path = bin_dir.join(binary);
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        programs.push((*name, path, bytes));
    }
    let borrowed: Vec<(&str, &Path, &[u8])> =
        programs.iter().map(|(name, path, bytes)| (*name, path.as_path(), bytes.as_slice())).collect();
    let archive = pack_programs(&borrowed)?;
    let path = boot_archive_path();
    std::fs::create_dir_all(image::bare_target_dir())?;
    std::fs::write(&path, &archive).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "build: boot archive {} ({} programs, {} KiB)",
        path.display(),
        borrowed.len(),
        archive.len() / 1024
    );
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_comes_first_and_names_are_unique() {
        assert_eq!(BOOT_PROGRAMS[0].0, ramen_bootfs::ROOT_NAME);
        for (i, (name, _)) in BOOT_PROGRAMS.iter().enumerate() {
            assert!(BOOT_PROGRAMS[..i].iter().all(|(other, _)| other != name), "{name}");
        }
    }

    #[test]
    fn a_program_the_loader_refuses_is_a_build_error() {
        // The host test binary is a PIE: the loader wants ET_EXEC.
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let error = pack_programs(&[("root", Path::new("/proc/self/exe"), &exe)]).unwrap_err().to_string();
        assert!(error.contains("user program `root` (/proc/self/exe) would be refused"), "{error}");
        assert!(error.contains("ET_EXEC"), "{error}");
    }

    #[test]
    fn user_flags_are_static_and_keep_sse() {
        assert!(USER_RUSTFLAGS.contains("relocation-model=static"));
        assert!(!USER_RUSTFLAGS.contains("code-model=kernel"));
        assert!(!USER_RUSTFLAGS.contains("-sse"));
        assert!(user_target_dir() != image::bare_target_dir());
    }
}
