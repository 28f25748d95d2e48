//! Full verification of a stored ledger, trusting nothing but the log's public key.
//!
//! One pass over the entries, in index order: each index must follow the previous one; each
//! stored record must hash to its stored leaf and be canonical JSON; the tree is rebuilt from
//! the leaves and every perfect-subtree hash the store keeps (the ones proofs are built from) must
//! equal the recomputed one; when the rebuilt tree reaches the size of a stored checkpoint, that
//! checkpoint's signature, origin and root are checked. At the end, checkpoints beyond the last
//! entry mean the log was truncated, and each pair of successive checkpoints must be linked by a
//! consistency proof.
//!
//! The first problem in log order is reported, as a [`VerifyError`] that names the index (or the
//! checkpoint) and what is wrong.

use crate::base64_hash;
use crate::canonical::{check_canonical, CanonicalError};
use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::location::LedgerLocation;
use crate::merkle::{self, Frontier, Hash, MerkleError};
use crate::note::{NoteError, VerifierKey};
use crate::store::{with_nodes, LedgerStore, NodeCache, StoreError, StoredCheckpoint, StoredEntry};
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};

/// How many entries are read per store call.
const CHUNK: usize = 8192;

/// Where verification found the first problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The ledger as a whole (unreadable, no key).
    Ledger,
    /// One entry.
    Entry(u64),
    /// A range of entries of which at least one was changed, but the stored data cannot tell
    /// which (a tree node or a signed root covers them all).
    Entries(Range<u64>),
    /// A checkpoint, by sequence number.
    Checkpoint(u64),
}

/// Why a ledger failed verification.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read the ledger: {0}")]
    Open(#[source] StoreError),
    #[error("no verifier key: the ledger records none and none was given")]
    NoKey,
    #[error("the ledger's recorded verifier key is invalid: {0}")]
    BadRecordedKey(#[source] NoteError),
    #[error("the ledger records key {recorded}, but the trusted key is {trusted}")]
    KeyMismatch { recorded: String, trusted: String },
    #[error("entry {index}: unreadable: {source}")]
    Unreadable {
        index: u64,
        #[source]
        source: StoreError,
    },
    #[error("entry {index} missing: {}", jump(*.index, *.next))]
    Missing { index: u64, next: u64 },
    #[error("entry {index}: stored record does not hash to its leaf")]
    LeafMismatch { index: u64 },
    #[error("entry {index}: record is {source}")]
    NotCanonical {
        index: u64,
        #[source]
        source: CanonicalError,
    },
    #[error("entry {index}: stores {found} tree node hashes, expected {expected}")]
    NodeCount {
        index: u64,
        found: usize,
        expected: usize,
    },
    #[error(
        "entries {}..={}: stored tree node (level {level}, index {node}) does not match the \
         hash of their leaves (a record was rewritten together with its leaf hash)",
        .entries.start, .entries.end - 1
    )]
    NodeMismatch {
        level: u32,
        node: u64,
        entries: Range<u64>,
    },
    #[error("checkpoint {seq} missing: sequence numbers jump from {} to {next}", .seq - 1)]
    CheckpointMissing { seq: u64, next: u64 },
    #[error("checkpoint {seq} (size {size}): bad signature: {reason}")]
    CheckpointSignature { seq: u64, size: u64, reason: String },
    #[error("checkpoint {seq} (size {size}): {reason}")]
    CheckpointInvalid { seq: u64, size: u64, reason: String },
    #[error("checkpoint {seq}: stored with size {stored}, but the signed note says {signed}")]
    CheckpointSize { seq: u64, stored: u64, signed: u64 },
    #[error(
        "checkpoint {seq} (size {size}) is smaller than checkpoint {previous_seq} \
         (size {previous_size}): the log was rolled back"
    )]
    CheckpointRollback {
        seq: u64,
        size: u64,
        previous_seq: u64,
        previous_size: u64,
    },
    #[error(
        "checkpoint at size {size} (checkpoint {seq}): root mismatch: it signs {signed}, but \
         entries 0..{size} hash to {computed}; an entry in {}..{size} was rewritten together \
         with its stored hashes",
        .since
    )]
    CheckpointRoot {
        seq: u64,
        size: u64,
        since: u64,
        signed: String,
        computed: String,
    },
    #[error(
        "checkpoint at size {size} (checkpoint {seq}): the log has only {len} entries; \
         entries {len}..{size} are missing (truncated)"
    )]
    Truncated { seq: u64, size: u64, len: u64 },
    #[error("checkpoints {previous_seq} and {seq}: consistency proof fails: {source}")]
    Inconsistent {
        previous_seq: u64,
        seq: u64,
        #[source]
        source: MerkleError,
    },
}

