//! Attenuation: what a delegated credential may be, given its parent's.
//!
//! The holder of a verified agent credential may have the issuer mint one for a sub-agent when
//! the child's tools are within the parent's (every entry covered by the same string or by `*`),
//! its expiry is no later than the parent's, and the sub-agent is neither the parent nor anyone
//! in the parent's chain. The child's chain is the parent's chain followed by the parent; its
//! ancestors are the parent's ancestors followed by the parent's `jti`.

use crate::clock::format_time;
use crate::credential::VerifiedCredential;
use crate::id::{AgentId, Principal};
use crate::tools::ToolSet;

/// Why a delegation is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DelegationError {
    /// Only an agent's credential can be delegated.
    #[error("{subject} holds a human's credential; only agent credentials can be delegated")]
    ParentNotAgent {
        /// The parent's holder.
        subject: String,
    },
    /// The child would appear in its own chain.
    #[error(
        "{agent} is already in the delegation chain ({chain}); delegating to it would make a loop"
    )]
    Loop {
        /// The requested sub-agent.
        agent: String,
        /// The parent's chain and the parent, root first.
        chain: String,
    },
    /// The child asks for tools the parent does not hold.
    #[error("the delegation widens the tools: {} not within the parent's [{}]", .not_covered.join(", "), .parent.join(", "))]
    WidensTools {
        /// Requested entries the parent does not cover.
        not_covered: Vec<String>,
        /// The parent's tools.
        parent: Vec<String>,
    },
    /// The child would outlive the parent.
    #[error("the delegation extends the expiry: requested {} but the parent expires at {}", format_time(*.requested), format_time(*.parent))]
    ExtendsExpiry {
        /// The requested `exp`.
        requested: u64,
        /// The parent's `exp`.
        parent: u64,
    },
}

/// Checks a delegation request against the parent credential.
pub fn check(
    parent: &VerifiedCredential,
    agent: &AgentId,
    tools: &ToolSet,
    expires_at: u64,
) -> Result<(), DelegationError> {
    if parent.agent().is_none() {
        return Err(DelegationError::ParentNotAgent {
            subject: parent.subject.to_string(),
        });
    }
    let child = Principal::Agent(agent.clone());
    if parent.subject == child || parent.chain.contains(&child) {
        let mut chain = parent.chain_strings();
        chain.push(parent.subject.to_string());
        return Err(DelegationError::Loop {
            agent: agent.to_string(),
            chain: chain.join(" → "),
        });
    }
    let not_covered = parent.tools.uncovered(tools);
    if !not_covered.is_empty() {
        return Err(DelegationError::WidensTools {
            not_covered: not_covered.into_iter().map(str::to_string).collect(),
            parent: parent.tools.as_slice().to_vec(),
        });
    }
    if expires_at > parent.expires_at {
        return Err(DelegationError::ExtendsExpiry {
            requested: expires_at,
            parent: parent.expires_at,
        });
    }
    Ok(())
}
