//! The storage interface of the ledger, so backends other than the embedded SQLite file (a
//! shared database) can be added without touching the log logic.
//!
//! A store keeps three things: the entries (canonical record bytes, leaf hash, commit time and
//! the hashes of the perfect subtrees each entry completes), the signed checkpoints, and a little
//! metadata (the log's verifier key). It does not interpret any of them: hashing, signing and
//! verification live in [`crate::ledger`] and [`crate::verify`], so a store that lies is caught.

use crate::merkle::{Hash, MerkleError};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path} is not a TrustStack ledger ({reason})")]
    NotALedger { path: String, reason: String },
    #[error("ledger format {found:?} is not supported (expected {expected:?})")]
    UnsupportedFormat { found: String, expected: String },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("entry {index} is not stored")]
    MissingEntry { index: u64 },
    #[error("tree node (level {level}, index {index}) is not stored")]
    MissingNode { level: u32, index: u64 },
    #[error("entry {index}: stored {what} is malformed: {detail}")]
    Malformed {
        index: u64,
        what: &'static str,
        detail: String,
    },
    #[error(
        "another writer changed the ledger: expected to append at index {expected}, but it \
         has {found} entries"
    )]
    Conflict { expected: u64, found: u64 },
    #[error(transparent)]
    Merkle(#[from] MerkleError),
}

/// One log entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// Position in the log, from 0.
    pub index: u64,
    /// The record's canonical JSON (RFC 8785) bytes.
    pub data: Vec<u8>,
    /// `SHA-256(0x00 ‖ data)`.
    pub leaf: Hash,
    /// When the entry was committed: microseconds since the Unix epoch.
    pub time_us: i64,
    /// The perfect subtrees this entry completes, level 1 first: for entry `i`, the subtrees of
    /// levels `1..=i.trailing_ones()` that end at `i`.
    pub nodes: Vec<Hash>,
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Sequence number, from 1, in signing order.
    pub seq: u64,
    /// The tree size the checkpoint commits to (also inside the note).
    pub size: u64,
    /// The signed note, verbatim.
    pub note: String,
    /// When it was signed: microseconds since the Unix epoch.
    pub time_us: i64,
}

/// Storage for one log. Writes come from one writer at a time; every method sees only committed
/// data.
pub trait LedgerStore: Send {
    /// One more than the highest stored index (0 when empty).
    fn size(&self) -> Result<u64, StoreError>;

    /// Appends `entries` (contiguous, starting at the current size) and then `checkpoint`, in one
    /// transaction that is durable when this returns. Fails with [`StoreError::Conflict`] if the
    /// store's size is not `entries[0].index` (someone else wrote).
    fn append(
        &mut self,
        entries: &[StoredEntry],
        checkpoint: Option<&StoredCheckpoint>,
    ) -> Result<(), StoreError>;

    /// Up to `limit` entries with index `>= from`, in index order, exactly as stored: a missing
    /// index shows up as a jump.
    fn scan(&self, from: u64, limit: usize) -> Result<Vec<StoredEntry>, StoreError>;

    /// The hash of the perfect subtree (`level`, `index`); level 0 is a leaf hash.
    fn node(&self, level: u32, index: u64) -> Result<Hash, StoreError>;

    /// Every checkpoint, by sequence number.
    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError>;

    /// The checkpoint with the highest sequence number.
    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError>;

    /// The log's verifier key as recorded at creation (`<name>+<hex8>+<base64>`).
    fn verifier_key(&self) -> Result<Option<String>, StoreError>;

    /// Records the log's verifier key (once, when the log is created).
    fn set_verifier_key(&mut self, key: &str) -> Result<(), StoreError>;
}

/// Adapts a store to the tree math: perfect subtrees are read from it.
pub(crate) struct Nodes<'a>(pub &'a dyn LedgerStore);

impl crate::merkle::NodeSource for Nodes<'_> {
    type Error = StoreError;
    fn perfect(&self, level: u32, index: u64) -> Result<Hash, StoreError> {
        self.0.node(level, index)
    }
}
