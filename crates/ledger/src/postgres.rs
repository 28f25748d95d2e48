//! The shared backend: a PostgreSQL database, which several `truststack serve` replicas can
//! reach. The tables mirror the SQLite file's ([`crate::sqlite`]), so an entry and its stored
//! subtree hashes are read and verified the same way:
//!
//! ```sql
//! CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied TIMESTAMPTZ NOT NULL);
//! CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
//!   -- 'format' = 'truststack-ledger/1', 'verifier_key' = '<name>+<hex8>+<base64>'
//! CREATE TABLE sequencer (one BOOLEAN PRIMARY KEY CHECK (one));  -- one row, locked by appends
//! CREATE TABLE entries (
//!   idx    BIGINT PRIMARY KEY CHECK (idx >= 0),
//!   record TEXT   NOT NULL,   -- canonical JSON (RFC 8785)
//!   leaf   BYTEA  NOT NULL,   -- SHA-256(0x00 || record)
//!   nodes  BYTEA  NOT NULL,   -- the perfect subtrees this entry completes, level 1 first
//!   time   BIGINT NOT NULL    -- commit time, microseconds since the Unix epoch
//! );
//! CREATE TABLE checkpoints (
//!   seq BIGINT PRIMARY KEY, size BIGINT NOT NULL, note TEXT NOT NULL, time BIGINT NOT NULL
//! );
//! ```
//!
//! An append is one transaction: it locks the `sequencer` row (`SELECT … FOR UPDATE`), so
//! appends from every connection to the database are serialized, then checks that the log's size
//! is the index it appends at, inserts, and commits with `synchronous_commit = on`: when
//! [`LedgerStore::append`] returns, the entries are durable. A writer that lost the race gets
//! [`StoreError::Conflict`]; the primary keys on `idx` and `seq` make two entries at one index
//! impossible even without the lock.
//!
//! The schema is versioned: each migration in [`MIGRATIONS`] is applied once, at open, under a
//! transaction-scoped advisory lock (replicas starting together apply it once), and recorded in
//! `schema_version`. A database of a newer version than this build knows is refused.

use crate::location::PostgresUrl;
use crate::merkle::Hash;
use crate::sqlite::FORMAT;
use crate::store::{
    check_format_marker, check_placement, decode_entry, encode_nodes, LedgerStore, StoreError,
    StoredCheckpoint, StoredEntry, WantedNodes,
};
use parking_lot::{MappedMutexGuard, Mutex, MutexGuard};
use postgres::error::SqlState;
use postgres::{Client, NoTls, Row};
use std::time::Duration;

/// The schema migrations, in order: version `i + 1` is `MIGRATIONS[i]`.
const MIGRATIONS: &[&str] = &["
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sequencer (one BOOLEAN PRIMARY KEY CHECK (one));
INSERT INTO sequencer VALUES (TRUE);
CREATE TABLE entries (
  idx BIGINT PRIMARY KEY CHECK (idx >= 0),
  record TEXT NOT NULL,
  leaf BYTEA NOT NULL,
  nodes BYTEA NOT NULL,
  time BIGINT NOT NULL
);
CREATE TABLE checkpoints (
  seq BIGINT PRIMARY KEY CHECK (seq > 0),
  size BIGINT NOT NULL CHECK (size >= 0),
  note TEXT NOT NULL,
  time BIGINT NOT NULL
);
"];

/// The advisory lock that serializes schema migrations ("tslgmigr").
const MIGRATION_LOCK: i64 = 0x7473_6c67_6d69_6772;

/// How long connecting may take when the URL does not say (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A blocking client that is closed on a thread of its own when dropped: closing runs the
/// client's own runtime, which cannot start on a thread that drives an async runtime (a server
/// whose ledger is dropped on one of its workers).
struct Connection(Option<Client>);

impl std::ops::Deref for Connection {
    type Target = Client;
    fn deref(&self) -> &Client {
        match &self.0 {
            Some(client) => client,
            None => unreachable!("a connection is taken only when it is dropped"),
        }
    }
}

impl std::ops::DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut Client {
        match &mut self.0 {
            Some(client) => client,
            None => unreachable!("a connection is taken only when it is dropped"),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            let closing = std::thread::Builder::new()
                .name("postgres-close".into())
                .spawn(move || drop(client));
            if let Err(e) = closing {
                // The server sees the socket close instead.
                tracing::debug!(error = %e, "cannot close a database connection on its own thread");
            }
        }
    }
}

