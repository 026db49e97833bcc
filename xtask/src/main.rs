//! `cargo xtask`: the one entry point for building, running and testing RamenOS.
#![forbid(unsafe_code)]
fn main() {}
