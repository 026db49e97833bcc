//! Snapshots of the code generated for every shipped contract, and of the layout report.

use std::path::Path;

use foundry::diag::Sources;

fn generate(relative: &str) -> (String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join(relative)).unwrap();
    let mut sources = Sources::new();
    match foundry::check_source(&mut sources, relative, &text) {
        Ok(checked) => {
            (foundry::codegen::generate(&checked.contract), foundry::layout_report(&checked.contract))
        }
        Err(diags) => panic!("{}", sources.render(&diags)),
    }
}

#[test]
fn bench_echo() {
    let (code, layout) = generate("contracts/bench/echo.ridl");
    insta::assert_snapshot!("bench_echo_layout", layout);
    insta::assert_snapshot!("bench_echo", code);
}

#[test]
fn store() {
    let (code, layout) = generate("contracts/store/store.ridl");
    insta::assert_snapshot!("store_layout", layout);
    insta::assert_snapshot!("store", code);
}

#[test]
fn drivers_block() {
    let (code, layout) = generate("contracts/drivers/block.ridl");
    insta::assert_snapshot!("drivers_block_layout", layout);
    insta::assert_snapshot!("drivers_block", code);
}

#[test]
fn drivers_serial() {
    let (code, layout) = generate("contracts/drivers/serial.ridl");
    insta::assert_snapshot!("drivers_serial_layout", layout);
    insta::assert_snapshot!("drivers_serial", code);
}

#[test]
fn all_types_test_contract() {
    let (code, _) = generate("foundry/tests-echo/contracts/all_types.ridl");
    insta::assert_snapshot!("all_types", code);
}
