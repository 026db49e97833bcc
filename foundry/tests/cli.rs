//! The `foundry` binary: exit codes and where output goes.

use std::path::Path;
use std::process::Command;

fn foundry(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_foundry"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn check_passes_the_shipped_contracts_and_reports_layout() {
    let (ok, stdout, stderr) = foundry(&[
        "check",
        "--layout",
        "contracts/bench/echo.ridl",
        "contracts/store/store.ridl",
        "contracts/drivers/block.ridl",
        "contracts/drivers/serial.ridl",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("echo6            request: 6 words in registers (fastpath)"), "{stdout}");
}

#[test]
fn check_fails_with_located_diagnostics() {
    let (ok, _, stderr) = foundry(&["check", "foundry/tests/broken/unknown_type.ridl"]);
    assert!(!ok);
    assert!(stderr.contains("foundry/tests/broken/unknown_type.ridl:7:21"), "{stderr}");
    assert!(stderr.contains("did you mean `Point`?"), "{stderr}");
}

#[test]
fn gen_writes_stdout_or_a_file() {
    let (ok, stdout, _) = foundry(&["gen", "contracts/drivers/serial.ridl"]);
    assert!(ok);
    assert!(stdout.contains("pub mod serial {"));
    let dir = std::env::temp_dir().join(format!("foundry-cli-test-{}", std::process::id()));
    let (ok, _, stderr) = foundry(&["gen", "contracts/drivers/serial.ridl", "--out", dir.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert_eq!(std::fs::read_to_string(dir.join("serial.rs")).unwrap(), stdout);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn diff_fails_only_on_breaking_changes() {
    let (ok, stdout, _) =
        foundry(&["diff", "foundry/tests/diff/v1.ridl", "foundry/tests/diff/v2_compatible.ridl"]);
    assert!(ok, "{stdout}");
    assert!(stdout.ends_with("0 breaking, 5 compatible\n"), "{stdout}");
    let (ok, stdout, _) =
        foundry(&["diff", "foundry/tests/diff/v1.ridl", "foundry/tests/diff/v2_breaking.ridl"]);
    assert!(!ok);
    assert!(stdout.contains("breaking: Kv.remove (ordinal 3): ordinal changed from 3 to 7"), "{stdout}");
}
