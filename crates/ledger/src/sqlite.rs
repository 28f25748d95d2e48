//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`, so a committed
//! transaction has reached the disk (one fsync of the write-ahead log per commit).
//!
//! ```sql
//! CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
//!   -- 'format' = 'truststack-ledger/1', 'verifier_key' = '<name>+<hex8>+<base64>'
//! CREATE TABLE entries (
//!   idx    INTEGER PRIMARY KEY, -- position in the log, from 0
//!   record TEXT    NOT NULL,    -- canonical JSON (RFC 8785)
//!   leaf   BLOB    NOT NULL,    -- SHA-256(0x00 || record)
//!   nodes  BLOB    NOT NULL,    -- 32-byte hashes of the perfect subtrees this entry completes,
//!                               -- level 1 first (idx.trailing_ones() of them)
//!   time   INTEGER NOT NULL     -- commit time, microseconds since the Unix epoch
//! );
//! CREATE TABLE checkpoints (
//!   seq  INTEGER PRIMARY KEY,   -- 1, 2, ... in signing order
//!   size INTEGER NOT NULL,      -- tree size (also in the note)
//!   note TEXT    NOT NULL,      -- the signed note, verbatim
//!   time INTEGER NOT NULL
//! );
//! ```
//!
//! The perfect subtree (level `l ≥ 1`, index `j`) covers entries `[j·2^l, (j+1)·2^l)`; it is
//! completed by the last of them, so it is stored in the `nodes` of entry `(j+1)·2^l − 1` at
//! offset `32·(l−1)`. Every perfect subtree is therefore one primary-key lookup away, which keeps
//! proofs at O(log n) lookups, and a verifier reads everything in one pass over `entries`.

use crate::merkle::Hash;
use crate::store::{
    check_format_marker, check_placement, decode_entry, encode_nodes, LedgerStore, StoreError,
    StoredCheckpoint, StoredEntry, WantedNodes,
};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use std::path::Path;
use std::sync::mpsc::{self, SyncSender};
use std::thread::JoinHandle;

/// The value of `meta.format` this code reads and writes.
pub const FORMAT: &str = "truststack-ledger/1";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
  idx INTEGER PRIMARY KEY,
  record TEXT NOT NULL,
  leaf BLOB NOT NULL,
  nodes BLOB NOT NULL,
  time INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
  seq INTEGER PRIMARY KEY,
  size INTEGER NOT NULL,
  note TEXT NOT NULL,
  time INTEGER NOT NULL
);
";

/// A ledger in one SQLite file.
pub struct SqliteStore {
    /// For a store opened for writing: copies committed write-ahead log pages into the database
    /// file in the background. (Stopped before `conn` closes, as fields drop in order.)
    checkpointer: Option<Checkpointer>,
    conn: Connection,
    /// For a store opened for writing: the exclusive lock on `<ledger>.lock` that makes this
    /// process the ledger's one writer (released when the store closes, or the process dies).
    _writer: Option<std::fs::File>,
}

/// Makes this process the ledger's one writer, or says which file another writer holds. A
/// lock file beside the ledger, not the ledger itself: closing any descriptor of the database
/// file would drop the POSIX locks SQLite holds on it in this process.
fn lock_writer(path: &Path) -> Result<std::fs::File, StoreError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = std::path::PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::Lock {
            path: lock_path.display().to_string(),
            detail: e.to_string(),
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse {
            path: path.display().to_string(),
            lock: lock_path.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Lock {
            path: lock_path.display().to_string(),
            detail: e.to_string(),
        }),
    }
}

/// How much a writer appends to the write-ahead log before the background checkpointer copies
/// it into the database file: SQLite's own default (1000 pages of 4 KiB).
const CHECKPOINT_BYTES: usize = 4 << 20;

/// SQLite's automatic checkpoint, as a backstop, only once the log is this many pages long
/// (should the background checkpointer fall behind).
const AUTO_CHECKPOINT_PAGES: u32 = 16_000;