/// A ledger in a PostgreSQL database.
pub struct PostgresStore {
    url: PostgresUrl,
    read_only: bool,
    /// The connection; the blocking client needs `&mut` for every statement.
    client: Mutex<Connection>,
}

impl PostgresStore {
    /// Opens the ledger in the database at `url` for writing, creating or upgrading its schema.
    pub fn open(url: &PostgresUrl) -> Result<Self, StoreError> {
        let store = Self::connect(url, false)?;
        store.migrate()?;
        store.check_format()?;
        Ok(store)
    }

    /// Opens an existing ledger read-only: the session refuses writes, and nothing is created.
    pub fn open_read_only(url: &PostgresUrl) -> Result<Self, StoreError> {
        let store = Self::connect(url, true)?;
        let version = store
            .schema_version()?
            .ok_or_else(|| StoreError::NotALedger {
                path: url.to_string(),
                reason: "the database has no schema_version table".into(),
            })?;
        store.check_version(version)?;
        store.check_format()?;
        Ok(store)
    }

    fn connect(url: &PostgresUrl, read_only: bool) -> Result<Self, StoreError> {
        let client = connect_client(url, read_only)?;
        Ok(PostgresStore {
            url: url.clone(),
            read_only,
            client: Mutex::new(Connection(Some(client))),
        })
    }

    /// The connection, connected again if the server closed it (a restart): each statement and
    /// each append stands alone, so nothing is lost between connections.
    fn client(&self) -> Result<MappedMutexGuard<'_, Client>, StoreError> {
        let mut client = self.client.lock();
        if client.is_closed() {
            *client = Connection(Some(connect_client(&self.url, self.read_only)?));
        }
        Ok(MutexGuard::map(client, |c| &mut **c))
    }

    /// The underlying connection (tests use it to tamper with a ledger).
    #[doc(hidden)]
    pub fn connection(&self) -> Result<MappedMutexGuard<'_, Client>, StoreError> {
        self.client()
    }

    fn opened(&self, source: postgres::Error) -> StoreError {
        StoreError::PostgresOpen {
            location: self.url.to_string(),
            source,
        }
    }

    fn schema_version(&self) -> Result<Option<i32>, StoreError> {
        let mut client = self.client()?;
        let exists: bool = client
            .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
            .map_err(|e| self.opened(e))?
            .try_get(0)?;
        if !exists {
            return Ok(None);
        }
        let version: Option<i32> = client
            .query_one("SELECT max(version) FROM schema_version", &[])
            .map_err(|e| self.opened(e))?
            .try_get(0)?;
        Ok(Some(version.unwrap_or(0)))
    }

    fn check_version(&self, version: i32) -> Result<(), StoreError> {
        let supported = supported_version();
        if version > supported {
            return Err(StoreError::SchemaTooNew {
                location: self.url.to_string(),
                found: version,
                supported,
            });
        }
        if version < supported && self.read_only {
            return Err(StoreError::NotALedger {
                path: self.url.to_string(),
                reason: format!(
                    "ledger schema version {version} predates this build's ({supported}); open \
                     it for writing once to upgrade it"
                ),
            });
        }
        Ok(())
    }

    /// Applies the migrations the database lacks, each with its `schema_version` row, in one
    /// transaction.
    fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(|e| self.opened(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(|e| self.opened(e))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (
               version INTEGER PRIMARY KEY,
               applied TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .map_err(|e| self.opened(e))?;
        let current: i32 = tx
            .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
            .map_err(|e| self.opened(e))?
            .try_get(0)?;
        self.check_version(current)?;
        for (version, sql) in (1..)
            .zip(MIGRATIONS)
            .skip(usize::try_from(current).unwrap_or(0))
        {
            tx.batch_execute(sql).map_err(|e| self.opened(e))?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&version],
            )
            .map_err(|e| self.opened(e))?;
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('format', $1) ON CONFLICT (key) DO NOTHING",
            &[&FORMAT],
        )
        .map_err(|e| self.opened(e))?;
        tx.commit().map_err(|e| self.opened(e))?;
        Ok(())
    }

    fn check_format(&self) -> Result<(), StoreError> {
        let format: Option<String> = self
            .client()?
            .query_opt("SELECT value FROM meta WHERE key = 'format'", &[])
            .map_err(|e| StoreError::NotALedger {
                path: self.url.to_string(),
                reason: e.to_string(),
            })?
            .map(|r| r.try_get(0))
            .transpose()?;
        check_format_marker(|| self.url.to_string(), format)
    }
}

