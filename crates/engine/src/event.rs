//! The event model shared by every component (DESIGN.md, "Event model").

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use truststack_identity::id::names_a_human;
use truststack_policy::Target;

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

/// The identity context of an event: who acts, in which session, on whose authority.
#[derive(Debug, Clone, Copy)]
pub struct Principals<'a> {
    pub agent: &'a str,
    pub session: &'a str,
    pub user: &'a str,
    pub root: &'a str,
    pub chain: &'a [String],
}

impl<'a> Principals<'a> {
    /// Derives the user (the human at the head of the chain) and the delegation root (the first
    /// agent in the chain, or the acting agent when the chain holds only the human).
    pub fn of(agent: &'a str, session: Option<&'a str>, chain: &'a [String]) -> Self {
        let user = chain
            .iter()
            .find(|p| names_a_human(p))
            .map_or(agent, String::as_str);
        let root = chain
            .iter()
            .find(|p| !names_a_human(p))
            .map_or(agent, String::as_str);
        Principals {
            agent,
            session: session.unwrap_or(""),
            user,
            root,
            chain,
        }
    }

    /// The key of this event's `target` scope: whose monitor state, leases and taint it uses.
    ///
    /// A principal is keyed by its place in the chain of command, not by its name alone: the
    /// agent (or the delegation root) with the chain above it (`user:alice → …/orch → …/orch/recon`),
    /// and a session with the human it acts for. Another chain that names the same agent or
    /// session, by mistake or on purpose, gets state of its own: it cannot ride a lease, use up
    /// a rate limit or clear a taint that belongs to someone else's. Without a chain (an engine
    /// fed bare events, a server that does not require credentials) the name is the key.
    pub fn scope_key(&self, target: Target) -> Cow<'a, str> {
        match target {
            Target::AgentIdentity => qualified(self.chain, self.agent),
            // A call without a session is its agent's session.
            Target::Session if self.session.is_empty() => qualified(self.chain, self.agent),
            Target::Session if self.chain.is_empty() => Cow::Borrowed(self.session),
            Target::Session => Cow::Owned(format!("{} {SEP} {}", self.user, self.session)),
            Target::User => Cow::Borrowed(self.user),
            Target::DelegationRoot => {
                // The chain up to the root agent; the whole chain when the actor is the root.
                let above = self
                    .chain
                    .iter()
                    .position(|p| p == self.root)
                    .map_or(self.chain, |i| self.chain.get(..i).unwrap_or_default());
                qualified(above, self.root)
            }
        }
    }

    /// Whether `principal` is the acting agent or anywhere in its chain of command.
    pub fn involves(&self, principal: &str) -> bool {
        self.agent == principal || self.chain.iter().any(|c| c == principal)
    }
}

/// Separates the principals of a scope key; no principal's name contains it.
const SEP: &str = "→";

/// `principal` under the chain above it, root first.
fn qualified<'a>(above: &[String], principal: &'a str) -> Cow<'a, str> {
    if above.is_empty() {
        return Cow::Borrowed(principal);
    }
    let mut key =
        String::with_capacity(above.iter().map(|p| p.len() + 5).sum::<usize>() + principal.len());
    for p in above {
        key.push_str(p);
        key.push(' ');
        key.push_str(SEP);
        key.push(' ');
    }
    key.push_str(principal);
    Cow::Owned(key)
}

/// Milliseconds since the Unix epoch of an RFC 3339 timestamp.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("`{text}` is not an RFC 3339 timestamp: {e}"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("`{text}` is out of range"))
}

/// RFC 3339 (UTC, milliseconds) for epoch milliseconds.
pub fn format_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).unwrap_or_else(|_| ms.to_string())
}
