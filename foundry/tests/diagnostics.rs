//! Deliberately broken contracts and the diagnostics they must produce.
//!
//! Each file in `tests/broken/` breaks one rule; its rendered diagnostics (plain text,
//! file:line:col, source line, caret, help) are snapshot-tested. The shipped contracts
//! must check clean.

use std::path::Path;

use foundry::diag::Sources;

fn render(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let name = format!("broken/{}", path.file_name().unwrap().to_string_lossy());
    let mut sources = Sources::new();
    match foundry::check_source(&mut sources, &name, &text) {
        Ok(_) => panic!("{name} should not check"),
        Err(diags) => sources.render(&diags),
    }
}

#[test]
fn broken_contracts_are_diagnosed() {
    insta::glob!("broken/*.ridl", |path| {
        insta::assert_snapshot!(render(path));
    });
}

#[test]
fn shipped_contracts_check_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contracts");
    let mut checked = 0;
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|ext| ext == "ridl") {
                let mut sources = Sources::new();
                if let Err(diags) = foundry::check_file(&mut sources, &file) {
                    panic!("{}", sources.render(&diags));
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 4, "found only {checked} contracts under {}", root.display());
}
