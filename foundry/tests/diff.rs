//! `foundry diff`: compatible evolution passes, every kind of breaking change is named.

use std::path::Path;

use foundry::diag::Sources;
use foundry::model::Contract;

fn load(name: &str) -> Contract {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/diff").join(name);
    let mut sources = Sources::new();
    match foundry::check_file(&mut sources, &path) {
        Ok(checked) => checked.contract,
        Err(diags) => panic!("{}", sources.render(&diags)),
    }
}

fn report(old: &str, new: &str) -> String {
    let changes = foundry::diff::diff(&load(old), &load(new));
    changes.iter().map(|change| format!("{change}\n")).collect()
}

#[test]
fn identical_contracts_have_no_changes() {
    assert_eq!(report("v1.ridl", "v1.ridl"), "");
}

#[test]
fn compatible_evolution_passes() {
    let report = report("v1.ridl", "v2_compatible.ridl");
    assert!(!report.contains("breaking"), "{report}");
    insta::assert_snapshot!(report);
}

#[test]
fn breaking_changes_are_all_reported() {
    insta::assert_snapshot!(report("v1.ridl", "v2_breaking.ridl"));
}

#[test]
fn widening_a_request_bound_is_compatible_but_narrowing_it_back_is_not() {
    let narrowed = report("v2_compatible.ridl", "v1.ridl");
    assert!(
        narrowed.contains("breaking: Kv.get (ordinal 1): parameter `key`: bound narrowed from 64 to 32"),
        "{narrowed}"
    );
}
