//! Diagnostics: precise, rendered messages for malformed or suspicious policies.

use crate::source::{Source, Span};
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

/// One finding about a policy source, positioned by a span.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub span: Span,
    pub message: String,
    /// What the parser expected at this point, when that is the question.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// A suggestion for a near miss.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            span,
            message: message.into(),
            expected: None,
            hint: None,
        }
    }

    pub fn warning(span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(span, message)
        }
    }

    pub fn expected(mut self, expected: impl Into<String>) -> Self {
        self.expected = Some(expected.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_hint(self, hint: Option<String>) -> Self {
        match hint {
            Some(h) => self.hint(h),
            None => self,
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders the diagnostic the way a compiler does:
    ///
    /// ```text
    /// error: unknown time unit `mins`
    ///   --> policies.tsp:3:61
    ///    |
    ///  3 | ... requests/5 mins)
    ///    |                ^^^^ expected one of ms, s, min, h, d
    ///    = hint: did you mean `min`?
    /// ```
    pub fn render(&self, source: &Source) -> String {
        let pos = source.line_col(self.span.start);
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut out = String::new();
        let _ = writeln!(out, "{level}: {}", self.message);
        let _ = writeln!(out, "  --> {}:{}:{}", source.name, pos.line, pos.column);
        let line = source.line_text(pos.line);
        let gutter = pos.line.to_string().len();
        let pad = " ".repeat(gutter);
        let _ = writeln!(out, "{pad} |");
        let _ = writeln!(out, "{} | {}", pos.line, line);
        let line_chars = line.chars().count();
        let span_chars = source
            .slice(self.span)
            .chars()
            .take_while(|c| *c != '\n')
            .count();
        let width = span_chars.clamp(1, (line_chars + 1).saturating_sub(pos.column - 1).max(1));
        let mut caret_line = format!(
            "{pad} | {}{}",
            " ".repeat(pos.column.saturating_sub(1)),
            "^".repeat(width)
        );
        if let Some(expected) = &self.expected {
            let _ = write!(caret_line, " expected {expected}");
        }
        let _ = writeln!(out, "{caret_line}");
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "{pad} = hint: {hint}");
        }
        out
    }
}

/// Edit distance, for "did you mean" hints.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let best = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
            if let Some(slot) = cur.get_mut(j + 1) {
                *slot = best;
            }
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

/// The closest candidate within a small edit distance (case-insensitive), if any.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