fn jump(index: u64, next: u64) -> String {
    match index.checked_sub(1) {
        Some(previous) => format!("indices jump from {previous} to {next}"),
        None => format!("the first stored index is {next}"),
    }
}

impl VerifyError {
    /// Where the problem is.
    pub fn location(&self) -> Location {
        use VerifyError as E;
        match self {
            E::Open(_) | E::NoKey | E::BadRecordedKey(_) | E::KeyMismatch { .. } => {
                Location::Ledger
            }
            E::Unreadable { index, .. }
            | E::Missing { index, .. }
            | E::LeafMismatch { index }
            | E::NotCanonical { index, .. }
            | E::NodeCount { index, .. } => Location::Entry(*index),
            E::NodeMismatch { entries, .. } => Location::Entries(entries.clone()),
            E::CheckpointRoot { since, size, .. } => Location::Entries(*since..*size),
            E::Truncated { len, size, .. } => Location::Entries(*len..*size),
            E::CheckpointMissing { seq, .. }
            | E::CheckpointSignature { seq, .. }
            | E::CheckpointInvalid { seq, .. }
            | E::CheckpointRollback { seq, .. }
            | E::CheckpointSize { seq, .. }
            | E::Inconsistent { seq, .. } => Location::Checkpoint(*seq),
        }
    }

    /// The first entry index that is (or may be) bad, when the problem is in the entries.
    pub fn first_bad_index(&self) -> Option<u64> {
        match self.location() {
            Location::Entry(i) => Some(i),
            Location::Entries(r) => Some(r.start),
            Location::Ledger | Location::Checkpoint(_) => None,
        }
    }
}

/// Which key checkpoints were checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// A key the caller supplied.
    Trusted,
    /// The key recorded in the ledger itself: this proves the checkpoints and entries agree,
    /// not who signed them.
    Recorded,
}

/// A ledger that verified.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The number of entries.
    pub entries: u64,
    /// The number of checkpoints checked.
    pub checkpoints: u64,
    /// The root over all entries.
    pub root: Hash,
    /// The key the checkpoints were checked against.
    pub key: VerifierKey,
    /// Where that key came from.
    pub key_source: KeySource,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ok: {} {}, {} {} verified, root {} (key {}{})",
            self.entries,
            if self.entries == 1 {
                "entry"
            } else {
                "entries"
            },
            self.checkpoints,
            if self.checkpoints == 1 {
                "checkpoint"
            } else {
                "checkpoints"
            },
            base64_hash(&self.root),
            self.key.label(),
            match self.key_source {
                KeySource::Trusted => "",
                KeySource::Recorded => ", as recorded in the ledger",
            }
        )
    }
}

/// Verifies the SQLite ledger at `path`; see [`verify`].
pub fn verify_file(
    path: &Path,
    trusted: Option<&VerifierKey>,
) -> Result<VerifyReport, VerifyError> {
    verify_at(&LedgerLocation::Sqlite(path.to_path_buf()), trusted)
}

/// Verifies the ledger at `location` (a SQLite file, or a PostgreSQL database); see [`verify`].
pub fn verify_at(
    location: &LedgerLocation,
    trusted: Option<&VerifierKey>,
) -> Result<VerifyReport, VerifyError> {
    let store = location.open_read_only().map_err(VerifyError::Open)?;
    verify(store.as_ref(), trusted)
}

/// A stored checkpoint with what its note says, if the note is trustworthy.
struct Claimed {
    stored: StoredCheckpoint,
    opened: Result<Checkpoint, CheckpointError>,
}

impl Claimed {
    /// The tree size this checkpoint is checked at: the signed one when the note verifies.
    fn size(&self) -> u64 {
        self.opened.as_ref().map_or(self.stored.size, |c| c.size)
    }
}

