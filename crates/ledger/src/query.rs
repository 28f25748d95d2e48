//! Selecting records by who, what and when (for `truststack ledger show`).
//!
//! Records of different kinds keep the same facts at different depths: a tool call has
//! `agent` at the top, a decision record keeps the call under `call` and the verdict under
//! `decision.decision`. So a field is looked up in the record itself and, failing that, in its
//! object-valued members in key order: [`field`] finds `agent` in
//! `{"kind":"decision","call":{"agent":"a"},"decision":{"decision":"deny"}}`, and `decision`
//! there is `"deny"` (the first string found, depth first).

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use truststack_identity::id::names_a_human;

/// How deep [`field`] looks for a field inside nested objects.
const MAX_FIELD_DEPTH: usize = 3;

/// Why a filter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{text:?} is not an RFC 3339 timestamp (like 2026-11-13T09:00:00Z): {source}")]
    Time {
        text: String,
        #[source]
        source: time::error::Parse,
    },
}

/// Parses an RFC 3339 timestamp.
pub fn parse_time(text: &str) -> Result<OffsetDateTime, QueryError> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|source| QueryError::Time {
        text: text.to_string(),
        source,
    })
}

/// The value of `name` in `record`: its own member if that is a string (or, for `chain`, an
/// array), else the first match inside object-valued members, depth first in key order.
pub fn field<'a>(record: &'a Value, name: &str) -> Option<&'a Value> {
    find(record, name, MAX_FIELD_DEPTH)
}

fn find<'a>(value: &'a Value, name: &str, depth: usize) -> Option<&'a Value> {
    let object = value.as_object()?;
    if let Some(v) = object.get(name) {
        if v.is_string() || v.is_array() {
            return Some(v);
        }
    }
    if depth == 0 {
        return None;
    }
    object
        .values()
        .filter(|v| v.is_object())
        .find_map(|v| find(v, name, depth - 1))
}

fn text_field<'a>(record: &'a Value, name: &str) -> Option<&'a str> {
    field(record, name).and_then(Value::as_str)
}

/// The delegation root of a record: the first non-human (not `user:`) principal of its
/// `chain`, or its `agent` when the chain holds only humans.
pub fn delegation_root(record: &Value) -> Option<&str> {
    let chain = field(record, "chain").and_then(Value::as_array);
    chain
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|p| !names_a_human(p))
        .or_else(|| text_field(record, "agent"))
}

/// Criteria a record must all meet; unset criteria match everything.
#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    /// The acting agent (`agent`).
    pub agent: Option<String>,
    /// The session (`session`).
    pub session: Option<String>,
    /// The delegation root (see [`delegation_root`]).
    pub root: Option<String>,
    /// The tool (`tool`).
    pub tool: Option<String>,
    /// The verdict (`decision`: `allow`, `deny`, `require_approval`).
    pub decision: Option<String>,
    /// The record kind (`kind`).
    pub kind: Option<String>,
    /// Records whose `time` is at or after this.
    pub since: Option<OffsetDateTime>,
    /// Records whose `time` is before this.
    pub until: Option<OffsetDateTime>,
}

impl RecordFilter {
    /// Whether `record` meets every criterion. With a time bound, records without a parsable
    /// `time` do not match.
    pub fn matches(&self, record: &Value) -> bool {
        let eq = |want: &Option<String>, got: Option<&str>| {
            want.as_deref().is_none_or(|w| got == Some(w))
        };
        if !(eq(&self.agent, text_field(record, "agent"))
            && eq(&self.session, text_field(record, "session"))
            && eq(&self.root, delegation_root(record))
            && eq(&self.tool, text_field(record, "tool"))
            && eq(&self.decision, text_field(record, "decision"))
            && eq(&self.kind, text_field(record, "kind")))
        {
            return false;
        }
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Some(t) = text_field(record, "time").and_then(|t| parse_time(t).ok()) else {
            return false;
        };
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decision() -> Value {
        json!({"kind": "decision",
               "call": {"agent": "spiffe://acme/agent/recon", "session": "s-1",
                        "chain": ["user:alice", "spiffe://acme/agent/orch"], "tool": "nmap"},
               "decision": {"decision": "deny", "time": "2026-11-13T09:00:00.250Z"}})
    }

    #[test]
    fn nested_fields_are_found() {
        let d = decision();
        assert_eq!(text_field(&d, "agent"), Some("spiffe://acme/agent/recon"));
        assert_eq!(text_field(&d, "decision"), Some("deny"));
        assert_eq!(text_field(&d, "time"), Some("2026-11-13T09:00:00.250Z"));
        assert_eq!(delegation_root(&d), Some("spiffe://acme/agent/orch"));
        let direct = json!({"kind": "tool_call", "agent": "a", "chain": ["user:bob"]});
        assert_eq!(delegation_root(&direct), Some("a"));
    }

    #[test]
    fn filters_combine() {
        let d = decision();
        let mut f = RecordFilter {
            agent: Some("spiffe://acme/agent/recon".into()),
            decision: Some("deny".into()),
            root: Some("spiffe://acme/agent/orch".into()),
            ..RecordFilter::default()
        };
        assert!(f.matches(&d));
        f.since = Some(parse_time("2026-11-13T09:00:00Z").unwrap());
        f.until = Some(parse_time("2026-11-13T09:00:01Z").unwrap());
        assert!(f.matches(&d));
        f.until = Some(parse_time("2026-11-13T09:00:00.250Z").unwrap());
        assert!(!f.matches(&d));
        f.until = None;
        f.tool = Some("curl".into());
        assert!(!f.matches(&d));
        assert!(parse_time("yesterday").is_err());
    }
}
