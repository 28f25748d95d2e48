//! The ledger: durable appends with group commit, proofs, and signed checkpoints.
//!
//! One writer thread owns the store's write side. Appenders canonicalize and hash their records
//! on their own threads, hand them to the writer and wait; the writer takes everything queued
//! (up to [`MAX_BATCH`] records), writes it in one transaction — one fsync — and only then
//! answers each appender with its index. So `append` returns only when the record is durable,
//! and concurrent appenders share the cost of a commit.
//!
//! [`Ledger::submit`] is the same append in two halves: it queues the record and returns an
//! [`AppendTicket`], a future (or, with [`AppendTicket::wait`], a blocking wait) for its index.
//! An async caller awaits durability without a thread of its own blocked on it; records are
//! committed in the order they were submitted.
//!
//! Reads (entries, proofs, checkpoints) go through a second, read-only connection and see only
//! committed data.
//!
//! On a shared database several ledgers (one per server replica) may write the same log: when
//! the store says another writer appended first, the writer reads the log's new end from the
//! store and places its batch after it.

use crate::canonical::{canonicalize, CanonicalError};
use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::depth::{self, ReadRecord};
use crate::location::LedgerLocation;
use crate::merkle::{self, Frontier, Hash, MerkleError};
use crate::note::{LogKey, NoteError, VerifierKey};
use crate::store::{
    with_nodes, LedgerStore, NodeCache, Prefetch, StoreError, StoredCheckpoint, StoredEntry,
};
use crate::{base64_hash, format_time_us};
use futures_channel::oneshot;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{json, Value};
use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;

/// The origin (and key name) used when none is configured.
pub const DEFAULT_ORIGIN: &str = "truststack.local/ledger";

/// How many appends trigger an automatic checkpoint when none is configured.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1000;

/// The most records one group commit takes from the queue (a single larger `append_batch` is
/// still committed whole).
pub const MAX_BATCH: usize = 16_384;

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    #[error("log key: {0}")]
    Key(#[from] NoteError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Proof(#[from] MerkleError),
    #[error("record {position} of the batch: {source}")]
    Record {
        position: usize,
        #[source]
        source: CanonicalError,
    },
    #[error("the ledger was created with key {stored}, but the configured key is {configured}")]
    WrongKey { stored: String, configured: String },
    #[error("the ledger has entries but records no verifier key")]
    NoVerifierKey,
    #[error("the ledger is open read-only")]
    ReadOnly,
    #[error("write failed, nothing of this request was stored: {0}")]
    Write(String),
    #[error("the ledger's writer thread has stopped")]
    WriterGone,
    #[error("entry {index} does not exist (the log has {size} entries)")]
    NoSuchEntry { index: u64, size: u64 },
    #[error("tree size {size} is beyond the end of the log ({len} entries)")]
    SizeBeyondLog { size: u64, len: u64 },
    #[error("entry {index}: store returned entry {found}")]
    StoreOrder { index: u64, found: u64 },
    /// An entry could not be shown as JSON.
    #[error("entry as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// How to open a writable ledger.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// The log's Ed25519 key file (signer key string, mode 0600); created when absent.
    pub key_file: PathBuf,
    /// The key name, which is also the checkpoint origin.
    pub origin: String,
    /// Sign a checkpoint automatically once this many entries were appended since the last one
    /// (0: only when [`Ledger::checkpoint`] is called).
    pub checkpoint_every: u64,
    /// Also sign one with the first append once the latest is this old, in microseconds
    /// (`None`: by count only). Replicas sharing a database set a second.
    pub checkpoint_interval_us: Option<i64>,
}

impl LedgerConfig {
    /// The defaults: origin [`DEFAULT_ORIGIN`], a checkpoint every
    /// [`DEFAULT_CHECKPOINT_EVERY`] appends.
    pub fn new(key_file: impl Into<PathBuf>) -> Self {
        LedgerConfig {
            key_file: key_file.into(),
            origin: DEFAULT_ORIGIN.to_string(),
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            checkpoint_interval_us: None,
        }
    }
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log, from 0.
    pub index: u64,
    /// The record's canonical JSON bytes.
    pub data: Vec<u8>,
    /// `SHA-256(0x00 ‖ data)`.
    pub leaf: Hash,
    /// Commit time, microseconds since the Unix epoch.
    pub time_us: i64,
}

