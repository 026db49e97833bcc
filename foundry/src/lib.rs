//! Foundry, the RamenOS IDL compiler: `.ridl` contracts in, typed Rust IPC stubs out.
//!
//! The pipeline is parse ([`syntax`]), resolve + type-check + lay out ([`check`], into
//! the [`model`]), then generate ([`codegen`]) or compare ([`diff`]). Every stage reports
//! problems as [`diag::Diag`]s that point at file:line:col and say what to do. The same
//! library backs the `foundry` CLI and the one-line `build.rs` integration in [`build`].
//! The generated code targets the `foundry-runtime` crate and the `ramen-abi` message
//! layout. The language is described in `docs/idl.md`.
#![forbid(unsafe_code)]

pub mod build;
pub mod check;
pub mod codegen;
pub mod diag;
pub mod diff;
pub mod model;
pub mod syntax;

use std::path::Path;

use diag::{Diag, Sources};
use model::Contract;

/// A checked contract and the warnings found on the way.
#[derive(Debug)]
pub struct Checked {
    /// The contract.
    pub contract: Contract,
    /// Warnings (never errors).
    pub warnings: Vec<Diag>,
}

/// Parses and checks contract source text registered under `name`.
pub fn check_source(sources: &mut Sources, name: &str, text: &str) -> Result<Checked, Vec<Diag>> {
    let file = sources.add(name, text);
    let decl = syntax::parse(file, text).map_err(|diag| vec![diag])?;
    let (contract, warnings) = check::check(&decl, name)?;
    Ok(Checked { contract, warnings })
}

/// Reads, parses and checks a contract file.
pub fn check_file(sources: &mut Sources, path: &Path) -> Result<Checked, Vec<Diag>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| {
        vec![Diag::error(format!("cannot read `{name}`: {error}")).help("check the path")]
    })?;
    check_source(sources, &name, &text)
}

/// One line per method: ordinal, name, request and reply layout.
pub fn layout_report(contract: &Contract) -> String {
    let mut out = format!("contract {} @version({})\n", contract.name, contract.version);
    for iface in &contract.interfaces {
        out.push_str(&format!("  interface {}\n", iface.name));
        for method in &iface.methods {
            let reply = if method.oneway { "one-way".to_string() } else { method.reply.describe() };
            out.push_str(&format!(
                "    @{:<3} {:<16} request: {}; reply: {}\n",
                method.ordinal,
                method.name,
                method.request.describe(),
                reply
            ));
        }
    }
    out
}
