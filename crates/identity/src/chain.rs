//! The consistency rules of a delegation chain, checked on every credential minted and verified.
//!
//! For an agent's credential: the chain is not empty; its root is a human and is the `owner`;
//! every later entry is an agent; no principal appears twice and the holder is not in its own
//! chain; the credential names one ancestor `jti` per delegation (the chain's agents), none of
//! them its own. A human's own credential has no chain and is its own owner. Each delegated
//! agent's id lies below the id of the agent that delegated to it (`…/agent/orch/recon` below
//! `…/agent/orch`), so a sub-agent's identity names its place in one chain of command and no
//! other chain can hold it.

use crate::id::{AgentId, Principal, UserId};

/// How a delegation chain contradicts itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// An agent's credential with no `act`: no human at the root.
    #[error("the credential of agent {subject} has no delegation chain (`act`): every agent acts for a human")]
    Missing {
        /// The holder.
        subject: String,
    },
    /// The chain's root is an agent.
    #[error("the delegation chain starts with agent {root}; its root must be a human (`user:`)")]
    RootNotHuman {
        /// The root.
        root: String,
    },
    /// The root is a human other than `owner`.
    #[error("the owner {owner} is not the root of the delegation chain ({root})")]
    OwnerNotRoot {
        /// The `owner` claim.
        owner: String,
        /// The chain's root.
        root: String,
    },
    /// A human after the root.
    #[error("human {principal} appears at position {position} of the delegation chain; only its root may be a human")]
    HumanInsideChain {
        /// The human.
        principal: String,
        /// Index in the chain, root = 0.
        position: usize,
    },
    /// The holder is one of its own delegators.
    #[error("{subject} appears in its own delegation chain")]
    SubjectInOwnChain {
        /// The holder.
        subject: String,
    },
    /// A principal appears twice.
    #[error("{principal} appears twice in the delegation chain")]
    Repeated {
        /// The principal.
        principal: String,
    },
    /// Not one ancestor `jti` per delegating agent.
    #[error("the chain has {delegations} delegating agent(s) but the credential names {ancestors} ancestor credential(s)")]
    AncestorCount {
        /// Agents in the chain.
        delegations: usize,
        /// `ancestors` entries.
        ancestors: usize,
    },
    /// An ancestor `jti` is repeated or is the credential's own.
    #[error("ancestor credential id `{jti}` is repeated or is the credential's own id")]
    AncestorLoop {
        /// The `jti`.
        jti: String,
    },
    /// A human's credential that carries a chain.
    #[error(
        "the credential of human {subject} carries a delegation chain; a human acts for itself"
    )]
    HumanWithChain {
        /// The holder.
        subject: String,
    },
    /// A delegated agent whose id is not below its delegator's.
    #[error("{agent} was delegated by {delegator} but its id is not below the delegator's (`{delegator}/<name>`)")]
    NotUnderDelegator {
        /// The delegated agent.
        agent: String,
        /// The agent that delegated to it.
        delegator: String,
    },
    /// A human's credential owned by someone else.
    #[error(
        "the credential of human {subject} names {owner} as owner; a human owns its own credential"
    )]
    HumanNotOwner {
        /// The holder.
        subject: String,
        /// The `owner` claim.
        owner: String,
    },
}