impl Entry {
    /// The record as JSON, read as [`depth::read_record`] reads it: subtrees nested deeper
    /// than [`depth::MAX_RECORD_DEPTH`] are replaced by a marker, so only bytes that are not
    /// JSON fail.
    pub fn record(&self) -> Result<Value, serde_json::Error> {
        self.read().map(|r| r.value)
    }

    /// The record and how much of it was cut for its depth.
    pub fn read(&self) -> Result<ReadRecord, serde_json::Error> {
        depth::read_record(&self.data)
    }

    /// `{"index", "record", "leaf_hash" (base64), "committed" (RFC 3339)}`. A record read with
    /// deep parts cut also says `"truncated"` (how many); an entry that is not JSON has
    /// `"record": null` and says why in `"unreadable"`, with its bytes in `"data"` (base64) so
    /// it can still be checked against its leaf hash.
    pub fn to_json(&self) -> Result<Value, serde_json::Error> {
        let mut out = json!({
            "index": self.index,
            "leaf_hash": base64_hash(&self.leaf),
            "committed": format_time_us(self.time_us),
        });
        match self.read() {
            Ok(read) => {
                out["record"] = read.value;
                if read.truncated > 0 {
                    out["truncated"] = json!(read.truncated);
                }
            }
            Err(e) => {
                out["record"] = Value::Null;
                out["unreadable"] = json!(format!("not a JSON record: {e}"));
                out["data"] = json!(crate::base64_bytes(&self.data));
            }
        }
        Ok(out)
    }
}

/// What stands in [`Ledger::records`] for an entry that is not JSON: it keeps the positions of
/// the records after it, and says why.
pub fn unreadable_record(index: u64, error: &serde_json::Error) -> Value {
    json!({"kind": UNREADABLE_KIND, "index": index, "error": error.to_string()})
}

/// The `kind` of [`unreadable_record`]: no writer uses it.
pub const UNREADABLE_KIND: &str = "unreadable";

/// Serializes hashes as standard base64.
mod b64 {
    use crate::merkle::Hash;
    use serde::ser::SerializeSeq as _;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(path: &[Hash], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(path.len()))?;
        for h in path {
            seq.serialize_element(&crate::base64_hash(h))?;
        }
        seq.end()
    }
}

/// An RFC 9162 inclusion proof: `leaf_index` is in the tree of `tree_size` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InclusionProof {
    pub leaf_index: u64,
    pub tree_size: u64,
    /// The audit path, lowest level first (base64 in JSON).
    #[serde(serialize_with = "b64::serialize")]
    pub path: Vec<Hash>,
}

impl InclusionProof {
    /// Checks the proof for the leaf hash `leaf` against `root`.
    pub fn verify(&self, leaf: &Hash, root: &Hash) -> Result<(), MerkleError> {
        merkle::verify_inclusion(self.leaf_index, self.tree_size, leaf, &self.path, root)
    }
}

/// An RFC 9162 consistency proof: the tree of `old_size` entries is a prefix of the tree of
/// `new_size` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsistencyProof {
    pub old_size: u64,
    pub new_size: u64,
    /// The proof nodes, lowest level first (base64 in JSON).
    #[serde(serialize_with = "b64::serialize")]
    pub path: Vec<Hash>,
}

impl ConsistencyProof {
    /// Checks the proof against the two roots.
    pub fn verify(&self, old_root: &Hash, new_root: &Hash) -> Result<(), MerkleError> {
        merkle::verify_consistency(self.old_size, self.new_size, &self.path, old_root, new_root)
    }
}

/// A checkpoint with its signed note, as the log stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// Sequence number, from 1.
    pub seq: u64,
    /// The parsed note text.
    pub checkpoint: Checkpoint,
    /// The signed note, verbatim (what to give to a verifier).
    pub note: String,
    /// When it was signed, microseconds since the Unix epoch.
    pub time_us: i64,
}

