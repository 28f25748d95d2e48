//! Semantic checks over parsed policies: names the catalog does not know, conditions that can
//! never hold or always hold, clauses that do nothing, duplicate ids.

use crate::ast::{Action, CallField, CmpOp, Expr, Literal, Policy, Pred, Test};
use crate::catalog::Catalog;
use crate::diagnostic::{closest, Diagnostic};
use crate::source::Span;
use std::collections::{BTreeSet, HashMap};

/// Findings for one policy, tagged with the index of the policy they belong to.
pub fn check(policies: &[Policy], catalog: &Catalog) -> Vec<(usize, Diagnostic)> {
    let mut out = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, p) in policies.iter().enumerate() {
        if let Some(first) = seen.insert(&p.id, i) {
            let other = policies
                .get(first)
                .map_or(String::new(), |o| o.source.to_string());
            out.push((
                i,
                Diagnostic::error(p.span, format!("duplicate policy id `{}`", p.id)).hint(format!(
                    "the first is in {other}; policy ids must be unique in a bundle"
                )),
            ));
        }
        if p.action != Action::RequireHitl {
            if p.approvers.is_some() {
                out.push((
                    i,
                    Diagnostic::warning(
                        p.span,
                        "APPROVERS has no effect unless ACTION is REQUIRE_HITL",
                    ),
                ));
            }
            if p.deadline_ms.is_some() {
                out.push((
                    i,
                    Diagnostic::warning(
                        p.span,
                        "DEADLINE has no effect unless ACTION is REQUIRE_HITL",
                    ),
                ));
            }
        }
        let mut ctx = Ctx {
            catalog,
            out: Vec::new(),
        };
        ctx.expr(&p.condition);
        ctx.conjunction(&p.condition);
        out.extend(ctx.out.into_iter().map(|d| (i, d)));
    }
    out
}

