//! The compiler never panics, whatever it is fed: mangled versions of the shipped
//! contracts and random text all end in a contract or in diagnostics.

use foundry::diag::Sources;
use proptest::prelude::*;

const SEEDS: [&str; 4] = [
    include_str!("../../contracts/bench/echo.ridl"),
    include_str!("../../contracts/store/store.ridl"),
    include_str!("../../contracts/drivers/block.ridl"),
    include_str!("../tests-echo/contracts/all_types.ridl"),
];

const FRAGMENTS: [&str; 16] = [
    "@ordinal(",
    ")",
    "<",
    ">",
    "[u8; 0]",
    "cap<",
    "lease<",
    "bytes<70000>",
    ";",
    "->",
    "Result<",
    "oneway ",
    "struct A { b: A }",
    "\"",
    "é",
    "0x",
];

fn check(text: &str) {
    let mut sources = Sources::new();
    match foundry::check_source(&mut sources, "fuzz.ridl", text) {
        Ok(checked) => {
            let _ = foundry::codegen::generate(&checked.contract);
            let _ = foundry::diff::diff(&checked.contract, &checked.contract);
        }
        Err(diags) => {
            assert!(!diags.is_empty());
            let _ = sources.render(&diags);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mangled_contracts_never_panic(
        seed in 0..SEEDS.len(),
        cut in any::<prop::sample::Index>(),
        cut_len in 0usize..40,
        at in any::<prop::sample::Index>(),
        fragment in 0..FRAGMENTS.len(),
    ) {
        let text = SEEDS[seed];
        let chars: Vec<char> = text.chars().collect();
        let start = cut.index(chars.len());
        let end = (start + cut_len).min(chars.len());
        let mut mangled: Vec<char> = chars[..start].iter().chain(&chars[end..]).copied().collect();
        let insert = at.index(mangled.len() + 1);
        mangled.splice(insert..insert, FRAGMENTS[fragment].chars());
        check(&mangled.into_iter().collect::<String>());
    }

    #[test]
    fn random_text_never_panics(text in "\\PC{0,200}") {
        check(&text);
        check(&format!("contract fuzz @version(1);\n{text}"));
    }
}
