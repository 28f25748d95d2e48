//! What the engine answers.

use serde::{Deserialize, Serialize};
use truststack_policy::{Action, Explanation, Mode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Deny,
    RequireApproval,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::RequireApproval => "require_approval",
        }
    }
}

/// A policy whose condition held for the call, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FiredPolicy {
    pub id: String,
    pub action: Action,
    pub mode: Mode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Each predicate of the policy with its value for this call (counts, attributes).
    pub monitors: Explanation,
    /// Set when a REQUIRE_HITL policy was waved through by an approver's lease.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<String>,
}

/// The engine's answer to one tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub decision: Verdict,
    pub decision_id: String,
    pub call_id: String,
    /// Enforced policies that fired (shadow-mode ones are in `shadow`).
    pub policies: Vec<FiredPolicy>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub shadow: Vec<FiredPolicy>,
    /// A one-line explanation for the agent and the operator.
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_index: Option<u64>,
    pub policy_hash: String,
    pub time: String,
}

impl Decision {
    /// A denial no policy made (the call could not be decided, or was refused before policy
    /// evaluation): no policies fired, and `reason` says why.
    pub fn denied(
        call_id: &str,
        decision_id: String,
        reason: String,
        policy_hash: String,
        now: i64,
    ) -> Decision {
        Decision {
            decision: Verdict::Deny,
            decision_id,
            call_id: call_id.to_string(),
            policies: Vec::new(),
            shadow: Vec::new(),
            reason,
            approval_id: None,
            deadline: None,
            ledger_index: None,
            policy_hash,
            time: crate::event::format_time(now),
        }
    }
}

/// What [`Engine::decide_brief`](crate::Engine::decide_brief) answers: the verdict, and the
/// approval id of a held call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brief {
    pub decision: Verdict,
    pub approval_id: Option<String>,
}

impl Decision {
    /// Ids of the enforced policies that fired.
    pub fn policy_ids(&self) -> Vec<&str> {
        self.policies.iter().map(|p| p.id.as_str()).collect()
    }
}

/// What became of an answered approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalResult {
    /// Granted and admitted.
    Granted,
    /// Granted, but a DENY policy fires at approval time (e.g. the rate limit filled meanwhile).
    GrantedButDenied,
    /// Refused by the approver.
    Refused,
    /// The deadline passed before an answer.
    Expired,
    /// The caller withdrew the call while it was held (its client cancelled the request or
    /// ended the session): the call is denied and can no longer be granted.
    Cancelled,
}

/// The outcome of answering a held call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalOutcome {
    pub approval_id: String,
    pub call_id: String,
    pub approver: String,
    pub result: ApprovalResult,
    /// The call's final decision.
    pub decision: Verdict,
    pub policies: Vec<FiredPolicy>,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_index: Option<u64>,
    pub time: String,
}
