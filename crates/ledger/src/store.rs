//! The storage interface of the ledger, so backends other than the embedded SQLite file (a
//! shared database) can be added without touching the log logic.
//!
//! A store keeps three things: the entries (canonical record bytes, leaf hash, commit time and
//! the hashes of the perfect subtrees each entry completes), the signed checkpoints, and a little
//! metadata (the log's verifier key). It does not interpret any of them: hashing, signing and
//! verification live in [`crate::ledger`] and [`crate::verify`], so a store that lies is caught.

use crate::merkle::{Hash, MerkleError};
use std::cell::RefCell;
use std::collections::HashMap;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "{path} is open for writing in another process (it holds {lock}): a ledger has one \
         writer"
    )]
    InUse { path: String, lock: String },
    #[error("{path}: cannot take the writer's lock: {detail}")]
    Lock { path: String, detail: String },
    #[error("{path} is not a TrustStack ledger ({reason})")]
    NotALedger { path: String, reason: String },
    #[error("ledger format {found:?} is not supported (expected {expected:?})")]
    UnsupportedFormat { found: String, expected: String },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{location}: {}", crate::postgres::describe(.source))]
    PostgresOpen {
        location: String,
        #[source]
        source: postgres::Error,
    },
    #[error("postgres: {}", crate::postgres::describe(.0))]
    Postgres(#[from] postgres::Error),
    #[error(
        "{location}: ledger schema version {found} is newer than this build of truststack \
         supports ({supported})"
    )]
    SchemaTooNew {
        location: String,
        found: i32,
        supported: i32,
    },
    #[error("a stored {what} is negative ({value})")]
    Negative { what: &'static str, value: i64 },
    #[error("the ledger already records verifier key {stored}")]
    VerifierKeyTaken { stored: String },
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
    #[error("asked the store for {asked} tree nodes, it answered {answered}")]
    NodeCount { asked: usize, answered: usize },
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
    fn node(&self, level: u32, index: u64) -> Result<Hash, StoreError> {
        self.nodes(&[(level, index)])?
            .pop()
            .ok_or(StoreError::MissingNode { level, index })
    }

    /// The hashes of the perfect subtrees `wanted`, (`level`, `index`) each, in that order, read
    /// in one go ([`WantedNodes`] matches the rows): a proof needs O(log n) of them.
    fn nodes(&self, wanted: &[(u32, u64)]) -> Result<Vec<Hash>, StoreError>;

    /// Every checkpoint, by sequence number.
    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError>;

    /// The checkpoint with the highest sequence number.
    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError>;

    /// The log's verifier key as recorded at creation (`<name>+<hex8>+<base64>`).
    fn verifier_key(&self) -> Result<Option<String>, StoreError>;

    /// Records the log's verifier key (once, when the log is created).
    fn set_verifier_key(&mut self, key: &str) -> Result<(), StoreError>;
}

/// The 32-byte hash at byte `at` of `bytes`, if there is one.
pub(crate) fn hash_at(bytes: &[u8], at: usize) -> Option<Hash> {
    bytes.get(at..at.checked_add(32)?)?.try_into().ok()
}

/// An entry from its stored columns: the leaf hash and the concatenated subtree hashes are
/// checked for length, not for content (that is [`crate::verify`]'s work).
pub(crate) fn decode_entry(
    index: u64,
    data: Vec<u8>,
    leaf: &[u8],
    nodes: &[u8],
    time_us: i64,
) -> Result<StoredEntry, StoreError> {
    let leaf_hash = hash_at(leaf, 0)
        .filter(|_| leaf.len() == 32)
        .ok_or_else(|| StoreError::Malformed {
            index,
            what: "leaf hash",
            detail: format!("{} bytes, expected 32", leaf.len()),
        })?;
    if !nodes.len().is_multiple_of(32) {
        return Err(StoreError::Malformed {
            index,
            what: "tree nodes",
            detail: format!("{} bytes, not a multiple of 32", nodes.len()),
        });
    }
    let nodes = (0..nodes.len() / 32)
        .filter_map(|k| hash_at(nodes, k * 32))
        .collect();
    Ok(StoredEntry {
        index,
        data,
        leaf: leaf_hash,
        time_us,
        nodes,
    })
}

/// The subtree hashes of an entry as one column: 32 bytes each, level 1 first.
pub(crate) fn encode_nodes(nodes: &[Hash], out: &mut Vec<u8>) {
    out.clear();
    for n in nodes {
        out.extend_from_slice(n);
    }
}

/// Checks the format marker a store at `location` holds (`None`: no marker).
pub(crate) fn check_format_marker(
    location: impl FnOnce() -> String,
    format: Option<String>,
) -> Result<(), StoreError> {
    match format {
        Some(f) if f == crate::sqlite::FORMAT => Ok(()),
        Some(f) => Err(StoreError::UnsupportedFormat {
            found: f,
            expected: crate::sqlite::FORMAT.into(),
        }),
        None => Err(StoreError::NotALedger {
            path: location(),
            reason: "no format marker".into(),
        }),
    }
}

/// An append starts where the store ends (`found`): else another writer appended first.
pub(crate) fn check_placement(found: u64, entries: &[StoredEntry]) -> Result<(), StoreError> {
    match entries.first() {
        Some(first) if first.index != found => Err(StoreError::Conflict {
            expected: first.index,
            found,
        }),
        _ => Ok(()),
    }
}

