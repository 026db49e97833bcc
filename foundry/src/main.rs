//! The `foundry` command line: check, generate and diff `.ridl` contracts.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use foundry::diag::Sources;

/// Foundry, the RamenOS IDL compiler.
#[derive(Parser)]
#[command(name = "foundry", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Checks contracts and reports every problem found.
    Check {
        /// Contract files (`.ridl`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also print each method's message layout and whether it fits the fastpath.
        #[arg(long)]
        layout: bool,
    },
    /// Generates Rust for one contract.
    Gen {
        /// Contract file (`.ridl`).
        file: PathBuf,
        /// Directory to write `<stem>.rs` into; standard output if absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Lists the changes between two versions of a contract; fails on breaking ones.
    Diff {
        /// The old version.
        old: PathBuf,
        /// The new version.
        new: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut sources = Sources::new();
    let mut failed = false;
    let mut checked = |path: &PathBuf, sources: &mut Sources| match foundry::check_file(sources, path) {
        Ok(checked) => {
            eprint!("{}", sources.render(&checked.warnings));
            Some(checked.contract)
        }
        Err(diags) => {
            eprint!("{}", sources.render(&diags));
            failed = true;
            None
        }
    };
    match cli.command {
        Command::Check { files, layout } => {
            for file in &files {
                if let Some(contract) = checked(file, &mut sources)
                    && layout
                {
                    print!("{}", foundry::layout_report(&contract));
                }
            }
        }
        Command::Gen { file, out } => {
            if let Some(contract) = checked(&file, &mut sources) {
                let code = foundry::codegen::generate(&contract);
                match out {
                    None => print!("{code}"),
                    Some(dir) => {
                        let stem = file.file_stem().and_then(|stem| stem.to_str()).unwrap_or("contract");
                        let target = dir.join(format!("{stem}.rs"));
                        if let Err(error) =
                            std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&target, code))
                        {
                            eprintln!("error: cannot write `{}`: {error}", target.display());
                            return ExitCode::FAILURE;
                        }
                    }
                }
            }
        }
        Command::Diff { old, new } => {
            let old = checked(&old, &mut sources);
            let new = checked(&new, &mut sources);
            if let (Some(old), Some(new)) = (old, new) {
                let changes = foundry::diff::diff(&old, &new);
                for change in &changes {
                    println!("{change}");
                }
                let breaking = changes.iter().filter(|change| change.breaking).count();
                println!("{breaking} breaking, {} compatible", changes.len() - breaking);
                if breaking > 0 {
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