/// Verifies everything in `store` (see the module documentation). Checkpoints are checked
/// against `trusted` when given, else against the key the ledger records (which then only shows
/// that the ledger is self-consistent, since whoever can rewrite the file can rewrite the key).
pub fn verify(
    store: &dyn LedgerStore,
    trusted: Option<&VerifierKey>,
) -> Result<VerifyReport, VerifyError> {
    let recorded = store
        .verifier_key()
        .map_err(VerifyError::Open)?
        .map(|k| VerifierKey::parse(&k))
        .transpose()
        .map_err(VerifyError::BadRecordedKey)?;
    let (key, key_source) = match (trusted, recorded) {
        (Some(t), Some(r)) if *t != r => {
            return Err(VerifyError::KeyMismatch {
                recorded: r.to_string(),
                trusted: t.to_string(),
            })
        }
        (Some(t), _) => (t.clone(), KeySource::Trusted),
        (None, Some(r)) => (r, KeySource::Recorded),
        (None, None) => return Err(VerifyError::NoKey),
    };

    let claimed: Vec<Claimed> = store
        .checkpoints()
        .map_err(VerifyError::Open)?
        .into_iter()
        .map(|stored| Claimed {
            opened: Checkpoint::open(&stored.note, &key),
            stored,
        })
        .collect();
    // Checkpoints are checked when the rebuilt tree reaches their size.
    let mut order: Vec<usize> = (0..claimed.len()).collect();
    order.sort_by_key(|&i| claimed.get(i).map(|c| (c.size(), c.stored.seq)));
    let mut checker = CheckpointChecker {
        claimed: &claimed,
        order,
        next: 0,
        matched_size: 0,
    };

    checker.check_at(&Frontier::new())?;

    // Reading and checking overlap: this thread reads the store (which need not be shareable
    // between threads) and hashes the leaves, a second checks everything else in log order.
    let (frontier, checker) = std::thread::scope(|s| {
        let (send, chunks) = mpsc::sync_channel(2);
        let rebuilder = s.spawn(move || rebuild(&chunks, checker));
        read(store, &send);
        drop(send);
        rebuilder
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })?;
    checker.check_beyond(frontier.size())?;
    check_consistency(store, &claimed)?;
    Ok(VerifyReport {
        entries: frontier.size(),
        checkpoints: claimed.len() as u64,
        root: frontier.root(),
        key,
        key_source,
    })
}

/// Entries as read, with the leaf hashes of their records.
type Chunk = Result<(Vec<StoredEntry>, Vec<Hash>), VerifyError>;

/// Sends the entries in order, a chunk at a time, until they or the receiver run out or one
/// cannot be read.
fn read(store: &dyn LedgerStore, chunks: &SyncSender<Chunk>) {
    let mut from = 0;
    loop {
        let entries = match store.scan(from, CHUNK) {
            Ok(entries) => entries,
            Err(source) => {
                let index = match &source {
                    StoreError::Malformed { index, .. } => *index,
                    _ => from,
                };
                // A receiver that is gone has stopped at an earlier problem, which comes first.
                let _ = chunks.send(Err(VerifyError::Unreadable { index, source }));
                return;
            }
        };
        let Some(last) = entries.last().map(|e| e.index) else {
            return;
        };
        let leaves = entries.iter().map(|e| merkle::leaf_hash(&e.data)).collect();
        if chunks.send(Ok((entries, leaves))).is_err() {
            return;
        }
        from = last.saturating_add(1);
    }
}

/// Checks the entries in log order and rebuilds the tree from them (see [`verify`]); returns
/// the tree and the checker once the entries end.
fn rebuild<'a>(
    chunks: &Receiver<Chunk>,
    mut checker: CheckpointChecker<'a>,
) -> Result<(Frontier, CheckpointChecker<'a>), VerifyError> {
    let mut frontier = Frontier::new();
    let mut completed = Vec::with_capacity(64);
    for chunk in chunks {
        let (entries, leaves) = chunk?;
        for (e, leaf) in entries.into_iter().zip(leaves) {
            let index = frontier.size();
            if e.index != index {
                return Err(VerifyError::Missing {
                    index,
                    next: e.index,
                });
            }
            if leaf != e.leaf {
                return Err(VerifyError::LeafMismatch { index });
            }
            check_canonical(&e.data)
                .map_err(|source| VerifyError::NotCanonical { index, source })?;
            completed.clear();
            frontier.push(e.leaf, &mut completed);
            if e.nodes.len() != completed.len() {
                return Err(VerifyError::NodeCount {
                    index,
                    found: e.nodes.len(),
                    expected: completed.len(),
                });
            }
            for (level, (stored, computed)) in (1u32..).zip(e.nodes.iter().zip(&completed)) {
                if stored != computed {
                    let node = index >> level;
                    return Err(VerifyError::NodeMismatch {
                        level,
                        node,
                        entries: node << level..(node + 1) << level,
                    });
                }
            }
            checker.check_at(&frontier)?;
        }
    }
    Ok((frontier, checker))
}