impl SignedCheckpoint {
    fn from_stored(stored: StoredCheckpoint, key: &VerifierKey) -> Result<Self, CheckpointError> {
        Ok(SignedCheckpoint {
            seq: stored.seq,
            checkpoint: Checkpoint::open(&stored.note, key)?,
            note: stored.note,
            time_us: stored.time_us,
        })
    }
}

/// What the writer has committed: readers never see more than this.
#[derive(Debug, Clone)]
struct Committed {
    /// The committed tree's size and peaks: its root is computed when asked for, not at every
    /// commit (a few dozen hashes for a log of millions of entries).
    frontier: Frontier,
    latest: Option<SignedCheckpoint>,
    /// How many appends were refused since the ledger was opened.
    failed_appends: u64,
}

type Reply<T> = SyncSender<Result<T, String>>;

enum Request {
    Append {
        records: Vec<(Vec<u8>, Hash)>,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    Checkpoint {
        reply: Reply<SignedCheckpoint>,
    },
    /// Take the log's end from the store (what other writers appended).
    Follow {
        reply: Reply<u64>,
    },
}

impl Request {
    fn records(&self) -> usize {
        match self {
            Request::Append { records, .. } => records.len(),
            Request::Checkpoint { .. } | Request::Follow { .. } => 0,
        }
    }
}

/// A queued append: resolves to the index of its (first) record once that is durable, or to
/// the reason it could not be written. Await it, or block on it with [`AppendTicket::wait`].
#[must_use = "a record is durable only once its ticket resolves"]
#[derive(Debug)]
pub struct AppendTicket {
    answer: oneshot::Receiver<Result<u64, String>>,
}

impl AppendTicket {
    /// Blocks the calling thread until the append is durable.
    pub fn wait(self) -> Result<u64, LedgerError> {
        futures_executor::block_on(self)
    }
}

impl Future for AppendTicket {
    type Output = Result<u64, LedgerError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.answer)
            .poll(cx)
            .map(|answer| match answer {
                Ok(Ok(index)) => Ok(index),
                Ok(Err(message)) => Err(LedgerError::Write(message)),
                Err(oneshot::Canceled) => Err(LedgerError::WriterGone),
            })
    }
}

struct Writer {
    queue: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

/// The read side: a view of the store, and the upper tree nodes proofs keep reading.
struct Reader {
    store: Box<dyn LedgerStore>,
    cache: NodeCache,
}

impl Reader {
    fn new(store: Box<dyn LedgerStore>) -> Mutex<Self> {
        Mutex::new(Reader {
            store,
            cache: NodeCache::default(),
        })
    }

    fn with_nodes<T>(
        &mut self,
        compute: impl Fn(&Prefetch) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        with_nodes(self.store.as_ref(), &mut self.cache, compute)
    }
}

/// An append-only, tamper-evident log of JSON records.
///
/// `Ledger` is `Sync`: share it (e.g. in an `Arc`) between threads that append concurrently.
/// Dropping it finishes the queued appends and stops the writer thread.
pub struct Ledger {
    reader: Mutex<Reader>,
    verifier: VerifierKey,
    committed: Arc<Mutex<Committed>>,
    writer: Option<Writer>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.committed.lock();
        f.debug_struct("Ledger")
            .field("key", &self.verifier.label())
            .field("size", &c.frontier.size())
            .field("writable", &self.writer.is_some())
            .finish()
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

impl Ledger {
    /// Opens (or creates) the SQLite ledger at `path` for appending; see [`Ledger::open_at`].
    pub fn open(path: &Path, config: &LedgerConfig) -> Result<Self, LedgerError> {
        Ledger::open_at(&LedgerLocation::Sqlite(path.to_path_buf()), config)
    }

    /// Opens (or creates) the ledger at `location` (a SQLite file, or a PostgreSQL database)
    /// for appending, with the log key from `config.key_file` (created if absent). A ledger
    /// stays bound to the key it was created with: opening it with another key fails with
    /// [`LedgerError::WrongKey`].
    pub fn open_at(location: &LedgerLocation, config: &LedgerConfig) -> Result<Self, LedgerError> {
        let key = LogKey::load_or_create(&config.key_file, &config.origin)?;
        let (writer, reader) = location.open_for_writing()?;
        let signing = Signing {
            every: config.checkpoint_every,
            interval_us: config.checkpoint_interval_us,
        };
        Ledger::with_stores(writer, reader, key, signing)
    }

