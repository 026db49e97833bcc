//! The dependency rules between top-level folders, checked over `cargo metadata`.
//!
//! The folder tree is the architecture: each workspace crate belongs to the top-level
//! folder its manifest sits in (or to one of the `SUB_UNITS`, folders inside `kernel/`
//! that are not kernel code), and `DEP_RULES` says which folders may not depend on which.
//! A crate may always depend on crates in its own folder.

use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};
use serde::Deserialize;

use crate::image;

/// The kind of a dependency edge, as `cargo metadata` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DepKind {
    /// `[dependencies]` (reported as `null`).
    Normal,
    Dev,
    Build,
}

/// Folders that user-space code lives in (each has its `user_space_rule` below): the
/// programs and the user runtime.
const USER_SPACE: &[&str] = &["drivers", "store", "benches", "kernel/root", "kernel/user-tests", "kernel/rt"];

/// Folders under a top-level folder that count as their own unit: the user runtime,
/// the boot archive format, and the user programs that sit next to the kernel.
const SUB_UNITS: &[&str] = &["kernel/rt", "kernel/bootfs", "kernel/root", "kernel/user-tests"];

/// One rule: crates in `from` must not depend on crates in the `to` folders.
#[derive(Debug)]
pub struct DepRule {
    /// Top-level folder of the depending crate; `*` for every folder.
    pub from: &'static str,
    /// Forbidden top-level folders; `*` for every folder but the crate's own.
    pub to: &'static [&'static str],
    /// Packages in a forbidden folder that may still be depended on.
    pub except_packages: &'static [&'static str],
    /// Dependency kinds the rule does not apply to.
    pub except_kinds: &'static [DepKind],
    /// Why the rule exists, shown with each violation.
    pub why: &'static str,
}

/// User space reaches the kernel only through its ABI crate (the runtime, `kernel/rt`,
/// and the boot archive format, `kernel/bootfs`, are units of their own and allowed).
const fn user_space_rule(from: &'static str) -> DepRule {
    DepRule {
        from,
        to: &["kernel", "arch"],
        except_packages: &["ramen-abi"],
        except_kinds: &[],
        why: "user space reaches the kernel only through its ABI crate (kernel/abi)",
    }
}

/// The dependency rules of the tree (see STYLE.md, "The house").
pub const DEP_RULES: &[DepRule] = &[
    DepRule {
        from: "arch",
        to: &["*"],
        except_packages: &[],
        except_kinds: &[],
        why: "arch is the bottom layer and depends on nothing of ours",
    },
    user_space_rule("drivers"),
    user_space_rule("store"),
    user_space_rule("benches"),
    user_space_rule("kernel/root"),
    user_space_rule("kernel/user-tests"),
    user_space_rule("kernel/rt"),
    DepRule {
        from: "kernel",
        to: USER_SPACE,
        except_packages: &[],
        except_kinds: &[],
        why: "dependencies point one way: the kernel never depends on user space or the user runtime",
    },
    DepRule {
        from: "kernel/bootfs",
        to: &["*"],
        except_packages: &["ramen-abi"],
        except_kinds: &[],
        why: "the boot archive format is shared by the kernel, user space and xtask: it depends only on the ABI",
    },
    DepRule {
        from: "*",
        to: &["xtask"],
        except_packages: &[],
        except_kinds: &[],
        why: "xtask is the build tool; nothing links it",
    },
    DepRule {
        from: "*",
        to: &["foundry"],
        // The no_std runtime under generated stubs is linked into the programs using them.
        except_packages: &["foundry-runtime"],
        except_kinds: &[DepKind::Build],
        why: "foundry is host tooling: use it from build.rs (a build-dependency) only",
    },
];

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    workspace_root: PathBuf,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    manifest_path: PathBuf,
    dependencies: Vec<Dependency>,
}

#[derive(Deserialize)]
struct Dependency {
    name: String,
    kind: Option<DepKind>,
    /// Present for path dependencies: the dependency's directory.
    path: Option<PathBuf>,
}

/// A dependency edge that breaks a rule.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    pub from_package: String,
    pub from_folder: String,
    pub to_package: String,
    pub to_folder: String,
    pub kind: DepKind,
    pub why: &'static str,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            DepKind::Normal => "",
            DepKind::Dev => "dev-",
            DepKind::Build => "build-",
        };
        write!(
            f,
            "{} ({}/) {kind}depends on {} ({}/): {}",
            self.from_package, self.from_folder, self.to_package, self.to_folder, self.why
        )
    }
}

