//! Diagnostics: what went wrong, where (file:line:col with the source line and a caret),
//! and what to do about it. Rendered by `codespan-reporting`, without colour, so the
//! text is the same on a terminal, in CI logs and in snapshot tests.

use codespan_reporting::diagnostic::{Diagnostic, Label, Severity};
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term;

/// A byte range in one source file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// File id in the [`Sources`] table.
    pub file: usize,
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// The span covering `self` through `other`.
    pub fn to(self, other: Span) -> Span {
        Span { file: self.file, start: self.start.min(other.start), end: self.end.max(other.end) }
    }
}

/// One diagnostic.
#[derive(Clone, Debug)]
pub struct Diag {
    /// Error or warning.
    pub is_error: bool,
    /// The headline.
    pub message: String,
    /// Where, with what to say there.
    pub labels: Vec<(Span, String, bool)>,
    /// What to do about it.
    pub help: Vec<String>,
}

impl Diag {
    /// A new error.
    pub fn error(message: impl Into<String>) -> Self {
        Self { is_error: true, message: message.into(), labels: Vec::new(), help: Vec::new() }
    }

    /// A new warning.
    pub fn warning(message: impl Into<String>) -> Self {
        Self { is_error: false, ..Self::error(message) }
    }

    /// Points at the offending text.
    pub fn primary(mut self, span: Span, label: impl Into<String>) -> Self {
        self.labels.push((span, label.into(), true));
        self
    }

    /// Points at related text (an earlier declaration, say).
    pub fn secondary(mut self, span: Span, label: impl Into<String>) -> Self {
        self.labels.push((span, label.into(), false));
        self
    }

    /// Says what to do.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help.push(help.into());
        self
    }
}

/// The source files diagnostics point into.
#[derive(Default)]
pub struct Sources {
    files: SimpleFiles<String, String>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sources")
    }
}

impl Sources {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file; returns its id.
    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> usize {
        self.files.add(name.into(), text.into())
    }

    /// The text of file `id`.
    pub fn text(&self, id: usize) -> &str {
        self.files.get(id).map_or("", |file| file.source().as_str())
    }

    /// Renders diagnostics as plain text.
    pub fn render(&self, diags: &[Diag]) -> String {
        let config = term::Config::default();
        let mut out = String::new();
        for diag in diags {
            let severity = if diag.is_error { Severity::Error } else { Severity::Warning };
            let labels = diag
                .labels
                .iter()
                .map(|(span, text, primary)| {
                    let label = if *primary {
                        Label::primary(span.file, span.start..span.end)
                    } else {
                        Label::secondary(span.file, span.start..span.end)
                    };
                    label.with_message(text.clone())
                })
                .collect();
            let notes = diag.help.iter().map(|help| format!("help: {help}")).collect();
            let diagnostic = Diagnostic::new(severity)
                .with_message(diag.message.clone())
                .with_labels(labels)
                .with_notes(notes);
            match term::emit_into_string(&config, &self.files, &diagnostic) {
                Ok(text) => out.push_str(&text),
                Err(error) => {
                    out.push_str(&format!("error: {} (and rendering it failed: {error})\n", diag.message))
                }
            }
        }
        out
    }
}