struct CheckpointChecker<'a> {
    claimed: &'a [Claimed],
    /// Indices into `claimed`, by (size, seq).
    order: Vec<usize>,
    next: usize,
    /// The size of the last checkpoint whose root matched: changes are after it.
    matched_size: u64,
}

impl<'a> CheckpointChecker<'a> {
    /// The next checkpoint to check, with its index into `claimed`.
    fn pending(&self) -> Option<(usize, &'a Claimed)> {
        let claimed = self.claimed;
        let i = *self.order.get(self.next)?;
        Some((i, claimed.get(i)?))
    }

    /// Checks every checkpoint whose size is the frontier's.
    fn check_at(&mut self, frontier: &Frontier) -> Result<(), VerifyError> {
        while let Some((i, c)) = self.pending().filter(|(_, c)| c.size() == frontier.size()) {
            let (seq, checkpoint) = self.trusted(i, c)?;
            let computed = frontier.root();
            if checkpoint.root != computed {
                return Err(VerifyError::CheckpointRoot {
                    seq,
                    size: checkpoint.size,
                    since: self.matched_size,
                    signed: base64_hash(&checkpoint.root),
                    computed: base64_hash(&computed),
                });
            }
            self.matched_size = checkpoint.size;
            self.next += 1;
        }
        Ok(())
    }

    /// After the last entry: any checkpoint left claims entries that are not there.
    fn check_beyond(&self, len: u64) -> Result<(), VerifyError> {
        if let Some((i, c)) = self.pending() {
            let (seq, checkpoint) = self.trusted(i, c)?;
            return Err(VerifyError::Truncated {
                seq,
                size: checkpoint.size,
                len,
            });
        }
        Ok(())
    }

    /// The checks of checkpoint `c` (at `claimed[i]`) that do not need the tree: sequence,
    /// signature, stored size, order relative to the previous checkpoint.
    fn trusted(&self, i: usize, c: &'a Claimed) -> Result<(u64, &'a Checkpoint), VerifyError> {
        let seq = c.stored.seq;
        let previous = i.checked_sub(1).and_then(|p| self.claimed.get(p));
        let expected_seq = previous.map_or(1, |p| p.stored.seq + 1);
        if seq != expected_seq {
            return Err(VerifyError::CheckpointMissing {
                seq: expected_seq,
                next: seq,
            });
        }
        let checkpoint = c.opened.as_ref().map_err(|e| {
            let (size, reason) = (c.stored.size, e.to_string());
            match e {
                CheckpointError::Note(
                    NoteError::BadSignature { .. } | NoteError::NotSignedBy { .. },
                ) => VerifyError::CheckpointSignature { seq, size, reason },
                _ => VerifyError::CheckpointInvalid { seq, size, reason },
            }
        })?;
        if checkpoint.size != c.stored.size {
            return Err(VerifyError::CheckpointSize {
                seq,
                stored: c.stored.size,
                signed: checkpoint.size,
            });
        }
        if let Some(p) = previous {
            if p.size() > checkpoint.size {
                return Err(VerifyError::CheckpointRollback {
                    seq,
                    size: checkpoint.size,
                    previous_seq: p.stored.seq,
                    previous_size: p.size(),
                });
            }
        }
        Ok((seq, checkpoint))
    }
}

/// Each checkpoint must be provably an extension of the previous one. (After the pass above
/// every root matched the rebuilt tree and every stored node matched too, so the proofs come
/// from the store and are checked against the signed roots.)
fn check_consistency(store: &dyn LedgerStore, claimed: &[Claimed]) -> Result<(), VerifyError> {
    let mut cache = NodeCache::default();
    for pair in claimed.windows(2) {
        let [previous, current] = pair else { continue };
        let (Ok(old), Ok(new)) = (&previous.opened, &current.opened) else {
            continue;
        };
        let proof = with_nodes(store, &mut cache, |nodes| {
            merkle::consistency_proof(nodes, old.size, new.size)
        })
        .map_err(|source| VerifyError::Unreadable {
            index: new.size.saturating_sub(1),
            source,
        })?;
        merkle::verify_consistency(old.size, new.size, &proof, &old.root, &new.root).map_err(
            |source| VerifyError::Inconsistent {
                previous_seq: previous.stored.seq,
                seq: current.stored.seq,
                source,
            },
        )?;
    }
    Ok(())
}
