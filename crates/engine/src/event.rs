//! The event model shared by every component (DESIGN.md, "Event model").

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Anything an agent does, as it reaches the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    ToolCall(ToolCall),
    Observation(Observation),
    Approval(ApprovalAnswer),
    Input(Input),
    Grant(crate::grant::Grant),
}

/// What a human principal of the chain asked the agent: the instruction, and optional
/// structured values (form fields, attachments). Reported by the host or orchestrator, which
/// sees the prompt; values in it count as the user's for provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The agent the instruction is given to.
    pub agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default)]
    pub chain: Vec<String>,
    /// The human who gave the instruction (`user:...`); it must be in the chain. Default: the
    /// human at the chain's head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    pub text: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub values: Value,
}

/// Checks that an instruction or grant (`what`) for `agent` comes from a human of its chain:
/// `principal` when named (a `user:...` in the chain), else the chain must hold a human.
pub fn check_human(
    what: &str,
    principal: Option<&str>,
    chain: &[String],
    agent: &str,
) -> Result<(), String> {
    use truststack_identity::id::UserId;
    match principal {
        Some(principal) => {
            if let Err(e) = UserId::parse(principal) {
                return Err(format!(
                    "{what} principal `{principal}` is not a human principal (`user:...`): {e}"
                ));
            }
            if !chain.iter().any(|c| c == principal) {
                return Err(format!(
                    "{what} principal `{principal}` is not in the chain of {agent}"
                ));
            }
            Ok(())
        }
        None if !chain.iter().any(|c| UserId::parse(c).is_ok()) => Err(format!(
            "{what} for {agent} names no human: its chain has no `user:` principal"
        )),
        None => Ok(()),
    }
}

/// A tool call that asks for a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    pub id: String,
    /// RFC 3339; used only on the event clock (replay, simulation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    pub agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The delegation chain, root first: the human, then every delegating agent.
    #[serde(default)]
    pub chain: Vec<String>,
    pub tool: String,
    #[serde(default)]
    pub args: Value,
}

/// A data access reported to the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataAccess {
    pub name: String,
    pub mode: String,
}

/// A tool's result or a data access, reported after the fact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    pub agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default)]
    pub chain: Vec<String>,
    /// The call this observation is the result of, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// Data sources the result came from; they taint the scope.
    #[serde(default)]
    pub data_sources: Vec<DataAccess>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// A human's answer to a held call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalAnswer {
    /// The approval to answer; or name the held call by `call_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    pub approver: String,
    /// Approver groups the approver belongs to, from a verified credential (a server fills this
    /// in; it is never taken from an agent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    pub grant: bool,
    /// Grant the policies that held the call, in this scope, for this long (`"30min"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// Who is calling, as established by a verified credential rather than the request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub agent: String,
    /// The delegation chain from the credential, root first.
    #[serde(default)]
    pub chain: Vec<String>,
    /// Tool names or classes the credential allows; `*` allows any. `None`: no restriction.
    #[serde(default)]
    pub tools: Option<Vec<String>>,
    /// The credential's id (`jti`), for the record.
    #[serde(default)]
    pub credential_id: Option<String>,
}

impl Caller {
    /// The caller a verified agent credential establishes (`Err` for a human's credential:
    /// humans approve, agents call tools).
    pub fn from_credential(
        credential: &truststack_identity::VerifiedCredential,
    ) -> Result<Caller, String> {
        let agent = credential.agent().ok_or_else(|| {
            format!(
                "{} is a human's credential, not an agent's",
                credential.subject
            )
        })?;
        Ok(Caller {
            agent: agent.as_str().to_string(),
            chain: credential.chain_strings(),
            tools: (!credential.tools.is_any()).then(|| credential.tools.as_slice().to_vec()),
            credential_id: Some(credential.jti.clone()),
        })
    }
}

/// The identity context of an event: one type, the policy evaluator's.
pub use truststack_policy::principals::Principals;

/// Milliseconds since the Unix epoch of an RFC 3339 timestamp.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("`{text}` is not an RFC 3339 timestamp: {e}"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("`{text}` is out of range"))
}

/// RFC 3339 (UTC, milliseconds) for epoch milliseconds.
pub fn format_time(ms: i64) -> String {
    let t = utc(ms);
    // Every decision carries its time: the fixed-width digits are written directly (the
    // general formatter costs as much as a third of a decision's evaluation).
    if (0..=9999).contains(&t.year()) {
        let mut out = String::with_capacity(24);
        let mut digits = |n: u32, width: u32, sep: char| {
            for place in (0..width).rev() {
                let digit = (n / 10u32.pow(place)) % 10;
                out.push(char::from(b'0' + digit as u8));
            }
            out.push(sep);
        };
        digits(t.year().unsigned_abs(), 4, '-');
        digits(u32::from(u8::from(t.month())), 2, '-');
        digits(u32::from(t.day()), 2, 'T');
        digits(u32::from(t.hour()), 2, ':');
        digits(u32::from(t.minute()), 2, ':');
        digits(u32::from(t.second()), 2, '.');
        digits(u32::from(t.millisecond()), 3, 'Z');
        return out;
    }
    formatted(t, ms)
}

/// The instant `ms` milliseconds after the Unix epoch, in UTC (the epoch itself when out of
/// range).
fn utc(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// `t` written by the general formatter, or `ms` as a number when it cannot be.
fn formatted(t: time::OffsetDateTime, ms: i64) -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).unwrap_or_else(|_| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the general formatter writes, which the fixed-width path must equal.
    fn general(ms: i64) -> String {
        formatted(utc(ms), ms)
    }

    proptest! {
        #[test]
        fn times_are_written_as_the_general_formatter_writes_them(
            ms in -62_167_219_200_000i64..=253_402_300_799_999i64,
        ) {
            prop_assert_eq!(format_time(ms), general(ms));
        }
    }

    #[test]
    fn the_edges_of_four_digit_years_and_beyond() {
        for ms in [
            0,
            -1,
            1_767_225_600_000,
            -62_167_219_200_000,
            253_402_300_799_999,
            253_402_300_800_000,
            -62_167_219_200_001,
        ] {
            assert_eq!(format_time(ms), general(ms), "{ms}");
        }
        assert_eq!(format_time(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
        assert_eq!(
            parse_time(&format_time(1_767_225_600_123)),
            Ok(1_767_225_600_123)
        );
    }
}
