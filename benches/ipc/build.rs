//! Links the benchmark program with the user linker script (an absolute path: cargo
//! runs the linker from another directory).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bins=-Wl,-T{dir}/../../kernel/rt/user.ld");
    println!("cargo:rerun-if-changed=../../kernel/rt/user.ld");
    foundry::build::generate("../../contracts/bench/echo.ridl");
}