    /// Opens an existing SQLite ledger read-only; see [`Ledger::open_read_only_at`].
    pub fn open_read_only(path: &Path) -> Result<Self, LedgerError> {
        Ledger::open_read_only_at(&LedgerLocation::Sqlite(path.to_path_buf()))
    }

    /// Opens an existing ledger read-only, as of now: `len`, `root` and every read see the
    /// entries committed when it was opened. Appending fails with [`LedgerError::ReadOnly`].
    pub fn open_read_only_at(location: &LedgerLocation) -> Result<Self, LedgerError> {
        Ledger::read_only(location.open_read_only()?)
    }

    /// A read-only ledger over any store.
    pub fn read_only(store: Box<dyn LedgerStore>) -> Result<Self, LedgerError> {
        let size = store.size()?;
        let verifier = match store.verifier_key()? {
            Some(k) => VerifierKey::parse(&k)?,
            None => return Err(LedgerError::NoVerifierKey),
        };
        let latest = store
            .latest_checkpoint()?
            .filter(|c| c.size <= size)
            .map(|c| SignedCheckpoint::from_stored(c, &verifier))
            .transpose()?;
        let reader = Reader::new(store);
        let frontier = reader
            .lock()
            .with_nodes(|nodes| Frontier::from_source(nodes, size))?;
        Ok(Ledger {
            reader,
            verifier,
            committed: Arc::new(Mutex::new(Committed {
                frontier,
                latest,
                failed_appends: 0,
            })),
            writer: None,
        })
    }

    /// A writable ledger over any store: `writer` is used only by the writer thread, `reader`
    /// for reads (both must be views of the same log).
    pub fn with_stores(
        mut writer: Box<dyn LedgerStore>,
        reader: Box<dyn LedgerStore>,
        key: LogKey,
        signing: Signing,
    ) -> Result<Self, LedgerError> {
        let size = writer.size()?;
        let configured = key.verifier().to_string();
        match writer.verifier_key()? {
            Some(stored) if stored == configured => {}
            Some(stored) => return Err(LedgerError::WrongKey { stored, configured }),
            None if size == 0 => writer.set_verifier_key(&configured)?,
            None => return Err(LedgerError::NoVerifierKey),
        }
        let (frontier, latest) = log_end(writer.as_ref(), key.verifier())?;
        let committed = Arc::new(Mutex::new(Committed {
            frontier: frontier.clone(),
            latest: latest.clone(),
            failed_appends: 0,
        }));
        let verifier = key.verifier().clone();
        let (queue, requests) = mpsc::channel();
        let state = WriterState {
            store: writer,
            key,
            frontier,
            latest,
            signing,
            committed: Arc::clone(&committed),
            failed: None,
        };
        let thread = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || state.run(&requests))
            .map_err(|e| LedgerError::Write(format!("cannot start the writer thread: {e}")))?;
        Ok(Ledger {
            reader: Reader::new(reader),
            verifier,
            committed,
            writer: Some(Writer {
                queue: Some(queue),
                thread: Some(thread),
            }),
        })
    }

    fn send(&self, request: Request) -> Result<(), LedgerError> {
        let queue = self
            .writer
            .as_ref()
            .ok_or(LedgerError::ReadOnly)?
            .queue
            .as_ref()
            .ok_or(LedgerError::WriterGone)?;
        queue.send(request).map_err(|_| LedgerError::WriterGone)
    }

    /// Appends one record and returns its index once it is durable. The record is stored as
    /// its RFC 8785 canonical JSON.
    pub fn append(&self, record: &Value) -> Result<u64, LedgerError> {
        self.submit(record)?.wait()
    }

    /// Queues one record for the next group commit; the ticket resolves to its index once it is
    /// durable. A record that cannot be canonicalized, or a ledger that cannot be written, is
    /// refused here, before anything is queued.
    pub fn submit(&self, record: &Value) -> Result<AppendTicket, LedgerError> {
        self.submit_prepared(vec![prepare(0, record)?])
    }

