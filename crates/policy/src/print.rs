//! Printing policies back to canonical text (straight quotes, one clause per line), so tools
//! that write policies — the proving ground's remediation — produce what the parser reads.

use crate::ast::{CallField, Expr, Literal, Mode, Policy, Pred, Quant, Test, ValueExpr, ValueTest};
use crate::duration::format_duration;
use std::fmt::{self, Display, Formatter, Write as _};

fn quote(s: &str) -> String {
    if s.contains('\'') {
        format!("\"{s}\"")
    } else {
        format!("'{s}'")
    }
}

fn list(items: &[Literal]) -> String {
    items
        .iter()
        .map(Literal::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Display for Test {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Test::Cmp(op, lit) => write!(f, "{} {lit}", op.as_str()),
            Test::In(items) => write!(f, "IN [{}]", list(items)),
            Test::NotIn(items) => write!(f, "NOT IN [{}]", list(items)),
            Test::Matches(g) => write!(f, "MATCHES {}", quote(g)),
            Test::StartsWith(p) => write!(f, "STARTS_WITH {}", quote(p)),
            Test::InCidr(nets) => {
                let nets: Vec<String> = nets.iter().map(|n| format!("'{n}'")).collect();
                write!(f, "IN_CIDR [{}]", nets.join(", "))
            }
            Test::Regex(p) => write!(f, "REGEX {}", quote(p.0.as_str())),
        }
    }
}

impl Display for ValueExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            ValueExpr::Arg(a) => write!(f, "Arg({})", quote(a)),
            ValueExpr::Call(func, inner) => write!(f, "{}({inner})", func.as_str()),
        }
    }
}

impl Display for ValueTest {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let names = |items: &[String]| {
            items
                .iter()
                .map(|i| quote(i))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            ValueTest::Test(t) => write!(f, "{t}"),
            ValueTest::From(sources) if sources.len() == 1 => write!(f, "FROM {}", names(sources)),
            ValueTest::From(sources) => write!(f, "FROM [{}]", names(sources)),
            ValueTest::InResults(tools) => write!(f, "IN Results({})", names(tools)),
        }
    }
}

fn within(w: &Option<i64>) -> String {
    w.map(|w| format!(" WITHIN {}", format_duration(w)))
        .unwrap_or_default()
}

impl Display for Pred {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Pred::Call { pattern } => write!(f, "Tool_Call({})", quote(pattern)),
            Pred::Count {
                pattern,
                op,
                n,
                window_ms,
            } => write!(
                f,
                "Tool_Call({}).Count {} {n} requests/{}",
                quote(pattern),
                op.as_str(),
                format_duration(*window_ms)
            ),
            Pred::Distinct {
                pattern,
                attr,
                op,
                n,
                window_ms,
            } => write!(
                f,
                "Tool_Call({}).Distinct({}) {} {n} values/{}",
                quote(pattern),
                quote(attr),
                op.as_str(),
                format_duration(*window_ms)
            ),
            Pred::Field {
                pattern,
                field: CallField::Mode,
                test,
            } => write!(f, "Tool_Call({}) {test}", quote(pattern)),
            Pred::Field {
                pattern,
                field: CallField::Attr(a),
                test,
            } => write!(f, "Tool_Call({}).{a} {test}", quote(pattern)),
            Pred::Contains { pattern, window_ms } => {
                write!(
                    f,
                    "Trajectory_Contains({}){}",
                    quote(pattern),
                    within(window_ms)
                )
            }
            Pred::Sequence { steps, window_ms } => {
                let steps: Vec<String> = steps.iter().map(|s| quote(s)).collect();
                write!(f, "Sequence({}){}", steps.join(", "), within(window_ms))
            }
            Pred::DataSource {
                source,
                mode,
                window_ms,
            } => {
                write!(f, "DataSource({})", quote(source))?;
                if let Some(m) = mode {
                    write!(f, " == {}", quote(m))?;
                }
                f.write_str(&within(window_ms))
            }
            Pred::ChainContains { principal } => write!(f, "Chain_Contains({})", quote(principal)),
            Pred::Context { field, test } => write!(f, "{} {test}", field.as_str()),
            Pred::Value { quant, value, test } => {
                if *quant == Quant::All {
                    f.write_str("ALL ")?;
                }
                write!(f, "{value} {test}")
            }
        }
    }
}

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let join = |f: &mut Formatter<'_>, items: &[Expr], op: &str| {
            let parts: Vec<String> = items.iter().map(|i| format!("({i})")).collect();
            f.write_str(&parts.join(&format!(" {op} ")))
        };
        match self {
            Expr::And(items) => join(f, items, "AND"),
            Expr::Or(items) => join(f, items, "OR"),
            Expr::Not(inner) => write!(f, "NOT ({inner})"),
            Expr::Pred(p, _) => write!(f, "{p}"),
        }
    }
}

impl Display for Policy {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let plain = self
            .id
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            && self
                .id
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_');
        let id = if plain {
            self.id.clone()
        } else {
            quote(&self.id)
        };
        let _ = writeln!(out, "POLICY {id}:");
        let _ = writeln!(out, "  ACTION: {}", self.action.as_str());
        let _ = writeln!(out, "  TARGET: {}", self.target.as_str());
        let _ = writeln!(out, "  IF {}", self.condition);
        if let Some(r) = &self.reason {
            let _ = writeln!(out, "  REASON: {}", quote(r));
        }
        if let Some(a) = &self.approvers {
            let _ = writeln!(out, "  APPROVERS: {}", quote(a));
        }
        if self.mode == Mode::Shadow {
            let _ = writeln!(out, "  MODE: shadow");
        }
        if let Some(d) = self.deadline_ms {
            let _ = writeln!(out, "  DEADLINE: {}", format_duration(d));
        }
        f.write_str(&out)
    }
}