struct Ctx<'a> {
    catalog: &'a Catalog,
    out: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn has_catalog(&self) -> bool {
        !self.catalog.tools.is_empty()
    }

    fn name(&mut self, name: &str, span: Span) {
        if !self.has_catalog() || self.catalog.names().any(|n| n == name) {
            return;
        }
        let hint = closest(name, self.catalog.names()).map(|c| format!("did you mean `{c}`?"));
        self.out.push(
            Diagnostic::warning(span, format!("`{name}` is neither a tool nor a class in the catalog"))
                .with_hint(hint.or_else(|| Some("the condition only holds for a tool of that name, which the catalog treats as Unknown".into()))),
        );
    }

    fn expr(&mut self, e: &Expr) {
        match e {
            Expr::And(items) | Expr::Or(items) => items.iter().for_each(|i| self.expr(i)),
            Expr::Not(inner) => self.expr(inner),
            Expr::Pred(p, span) => self.pred(p, *span),
        }
    }

    fn pred(&mut self, p: &Pred, span: Span) {
        match p {
            Pred::Call { pattern } | Pred::Contains { pattern, .. } => self.name(pattern, span),
            Pred::Count { pattern, op, n, .. } | Pred::Distinct { pattern, op, n, .. } => {
                self.name(pattern, span);
                // The call being decided is counted, so the count is at least 1.
                let never = matches!((op, n), (CmpOp::Lt, 0..=1) | (CmpOp::Le | CmpOp::Eq, 0));
                let always = matches!(
                    (op, n),
                    (CmpOp::Gt, 0) | (CmpOp::Ge, 0..=1) | (CmpOp::Ne, 0)
                );
                if never {
                    self.out.push(Diagnostic::warning(span, "this count can never hold: the call being decided is always counted, so the count is at least 1"));
                } else if always {
                    self.out.push(Diagnostic::warning(span, format!("this count always holds for a `{pattern}` call; `Tool_Call('{pattern}')` says the same more plainly")));
                }
                if let Pred::Distinct { attr, .. } = p {
                    self.attr(pattern, attr, span);
                }
            }
            Pred::Field { pattern, field, .. } => {
                self.name(pattern, span);
                if let CallField::Attr(attr) = field {
                    self.attr(pattern, attr, span);
                }
            }
            Pred::Sequence { steps, .. } => steps.iter().for_each(|s| self.name(s, span)),
            Pred::DataSource { source, .. } => {
                if self.has_catalog() && !self.catalog.data_sources().any(|d| d == source) {
                    let hint = closest(source, self.catalog.data_sources())
                        .map(|c| format!("did you mean `{c}`?"));
                    self.out.push(
                        Diagnostic::warning(
                            span,
                            format!("no catalog tool reads data source `{source}`"),
                        )
                        .with_hint(hint.or_else(|| {
                            Some("only observations labelled with it can taint a scope".into())
                        })),
                    );
                }
            }
            Pred::ChainContains { .. } | Pred::Context { .. } => {}
            Pred::Value { value, test, .. } => {
                if let crate::ast::ValueTest::InResults(tools) = test {
                    tools.iter().for_each(|t| self.name(t, span));
                }
                self.value_attr(value, span);
            }
        }
    }

    /// `Arg('Name')` reads a catalog attribute: warn when no tool declares it.
    fn value_attr(&mut self, value: &crate::ast::ValueExpr, span: Span) {
        match value {
            crate::ast::ValueExpr::Call(_, inner) => self.value_attr(inner, span),
            crate::ast::ValueExpr::Arg(a) if !a.starts_with('/') && self.has_catalog() => {
                let declared = self
                    .catalog
                    .tools
                    .values()
                    .any(|s| s.attributes.contains_key(a));
                if !declared {
                    self.out.push(Diagnostic::warning(
                        span,
                        format!("no catalog tool declares attribute `{a}`; it will be read from the call's argument `{a}`"),
                    ).hint(format!("a JSON pointer starts with `/`: Arg('/{a}')")));
                }
            }
            crate::ast::ValueExpr::Arg(_) => {}
        }
    }

    /// Tools a name can match: the tool of that name and every tool of that class.
    fn tools_matching(&self, name: &str) -> BTreeSet<&str> {
        self.catalog
            .tools
            .iter()
            .filter(|(t, s)| t.as_str() == name || s.classes.iter().any(|c| c == name))
            .map(|(t, _)| t.as_str())
            .collect()
    }

    fn attr(&mut self, pattern: &str, attr: &str, span: Span) {
        let tools = self.tools_matching(pattern);
        if tools.is_empty() {
            return;
        }
        let declared = tools.iter().any(|t| {
            self.catalog
                .tool(t)
                .is_some_and(|s| s.attributes.contains_key(attr))
        });
        if !declared {
            self.out.push(Diagnostic::warning(
                span,
                format!("no `{pattern}` tool declares attribute `{attr}` in the catalog; it will be read from the call's argument `{attr}`"),
            ));
        }
    }

    /// Cheap contradiction checks over a top-level conjunction: two tool names no catalog tool
    /// satisfies at once, or one field required equal to two different values.
    fn conjunction(&mut self, e: &Expr) {
        let Expr::And(items) = e else { return };
        let mut required: Vec<(&str, Span)> = Vec::new();
        let mut equalities: HashMap<(String, String), (&Literal, Span)> = HashMap::new();
        for item in items {
            let Expr::Pred(p, span) = item else { continue };
            match p {
                Pred::Call { pattern }
                | Pred::Count { pattern, .. }
                | Pred::Distinct { pattern, .. } => required.push((pattern, *span)),
                Pred::Field {
                    pattern,
                    field,
                    test,
                } => {
                    required.push((pattern, *span));
                    if let Test::Cmp(CmpOp::Eq, lit) = test {
                        let key = (pattern.clone(), format!("{field:?}"));
                        if let Some((prev, _)) = equalities.get(&key) {
                            if *prev != lit {
                                self.out.push(Diagnostic::warning(
                                    *span,
                                    format!("condition can never hold: the same value must equal both {prev} and {lit}"),
                                ));
                            }
                        } else {
                            equalities.insert(key, (lit, *span));
                        }
                    }
                }
                _ => {}
            }
        }
        if !self.has_catalog() || required.len() < 2 {
            return;
        }
        let mut possible: Option<BTreeSet<&str>> = None;
        for (name, span) in &required {
            let tools = self.tools_matching(name);
            if tools.is_empty() {
                continue;
            }
            let next: BTreeSet<&str> = match &possible {
                None => tools,
                Some(p) => p.intersection(&tools).copied().collect(),
            };
            if next.is_empty() {
                let names: Vec<&str> = required.iter().map(|(n, _)| *n).collect();
                self.out.push(Diagnostic::warning(
                    *span,
                    format!(
                        "condition can never hold: no catalog tool matches all of {}",
                        names.join(", ")
                    ),
                ));
                return;
            }
            possible = Some(next);
        }
    }
}
