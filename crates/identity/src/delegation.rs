//! Attenuation: what a delegated credential may be, given its parent's.
//!
//! The holder of a verified agent credential may have the issuer mint one for a sub-agent when
//! the child's tools are within the parent's (every entry covered by the same string or by `*`),
//! its expiry is no later than the parent's, and the sub-agent's id lies below the parent's: a
//! bare name is placed there (`recon` from `…/agent/orch` is `…/agent/orch/recon`), a full id
//! elsewhere is refused. A sub-agent's id therefore names its place in the chain of command:
//! another orchestration cannot take it, whatever name it asks for. The child's chain is the
//! parent's chain followed by the parent; its ancestors are the parent's ancestors followed by
//! the parent's `jti`.

use crate::clock::format_time;
use crate::credential::VerifiedCredential;
use crate::id::{AgentId, IdError};
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
    /// A full id that is not below the parent's.
    #[error("{agent} is not below {parent}: a sub-agent's id is its delegator's id and a name (`{parent}/<name>`); give a name")]
    NotUnderParent {
        /// The requested sub-agent.
        agent: String,
        /// The parent's id.
        parent: String,
    },
    /// The name is not a valid id segment.
    #[error("`{name}` is not a sub-agent name: {source}")]
    BadName {
        /// The requested name.
        name: String,
        /// Why it is not one.
        source: IdError,
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

/// The sub-agent a delegation from `parent` names: `requested` is a name placed below the
/// parent's id (`recon`, `team/recon`), or a full `spiffe://` id that must already lie below it.
pub fn child_id(parent: &VerifiedCredential, requested: &str) -> Result<AgentId, DelegationError> {
    let Some(parent_id) = parent.agent() else {
        return Err(DelegationError::ParentNotAgent {
            subject: parent.subject.to_string(),
        });
    };
    if requested.contains("://") {
        let id = AgentId::parse(requested).map_err(|source| DelegationError::BadName {
            name: requested.to_string(),
            source,
        })?;
        if !id.is_under(parent_id) {
            return Err(DelegationError::NotUnderParent {
                agent: id.to_string(),
                parent: parent_id.to_string(),
            });
        }
        return Ok(id);
    }
    parent_id
        .child(requested)
        .map_err(|source| DelegationError::BadName {
            name: requested.to_string(),
            source,
        })
}

/// Checks a delegation request against the parent credential (`agent` from [`child_id`]).
pub fn check(
    parent: &VerifiedCredential,
    agent: &AgentId,
    tools: &ToolSet,
    expires_at: u64,
) -> Result<(), DelegationError> {
    match parent.agent() {
        None => {
            return Err(DelegationError::ParentNotAgent {
                subject: parent.subject.to_string(),
            })
        }
        Some(parent_id) if !agent.is_under(parent_id) => {
            return Err(DelegationError::NotUnderParent {
                agent: agent.to_string(),
                parent: parent_id.to_string(),
            })
        }
        Some(_) => {}
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
