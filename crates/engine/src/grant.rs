//! Task grants: what a session's task authorises, declared by its host before the agent acts.
//!
//! A grant lists the tools (or classes) the task needs, each with optional constraints on its
//! arguments (allowed values, a numeric range, a pattern), addressed as policies address them
//! (`/recipients/*`, or a catalog attribute name). A call of the session that no entry of a
//! grant allows is denied before any policy is evaluated, with a reason that names the grant.
//!
//! A grant only narrows: the credential's allowed tools are checked first, and a grant never
//! admits a call the credential or the policies refuse. Several grants for one session all
//! apply (their intersection), so a later grant can narrow a session further but never widen
//! it. Grants are recorded in the ledger (kind `grant`), restored on restart and re-declared by
//! a replay, so every decision they made is re-made identically.

use crate::engine::Engine;
use crate::event::{check_human, format_time, Principals};
use crate::log::clip;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use truststack_policy::provenance::normalize_value;
use truststack_policy::{Catalog, Target};

/// At most this many grants apply to one session: each one can only narrow it further.
pub const MAX_GRANTS_PER_SESSION: usize = 64;
/// Regular expressions in grants are refused past this compiled size (as in policies).
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// What a task authorises in one session, declared for a human principal of its chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The grant's id; one is assigned when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The agent whose session it is.
    pub agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default)]
    pub chain: Vec<String>,
    /// The human on whose behalf the task is granted (`user:...`, in the chain). Default: the
    /// human at the chain's head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// A call must match one entry; an empty list authorises no call.
    pub allow: Vec<Allowance>,
}

/// One tool (or class) the task may call, with constraints on its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allowance {
    /// A tool name, a catalog class, or `*` for any tool.
    pub tool: String,
    /// Argument (a JSON pointer such as `/recipients/*`, or a catalog attribute name) →
    /// what its values must satisfy. Every constraint must hold.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, Constraint>,
}

/// What every value of one argument must satisfy (each part given must hold). A list is
/// checked element by element; an argument the call does not carry satisfies it (constrain
/// it to `one_of: []` to forbid it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraint {
    /// Allowed values, compared in the provenance normal form (case, spacing, number and URL
    /// forms do not matter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<Value>>,
    /// The value as a number (`"$1,200"` reads as 1200) is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The value as a number is at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The whole value (as text) matches this regular expression (`regex` crate syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

/// Why a grant was not declared.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The grant itself is wrong (no human gave it, a bad pattern): the caller's to fix.
    #[error("bad grant: {0}")]
    Invalid(String),
    /// The ledger could not keep it; it does not apply.
    #[error("grant not recorded: {0}")]
    Ledger(#[source] crate::recorder::WriteError),
}

/// A declared grant: its id and its ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Declared {
    pub grant_id: String,
    pub ledger_index: Option<u64>,
}

/// A grant ready to check calls against.
#[derive(Debug)]
struct Compiled {
    id: String,
    allow: Vec<CompiledAllowance>,
}

#[derive(Debug)]
struct CompiledAllowance {
    tool: String,
    args: Vec<(String, CompiledConstraint)>,
}

#[derive(Debug)]
struct CompiledConstraint {
    one_of: Option<HashSet<String>>,
    min: Option<f64>,
    max: Option<f64>,
    pattern: Option<regex::Regex>,
}

