//! TrustStack identity: who is acting, on whose authority, with which tools.
//!
//! - [`id`]: agent identities as SPIFFE IDs (`spiffe://acme.example/agent/recon`), humans as
//!   `user:` principals, and [`Principal`] over both.
//! - [`claims`]: the JWT claims of a credential, with the delegation chain carried as nested
//!   RFC 8693 `act` claims; [`chain`]: the rules a chain must obey.
//! - [`issuer`]: an issuer directory that mints credentials (EdDSA/Ed25519 JWTs, via
//!   `jsonwebtoken`) for agents and humans, and delegates narrower ones to sub-agents
//!   ([`delegation`]: tools only narrow, expiry only shortens).
//! - [`keys`]: the signing key, rotation, and the JWKS document.
//! - [`verify`]: verification with precise errors and a bounded cache that still re-checks
//!   expiry and revocation on every call; [`revocation`]: revoked credentials and identities.
//!
//! ```
//! use std::time::Duration;
//! use truststack_identity::{AgentId, AgentRequest, DelegationRequest, Issuer, ToolSet, TrustDomain, UserId};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let td = TrustDomain::new("acme.example")?;
//! let issuer = Issuer::init(dir.path(), &td)?;
//! let orchestrator = issuer.issue_agent(&AgentRequest {
//!     agent: AgentId::new(&td, "orchestrator")?,
//!     owner: UserId::parse("user:alice@acme.example")?,
//!     tools: ToolSet::parse_list("ScanTool,CodeAnalysisTool")?,
//!     ttl: Duration::from_secs(3600),
//!     audience: None,
//! })?;
//! let recon = issuer.delegate(&orchestrator.token, &DelegationRequest {
//!     agent: "recon".into(),
//!     tools: ToolSet::parse_list("ScanTool")?,
//!     ttl: None,
//! })?;
//! let verified = issuer.verify(&recon.token)?;
//! assert_eq!(verified.chain_strings(),
//!     ["user:alice@acme.example", "spiffe://acme.example/agent/orchestrator"]);
//! assert!(verified.allows_tool("nmap_scan", &["ScanTool"]));
//! assert!(!verified.allows_tool("semgrep", &["CodeAnalysisTool"]));
//! # Ok(())
//! # }
//! ```

mod cache;
pub mod chain;
pub mod claims;
pub mod clock;
pub mod credential;
pub mod delegation;
mod files;
pub mod id;
pub mod issuer;
pub mod keys;
pub mod revocation;
pub mod tools;
pub mod ttl;
pub mod verify;

pub use chain::ChainError;
pub use claims::{Actor, Claims};
pub use clock::{Clock, ManualClock, SystemClock};
pub use credential::VerifiedCredential;
pub use delegation::DelegationError;
pub use id::{AgentId, IdError, Principal, SpiffeId, TrustDomain, UserId};
pub use issuer::{
    AgentRequest, DelegationRequest, Issued, Issuer, IssuerConfig, IssuerError, Revoke, UserRequest,
};
pub use keys::{KeyError, KeyStore};
pub use revocation::{Revocation, RevocationError, RevocationKind, RevocationList};
pub use tools::{ToolError, ToolSet};
pub use ttl::{parse_ttl, TtlError};
pub use verify::{Defect, TokenPart, Verifier, VerifyError};