    /// Appends records atomically, at consecutive indices; returns their index range once all
    /// are durable. Nothing is stored if any record cannot be canonicalized.
    pub fn append_batch(&self, records: &[Value]) -> Result<Range<u64>, LedgerError> {
        let prepared = records
            .iter()
            .enumerate()
            .map(|(position, record)| prepare(position, record))
            .collect::<Result<Vec<_>, _>>()?;
        if prepared.is_empty() {
            let len = self.len();
            return Ok(len..len);
        }
        let n = prepared.len() as u64;
        let first = self.submit_prepared(prepared)?.wait()?;
        Ok(first..first + n)
    }

    fn submit_prepared(&self, records: Vec<(Vec<u8>, Hash)>) -> Result<AppendTicket, LedgerError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Append { records, reply })?;
        Ok(AppendTicket { answer })
    }

    /// Signs a checkpoint of everything committed so far and stores it; when the latest
    /// checkpoint already covers the whole log, returns that one instead.
    pub fn checkpoint(&self) -> Result<SignedCheckpoint, LedgerError> {
        self.ask(|reply| Request::Checkpoint { reply })
    }

    /// Takes the log's end from the store, after the appends queued before: entries that other
    /// writers (replicas sharing a database) committed become readable here, and this ledger's
    /// next append goes after them. Returns the log's size.
    pub fn follow(&self) -> Result<u64, LedgerError> {
        self.ask(|reply| Request::Follow { reply })
    }

    /// Sends the writer a request that answers, and waits for the answer.
    fn ask<T>(&self, request: impl FnOnce(Reply<T>) -> Request) -> Result<T, LedgerError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(request(reply))?;
        answer
            .recv()
            .map_err(|_| LedgerError::WriterGone)?
            .map_err(LedgerError::Write)
    }

    /// How many group commits failed since the ledger was opened (their appenders were told).
    pub fn failed_appends(&self) -> u64 {
        self.committed.lock().failed_appends
    }

    /// The number of committed entries.
    pub fn len(&self) -> u64 {
        self.committed.lock().frontier.size()
    }

    /// Whether the log has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The root hash over all committed entries.
    pub fn root(&self) -> Hash {
        self.committed.lock().frontier.root()
    }

    /// The key that signs this log's checkpoints.
    pub fn verifier_key(&self) -> &VerifierKey {
        &self.verifier
    }

    /// The most recent signed checkpoint.
    pub fn latest_checkpoint(&self) -> Option<SignedCheckpoint> {
        self.committed.lock().latest.clone()
    }

    /// Every stored checkpoint, in signing order, each checked against the log key.
    pub fn checkpoints(&self) -> Result<Vec<SignedCheckpoint>, LedgerError> {
        let stored = self.reader.lock().store.checkpoints()?;
        let size = self.len();
        stored
            .into_iter()
            .filter(|c| c.size <= size)
            .map(|c| Ok(SignedCheckpoint::from_stored(c, &self.verifier)?))
            .collect()
    }

    /// The entry at `index`.
    pub fn entry(&self, index: u64) -> Result<Entry, LedgerError> {
        let mut entries = self.entries(index..index.saturating_add(1))?;
        entries.pop().ok_or(LedgerError::NoSuchEntry {
            index,
            size: self.len(),
        })
    }

    /// Every record of the log, in order (what a restarting engine rebuilds its state from).
    /// No single entry makes this fail: a record nested too deep is read with its deep parts
    /// cut ([`Entry::record`]), and an entry that is not JSON is given as an
    /// [`unreadable_record`] at its position. Only a storage failure is an error.
    pub fn records(&self) -> Result<Vec<Value>, LedgerError> {
        self.records_in(0..self.len())
    }

    /// The records in `range`, read as [`Ledger::records`] reads them.
    pub fn records_in(&self, range: Range<u64>) -> Result<Vec<Value>, LedgerError> {
        Ok(self
            .entries(range)?
            .iter()
            .map(|e| {
                e.record()
                    .unwrap_or_else(|error| unreadable_record(e.index, &error))
            })
            .collect())
    }

    /// The entries in `range` (which must lie within the log), in order.
    pub fn entries(&self, range: Range<u64>) -> Result<Vec<Entry>, LedgerError> {
        let size = self.len();
        if range.end > size {
            return Err(LedgerError::NoSuchEntry {
                index: range.end - 1,
                size,
            });
        }
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let count = usize::try_from(range.end - range.start).unwrap_or(usize::MAX);
        let stored = self.reader.lock().store.scan(range.start, count)?;
        let mut out = Vec::with_capacity(stored.len());
        for (expected, e) in range.clone().zip(stored) {
            if e.index != expected {
                return Err(LedgerError::StoreOrder {
                    index: expected,
                    found: e.index,
                });
            }
            out.push(Entry {
                index: e.index,
                data: e.data,
                leaf: e.leaf,
                time_us: e.time_us,
            });
        }
        if (out.len() as u64) < range.end - range.start {
            return Err(StoreError::MissingEntry {
                index: range.start + out.len() as u64,
            }
            .into());
        }
        Ok(out)
    }

    fn check_size(&self, size: u64) -> Result<(), LedgerError> {
        let len = self.len();
        if size > len {
            return Err(LedgerError::SizeBeyondLog { size, len });
        }
        Ok(())
    }

    /// The inclusion proof of entry `index` in the tree of the first `size` entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<InclusionProof, LedgerError> {
        Ok(InclusionProof {
            leaf_index: index,
            tree_size: size,
            path: self.over_tree(size, |nodes| merkle::inclusion_proof(nodes, index, size))?,
        })
    }

    /// The consistency proof between the trees of the first `old` and `new` entries.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<ConsistencyProof, LedgerError> {
        Ok(ConsistencyProof {
            old_size: old,
            new_size: new,
            path: self.over_tree(new, |nodes| merkle::consistency_proof(nodes, old, new))?,
        })
    }

    /// The root of the tree of the first `size` entries.
    pub fn root_at(&self, size: u64) -> Result<Hash, LedgerError> {
        self.over_tree(size, |nodes| merkle::root(nodes, size))
    }

    /// Runs tree math over the stored subtrees of the tree of the first `size` entries.
    fn over_tree<T>(
        &self,
        size: u64,
        compute: impl Fn(&Prefetch) -> Result<T, StoreError>,
    ) -> Result<T, LedgerError> {
        self.check_size(size)?;
        Ok(self.reader.lock().with_nodes(compute)?)
    }

    /// Finishes the queued appends and stops the writer thread.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(mut w) = self.writer.take() {
            drop(w.queue.take());
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// A record's canonical bytes and leaf hash, computed on the appender's thread.
fn prepare(position: usize, record: &Value) -> Result<(Vec<u8>, Hash), LedgerError> {
    let data = canonicalize(record).map_err(|source| LedgerError::Record { position, source })?;
    let leaf = merkle::leaf_hash(&data);
    Ok((data, leaf))
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The log's end as `store` has it: the frontier of its entries and its latest checkpoint.
fn log_end(
    store: &dyn LedgerStore,
    verifier: &VerifierKey,
) -> Result<(Frontier, Option<SignedCheckpoint>), LedgerError> {
    // The checkpoint first: the log only grows (another writer may append meanwhile), so the
    // size read after it covers it.
    let latest = store
        .latest_checkpoint()?
        .map(|c| SignedCheckpoint::from_stored(c, verifier))
        .transpose()?;
    let size = store.size()?;
    let frontier = with_nodes(store, &mut NodeCache::default(), |nodes| {
        Frontier::from_source(nodes, size)
    })?;
    Ok((frontier, latest))
}

/// When the writer signs checkpoints by itself (besides [`Ledger::checkpoint`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Signing {
    /// Once this many entries were appended since the last checkpoint (0: never by count).
    pub every: u64,
    /// With the first append once the last checkpoint is this old (µs), if any.
    pub interval_us: Option<i64>,
}