/// The error with its causes: the client's own message is only its kind ("db error"), the
/// server's message (and detail, and hint) is in the cause.
pub fn describe(error: &postgres::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string().replace('\n', "; "));
        cause = c.source();
    }
    text
}

fn supported_version() -> i32 {
    i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX)
}

fn connect_client(url: &PostgresUrl, read_only: bool) -> Result<Client, StoreError> {
    let opened = |source| StoreError::PostgresOpen {
        location: url.to_string(),
        source,
    };
    let mut config = url.config().clone();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("truststack");
    }
    let mut client = config.connect(NoTls).map_err(opened)?;
    // A server configured with synchronous_commit = off would acknowledge commits that are not
    // yet on disk; a decision waits for its record to be durable, so this session insists.
    let session = if read_only {
        "SET synchronous_commit = on; SET default_transaction_read_only = on;"
    } else {
        "SET synchronous_commit = on;"
    };
    client.batch_execute(session).map_err(opened)?;
    Ok(client)
}

/// An index as PostgreSQL stores it (`BIGINT`).
fn to_sql_index(index: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(index).map_err(|_| StoreError::Malformed {
        index,
        what,
        detail: "beyond the largest index PostgreSQL stores (2^63 - 1)".into(),
    })
}

/// A number read back as an index or a size: the schema's CHECKs keep them from being negative,
/// so a negative one was written around the schema.
fn from_sql_index(value: i64, what: &'static str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Negative { what, value })
}

fn read_entry(row: &Row) -> Result<StoredEntry, StoreError> {
    let index = from_sql_index(row.try_get(0)?, "entry index")?;
    let record: &str = row.try_get(1)?;
    let leaf: &[u8] = row.try_get(2)?;
    let nodes: &[u8] = row.try_get(3)?;
    decode_entry(
        index,
        record.as_bytes().to_vec(),
        leaf,
        nodes,
        row.try_get(4)?,
    )
}

fn read_checkpoint(row: &Row) -> Result<StoredCheckpoint, StoreError> {
    Ok(StoredCheckpoint {
        seq: from_sql_index(row.try_get(0)?, "checkpoint sequence number")?,
        size: from_sql_index(row.try_get(1)?, "checkpoint size")?,
        note: row.try_get(2)?,
        time_us: row.try_get(3)?,
    })
}

/// One more than the highest index (0 when empty).
fn size_of(client: &mut impl postgres::GenericClient) -> Result<u64, StoreError> {
    let max: Option<i64> = client
        .query_one("SELECT max(idx) FROM entries", &[])?
        .try_get(0)?;
    Ok(max
        .map(|m| from_sql_index(m, "entry index"))
        .transpose()?
        .map_or(0, |m| m.saturating_add(1)))
}

