//! The JWT claims of a TrustStack credential, as they travel.
//!
//! ```json
//! {"iss": "spiffe://acme.example", "sub": "spiffe://acme.example/agent/recon",
//!  "aud": "truststack", "iat": 1794560400, "nbf": 1794560400, "exp": 1794564000,
//!  "jti": "Qb7…", "owner": "user:alice@acme.example",
//!  "act": {"sub": "spiffe://acme.example/agent/orchestrator",
//!          "act": {"sub": "user:alice@acme.example"}},
//!  "tools": ["ScanTool"], "ancestors": ["k3F…"]}
//! ```
//!
//! `act` follows RFC 8693 §4.1: a chain of delegation is expressed by nesting one `act` claim
//! within another, the outermost being the most recent and the least recent the most deeply
//! nested. TrustStack issues the credential *to the agent*, so the acting party is `sub`; the
//! `act` nesting names the parties the authority came through: the outermost `act` is the agent
//! that delegated to `sub`, and the innermost is the human at the root. Read innermost first, it
//! is the event's `chain` (root first). A credential issued to an agent directly by its human
//! has `act = {"sub": "user:..."}`; a human's own credential (an approver's) has no `act`.

use crate::id::Principal;
use serde::{Deserialize, Serialize};

/// The claims of a credential, in wire form (strings, not yet validated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The issuer (`spiffe://<trust-domain>`).
    pub iss: String,
    /// The holder: an agent, or a human for a human's own credential.
    pub sub: String,
    /// The audience (the TrustStack deployment that accepts it).
    pub aud: String,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Not valid before.
    pub nbf: u64,
    /// Expires at.
    pub exp: u64,
    /// The credential's id, for revocation.
    pub jti: String,
    /// The human on whose behalf the holder acts (the chain's root; `sub` itself for a human).
    pub owner: String,
    /// The delegators, most recent outermost (RFC 8693 §4.1 actor claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    /// Tool names or classes the holder may call (`*`: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// Roles of a human (`approver`, `admin`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Groups of a human (`oncall`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The `jti`s of the credentials this one was delegated from, root first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<String>,
}

/// One level of an RFC 8693 `act` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The delegating party.
    pub sub: String,
    /// The party that delegated to it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

impl Actor {
    /// The `act` claim for a chain given root first (the root ends up most deeply nested);
    /// `None` for an empty chain.
    pub fn from_chain(chain: &[Principal]) -> Option<Actor> {
        chain.iter().fold(None, |inner, p| {
            Some(Actor {
                sub: p.to_string(),
                act: inner.map(Box::new),
            })
        })
    }

    /// The `sub` of every level, outermost (most recent) first.
    pub fn subjects(&self) -> Vec<&str> {
        let mut out = Vec::new();
        let mut level = Some(self);
        while let Some(a) = level {
            out.push(a.sub.as_str());
            level = a.act.as_deref();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn act_nesting_round_trip() {
        let chain: Vec<Principal> = [
            "user:alice@acme.example",
            "spiffe://acme.example/agent/orchestrator",
            "spiffe://acme.example/agent/recon",
        ]
        .iter()
        .map(|s| Principal::parse(s).unwrap())
        .collect();
        let act = Actor::from_chain(&chain).unwrap();
        assert_eq!(
            serde_json::to_value(&act).unwrap(),
            serde_json::json!({"sub": "spiffe://acme.example/agent/recon",
                "act": {"sub": "spiffe://acme.example/agent/orchestrator",
                    "act": {"sub": "user:alice@acme.example"}}})
        );
        let mut back = act.subjects();
        back.reverse();
        assert_eq!(
            back,
            chain.iter().map(Principal::as_str).collect::<Vec<_>>()
        );
        assert!(Actor::from_chain(&[]).is_none());
    }
}