/// How many times one group commit is placed again after another writer appended first.
const CONFLICT_RETRIES: u32 = 32;

/// Why a write failed.
enum Failure {
    /// Another writer appended first; nothing was stored (the batch can be placed again).
    Conflict(String),
    /// Anything else, said as the appenders are told.
    Other(String),
}

/// The writer thread's state.
struct WriterState {
    store: Box<dyn LedgerStore>,
    key: LogKey,
    frontier: Frontier,
    latest: Option<SignedCheckpoint>,
    signing: Signing,
    committed: Arc<Mutex<Committed>>,
    /// Set when the store may disagree with `frontier`; every later request fails with it.
    failed: Option<String>,
}

impl WriterState {
    fn run(mut self, requests: &Receiver<Request>) {
        while let Ok(first) = requests.recv() {
            let mut queued = first.records();
            let mut batch = vec![first];
            while queued < MAX_BATCH {
                match requests.try_recv() {
                    Ok(r) => {
                        queued += r.records();
                        batch.push(r);
                    }
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
        // Closing: sign what was appended since the last checkpoint, so the final state of the
        // log is covered by a signature (the log's end as the store has it, if another writer
        // appended since).
        for _ in 0..2 {
            let size = self.frontier.size();
            if size == 0 || self.latest.as_ref().map(|c| c.checkpoint.size) == Some(size) {
                break;
            }
            match self.write(&[], true, now_us()) {
                Err(Failure::Conflict(_)) if self.resync().is_ok() => {}
                _ => break,
            }
        }
    }

    fn commit(&mut self, batch: Vec<Request>) {
        let mut appended: Vec<(oneshot::Sender<Result<u64, String>>, u64)> = Vec::new();
        let mut checkpoint_replies: Vec<Reply<SignedCheckpoint>> = Vec::new();
        let mut follow_replies: Vec<Reply<u64>> = Vec::new();
        let time_us = now_us();
        let mut entries = Vec::new();
        for request in batch {
            match request {
                Request::Append { records, reply } => {
                    appended.push((reply, records.len() as u64));
                    entries.extend(records.into_iter().map(|(data, leaf)| StoredEntry {
                        index: 0,
                        data,
                        leaf,
                        time_us,
                        nodes: Vec::new(),
                    }));
                }
                Request::Checkpoint { reply } => checkpoint_replies.push(reply),
                Request::Follow { reply } => follow_replies.push(reply),
            }
        }
        if !follow_replies.is_empty() {
            // Before this batch's entries: they are placed after whatever the store holds.
            let end = self.follow().map(|()| self.frontier.size());
            for reply in follow_replies {
                let _ = reply.send(end.clone());
            }
        }
        let requested = !checkpoint_replies.is_empty();
        let mut conflicts = 0;
        let result = loop {
            let before = self.frontier.clone();
            let first = self.frontier.size();
            for e in &mut entries {
                e.index = self.frontier.size();
                e.nodes.clear();
                self.frontier.push(e.leaf, &mut e.nodes);
            }
            match self.write(&entries, requested, time_us) {
                Ok(()) => break Ok(first),
                Err(Failure::Conflict(message)) => {
                    // Another writer (another replica on a shared database) appended first:
                    // take the log's end from the store and place the batch after it.
                    self.frontier = before;
                    conflicts += 1;
                    if conflicts > CONFLICT_RETRIES {
                        break Err(message);
                    }
                    // A random pause, longer after each lost race: without it, a writer with a
                    // steady stream of appends could win every race against this one.
                    let ceiling = 1u64 << conflicts.min(7);
                    std::thread::sleep(std::time::Duration::from_micros(
                        rand::random::<u64>() % (ceiling * 500),
                    ));
                    if let Err(e) = self.resync() {
                        let message = format!(
                            "another writer appended to the ledger, and its new end cannot be \
                             read ({e}); writing resumes once it can be"
                        );
                        self.failed = Some(message.clone());
                        break Err(message);
                    }
                }
                Err(Failure::Other(message)) => {
                    self.frontier = before;
                    break Err(message);
                }
            }
        };
        match result {
            Ok(first) => {
                let mut next = first;
                for (reply, count) in appended {
                    let _ = reply.send(Ok(next));
                    next += count;
                }
                for reply in checkpoint_replies {
                    let answer = self
                        .latest
                        .clone()
                        .ok_or_else(|| "no checkpoint".to_string());
                    let _ = reply.send(answer);
                }
            }
            Err(message) => {
                if !appended.is_empty() {
                    self.committed.lock().failed_appends += 1;
                }
                for (reply, _) in appended {
                    let _ = reply.send(Err(message.clone()));
                }
                for reply in checkpoint_replies {
                    let _ = reply.send(Err(message.clone()));
                }
            }
        }
    }

    /// Takes the log's end (size, frontier, latest checkpoint) from the store, after another
    /// writer appended to it.
    fn resync(&mut self) -> Result<(), LedgerError> {
        (self.frontier, self.latest) = log_end(self.store.as_ref(), self.key.verifier())?;
        Ok(())
    }

    /// [`WriterState::resync`] for a reader that asked, published to the readers (a writer
    /// whose last write's outcome was unknown recovers by the same resync).
    fn follow(&mut self) -> Result<(), String> {
        if self.failed.is_some() {
            self.recover()
                .map_err(|(Failure::Conflict(m) | Failure::Other(m))| m)?;
        } else {
            self.resync().map_err(|e| e.to_string())?;
        }
        let mut committed = self.committed.lock();
        committed.frontier.clone_from(&self.frontier);
        committed.latest.clone_from(&self.latest);
        Ok(())
    }

    /// After a write whose outcome is unknown (the storage went away mid-commit), reads the
    /// log's end again before writing more: the store says whether that commit happened, so
    /// writing resumes once the store answers, without reopening the ledger.
    fn recover(&mut self) -> Result<(), Failure> {
        let Some(failed) = self.failed.clone() else {
            return Ok(());
        };
        match self.resync() {
            Ok(()) => {
                tracing::info!("ledger storage answers again: writing resumes");
                self.failed = None;
                Ok(())
            }
            Err(e) => Err(Failure::Other(format!("{failed}; still: {e}"))),
        }
    }

    /// Writes the entries and, if one is due or requested, a checkpoint, in one transaction.
    fn write(
        &mut self,
        entries: &[StoredEntry],
        requested: bool,
        time_us: i64,
    ) -> Result<(), Failure> {
        self.recover()?;
        let size = self.frontier.size();
        let last = self.latest.as_ref().map(|c| c.checkpoint.size);
        let every = self.signing.every;
        let stale = self.signing.interval_us.is_some_and(|interval| {
            self.latest
                .as_ref()
                .is_none_or(|c| time_us.saturating_sub(c.time_us) >= interval)
        });
        let due = last != Some(size)
            && size > 0
            && ((every > 0 && size.saturating_sub(last.unwrap_or(0)) >= every) || stale);
        let checkpoint = if (requested && last != Some(size)) || due {
            let checkpoint = Checkpoint {
                origin: self.key.name().to_string(),
                size,
                root: self.frontier.root(),
            };
            let note = checkpoint
                .sign(&self.key)
                .map_err(|e| Failure::Other(e.to_string()))?;
            Some(SignedCheckpoint {
                seq: self.latest.as_ref().map_or(1, |c| c.seq + 1),
                checkpoint,
                note,
                time_us,
            })
        } else {
            None
        };
        if entries.is_empty() && checkpoint.is_none() {
            return Ok(());
        }
        let stored = checkpoint.as_ref().map(|c| StoredCheckpoint {
            seq: c.seq,
            size: c.checkpoint.size,
            note: c.note.clone(),
            time_us: c.time_us,
        });
        if let Err(e) = self.store.append(entries, stored.as_ref()) {
            let message = e.to_string();
            if matches!(e, StoreError::Conflict { .. }) {
                return Err(Failure::Conflict(message));
            }
            // The transaction should have rolled back; if the store disagrees, stop writing.
            let start = entries.first().map_or(size, |e| e.index);
            if !matches!(self.store.size(), Ok(s) if s == start) {
                self.failed = Some(format!(
                    "the ledger's storage is in an unknown state after a failed write \
                     ({message}); writing resumes once its end can be read again"
                ));
            }
            return Err(Failure::Other(message));
        }
        if checkpoint.is_some() {
            self.latest = checkpoint;
        }
        let mut committed = self.committed.lock();
        committed.frontier.clone_from(&self.frontier);
        committed.latest.clone_from(&self.latest);
        Ok(())
    }
}
