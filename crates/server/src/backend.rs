//! What the server needs from the ledger and the identity service, as traits, so the HTTP layer
//! does not depend on their storage or key formats.

use crate::auth::Authenticator;
use serde_json::Value;
use truststack_engine::ledger::{ConsistencyView, InclusionView, LedgerError};
use truststack_engine::Recording;

/// The tamper-evident ledger behind the server.
pub trait LedgerBackend: Send + Sync {
    /// Appends a record; returns its index once it is durable.
    fn append(&self, record: Value) -> Result<u64, LedgerError>;
    /// Queues a record; the recording settles with its index once it is durable. Records are
    /// committed in the order they were submitted.
    fn submit(&self, record: Value) -> Recording;
    /// Returns once every record submitted so far is durable (the embedded ledger signs a
    /// checkpoint of the log on the way, if it has grown since the last one).
    fn sync(&self) -> Result<(), LedgerError>;
    /// The number of entries.
    fn size(&self) -> u64;
    /// Every record, in order (to rebuild the engine's state at start-up).
    fn records(&self) -> Result<Vec<Value>, LedgerError>;
    /// The records `[start, end)`, in order.
    fn records_in(&self, start: u64, end: u64) -> Result<Vec<Value>, LedgerError>;
    /// Takes the log's end from the storage (what other replicas appended); returns the size.
    fn follow(&self) -> Result<u64, LedgerError>;
    /// How many appends failed since the ledger was opened.
    fn failed_appends(&self) -> u64;
    /// Records `[start, end)` with their index and leaf hash.
    fn entries(&self, start: u64, end: u64) -> Result<Vec<Value>, LedgerError>;
    /// The latest signed checkpoint (a C2SP signed note), signing one if the log has grown.
    fn checkpoint(&self) -> Result<String, LedgerError>;
    fn inclusion_proof(&self, index: u64, size: Option<u64>) -> Result<InclusionView, LedgerError>;
    fn consistency_proof(&self, old: u64, new: Option<u64>)
        -> Result<ConsistencyView, LedgerError>;
    /// The key that verifies the checkpoints' signatures, as a C2SP verifier key string, when
    /// the backend knows it.
    fn verifier_key(&self) -> Option<String> {
        None
    }
}

/// Why a revocation was not made.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// The request is wrong or the target is revoked already.
    #[error("{0}")]
    Refused(String),
    /// The record or the revocation list could not be written; nothing took effect.
    #[error("{0}")]
    Unavailable(String),
}

/// Why a credential was not issued or delegated.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The request body is wrong (a field missing or of the wrong type).
    #[error("{0}")]
    Request(String),
    #[error(transparent)]
    Id(#[from] truststack_engine::identity::IdError),
    #[error(transparent)]
    Tools(#[from] truststack_engine::identity::tools::ToolError),
    #[error(transparent)]
    Ttl(#[from] truststack_engine::identity::ttl::TtlError),
    /// The issuer refused (a delegation wider than its parent, a revoked parent) or could not
    /// write the credential.
    #[error(transparent)]
    Issuer(#[from] truststack_engine::identity::IssuerError),
}

/// Issuing and verifying identities.
pub trait IdentityService: Authenticator {
    /// Issues a credential (admin): body `{agent | user, owner, tools, ttl, roles, groups}`.
    fn issue(&self, request: &Value) -> Result<Value, IssueError>;
    /// Mints a narrower credential for a sub-agent from the caller's own token.
    fn delegate(&self, parent_token: &str, request: &Value) -> Result<Value, IssueError>;
    /// Revokes a credential (`jti`) or an identity (`agent`) and returns the revocation record.
    /// `record` writes that record (to the ledger) first: the revocation takes effect only once
    /// it is recorded, and is left undone, for a retry, if it cannot be.
    fn revoke(
        &self,
        request: &Value,
        record: &mut dyn FnMut(&Value) -> Result<u64, String>,
    ) -> Result<Value, RevokeError>;
    /// The JWKS document of the issuer's public keys.
    fn jwks(&self) -> Value;
    /// Takes up a revocation another replica recorded in the shared ledger (`record`, an
    /// `identity_revoked` record).
    fn learn_revocation(&self, record: &Value) -> Result<(), String>;
}