/// A thread with its own connection that checkpoints the write-ahead log when asked. A
/// checkpoint copies 4 MiB of pages into the database file and syncs it; run by SQLite inside
/// the commit that fills the log (its default), it held up the writer about 40 ms each time,
/// for nothing durability needs: the log's own sync at each commit already gives that.
struct Checkpointer {
    /// Bytes appended since the last request.
    pending: usize,
    wake: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Option<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ok()?;
        let (wake, requests) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("ledger-checkpoint".into())
            .spawn(move || {
                for () in requests {
                    // PASSIVE never blocks the writer; what it leaves is copied next time.
                    let _ = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);");
                }
            })
            .ok()?;
        Some(Checkpointer {
            pending: 0,
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    fn appended(&mut self, bytes: usize) {
        self.pending = self.pending.saturating_add(bytes);
        if self.pending >= CHECKPOINT_BYTES {
            self.pending = 0;
            if let Some(wake) = &self.wake {
                // Full: a checkpoint is already due, which will take these pages too.
                let _ = wake.try_send(());
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.wake.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A connection to the ledger file at `path` (`flags` besides no-mutex: each store's connection
/// is used by one thread at a time), waiting up to 10 s for another connection's lock.
fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let opened = |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(opened)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(opened)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens the ledger at `path` for writing, creating the file and schema if needed.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let opened = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let writer = lock_writer(path)?;
        let conn = connect(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(opened)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotALedger {
                path: path.display().to_string(),
                reason: format!("cannot switch to WAL mode (journal mode is {mode})"),
            });
        }
        conn.execute_batch("PRAGMA synchronous=FULL;")
            .map_err(opened)?;
        conn.execute_batch(SCHEMA).map_err(opened)?;
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('format', ?1)",
            [FORMAT],
        )?;
        let checkpointer = Checkpointer::start(path);
        if checkpointer.is_some() {
            conn.pragma_update(None, "wal_autocheckpoint", AUTO_CHECKPOINT_PAGES)
                .map_err(opened)?;
        }
        let store = SqliteStore {
            conn,
            checkpointer,
            _writer: Some(writer),
        };
        store.check_format(path)?;
        Ok(store)
    }

    /// Opens an existing ledger read-only (for verification, proofs and inspection).
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        if !path.is_file() {
            return Err(StoreError::NotALedger {
                path: shown,
                reason: "no such file".into(),
            });
        }
        let conn = connect(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let store = SqliteStore {
            conn,
            checkpointer: None,
            _writer: None,
        };
        store.check_format(path)?;
        Ok(store)
    }

    /// Opens an existing ledger for the reads of a writable [`crate::Ledger`]: the connection
    /// refuses writes (`query_only`) but, unlike a read-only one, may checkpoint the write-ahead
    /// log into the database file when it is the last to close.
    pub(crate) fn open_reader(path: &Path) -> Result<Self, StoreError> {
        let opened = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = connect(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        conn.execute_batch("PRAGMA query_only=1;").map_err(opened)?;
        let store = SqliteStore {
            conn,
            checkpointer: None,
            _writer: None,
        };
        store.check_format(path)?;
        Ok(store.with_mmap())
    }

    /// Maps the file into memory for reads (faster proofs and verification).
    pub(crate) fn with_mmap(self) -> Self {
        // Best effort: SQLite falls back to read() when mapping is unavailable.
        let _ = self.conn.execute_batch("PRAGMA mmap_size=17179869184;");
        self
    }

    fn check_format(&self, path: &Path) -> Result<(), StoreError> {
        let format: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| StoreError::NotALedger {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        check_format_marker(|| path.display().to_string(), format)
    }

    /// The underlying connection (tests use it to tamper with a ledger).
    #[doc(hidden)]
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// One more than the highest index (0 when empty).
fn size_of(conn: &Connection) -> Result<u64, StoreError> {
    let max: Option<u64> = conn
        .prepare_cached("SELECT max(idx) FROM entries")?
        .query_row([], |r| r.get(0))?;
    Ok(max.map_or(0, |m| m.saturating_add(1)))
}

fn read_entry(row: &Row<'_>) -> Result<StoredEntry, StoreError> {
    let index: u64 = row.get(0)?;
    let data = column_bytes(row, 1, index, "record")?.to_vec();
    let leaf = column_bytes(row, 2, index, "leaf hash")?;
    let nodes = column_bytes(row, 3, index, "tree nodes")?;
    decode_entry(index, data, leaf, nodes, row.get(4)?)
}

/// Column `col` of entry `index`'s row, borrowed from the row (text or blob).
fn column_bytes<'r>(
    row: &'r Row<'_>,
    col: usize,
    index: u64,
    what: &'static str,
) -> Result<&'r [u8], StoreError> {
    match row.get_ref(col)? {
        ValueRef::Text(b) | ValueRef::Blob(b) => Ok(b),
        other => Err(StoreError::Malformed {
            index,
            what,
            detail: format!("holds {:?}, not bytes", other.data_type()),
        }),
    }
}

/// The inserts of one append, inside the transaction [`SqliteStore::append`] opened.
fn write_entries(
    conn: &Connection,
    entries: &[StoredEntry],
    checkpoint: Option<&StoredCheckpoint>,
) -> Result<(), StoreError> {
    if !entries.is_empty() {
        check_placement(size_of(conn)?, entries)?;
        let mut insert = conn.prepare_cached(
            "INSERT INTO entries (idx, record, leaf, nodes, time) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut nodes = Vec::with_capacity(64 * 32);
        for e in entries {
            let record = e.record_text()?;
            encode_nodes(&e.nodes, &mut nodes);
            insert.execute(params![e.index, record, &e.leaf[..], &nodes[..], e.time_us])?;
        }
    }
    if let Some(c) = checkpoint {
        conn.prepare_cached(
            "INSERT INTO checkpoints (seq, size, note, time) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![c.seq, c.size, c.note, c.time_us])?;
    }
    Ok(())
}

fn read_checkpoint(row: &Row<'_>) -> rusqlite::Result<StoredCheckpoint> {
    Ok(StoredCheckpoint {
        seq: row.get(0)?,
        size: row.get(1)?,
        note: row.get(2)?,
        time_us: row.get(3)?,
    })
}

impl LedgerStore for SqliteStore {
    fn size(&self) -> Result<u64, StoreError> {
        size_of(&self.conn)
    }

    fn append(
        &mut self,
        entries: &[StoredEntry],
        checkpoint: Option<&StoredCheckpoint>,
    ) -> Result<(), StoreError> {
        // BEGIN and COMMIT as cached statements: a transaction per group commit would otherwise
        // parse both every time.
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let written = write_entries(&self.conn, entries, checkpoint)
            .and_then(|()| Ok(self.conn.prepare_cached("COMMIT")?.execute([])?));
        if let Err(e) = written {
            // A failed COMMIT may already have rolled back; then this has nothing to undo.
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(e);
        }
        if let Some(checkpointer) = &mut self.checkpointer {
            let bytes = entries
                .iter()
                .map(|e| e.data.len() + 32 * (e.nodes.len() + 2));
            checkpointer.appended(bytes.sum());
        }
        Ok(())
    }

    fn scan(&self, from: u64, limit: usize) -> Result<Vec<StoredEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT idx, record, leaf, nodes, time FROM entries WHERE idx >= ?1 ORDER BY idx LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![from, limit])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(read_entry(row)?);
        }
        Ok(out)
    }

    /// One query for all of them, so a proof costs one statement (and one read lock) rather than
    /// one per node.
    fn nodes(&self, wanted: &[(u32, u64)]) -> Result<Vec<Hash>, StoreError> {
        let mut nodes = WantedNodes::new(wanted)?;
        let list = nodes
            .holders
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut stmt = self.conn.prepare_cached(
            "SELECT idx, leaf, nodes FROM entries WHERE idx IN (SELECT value FROM json_each(?1))",
        )?;
        let mut rows = stmt.query([format!("[{list}]")])?;
        while let Some(row) = rows.next()? {
            let idx: u64 = row.get(0)?;
            nodes.row(
                idx,
                column_bytes(row, 1, idx, "leaf")?,
                column_bytes(row, 2, idx, "nodes")?,
            )?;
        }
        nodes.hashes()
    }

    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, size, note, time FROM checkpoints ORDER BY seq")?;
        let rows = stmt.query_map([], read_checkpoint)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT seq, size, note, time FROM checkpoints ORDER BY seq DESC LIMIT 1",
            )?
            .query_row([], read_checkpoint)
            .optional()?)
    }

    fn verifier_key(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = 'verifier_key'")?
            .query_row([], |r| r.get(0))
            .optional()?)
    }

    fn set_verifier_key(&mut self, key: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('verifier_key', ?1)",
            [key],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::leaf_hash;

    fn entry(index: u64) -> StoredEntry {
        let data = format!("{{\"n\":{index}}}").into_bytes();
        StoredEntry {
            index,
            leaf: leaf_hash(&data),
            data,
            time_us: 0,
            nodes: Vec::new(),
        }
    }

    #[test]
    fn a_ledger_has_one_writer_and_any_number_of_readers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let mut first = SqliteStore::open(&path).unwrap();
        first.append(&[entry(0)], None).unwrap();
        let err = SqliteStore::open(&path).err().unwrap();
        assert!(
            matches!(&err, StoreError::InUse { lock, .. } if lock.ends_with("ledger.db.lock")),
            "{err}"
        );
        SqliteStore::open_read_only(&path).unwrap();
        drop(first);
        SqliteStore::open(&path).unwrap();
    }

    #[test]
    fn a_failed_append_rolls_back_whole_and_the_next_one_commits() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("ledger.db")).unwrap();
        store.append(&[entry(0)], None).unwrap();
        // Refused before any insert: the log has 1 entry, not 5.
        let err = store.append(&[entry(5)], None).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Conflict {
                    expected: 5,
                    found: 1
                }
            ),
            "{err}"
        );
        // Refused by SQLite after the first insert: the second repeats its index.
        let err = store.append(&[entry(1), entry(1)], None).unwrap_err();
        assert!(matches!(err, StoreError::Sqlite(_)), "{err}");
        // Not a byte of either stayed, and the connection is not left inside a transaction.
        assert_eq!(store.size().unwrap(), 1);
        store.append(&[entry(1), entry(2)], None).unwrap();
        assert_eq!(store.size().unwrap(), 3);
        drop(store);
        let reopened = SqliteStore::open_read_only(&dir.path().join("ledger.db")).unwrap();
        assert_eq!(reopened.size().unwrap(), 3);
        assert_eq!(
            reopened.scan(0, 10).unwrap(),
            vec![entry(0), entry(1), entry(2)]
        );
    }
}
