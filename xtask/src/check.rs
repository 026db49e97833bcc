//! `cargo xtask check`: formatting, clippy for host, kernel and user programs, dependency
//! rules, and the SIMD-free kernel image. Every step runs even if an earlier one failed, so one run shows all.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::{deps, image, simd, test, user};

/// Runs `command` with inherited output; returns whether it succeeded.
fn succeeds(mut command: Command) -> anyhow::Result<bool> {
    let status = command.status().with_context(|| format!("could not start {:?}", command.get_program()))?;
    Ok(status.success())
}

fn fmt() -> anyhow::Result<bool> {
    let mut command = image::cargo();
    command.args(["fmt", "--all", "--", "--check"]);
    succeeds(command)
}

fn clippy_host() -> anyhow::Result<bool> {
    let mut command = image::cargo();
    command.args(["clippy", "--workspace"]).args(test::exclude_freestanding());
    command.args(["--all-targets", "--", "-D", "warnings"]);
    succeeds(command)
}

fn clippy_kernel() -> anyhow::Result<bool> {
    let mut command = image::bare_cargo("clippy")?;
    command.args(["--", "-D", "warnings"]);
    succeeds(command)
}

/// The kernel library as its host tests build it (`hosted_tests`), and the hosted
/// arch it runs on.
fn clippy_kernel_hosted() -> anyhow::Result<bool> {
    let mut command = image::cargo();
    command.args(["clippy", "-p", image::KERNEL_PACKAGE, "--lib", "--tests", "--", "-D", "warnings"]);
    let mut arch = image::cargo();
    arch.args(["clippy", "-p", "ramen-arch", "--features", "hosted", "--", "-D", "warnings"]);
    Ok(succeeds(command)? && succeeds(arch)?)
}

/// The user programs with their own flags (they are freestanding, like the kernel).
fn clippy_user() -> anyhow::Result<bool> {
    let mut command = user::user_cargo("clippy");
    command.args(["--", "-D", "warnings"]);
    succeeds(command)
}

/// Builds the kernel and scans it, or scans `elf` if given.
pub fn simd_only(elf: Option<&Path>) -> anyhow::Result<bool> {
    match elf {
        Some(elf) => simd::check_elf(elf),
        None => simd::check_elf(&image::build_kernel()?),
    }
}

/// `cargo xtask check`; returns whether every step passed.
pub fn run() -> anyhow::Result<bool> {
    type Step = fn() -> anyhow::Result<bool>;
    let steps: [(&str, Step); 7] = [
        ("fmt", fmt),
        ("clippy (host)", clippy_host),
        ("clippy (kernel)", clippy_kernel),
        ("clippy (kernel host tests)", clippy_kernel_hosted),
        ("clippy (user)", clippy_user),
        ("deps", deps::check),
        ("simd", || simd_only(None)),
    ];
    let mut failed = Vec::new();
    for (name, step) in steps {
        println!("check: {name}");
        match step() {
            Ok(true) => println!("check: {name} ... ok"),
            Ok(false) => {
                println!("check: {name} ... FAILED");
                failed.push(name);
            }
            Err(error) => {
                println!("check: {name} ... FAILED ({error:#})");
                failed.push(name);
            }
        }
    }
    if failed.is_empty() {
        println!("check: all passed");
    } else {
        println!("check: FAILED: {}", failed.join(", "));
    }
    Ok(failed.is_empty())
}
