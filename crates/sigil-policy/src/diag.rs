//! Diagnostics: every problem in a policy file, located at file:line:column with the field,
//! the bad value and a hint.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::{Location, Spanned};

/// A position in the policy file (1-based; 0 means unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

impl From<Location> for Pos {
    fn from(l: Location) -> Self {
        Self {
            line: l.line(),
            column: l.column(),
        }
    }
}

impl<T> From<&Spanned<T>> for Pos {
    fn from(s: &Spanned<T>) -> Self {
        s.referenced.into()
    }
}

/// One problem found in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub pos: Pos,
    /// The field, as a path such as `flows[2].to`.
    pub field: String,
    /// The offending value as written (may be empty for a missing field).
    pub value: String,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(
        pos: impl Into<Pos>,
        field: impl Into<String>,
        value: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            pos: pos.into(),
            field: field.into(),
            value: value.into(),
            message: message.into(),
            hint: None,
        }
    }

    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// A policy file that failed to load: the file and every diagnostic, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    pub path: PathBuf,
    pub diagnostics: Vec<Diagnostic>,
}

impl PolicyError {
    pub(crate) fn new(path: &Path, mut diagnostics: Vec<Diagnostic>) -> Self {
        diagnostics.sort_by_key(|d| (d.pos.line, d.pos.column));
        Self {
            path: path.to_owned(),
            diagnostics,
        }
    }

    pub(crate) fn single(path: &Path, d: Diagnostic) -> Self {
        Self::new(path, vec![d])
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.diagnostics.len();
        writeln!(
            f,
            "{} has {n} error{}",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for d in &self.diagnostics {
            write!(
                f,
                "{}:{}:{}: ",
                self.path.display(),
                d.pos.line,
                d.pos.column
            )?;
            if !d.field.is_empty() {
                write!(f, "{}: ", d.field)?;
            }
            write!(f, "{}", d.message)?;
            if !d.value.is_empty() {
                write!(f, " (value: {:?})", d.value)?;
            }
            writeln!(f)?;
            if let Some(h) = &d.hint {
                writeln!(f, "  hint: {h}")?;
            }
        }
        Ok(())
    }
}

/// Collects diagnostics while validating.
#[derive(Debug, Default)]
pub(crate) struct Diags(pub Vec<Diagnostic>);

impl Diags {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
}

/// Edit distance, for "did you mean" hints.
pub(crate) fn closest<'a>(want: &str, names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    names
        .into_iter()
        .map(|n| (levenshtein(want, n), n))
        .filter(|(d, n)| {
            let len = n.len().max(want.len());
            *d < len && *d <= (len / 3).max(1)
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

/// "unknown X; did you mean Y? declared: a, b, c"
pub(crate) fn unknown_name_hint<'a>(
    want: &str,
    names: impl IntoIterator<Item = &'a str> + Clone,
) -> String {
    let list: Vec<&str> = names.clone().into_iter().collect();
    match closest(want, names) {
        Some(c) => format!("did you mean {c:?}? declared: {}", list.join(", ")),
        None if list.is_empty() => "nothing is declared yet".to_owned(),
        None => format!("declared: {}", list.join(", ")),
    }
}