impl Grant {
    /// Checks the grant and compiles its patterns and allowed values.
    fn compile(&self, id: String) -> Result<Compiled, String> {
        let allow = self
            .allow
            .iter()
            .map(|a| {
                if a.tool.is_empty() {
                    return Err("an entry names no tool".to_string());
                }
                let args = a
                    .args
                    .iter()
                    .map(|(arg, c)| Ok((arg.clone(), c.compile(&a.tool, arg)?)))
                    .collect::<Result<Vec<_>, String>>()?;
                Ok(CompiledAllowance {
                    tool: a.tool.clone(),
                    args,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Compiled { id, allow })
    }
}

impl Constraint {
    fn compile(&self, tool: &str, arg: &str) -> Result<CompiledConstraint, String> {
        let at = || format!("`{tool}` argument `{arg}`");
        if arg.is_empty() {
            return Err(format!(
                "`{tool}`: an argument constraint names no argument"
            ));
        }
        if *self == Constraint::default() {
            return Err(format!(
                "{}: a constraint needs `one_of`, `min`, `max` or `pattern`",
                at()
            ));
        }
        let one_of = match &self.one_of {
            Some(values) => Some(
                values
                    .iter()
                    .map(|v| {
                        normalize_value(v).ok_or_else(|| {
                            format!(
                                "{}: `one_of` holds {v}, not a string, number or boolean",
                                at()
                            )
                        })
                    })
                    .collect::<Result<HashSet<_>, String>>()?,
            ),
            None => None,
        };
        for bound in [self.min, self.max].into_iter().flatten() {
            if !bound.is_finite() {
                return Err(format!("{}: a range bound must be a finite number", at()));
            }
        }
        if let (Some(min), Some(max)) = (self.min, self.max) {
            if min > max {
                return Err(format!("{}: `min` {min} is above `max` {max}", at()));
            }
        }
        let pattern = match &self.pattern {
            Some(p) => Some(
                regex::RegexBuilder::new(&format!("^(?:{p})$"))
                    .size_limit(PATTERN_SIZE_LIMIT)
                    .build()
                    .map_err(|e| {
                        format!("{}: `{p}` is not a valid regular expression: {e}", at())
                    })?,
            ),
            None => None,
        };
        Ok(CompiledConstraint {
            one_of,
            min: self.min,
            max: self.max,
            pattern,
        })
    }
}

impl CompiledConstraint {
    /// Why `value` (one scalar) fails, or `None` when it passes.
    fn fails(&self, value: &Value) -> Option<&'static str> {
        let norm = normalize_value(value);
        if let Some(allowed) = &self.one_of {
            if !norm.as_ref().is_some_and(|n| allowed.contains(n)) {
                return Some("is not one of the granted values");
            }
        }
        if self.min.is_some() || self.max.is_some() {
            let Some(n) = norm.as_deref().and_then(|n| n.parse::<f64>().ok()) else {
                return Some("is not a number");
            };
            if self.min.is_some_and(|min| n < min) {
                return Some("is below the granted range");
            }
            if self.max.is_some_and(|max| n > max) {
                return Some("is above the granted range");
            }
        }
        if let Some(pattern) = &self.pattern {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(_) | Value::Bool(_) => value.to_string(),
                _ => return Some("is not a string, number or boolean"),
            };
            if !pattern.is_match(&text) {
                return Some("does not match the granted pattern");
            }
        }
        None
    }
}

/// Every scalar of `values`, lists flattened; nulls say nothing and are skipped.
fn scalars<'v>(values: &'v [Value], out: &mut Vec<&'v Value>) {
    for v in values {
        match v {
            Value::Null => {}
            Value::Array(items) => scalars(items, out),
            other => out.push(other),
        }
    }
}

impl CompiledAllowance {
    fn names(&self, tool: &str, classes: &[String]) -> bool {
        self.tool == "*" || self.tool == tool || classes.contains(&self.tool)
    }

    /// The first argument constraint the call fails, described; `None` when all hold.
    fn unmet(&self, catalog: &Catalog, tool: &str, args: &Value) -> Option<String> {
        let spec = catalog.tool(tool);
        for (arg, constraint) in &self.args {
            let values = catalog.arg_values(spec, arg, args);
            let mut flat = Vec::new();
            scalars(&values, &mut flat);
            for v in flat {
                if let Some(why) = constraint.fails(v) {
                    return Some(format!("`{arg}` value {} {why}", clip(&v.to_string())));
                }
            }
        }
        None
    }
}

impl Compiled {
    /// Why this grant does not allow the call, or `None` when one of its entries does.
    fn refusal(&self, catalog: &Catalog, tool: &str, args: &Value) -> Option<String> {
        let classes = catalog
            .tool(tool)
            .map(|t| t.classes.as_slice())
            .unwrap_or(&[]);
        let mut first_unmet = None;
        for entry in self.allow.iter().filter(|a| a.names(tool, classes)) {
            match entry.unmet(catalog, tool, args) {
                None => return None,
                Some(why) => {
                    first_unmet.get_or_insert(why);
                }
            }
        }
        Some(match first_unmet {
            Some(why) => format!(
                "the task grant {} allows `{tool}` only within its argument constraints: {why}",
                self.id
            ),
            None => {
                let mut granted: Vec<&str> = self.allow.iter().map(|a| a.tool.as_str()).collect();
                granted.sort_unstable();
                granted.dedup();
                format!(
                    "the task grant {} does not allow tool `{tool}` (granted: {})",
                    self.id,
                    if granted.is_empty() {
                        "none".to_string()
                    } else {
                        granted.join(", ")
                    }
                )
            }
        })
    }
}

/// The grants in force, by session scope key.
#[derive(Default)]
pub(crate) struct Grants(RwLock<HashMap<Box<str>, Vec<Arc<Compiled>>>>);

impl Grants {
    /// An independent copy (grants themselves are immutable and shared).
    pub(crate) fn copy(&self) -> Grants {
        Grants(RwLock::new(self.0.read().clone()))
    }
}

