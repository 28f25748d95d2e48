//! TrustStack ledger: an append-only, tamper-evident log of the control plane's records.
//!
//! - Records are JSON values stored as their RFC 8785 canonical bytes ([`canonical`]).
//! - The log is an RFC 6962 / RFC 9162 Merkle tree ([`merkle`]): inclusion proofs show an entry
//!   is in the log, consistency proofs show the log only grew.
//! - Checkpoints are C2SP `tlog-checkpoint` notes ([`checkpoint`]) signed as C2SP signed notes
//!   with the log's Ed25519 key ([`note`]), so anyone with the public key can check them.
//! - [`Ledger`] appends durably with group commit over a [`LedgerStore`]; the embedded store is
//!   one SQLite file ([`sqlite`]), the shared one a PostgreSQL database ([`postgres`]); a
//!   [`LedgerLocation`] names either.
//! - [`verify()`] recomputes everything from the stored bytes and reports the first bad index.
//! - [`privacy`] decides how much of a payload is kept; [`query`] selects records.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use truststack_ledger::{Ledger, LedgerConfig};
//! let dir = tempfile::tempdir()?;
//! let ledger = Ledger::open(&dir.path().join("ledger.db"), &LedgerConfig::new(dir.path().join("log.key")))?;
//! let index = ledger.append(&serde_json::json!({"kind": "tool_call", "tool": "nmap"}))?;
//! let checkpoint = ledger.checkpoint()?;
//! let entry = ledger.entry(index)?;
//! let proof = ledger.inclusion_proof(index, checkpoint.checkpoint.size)?;
//! proof.verify(&entry.leaf, &checkpoint.checkpoint.root)?;
//! # Ok(()) }
//! ```

pub mod canonical;
pub mod checkpoint;
pub mod depth;
pub mod ledger;
pub mod location;
pub mod merkle;
pub mod migrate;
pub mod note;
pub mod postgres;
pub mod privacy;
pub mod proof_view;
pub mod query;
pub mod settings;
pub mod sqlite;
pub mod store;
pub mod verify;

pub use checkpoint::Checkpoint;
pub use ledger::{
    AppendTicket, ConsistencyProof, Entry, InclusionProof, Ledger, LedgerConfig, LedgerError,
    SignedCheckpoint, Signing, DEFAULT_CHECKPOINT_EVERY, DEFAULT_ORIGIN,
};
pub use location::{LedgerLocation, LocationError, PostgresUrl};
pub use merkle::Hash;
pub use note::{LogKey, VerifierKey};
pub use privacy::{prove_disclosure, stored_payload, PayloadMode};
pub use proof_view::{ConsistencyView, InclusionView};
pub use settings::LedgerSettings;
pub use store::LedgerStore;
pub use verify::{verify, verify_at, verify_file, VerifyError, VerifyReport};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

/// A hash in standard base64 (how checkpoints, proofs and exports write hashes).
pub fn base64_hash(hash: &Hash) -> String {
    B64.encode(hash)
}

/// Bytes in standard base64.
pub fn base64_bytes(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Microseconds since the Unix epoch as RFC 3339 (UTC).
pub fn format_time_us(us: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| us.to_string())
}
