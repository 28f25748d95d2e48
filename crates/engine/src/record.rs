//! Ledger records as one typed value: every writer builds a [`Record`], and every reader
//! (restore, replay, the server's views, the gateway, the demo's audit) decodes a ledger entry
//! once with [`Record::decode`], so all of them agree on what a record says and on which
//! records cannot be read.

use crate::decision::{ApprovalOutcome, Decision};
use crate::event::{Input, Observation, ToolCall};
use crate::grant::Grant;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One ledger record, by its `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A decided tool call (its arguments as the catalog's `record` mode keeps them).
    Decision { call: ToolCall, decision: Decision },
    /// A tool's result or a data access (the result as its `record` mode keeps it).
    Observation {
        time: String,
        observation: Observation,
    },
    /// An answer to a held call, or its expiry or withdrawal.
    Approval { outcome: ApprovalOutcome },
    /// A human's instruction to an agent (as the deployment's privacy mode keeps it).
    Input { time: String, input: RecordedInput },
    /// A session's task grant (kept in full: it is what decisions were checked against).
    Grant { time: String, grant: Grant },
    /// A policy bundle became active.
    PolicyActivation(PolicyActivation),
    /// A gateway pinned a tool's definition on first sight.
    ToolPinned(ToolDefinition),
    /// A gateway found a tool's definition changed from its pin (or unpinned) and withholds it.
    ToolDefinitionChanged(ToolDefinition),
    /// A credential was issued (written by the identity service).
    IdentityIssued(Map<String, Value>),
    /// A credential or identity was revoked (written by the identity service).
    IdentityRevoked(Map<String, Value>),
    /// A kind this version does not know: kept in the ledger, read by nobody here.
    #[serde(skip)]
    Other { kind: String },
}

/// An [`Input`] as the ledger keeps it: under the `hash` and `redacted` privacy modes its
/// `text` and `values` are digests, which commit to the instruction without disclosing it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    pub agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default)]
    pub chain: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    pub text: Value,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub values: Value,
}

impl RecordedInput {
    /// The input as kept under `mode`.
    pub fn new(input: &Input, mode: truststack_policy::RecordMode) -> RecordedInput {
        let keep = |v: Value| match mode {
            truststack_policy::RecordMode::Full => v,
            _ if v.is_null() => v,
            _ => crate::recorder::private_payload(mode, &v),
        };
        RecordedInput {
            id: input.id.clone(),
            time: input.time.clone(),
            agent: input.agent.clone(),
            session: input.session.clone(),
            chain: input.chain.clone(),
            principal: input.principal.clone(),
            text: keep(Value::String(input.text.clone())),
            values: keep(input.values.clone()),
        }
    }

    /// The instruction itself, when the ledger kept it whole (its values can then be indexed
    /// again for provenance); `None` when only its digest was kept.
    pub fn input(&self) -> Option<Input> {
        // Kept whole, the text is a string; under the other modes, a digest object.
        let Value::String(text) = &self.text else {
            return None;
        };
        Some(Input {
            id: self.id.clone(),
            time: self.time.clone(),
            agent: self.agent.clone(),
            session: self.session.clone(),
            chain: self.chain.clone(),
            principal: self.principal.clone(),
            text: text.clone(),
            values: self.values.clone(),
        })
    }
}

/// The record of a bundle becoming active.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyActivation {
    pub time: String,
    pub policy_hash: String,
    /// The policy files, with their sizes in bytes.
    pub sources: Vec<PolicySource>,
    /// The ids of the bundle's policies.
    pub policies: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicySource {
    pub name: String,
    pub bytes: usize,
}

/// A tool definition as a gateway saw it (see the gateway's tool pinning).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    pub time: String,
    /// The gateway session that listed it.
    pub session: String,
    pub tool: String,
    /// SHA-256 of the RFC 8785 form of `{name, description, inputSchema}`.
    pub sha256: String,
    pub definition: Value,
    /// `changed` (from its pin) or `unpinned` (not in the pin file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
    /// The fields that differ from the pin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_sha256: Option<String>,
}

/// Why a ledger entry is not a record of its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The entry is not JSON at all (the ledger's reader put
    /// [`truststack_ledger::ledger::unreadable_record`] in its place).
    #[error("ledger entry {index}: not a JSON record: {message}")]
    NotJson { index: u64, message: String },
    #[error("ledger entry {index}: no `kind`")]
    NoKind { index: u64 },
    #[error("ledger entry {index}: not a valid `{kind}` record: {message}")]
    Invalid {
        index: u64,
        kind: String,
        message: String,
    },
}

impl RecordError {
    pub fn index(&self) -> u64 {
        match self {
            RecordError::NotJson { index, .. }
            | RecordError::NoKind { index }
            | RecordError::Invalid { index, .. } => *index,
        }
    }
}

/// The kinds [`Record`] reads; others decode as [`Record::Other`].
const KNOWN: [&str; 10] = [
    "decision",
    "observation",
    "approval",
    "input",
    "grant",
    "policy_activation",
    "identity_issued",
    "identity_revoked",
    "tool_pinned",
    "tool_definition_changed",
];

impl Record {
    /// Reads ledger entry `index`.
    pub fn decode(index: u64, value: &Value) -> Result<Record, RecordError> {
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .ok_or(RecordError::NoKind { index })?;
        if kind == truststack_ledger::ledger::UNREADABLE_KIND {
            let message = value.get("error").and_then(Value::as_str).unwrap_or("");
            return Err(RecordError::NotJson {
                index,
                message: message.to_string(),
            });
        }
        if !KNOWN.contains(&kind) {
            return Ok(Record::Other {
                kind: kind.to_string(),
            });
        }
        Record::deserialize(value).map_err(|e| RecordError::Invalid {
            index,
            kind: kind.to_string(),
            message: e.to_string(),
        })
    }

    /// The record as the ledger keeps it.
    pub fn to_value(&self) -> Value {
        // Every field is a string, number, map or list: serializing cannot fail, and `Other`
        // is never written.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The record's `kind`.
    pub fn kind(&self) -> &str {
        match self {
            Record::Decision { .. } => "decision",
            Record::Observation { .. } => "observation",
            Record::Approval { .. } => "approval",
            Record::Input { .. } => "input",
            Record::Grant { .. } => "grant",
            Record::PolicyActivation(_) => "policy_activation",
            Record::ToolPinned(_) => "tool_pinned",
            Record::ToolDefinitionChanged(_) => "tool_definition_changed",
            Record::IdentityIssued(_) => "identity_issued",
            Record::IdentityRevoked(_) => "identity_revoked",
            Record::Other { kind } => kind,
        }
    }
}

/// A ledger's records, decoded: those that decode, by index, and those that do not, each with
/// its index and why. Every reader reports the second list the same way (it never silently
/// drops a record).
pub fn decode_all<'a>(
    entries: impl IntoIterator<Item = (u64, &'a Value)>,
) -> (Vec<(u64, Record)>, Vec<RecordError>) {
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for (index, value) in entries {
        match Record::decode(index, value) {
            Ok(r) => records.push((index, r)),
            Err(e) => errors.push(e),
        }
    }
    (records, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_kinds_decode_and_round_trip() {
        let activation = json!({"kind": "policy_activation", "time": "2026-01-01T00:00:00Z",
            "policy_hash": "h", "sources": [{"name": "a.tsp", "bytes": 3}], "policies": ["p"]});
        let r = Record::decode(0, &activation).unwrap();
        assert_eq!(r.kind(), "policy_activation");
        assert_eq!(r.to_value(), activation);
        let revoked = json!({"kind": "identity_revoked", "jti": "j", "by": "user:a"});
        assert_eq!(Record::decode(1, &revoked).unwrap().to_value(), revoked);
    }

    #[test]
    fn an_unknown_kind_is_kept_apart_and_a_bad_record_says_where_and_why() {
        let r = Record::decode(3, &json!({"kind": "future_thing", "x": 1})).unwrap();
        assert_eq!(
            r,
            Record::Other {
                kind: "future_thing".into()
            }
        );
        let e = Record::decode(4, &json!({"kind": "decision", "call": {"id": "c"}})).unwrap_err();
        assert_eq!(e.index(), 4);
        let text = e.to_string();
        assert!(
            text.contains("entry 4") && text.contains("`decision`"),
            "{text}"
        );
        assert_eq!(
            Record::decode(5, &json!({"no": "kind"})).unwrap_err(),
            RecordError::NoKind { index: 5 }
        );
    }
}
