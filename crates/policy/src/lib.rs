//! The TrustStack policy language.
//!
//! A policy decides tool calls of AI agents over whole trajectories:
//!
//! ```text
//! POLICY: ACTION: DENY TARGET: agent_identity IF (Tool_Call('ScanTool').Count > 100 requests/5min)
//! ```
//!
//! This crate parses policies (with compiler-style [`Diagnostic`]s), checks them against a tool
//! [`Catalog`], and compiles them into a [`Bundle`] whose predicates are incremental monitors
//! (see [`monitor`]). The engine crate keeps the per-scope monitor states and makes decisions.

pub mod ast;
pub mod catalog;
pub mod check;
pub mod compile;
pub mod diagnostic;
pub mod duration;
pub mod explanation;
pub mod glob;
pub mod ip_class;
pub mod lexer;
pub mod load;
pub mod monitor;
pub mod parser;
pub mod partial;
pub mod principals;
pub mod print;
pub mod provenance;
pub mod source;

pub use ast::{Action, Mode, Policy, Target};
pub use catalog::{Catalog, CatalogError, RecordMode, ToolSpec};
pub use compile::{Bundle, CallContext, ToolInfo};
pub use diagnostic::{Diagnostic, Severity};
pub use explanation::{Explained, Explanation};
pub use source::{Source, Span};

use sha2::{Digest, Sha256};

/// Diagnostics for a set of sources, each tagged with the index of the source it belongs to.
#[derive(Debug, Default)]
pub struct Report {
    pub diagnostics: Vec<(usize, Diagnostic)>,
}

impl Report {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|(_, d)| d.is_error())
    }

    /// Every diagnostic rendered with its source line and caret, errors and warnings in order.
    pub fn render(&self, sources: &[Source]) -> String {
        self.diagnostics
            .iter()
            .filter_map(|(i, d)| sources.get(*i).map(|s| d.render(s)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Parses and checks every source; returns the policies (in source order) and the report.
pub fn parse_and_check(sources: &[Source], catalog: &Catalog) -> (Vec<Policy>, Report) {
    let mut report = Report::default();
    let mut policies = Vec::new();
    let mut origin = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        let parsed = parser::parse(source);
        report
            .diagnostics
            .extend(parsed.diagnostics.into_iter().map(|d| (i, d)));
        origin.extend(std::iter::repeat_n(i, parsed.policies.len()));
        policies.extend(parsed.policies);
    }
    for (policy, d) in check::check(&policies, catalog) {
        report
            .diagnostics
            .push((origin.get(policy).copied().unwrap_or(0), d));
    }
    (policies, report)
}

/// `sha256:<hex>` over the sources (name and text) and the catalog text: what a decision was
/// made under.
pub fn bundle_hash(sources: &[Source], catalog_text: &str) -> String {
    let mut h = Sha256::new();
    for s in sources {
        for part in [s.name.as_bytes(), s.text.as_bytes()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
    }
    h.update((catalog_text.len() as u64).to_be_bytes());
    h.update(catalog_text.as_bytes());
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Parses, checks and compiles a bundle; fails with the report when any error was found.
/// Warnings are returned beside the bundle.
pub fn build_bundle(
    sources: &[Source],
    catalog: Catalog,
    catalog_text: &str,
) -> Result<(Bundle, Report), Report> {
    let (policies, report) = parse_and_check(sources, &catalog);
    if report.has_errors() {
        return Err(report);
    }
    let hash = bundle_hash(sources, catalog_text);
    Ok((Bundle::compile(policies, catalog, hash), report))
}

/// The entry point the fuzz target and the parser property tests share: parse arbitrary
/// bytes, check, render every diagnostic and compile. Must never panic.
pub fn fuzz_entry(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let source = Source::new("fuzz.tsp", text.as_ref());
    let sources = [source];
    let (policies, report) = parse_and_check(&sources, &Catalog::default());
    let _ = report.render(&sources);
    let _ = Bundle::compile(policies, Catalog::default(), String::new());
}