/// Checks the rules above.
pub fn check(
    subject: &Principal,
    chain: &[Principal],
    owner: &UserId,
    jti: &str,
    ancestors: &[String],
) -> Result<(), ChainError> {
    if let Principal::User(user) = subject {
        if !chain.is_empty() {
            return Err(ChainError::HumanWithChain {
                subject: user.to_string(),
            });
        }
        if user != owner {
            return Err(ChainError::HumanNotOwner {
                subject: user.to_string(),
                owner: owner.to_string(),
            });
        }
    } else {
        let (root, rest) = chain.split_first().ok_or_else(|| ChainError::Missing {
            subject: subject.to_string(),
        })?;
        let Principal::User(root) = root else {
            return Err(ChainError::RootNotHuman {
                root: root.to_string(),
            });
        };
        if root != owner {
            return Err(ChainError::OwnerNotRoot {
                owner: owner.to_string(),
                root: root.to_string(),
            });
        }
        if let Some((i, p)) = rest
            .iter()
            .enumerate()
            .find(|(_, p)| matches!(p, Principal::User(_)))
        {
            return Err(ChainError::HumanInsideChain {
                principal: p.to_string(),
                position: i + 1,
            });
        }
    }
    if chain.contains(subject) {
        return Err(ChainError::SubjectInOwnChain {
            subject: subject.to_string(),
        });
    }
    for (i, p) in chain.iter().enumerate() {
        if chain.get(..i).is_some_and(|before| before.contains(p)) {
            return Err(ChainError::Repeated {
                principal: p.to_string(),
            });
        }
    }
    // Each agent after the first, then the holder, below the agent before it.
    let agents = chain
        .iter()
        .chain(std::iter::once(subject))
        .filter_map(Principal::as_agent)
        .collect::<Vec<&AgentId>>();
    for pair in agents.windows(2) {
        if let [delegator, agent] = pair {
            if !agent.is_under(delegator) {
                return Err(ChainError::NotUnderDelegator {
                    agent: agent.to_string(),
                    delegator: delegator.to_string(),
                });
            }
        }
    }
    let delegations = chain.len().saturating_sub(1);
    if ancestors.len() != delegations {
        return Err(ChainError::AncestorCount {
            delegations,
            ancestors: ancestors.len(),
        });
    }
    for (i, a) in ancestors.iter().enumerate() {
        if a == jti || ancestors.get(..i).is_some_and(|before| before.contains(a)) {
            return Err(ChainError::AncestorLoop { jti: a.clone() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn p(s: &str) -> Principal {
        Principal::parse(s).unwrap()
    }
    const ALICE: &str = "user:alice@acme.example";
    const ORCH: &str = "spiffe://acme.example/agent/orchestrator";
    const RECON: &str = "spiffe://acme.example/agent/orchestrator/recon";

    #[test]
    fn consistent_chains() {
        let alice = UserId::parse(ALICE).unwrap();
        assert_eq!(check(&p(ORCH), &[p(ALICE)], &alice, "j1", &[]), Ok(()));
        assert_eq!(
            check(
                &p(RECON),
                &[p(ALICE), p(ORCH)],
                &alice,
                "j2",
                &["j1".into()]
            ),
            Ok(())
        );
        assert_eq!(check(&p(ALICE), &[], &alice, "j0", &[]), Ok(()));
    }

    #[test]
    fn inconsistent_chains() {
        let alice = UserId::parse(ALICE).unwrap();
        let bob = UserId::parse("user:bob").unwrap();
        #[allow(clippy::type_complexity)]
        let cases: Vec<(Result<(), ChainError>, fn(&ChainError) -> bool)> = vec![
            (check(&p(ORCH), &[], &alice, "j", &[]), |e| {
                matches!(e, ChainError::Missing { .. })
            }),
            (check(&p(RECON), &[p(ORCH)], &alice, "j", &[]), |e| {
                matches!(e, ChainError::RootNotHuman { .. })
            }),
            (check(&p(ORCH), &[p(ALICE)], &bob, "j", &[]), |e| {
                matches!(e, ChainError::OwnerNotRoot { .. })
            }),
            (
                check(
                    &p(RECON),
                    &[p(ALICE), p("user:bob")],
                    &alice,
                    "j",
                    &["a".into()],
                ),
                |e| matches!(e, ChainError::HumanInsideChain { position: 1, .. }),
            ),
            (
                check(&p(RECON), &[p(ALICE), p(RECON)], &alice, "j", &["a".into()]),
                |e| matches!(e, ChainError::SubjectInOwnChain { .. }),
            ),
            (
                check(
                    &p(RECON),
                    &[p(ALICE), p(ORCH), p(ORCH)],
                    &alice,
                    "j",
                    &["a".into(), "b".into()],
                ),
                |e| matches!(e, ChainError::Repeated { .. }),
            ),
            (
                check(&p(RECON), &[p(ALICE), p(ORCH)], &alice, "j", &[]),
                |e| {
                    matches!(
                        e,
                        ChainError::AncestorCount {
                            delegations: 1,
                            ancestors: 0
                        }
                    )
                },
            ),
            (
                check(&p(RECON), &[p(ALICE), p(ORCH)], &alice, "j", &["j".into()]),
                |e| matches!(e, ChainError::AncestorLoop { .. }),
            ),
            (check(&p(ALICE), &[p(ALICE)], &alice, "j", &[]), |e| {
                matches!(e, ChainError::HumanWithChain { .. })
            }),
            (check(&p("user:bob"), &[], &alice, "j", &[]), |e| {
                matches!(e, ChainError::HumanNotOwner { .. })
            }),
            // A sub-agent outside its delegator's subtree: another chain's name.
            (
                check(
                    &p("spiffe://acme.example/agent/victim"),
                    &[p(ALICE), p(ORCH)],
                    &alice,
                    "j",
                    &["a".into()],
                ),
                |e| matches!(e, ChainError::NotUnderDelegator { .. }),
            ),
            (
                check(
                    &p("spiffe://acme.example/agent/orchestratorx"),
                    &[p(ALICE), p(ORCH)],
                    &alice,
                    "j",
                    &["a".into()],
                ),
                |e| matches!(e, ChainError::NotUnderDelegator { .. }),
            ),
        ];
        for (result, expected) in cases {
            let err = result.unwrap_err();
            assert!(expected(&err), "unexpected {err:?}");
        }
    }
}