/// The inserts of one append, inside the transaction [`PostgresStore::append`] opened, which
/// holds the sequencer's lock.
fn write_entries(
    tx: &mut postgres::Transaction<'_>,
    entries: &[StoredEntry],
    checkpoint: Option<&StoredCheckpoint>,
) -> Result<(), StoreError> {
    if !entries.is_empty() {
        check_placement(size_of(tx)?, entries)?;
        let mut idx = Vec::with_capacity(entries.len());
        let mut records = Vec::with_capacity(entries.len());
        let mut leaves = Vec::with_capacity(entries.len());
        let mut nodes = Vec::with_capacity(entries.len());
        let mut times = Vec::with_capacity(entries.len());
        for e in entries {
            idx.push(to_sql_index(e.index, "index")?);
            records.push(e.record_text()?);
            leaves.push(&e.leaf[..]);
            let mut column = Vec::with_capacity(e.nodes.len() * 32);
            encode_nodes(&e.nodes, &mut column);
            nodes.push(column);
            times.push(e.time_us);
        }
        // One statement for the whole batch: a group commit of thousands of records is one
        // round trip, not thousands.
        tx.execute(
            "INSERT INTO entries (idx, record, leaf, nodes, time)
             SELECT * FROM unnest($1::BIGINT[], $2::TEXT[], $3::BYTEA[], $4::BYTEA[], $5::BIGINT[])",
            &[&idx, &records, &leaves, &nodes, &times],
        )?;
    }
    if let Some(c) = checkpoint {
        tx.execute(
            "INSERT INTO checkpoints (seq, size, note, time) VALUES ($1, $2, $3, $4)",
            &[
                &to_sql_index(c.seq, "checkpoint sequence number")?,
                &to_sql_index(c.size, "checkpoint size")?,
                &c.note,
                &c.time_us,
            ],
        )?;
    }
    Ok(())
}

impl LedgerStore for PostgresStore {
    fn size(&self) -> Result<u64, StoreError> {
        size_of(&mut *self.client()?)
    }

    fn append(
        &mut self,
        entries: &[StoredEntry],
        checkpoint: Option<&StoredCheckpoint>,
    ) -> Result<(), StoreError> {
        let mut client = self.client()?;
        let written = (|| {
            let mut tx = client.transaction()?;
            // Every appender queues here, whichever replica it runs in: the sequencer.
            tx.execute("SELECT one FROM sequencer FOR UPDATE", &[])?;
            write_entries(&mut tx, entries, checkpoint)?;
            tx.commit()?;
            Ok::<(), StoreError>(())
        })();
        // (A transaction that did not commit rolled back when it was dropped.)
        match written {
            Err(StoreError::Postgres(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                let expected = entries
                    .first()
                    .map_or_else(|| checkpoint.map_or(0, |c| c.size), |e| e.index);
                Err(StoreError::Conflict {
                    expected,
                    found: size_of(&mut *client)?,
                })
            }
            other => other,
        }
    }

    fn scan(&self, from: u64, limit: usize) -> Result<Vec<StoredEntry>, StoreError> {
        let Ok(from) = i64::try_from(from) else {
            return Ok(Vec::new());
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.client()?.query(
            "SELECT idx, record, leaf, nodes, time FROM entries WHERE idx >= $1 ORDER BY idx \
             LIMIT $2",
            &[&from, &limit],
        )?;
        rows.iter().map(read_entry).collect()
    }

    /// One query for all of them: a proof costs one round trip.
    fn nodes(&self, wanted: &[(u32, u64)]) -> Result<Vec<Hash>, StoreError> {
        let mut nodes = WantedNodes::new(wanted)?;
        // A holder beyond BIGINT is simply not stored.
        let keys: Vec<i64> = nodes
            .holders
            .iter()
            .filter_map(|&h| i64::try_from(h).ok())
            .collect();
        let rows = self.client()?.query(
            "SELECT idx, leaf, nodes FROM entries WHERE idx = ANY($1)",
            &[&keys],
        )?;
        for row in &rows {
            let idx = from_sql_index(row.try_get(0)?, "entry index")?;
            nodes.row(idx, row.try_get(1)?, row.try_get(2)?)?;
        }
        nodes.hashes()
    }

    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        self.client()?
            .query(
                "SELECT seq, size, note, time FROM checkpoints ORDER BY seq",
                &[],
            )?
            .iter()
            .map(read_checkpoint)
            .collect()
    }

    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.client()?
            .query_opt(
                "SELECT seq, size, note, time FROM checkpoints ORDER BY seq DESC LIMIT 1",
                &[],
            )?
            .as_ref()
            .map(read_checkpoint)
            .transpose()
    }

