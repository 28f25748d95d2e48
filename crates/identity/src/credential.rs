//! A verified credential: who holds it, on whose authority, and what it allows.

use crate::claims::{Actor, Claims};
use crate::id::{AgentId, Principal, UserId};
use crate::tools::ToolSet;
use serde::Serialize;

/// The content of a credential whose signature, issuer, audience, lifetime, chain and
/// revocation status have been checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedCredential {
    /// The holder (`sub`): an agent, or a human for a human's own credential.
    pub subject: Principal,
    /// The delegation chain, root first: the human, then every agent that delegated, ending
    /// with the holder's direct delegator. Empty for a human's own credential. This is the
    /// event's `chain`.
    pub chain: Vec<Principal>,
    /// The human on whose behalf the holder acts.
    pub owner: UserId,
    /// Tool names or classes the holder may call.
    pub tools: ToolSet,
    /// Roles (humans: `approver`, `admin`).
    pub roles: Vec<String>,
    /// Groups (humans: `oncall`).
    pub groups: Vec<String>,
    /// The credential's id.
    pub jti: String,
    /// Ids of the credentials this one was delegated from, root first.
    pub ancestors: Vec<String>,
    /// The issuer (`iss`).
    pub issuer: String,
    /// The audience (`aud`).
    pub audience: String,
    /// Issued at (seconds since the epoch).
    pub issued_at: u64,
    /// Not valid before.
    pub not_before: u64,
    /// Expires at.
    pub expires_at: u64,
    /// The id of the key that signed it.
    pub kid: String,
}

impl VerifiedCredential {
    /// The agent holding it, unless a human does.
    pub fn agent(&self) -> Option<&AgentId> {
        self.subject.as_agent()
    }

    /// The delegation root: the first agent of the chain, or the holder itself when the chain
    /// holds only the human (DESIGN "Event model"). `None` for a human's own credential.
    pub fn delegation_root(&self) -> Option<&AgentId> {
        self.chain
            .iter()
            .find_map(Principal::as_agent)
            .or_else(|| self.agent())
    }

    /// The chain as strings, root first (the event's `chain` field).
    pub fn chain_strings(&self) -> Vec<String> {
        self.chain.iter().map(ToString::to_string).collect()
    }

    /// Whether a call to the tool `tool_name`, of the catalog classes `tool_classes`, is within
    /// the credential: its tools list `*`, the name, or one of the classes.
    pub fn allows_tool<S: AsRef<str>>(&self, tool_name: &str, tool_classes: &[S]) -> bool {
        self.tools.allows(tool_name, tool_classes)
    }

    /// Whether the credential carries `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Whether the credential carries `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The JWT claims that carry this credential.
    pub fn to_claims(&self) -> Claims {
        Claims {
            iss: self.issuer.clone(),
            sub: self.subject.to_string(),
            aud: self.audience.clone(),
            iat: self.issued_at,
            nbf: self.not_before,
            exp: self.expires_at,
            jti: self.jti.clone(),
            owner: self.owner.to_string(),
            act: Actor::from_chain(&self.chain),
            tools: self.tools.as_slice().to_vec(),
            roles: self.roles.clone(),
            groups: self.groups.clone(),
            ancestors: self.ancestors.clone(),
        }
    }
}