/// The folder `dir` counts as for the rules: the `SUB_UNITS` entry it is in, else its
/// top-level folder inside `root`, if it is inside.
fn top_folder(root: &Path, dir: &Path) -> Option<String> {
    let relative = dir.strip_prefix(root).ok()?;
    if let Some(unit) = SUB_UNITS.iter().find(|unit| relative.starts_with(unit)) {
        return Some((*unit).to_string());
    }
    let component = relative.components().next()?;
    Some(component.as_os_str().to_string_lossy().into_owned())
}

fn matches(patterns: &[&str], folder: &str) -> bool {
    patterns.iter().any(|&pattern| pattern == "*" || pattern == folder)
}

/// Every path-dependency edge in `metadata_json` (`cargo metadata --no-deps` output) that
/// breaks one of `rules`.
pub fn violations(metadata_json: &str, rules: &[DepRule]) -> anyhow::Result<Vec<Violation>> {
    let metadata: Metadata = serde_json::from_str(metadata_json).context("parsing cargo metadata")?;
    let root = &metadata.workspace_root;
    let mut found = Vec::new();
    for package in &metadata.packages {
        let Some(from_folder) = package.manifest_path.parent().and_then(|dir| top_folder(root, dir)) else {
            continue;
        };
        for dependency in &package.dependencies {
            let Some(to_folder) = dependency.path.as_deref().and_then(|dir| top_folder(root, dir)) else {
                continue; // Not one of ours.
            };
            if to_folder == from_folder {
                continue;
            }
            let kind = dependency.kind.unwrap_or(DepKind::Normal);
            let broken = rules.iter().find(|rule| {
                matches(&[rule.from], &from_folder)
                    && matches(rule.to, &to_folder)
                    && !rule.except_packages.contains(&dependency.name.as_str())
                    && !rule.except_kinds.contains(&kind)
            });
            if let Some(rule) = broken {
                found.push(Violation {
                    from_package: package.name.clone(),
                    from_folder: from_folder.clone(),
                    to_package: dependency.name.clone(),
                    to_folder,
                    kind,
                    why: rule.why,
                });
            }
        }
    }
    Ok(found)
}