fn session_key(agent: &str, session: Option<&str>, chain: &[String]) -> Box<str> {
    Principals::of(agent, session, chain)
        .scope_key(Target::Session)
        .into()
}

impl Engine {
    /// Declares what a session's task authorises. The principal must be a human (`user:...`)
    /// of the chain, as for an input; the grant is recorded before it applies. A session may
    /// receive several grants: a call must be allowed by every one.
    pub fn declare_grant(&self, grant: &Grant) -> Result<Declared, GrantError> {
        let now = self
            .now(grant.time.as_deref())
            .map_err(GrantError::Invalid)?;
        check_human(
            "grant",
            grant.principal.as_deref(),
            &grant.chain,
            &grant.agent,
        )
        .map_err(GrantError::Invalid)?;
        let id = grant.id.clone().unwrap_or_else(|| self.next_id("g", now));
        let compiled = grant.compile(id.clone()).map_err(GrantError::Invalid)?;
        let key = session_key(&grant.agent, grant.session.as_deref(), &grant.chain);
        if self.grants.0.read().get(&key).map_or(0, Vec::len) >= MAX_GRANTS_PER_SESSION {
            return Err(GrantError::Invalid(format!(
                "the session already has {MAX_GRANTS_PER_SESSION} grants, the most it may have"
            )));
        }
        let mut recorded = grant.clone();
        recorded.id = Some(id.clone());
        recorded.time = None;
        let ledger_index = self
            .recorder
            .record(
                crate::record::Record::Grant {
                    time: format_time(now),
                    grant: recorded,
                }
                .to_value(),
            )
            .map_err(GrantError::Ledger)?;
        self.install_grant(key, compiled);
        Ok(Declared {
            grant_id: id,
            ledger_index,
        })
    }

    fn install_grant(&self, key: Box<str>, grant: Compiled) {
        tracing::info!(grant = %clip(&grant.id), session = %clip(&key), "task grant in force");
        self.grants
            .0
            .write()
            .entry(key)
            .or_default()
            .push(Arc::new(grant));
    }

    /// Puts a recorded grant back in force (a restart), without recording it again.
    pub(crate) fn restore_grant(&self, grant: &Grant) -> Result<(), String> {
        let id = grant.id.clone().ok_or("grant record without an id")?;
        let compiled = grant.compile(id)?;
        let key = session_key(&grant.agent, grant.session.as_deref(), &grant.chain);
        self.install_grant(key, compiled);
        Ok(())
    }

