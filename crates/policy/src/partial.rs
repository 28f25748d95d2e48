//! Partial evaluation: a policy condition evaluated over what is known before a call is
//! decided — the tool, maybe its arguments, maybe who calls it — in three values. What depends on
//! the history of a scope (counts past the first call, sequences, taint from earlier reads,
//! provenance) is `Unknown`. The concrete evaluator (`compile.rs`) decides calls; this one tells
//! the gateway which tools a caller may never call, and the proving ground which rate limits
//! certainly apply. A new predicate is added to both here, in one crate.

use crate::ast::{CallField, ContextField, Expr, Pred};
use crate::catalog::{Catalog, ToolSpec, UNKNOWN_CLASS};
use crate::compile::test_value;
use serde_json::Value;

/// A truth value that may be unknown before the call is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    True,
    False,
    Unknown,
}

impl From<bool> for Truth {
    fn from(b: bool) -> Truth {
        if b {
            Truth::True
        } else {
            Truth::False
        }
    }
}

impl std::ops::Not for Truth {
    type Output = Truth;
    fn not(self) -> Truth {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::Unknown => Truth::Unknown,
        }
    }
}

/// What is known of the call being evaluated.
#[derive(Debug, Clone, Copy)]
pub struct Known<'a> {
    pub tool: &'a str,
    pub catalog: &'a Catalog,
    /// The call's arguments, when known (the proving ground's chosen variant).
    pub args: Option<&'a Value>,
    /// Who calls, when known (the gateway's verified caller).
    pub subject: Option<crate::principals::Principals<'a>>,
}

impl Known<'_> {
    fn spec(&self) -> Option<&ToolSpec> {
        self.catalog.tool(self.tool)
    }

    /// Whether the call matches a `Tool_Call` pattern (its name, a class, or `Unknown` for a
    /// tool the catalog does not list).
    pub fn matches(&self, pattern: &str) -> bool {
        match self.spec() {
            Some(s) => pattern == self.tool || s.classes.iter().any(|c| c == pattern),
            None => pattern == self.tool || pattern == UNKNOWN_CLASS,
        }
    }
}

/// `e` over what `known` says; `assume` may fix a predicate's value first (the proving ground
/// asks "what if this limit's count is exceeded").
pub fn eval(e: &Expr, known: &Known, assume: &dyn Fn(&Pred) -> Option<Truth>) -> Truth {
    match e {
        Expr::And(items) => {
            let mut out = Truth::True;
            for i in items {
                match eval(i, known, assume) {
                    Truth::False => return Truth::False,
                    Truth::Unknown => out = Truth::Unknown,
                    Truth::True => {}
                }
            }
            out
        }
        Expr::Or(items) => {
            let mut out = Truth::False;
            for i in items {
                match eval(i, known, assume) {
                    Truth::True => return Truth::True,
                    Truth::Unknown => out = Truth::Unknown,
                    Truth::False => {}
                }
            }
            out
        }
        Expr::Not(inner) => !eval(inner, known, assume),
        Expr::Pred(pred, _) => assume(pred).unwrap_or_else(|| atom(pred, known)),
    }
}

/// No assumption: every predicate as `known` says.
pub fn nothing_assumed(_: &Pred) -> Option<Truth> {
    None
}

fn atom(pred: &Pred, k: &Known) -> Truth {
    match pred {
        Pred::Call { pattern } => k.matches(pattern).into(),
        Pred::Count { pattern, op, n, .. } => {
            if !k.matches(pattern) {
                return Truth::False;
            }
            // The count includes the call being decided, so it is at least 1.
            use crate::ast::CmpOp;
            match op {
                CmpOp::Gt if *n == 0 => Truth::True,
                CmpOp::Ge if *n <= 1 => Truth::True,
                _ => Truth::Unknown,
            }
        }
        Pred::Distinct { pattern, .. } => {
            if k.matches(pattern) {
                Truth::Unknown
            } else {
                Truth::False
            }
        }
        Pred::Field {
            pattern,
            field,
            test,
        } => {
            if !k.matches(pattern) {
                return Truth::False;
            }
            match field {
                CallField::Mode => {
                    let mode = k.spec().and_then(|s| s.mode.clone()).map(Value::String);
                    test_value(test, mode.as_ref()).into()
                }
                CallField::Attr(name) => match k.args {
                    Some(args) => {
                        test_value(test, k.catalog.attribute(k.spec(), name, args).as_ref()).into()
                    }
                    None => Truth::Unknown,
                },
            }
        }
        // The trajectory includes the call being decided.
        Pred::Contains { pattern, .. } => {
            if k.matches(pattern) {
                Truth::True
            } else {
                Truth::Unknown
            }
        }
        Pred::Sequence { .. } => Truth::Unknown,
        // The call's own read of its data source counts.
        Pred::DataSource { source, mode, .. } => {
            let own = k
                .spec()
                .and_then(|s| s.data_source.as_ref())
                .is_some_and(|d| d.name == *source && mode.as_deref().is_none_or(|m| m == d.mode));
            if own {
                Truth::True
            } else {
                Truth::Unknown
            }
        }
        Pred::ChainContains { principal } => match k.subject {
            Some(s) => s.involves(principal).into(),
            None => Truth::Unknown,
        },
        // Argument values and their provenance are known only at call time.
        Pred::Value { .. } => Truth::Unknown,
        Pred::Context { field, test } => {
            let value = match (field, k.subject) {
                (ContextField::Tool, _) => Value::from(k.tool),
                (_, Some(s)) => s.field(*field).unwrap_or_default(),
                (_, None) => return Truth::Unknown,
            };
            test_value(test, Some(&value)).into()
        }
    }
}

impl Expr {
    /// Every predicate of the expression, left to right.
    pub fn predicates(&self) -> Vec<&Pred> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(e) = stack.pop() {
            match e {
                Expr::And(items) | Expr::Or(items) => stack.extend(items.iter().rev()),
                Expr::Not(inner) => stack.push(inner),
                Expr::Pred(p, _) => out.push(p),
            }
        }
        out
    }
}
