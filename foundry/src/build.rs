//! One-line `build.rs` integration.
//!
//! ```ignore
//! // build.rs
//! fn main() {
//!     foundry::build::generate("../../contracts/bench/echo.ridl");
//! }
//! // src/lib.rs
//! pub mod echo {
//!     include!(concat!(env!("OUT_DIR"), "/echo.rs"));
//! }
//! ```

use std::path::{Path, PathBuf};

use crate::diag::Sources;

/// Compiles `contract` (relative to the crate's manifest directory) into
/// `$OUT_DIR/<file stem>.rs` and tells cargo to rerun when it changes. On a bad contract
/// it prints the diagnostics and fails the build.
pub fn generate(contract: impl AsRef<Path>) {
    let contract = contract.as_ref();
    println!("cargo:rerun-if-changed={}", contract.display());
    let Some(out_dir) = std::env::var_os("OUT_DIR") else {
        eprintln!("foundry::build::generate must run from a build script (OUT_DIR is not set)");
        std::process::exit(1);
    };
    if let Err(message) = generate_into(contract, Path::new(&out_dir)) {
        eprintln!("{message}");
        std::process::exit(1);
    }
}

/// Compiles `contract` into `<out_dir>/<file stem>.rs`; returns the file written, or the
/// rendered diagnostics.
pub fn generate_into(contract: &Path, out_dir: &Path) -> Result<PathBuf, String> {
    let mut sources = Sources::new();
    let checked = crate::check_file(&mut sources, contract).map_err(|diags| sources.render(&diags))?;
    let stem = contract.file_stem().and_then(|stem| stem.to_str()).unwrap_or("contract");
    let target = out_dir.join(format!("{stem}.rs"));
    std::fs::write(&target, crate::codegen::generate(&checked.contract))
        .map_err(|error| format!("cannot write `{}`: {error}", target.display()))?;
    Ok(target)
}