    /// Why the call's session grants do not allow it, naming the grant; `None` when the session
    /// has no grant or every grant allows the call.
    pub(crate) fn grant_refusal(&self, call: &crate::event::ToolCall) -> Option<String> {
        let grants = self.grants.0.read();
        if grants.is_empty() {
            return None;
        }
        let of_session = grants.get(&session_key(
            &call.agent,
            call.session.as_deref(),
            &call.chain,
        ))?;
        let bundle = self.bundle();
        of_session
            .iter()
            .find_map(|g| g.refusal(&bundle.catalog, &call.tool, &call.args))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn catalog() -> Catalog {
        Catalog::from_toml(
            "catalog.toml",
            r#"
[tools.send_email]
classes = ["Send"]
attributes.Recipient = { from = "/recipients/*" }

[tools.send_money]
classes = ["Send", "Payment"]

[tools.read_file]
"#,
        )
        .unwrap()
    }

    /// A grant of `allow` (its JSON form) for agent `a`.
    fn declared(allow: Value) -> Grant {
        Grant {
            id: None,
            time: None,
            agent: "a".into(),
            session: None,
            chain: vec![],
            principal: None,
            allow: serde_json::from_value(allow).unwrap(),
        }
    }

    fn grant(allow: Value) -> Compiled {
        declared(allow).compile("g-1".into()).unwrap()
    }

    fn check(g: &Compiled, tool: &str, args: Value) -> Option<String> {
        g.refusal(&catalog(), tool, &args)
    }

    #[test]
    fn a_tool_outside_the_grant_is_refused_with_the_grant_named() {
        let g = grant(json!([{"tool": "read_file"}, {"tool": "Send"}]));
        assert_eq!(check(&g, "read_file", json!({})), None);
        assert_eq!(check(&g, "send_money", json!({})), None, "by class");
        assert_eq!(
            check(&g, "delete_file", json!({})).unwrap(),
            "the task grant g-1 does not allow tool `delete_file` (granted: Send, read_file)"
        );
        let none = grant(json!([]));
        assert!(check(&none, "read_file", json!({}))
            .unwrap()
            .contains("(granted: none)"));
    }

    #[test]
    fn allowed_values_compare_in_normal_form_and_every_list_element_must_pass() {
        let g = grant(json!([{"tool": "send_email",
            "args": {"/recipients": {"one_of": ["Bob@Example.com", "alice@example.com"]}}}]));
        assert_eq!(
            check(&g, "send_email", json!({"recipients": ["bob@example.com"]})),
            None
        );
        assert_eq!(
            check(
                &g,
                "send_email",
                json!({"recipients": [" ALICE@example.com", "bob@example.com"]})
            ),
            None
        );
        let why = check(
            &g,
            "send_email",
            json!({"recipients": ["bob@example.com", "eve@evil.example"]}),
        )
        .unwrap();
        assert_eq!(
            why,
            "the task grant g-1 allows `send_email` only within its argument constraints: \
             `/recipients` value \"eve@evil.example\" is not one of the granted values"
        );
        // An argument the call does not carry states nothing.
        assert_eq!(check(&g, "send_email", json!({"subject": "hi"})), None);
        // Constrained to nothing: the argument must be absent.
        let g = grant(json!([{"tool": "send_email", "args": {"/cc": {"one_of": []}}}]));
        assert_eq!(check(&g, "send_email", json!({"cc": []})), None);
        assert!(check(&g, "send_email", json!({"cc": ["x@y.example"]})).is_some());
    }

    #[test]
    fn arguments_are_addressed_by_pointer_or_catalog_attribute() {
        let g = grant(
            json!([{"tool": "Send", "args": {"Recipient": {"one_of": ["bob@example.com"]}}}]),
        );
        assert_eq!(
            check(&g, "send_email", json!({"recipients": ["bob@example.com"]})),
            None
        );
        assert!(check(&g, "send_email", json!({"recipients": ["eve@example.com"]})).is_some());
        let g = grant(
            json!([{"tool": "send_email", "args": {"/recipients/*": {"pattern": ".*@example\\.com"}}}]),
        );
        assert_eq!(
            check(&g, "send_email", json!({"recipients": ["bob@example.com"]})),
            None
        );
        assert!(
            check(
                &g,
                "send_email",
                json!({"recipients": ["bob@example.com.evil.example"]})
            )
            .unwrap()
            .contains("does not match the granted pattern"),
            "a pattern matches the whole value"
        );
    }

    #[test]
    fn ranges_read_numbers_in_normal_form() {
        let g = grant(json!([{"tool": "send_money", "args": {"/amount": {"min": 0, "max": 100}}}]));
        assert_eq!(check(&g, "send_money", json!({"amount": 100})), None);
        assert_eq!(check(&g, "send_money", json!({"amount": "$99.50"})), None);
        assert!(check(&g, "send_money", json!({"amount": "1,000"}))
            .unwrap()
            .contains("above the granted range"));
        assert!(check(&g, "send_money", json!({"amount": -1}))
            .unwrap()
            .contains("below the granted range"));
        assert!(check(&g, "send_money", json!({"amount": "lots"}))
            .unwrap()
            .contains("is not a number"));
        assert!(check(&g, "send_money", json!({"amount": {"value": 1}}))
            .unwrap()
            .contains("is not a number"));
    }

    #[test]
    fn one_matching_entry_is_enough() {
        let g = grant(json!([
            {"tool": "send_money", "args": {"/amount": {"max": 10}}},
            {"tool": "send_money", "args": {"/recipient": {"one_of": ["landlord"]}}}
        ]));
        assert_eq!(
            check(
                &g,
                "send_money",
                json!({"amount": 500, "recipient": "landlord"})
            ),
            None
        );
        assert_eq!(
            check(&g, "send_money", json!({"amount": 5, "recipient": "eve"})),
            None
        );
        assert!(check(&g, "send_money", json!({"amount": 500, "recipient": "eve"})).is_some());
    }

    #[test]
    fn malformed_grants_are_refused() {
        for (allow, says) in [
            (json!([{"tool": ""}]), "names no tool"),
            (json!([{"tool": "t", "args": {"/a": {}}}]), "needs `one_of`"),
            (
                json!([{"tool": "t", "args": {"/a": {"min": 5, "max": 1}}}]),
                "above `max`",
            ),
            (
                json!([{"tool": "t", "args": {"/a": {"pattern": "("}}}]),
                "not a valid regular",
            ),
            (
                json!([{"tool": "t", "args": {"/a": {"one_of": [[1]]}}}]),
                "not a string",
            ),
            (
                json!([{"tool": "t", "args": {"": {"one_of": [1]}}}]),
                "names no argument",
            ),
        ] {
            let err = declared(allow).compile("g".into()).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
        let unknown: Result<Constraint, _> = serde_json::from_value(json!({"one_off": [1]}));
        assert!(
            unknown.is_err(),
            "a misspelt constraint is not silently ignored"
        );
    }
}