/// Checks the workspace against `DEP_RULES`; prints each violation; returns whether none.
pub fn check() -> anyhow::Result<bool> {
    let output = image::cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("could not run cargo metadata")?;
    ensure!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    let found = violations(&String::from_utf8_lossy(&output.stdout), DEP_RULES)?;
    for violation in &found {
        println!("deps: {violation}");
    }
    if found.is_empty() {
        println!("deps: ok");
    }
    Ok(found.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (dependency name, its folder, its `kind` as JSON).
    type Dep<'a> = (&'a str, &'a str, &'a str);
    /// (package name, its folder, its path dependencies).
    type Crate<'a> = (&'a str, &'a str, &'a [Dep<'a>]);

    /// `cargo metadata` JSON for `packages`.
    fn metadata(packages: &[Crate]) -> String {
        let packages: Vec<String> = packages
            .iter()
            .map(|(name, folder, deps)| {
                let deps: Vec<String> = deps
                    .iter()
                    .map(|(dep, dep_folder, kind)| {
                        format!(r#"{{"name":"{dep}","kind":{kind},"path":"/ws/{dep_folder}"}}"#)
                    })
                    .collect();
                format!(
                    r#"{{"name":"{name}","manifest_path":"/ws/{folder}/Cargo.toml","dependencies":[{}]}}"#,
                    deps.join(",")
                )
            })
            .collect();
        format!(r#"{{"packages":[{}],"workspace_root":"/ws"}}"#, packages.join(","))
    }

    fn check(packages: &[Crate]) -> Vec<String> {
        violations(&metadata(packages), DEP_RULES)
            .unwrap()
            .iter()
            .map(|v| format!("{} -> {}", v.from_package, v.to_package))
            .collect()
    }

    #[test]
    fn a_well_layered_tree_passes() {
        let found = check(&[
            ("ramen-arch", "arch", &[]),
            (
                "ramen-kernel",
                "kernel",
                &[("ramen-arch", "arch", "null"), ("ramen-core", "kernel/core", "null")],
            ),
            ("uart", "drivers", &[("ramen-abi", "kernel/abi", "null"), ("ramen-ipc", "ipc", "null")]),
            ("ramen-store", "store", &[("ramen-idl", "foundry/idl", r#""build""#)]),
            ("xtask", "xtask", &[]),
        ]);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn arch_depends_on_nothing_of_ours() {
        let found = check(&[("ramen-arch", "arch", &[("ramen-core", "kernel/core", r#""dev""#)])]);
        assert_eq!(found, ["ramen-arch -> ramen-core"]);
    }

    #[test]
    fn user_space_reaches_the_kernel_only_through_the_abi() {
        let found = check(&[
            (
                "uart",
                "drivers",
                &[("ramen-core", "kernel/core", "null"), ("ramen-abi", "kernel/abi", "null")],
            ),
            ("ramen-store", "store", &[("ramen-arch", "arch", "null")]),
            ("ipc-bench", "benches", &[("ramen-kernel", "kernel", "null")]),
        ]);
        assert_eq!(found, ["uart -> ramen-core", "ramen-store -> ramen-arch", "ipc-bench -> ramen-kernel"]);
    }

    #[test]
    fn nothing_depends_on_xtask_and_foundry_only_at_build_time() {
        let found = check(&[
            ("ramen-core", "kernel", &[("xtask", "xtask", r#""dev""#)]),
            ("uart", "drivers", &[("ramen-idl", "foundry", "null")]),
            ("ramen-store", "store", &[("foundry-runtime", "foundry/runtime", "null")]),
            ("ramen-idl-test", "foundry", &[("ramen-idl", "foundry", "null")]),
        ]);
        assert_eq!(found, ["ramen-core -> xtask", "uart -> ramen-idl"]);
    }

    #[test]
    fn the_kernel_never_depends_on_user_space() {
        let found = check(&[("ramen-kernel", "kernel", &[("uart", "drivers", "null")])]);
        assert_eq!(found, ["ramen-kernel -> uart"]);
    }

    #[test]
    fn user_programs_next_to_the_kernel_are_user_space() {
        let found = check(&[
            (
                "ramen-root",
                "kernel/root",
                &[
                    ("ramen-abi", "kernel/abi", "null"),
                    ("ramen-rt", "kernel/rt", "null"),
                    ("ramen-bootfs", "kernel/bootfs", "null"),
                    ("ramen-core", "kernel/core", "null"),
                ],
            ),
            ("ramen-user-tests", "kernel/user-tests", &[("ramen-kernel", "kernel", "null")]),
            ("ramen-rt", "kernel/rt", &[("ramen-abi", "kernel/abi", "null"), ("ramen-arch", "arch", "null")]),
            (
                "uart",
                "drivers",
                &[("ramen-rt", "kernel/rt", "null"), ("ramen-bootfs", "kernel/bootfs", "null")],
            ),
        ]);
        assert_eq!(
            found,
            ["ramen-root -> ramen-core", "ramen-user-tests -> ramen-kernel", "ramen-rt -> ramen-arch"]
        );
    }

    #[test]
    fn the_kernel_never_depends_on_the_user_runtime() {
        let found = check(&[
            (
                "ramen-kernel",
                "kernel",
                &[("ramen-bootfs", "kernel/bootfs", "null"), ("ramen-rt", "kernel/rt", "null")],
            ),
            ("ramen-core", "kernel/core", &[("ramen-rt", "kernel/rt", r#""dev""#)]),
            ("ramen-arch", "arch", &[("ramen-rt", "kernel/rt", "null")]),
            ("ramen-kernel", "kernel", &[("ramen-root", "kernel/root", r#""build""#)]),
        ]);
        assert_eq!(
            found,
            [
                "ramen-kernel -> ramen-rt",
                "ramen-core -> ramen-rt",
                "ramen-arch -> ramen-rt",
                "ramen-kernel -> ramen-root"
            ]
        );
    }

    #[test]
    fn bootfs_depends_only_on_the_abi() {
        let found = check(&[(
            "ramen-bootfs",
            "kernel/bootfs",
            &[
                ("ramen-abi", "kernel/abi", "null"),
                ("ramen-core", "kernel/core", "null"),
                ("ramen-rt", "kernel/rt", "null"),
                ("foundry-runtime", "foundry/runtime", "null"),
            ],
        )]);
        assert_eq!(
            found,
            ["ramen-bootfs -> ramen-core", "ramen-bootfs -> ramen-rt", "ramen-bootfs -> foundry-runtime"]
        );
    }

    #[test]
    fn sub_units_are_whole_path_components() {
        let root = Path::new("/ws");
        assert_eq!(top_folder(root, Path::new("/ws/kernel/rt")).as_deref(), Some("kernel/rt"));
        assert_eq!(top_folder(root, Path::new("/ws/kernel/rtc")).as_deref(), Some("kernel"));
        assert_eq!(top_folder(root, Path::new("/ws/kernel/core")).as_deref(), Some("kernel"));
        assert_eq!(top_folder(root, Path::new("/elsewhere/x")), None);
    }

    #[test]
    fn describes_a_violation() {
        let found = violations(
            &metadata(&[("ramen-arch", "arch", &[("ramen-core", "kernel/core", r#""dev""#)])]),
            DEP_RULES,
        )
        .unwrap();
        assert_eq!(
            found[0].to_string(),
            "ramen-arch (arch/) dev-depends on ramen-core (kernel/): arch is the bottom layer and depends on nothing of ours"
        );
    }
}