impl StoredEntry {
    /// The record as stored: canonical JSON, so UTF-8.
    pub(crate) fn record_text(&self) -> Result<&str, StoreError> {
        std::str::from_utf8(&self.data).map_err(|err| StoreError::Malformed {
            index: self.index,
            what: "record",
            detail: err.to_string(),
        })
    }
}

/// The entry that stores the perfect subtree (`level`, `index`): the last one it covers.
pub(crate) fn completing_entry(level: u32, index: u64) -> Result<u64, StoreError> {
    index
        .checked_add(1)
        .and_then(|n| n.checked_mul(1u64.checked_shl(level)?))
        .and_then(|n| n.checked_sub(1))
        .ok_or(StoreError::MissingNode { level, index })
}

/// The perfect subtrees a store was asked for, found as the rows of the entries that hold them
/// (their [`completing_entry`]) come back, in any order.
pub(crate) struct WantedNodes<'a> {
    wanted: &'a [(u32, u64)],
    /// The entry holding each wanted subtree.
    pub holders: Vec<u64>,
    found: Vec<Option<Hash>>,
}

impl<'a> WantedNodes<'a> {
    pub fn new(wanted: &'a [(u32, u64)]) -> Result<Self, StoreError> {
        Ok(WantedNodes {
            wanted,
            holders: wanted
                .iter()
                .map(|&(level, index)| completing_entry(level, index))
                .collect::<Result<_, _>>()?,
            found: vec![None; wanted.len()],
        })
    }

    /// Takes entry `idx`'s stored leaf hash and subtree hashes.
    pub fn row(&mut self, idx: u64, leaf: &[u8], nodes: &[u8]) -> Result<(), StoreError> {
        for ((slot, &holder), &(level, _)) in
            self.found.iter_mut().zip(&self.holders).zip(self.wanted)
        {
            if holder == idx {
                *slot = Some(stored_node(idx, level, leaf, nodes)?);
            }
        }
        Ok(())
    }

    /// The wanted hashes, in the order asked; a subtree no row held is missing.
    pub fn hashes(self) -> Result<Vec<Hash>, StoreError> {
        self.found
            .into_iter()
            .zip(self.wanted)
            .map(|(hash, &(level, index))| hash.ok_or(StoreError::MissingNode { level, index }))
            .collect()
    }
}

/// The hash of the perfect subtree of `level` that entry `idx` completes, from that entry's
/// stored leaf hash (level 0) or subtree hashes.
fn stored_node(idx: u64, level: u32, leaf: &[u8], nodes: &[u8]) -> Result<Hash, StoreError> {
    let (bytes, what, offset) = if level == 0 {
        (leaf, "leaf", 0)
    } else {
        (nodes, "nodes", 32 * (level as usize - 1))
    };
    hash_at(bytes, offset).ok_or_else(|| StoreError::Malformed {
        index: idx,
        what,
        detail: format!("{} bytes, too short for level {level}", bytes.len()),
    })
}

/// Perfect subtrees of this level and above (2^8 entries and more) are worth keeping in memory:
/// every proof reads the few near the top of the tree, and a complete subtree never changes.
const CACHED_LEVEL: u32 = 8;

/// At most this many subtrees are kept (about 3.5 MB); the top levels, which every proof reads,
/// are in long before it fills.
const CACHE_CAPACITY: usize = 1 << 16;

/// Upper subtrees already read from a store (see [`CACHED_LEVEL`]).
#[derive(Default)]
pub(crate) struct NodeCache(HashMap<(u32, u64), Hash>);

/// Runs a computation of the tree math over the perfect subtrees in `store` with at most one
/// store read: a first run only notes which subtrees it reads (the math reads the same ones
/// whatever their hashes are), then the second runs on those subtrees, taken from `cache` or
/// fetched together.
pub(crate) fn with_nodes<T>(
    store: &dyn LedgerStore,
    cache: &mut NodeCache,
    compute: impl Fn(&Prefetch) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut source = Prefetch::default();
    compute(&source)?;
    let mut known = HashMap::new();
    let mut wanted = source.wanted.take();
    wanted.retain(|node| match cache.0.get(node) {
        Some(hash) => {
            known.insert(*node, *hash);
            false
        }
        None => true,
    });
    wanted.sort_unstable();
    wanted.dedup();
    if !wanted.is_empty() {
        let hashes = store.nodes(&wanted)?;
        if hashes.len() != wanted.len() {
            return Err(StoreError::NodeCount {
                asked: wanted.len(),
                answered: hashes.len(),
            });
        }
        for (node, hash) in wanted.into_iter().zip(hashes) {
            if node.0 >= CACHED_LEVEL && cache.0.len() < CACHE_CAPACITY {
                cache.0.insert(node, hash);
            }
            known.insert(node, hash);
        }
    }
    source.fetched = Some(known);
    compute(&source)
}

/// The node source of [`with_nodes`]: notes what is read until the nodes are fetched, then
/// serves them.
#[derive(Default)]
pub(crate) struct Prefetch {
    wanted: RefCell<Vec<(u32, u64)>>,
    fetched: Option<HashMap<(u32, u64), Hash>>,
}

impl crate::merkle::NodeSource for Prefetch {
    type Error = StoreError;
    fn perfect(&self, level: u32, index: u64) -> Result<Hash, StoreError> {
        match &self.fetched {
            Some(nodes) => nodes
                .get(&(level, index))
                .copied()
                .ok_or(StoreError::MissingNode { level, index }),
            None => {
                self.wanted.borrow_mut().push((level, index));
                Ok([0; 32])
            }
        }
    }
}