    fn verifier_key(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .client()?
            .query_opt("SELECT value FROM meta WHERE key = 'verifier_key'", &[])?
            .map(|r| r.try_get(0))
            .transpose()?)
    }

    /// Records the key unless one is recorded already: of two replicas creating the ledger at
    /// once, the first key wins and the other replica is told which it is.
    fn set_verifier_key(&mut self, key: &str) -> Result<(), StoreError> {
        let mut client = self.client()?;
        client.execute(
            "INSERT INTO meta (key, value) VALUES ('verifier_key', $1) ON CONFLICT (key) DO NOTHING",
            &[&key],
        )?;
        let stored: String = client
            .query_one("SELECT value FROM meta WHERE key = 'verifier_key'", &[])?
            .try_get(0)?;
        if stored != key {
            return Err(StoreError::VerifierKeyTaken { stored });
        }
        Ok(())
    }
}

/// The advisory lock replicas take turns on ("tsturn").
const TURN_LOCK: i64 = 0x7473_7475_726e_0000;

/// How long a replica waits for its turn before it gives up (and denies, failing closed).
const TURN_WAIT: &str = "10s";

/// Replicas' turns at their shared state: a session-level advisory lock, on a connection of its
/// own. A replica holds it while it reads what the others appended, decides and appends, so
/// every decision sees every record committed before it, whichever replica wrote it. A replica
/// that dies loses its turn with its connection.
pub struct TurnLock {
    url: PostgresUrl,
    client: Option<Connection>,
}

impl TurnLock {
    /// A lock on the database at `url`; it connects when first taken.
    pub fn new(url: &PostgresUrl) -> Self {
        TurnLock {
            url: url.clone(),
            client: None,
        }
    }

    /// Waits for this replica's turn (at most 10 s, then fails), connecting again if the
    /// connection was lost.
    pub fn acquire(&mut self) -> Result<(), StoreError> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        let client = match &mut self.client {
            Some(client) => client,
            None => {
                let mut client = connect_client(&self.url, false)?;
                client
                    .batch_execute(&format!("SET lock_timeout = '{TURN_WAIT}'"))
                    .map_err(StoreError::Postgres)?;
                self.client.insert(Connection(Some(client)))
            }
        };
        if let Err(e) = client.execute("SELECT pg_advisory_lock($1)", &[&TURN_LOCK]) {
            // A connection in an unknown state is not reused: closing it drops any lock it held.
            self.client = None;
            return Err(StoreError::Postgres(e));
        }
        Ok(())
    }

    /// Whether another replica is waiting for the turn: a replica that holds it and still has
    /// requests keeps it while none is (handing it on costs a round trip or two for nothing).
    pub fn others_waiting(&mut self) -> Result<bool, StoreError> {
        let Some(client) = &mut self.client else {
            return Ok(false);
        };
        // An advisory lock on a bigint key is listed by its high and low 32 bits.
        let row = client.query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1)",
            &[&(TURN_LOCK >> 32), &(TURN_LOCK & 0xffff_ffff)],
        )?;
        Ok(row.try_get(0)?)
    }

    /// Ends this replica's turn. If the database cannot be told, the connection is closed,
    /// which ends the turn as surely.
    pub fn release(&mut self) {
        if let Some(client) = &mut self.client {
            if client
                .execute("SELECT pg_advisory_unlock($1)", &[&TURN_LOCK])
                .is_err()
            {
                self.client = None;
            }
        }
    }
}
