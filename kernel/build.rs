//! Hands the linker script to the kernel binary (as an absolute path: cargo runs the
//! linker from another directory).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bins=-Wl,-T{dir}/linker.ld");
    println!("cargo:rerun-if-changed=linker.ld");
}
