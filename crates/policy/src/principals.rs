//! Who acts: the agent, its session, the human at the head of its chain of command, its
//! delegation root and the chain itself, derived once per event and read by the evaluator, the
//! partial evaluator and the engine's scopes.

use crate::ast::ContextField;
use crate::Target;
use serde_json::Value;
use std::borrow::Cow;
use truststack_identity::id::names_a_human;

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
            Target::Session => Cow::Owned([self.user, " ", SEP, " ", self.session].concat()),
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

    /// How many agents (non-human principals) delegated to the acting agent.
    pub fn depth(&self) -> u64 {
        self.chain.iter().filter(|p| !names_a_human(p)).count() as u64
    }

    /// A context field a policy reads (`Agent`, `User`, `Session`, `Root`, `Depth`); `None`
    /// for `Tool`, which is the call's, not its principals'.
    pub fn field(&self, field: ContextField) -> Option<Value> {
        Some(match field {
            ContextField::Agent => Value::from(self.agent),
            ContextField::User => Value::from(self.user),
            ContextField::Session => Value::from(self.session),
            ContextField::Root => Value::from(self.root),
            ContextField::Depth => Value::from(self.depth()),
            ContextField::Tool => return None,
        })
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
