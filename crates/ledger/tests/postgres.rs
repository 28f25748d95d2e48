//! The PostgreSQL store on a real server (a fresh database per test, see
//! `truststack_testkit::postgres`): the store's contract as the SQLite store keeps it, two
//! writers on two connections, durability across connections, the schema's versions, and the
//! same log, proofs and signed checkpoints as SQLite for the same records.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{record, Fixture};
use serde_json::Value;
use std::sync::{Arc, Barrier};
use truststack_ledger::merkle::{leaf_hash, Frontier, Hash};
use truststack_ledger::postgres::PostgresStore;
use truststack_ledger::store::{LedgerStore, StoreError, StoredCheckpoint, StoredEntry};
use truststack_ledger::verify::{verify_at, verify_file, Location, VerifyError};
use truststack_ledger::{Ledger, LedgerLocation, PostgresUrl};
use truststack_testkit::assert_contains;
use truststack_testkit::postgres::{database, TestDatabase};

fn url(db: &TestDatabase) -> PostgresUrl {
    PostgresUrl::parse(db.url()).unwrap()
}

fn location(db: &TestDatabase) -> LedgerLocation {
    LedgerLocation::parse(db.url()).unwrap()
}

/// Entries `from..to` of a log of `{"n": i}` records, with their subtree hashes.
fn entries(from: u64, to: u64) -> Vec<StoredEntry> {
    let mut frontier = Frontier::new();
    let mut out = Vec::new();
    for index in 0..to {
        let data = format!("{{\"n\":{index}}}").into_bytes();
        let leaf = leaf_hash(&data);
        let mut nodes = Vec::new();
        frontier.push(leaf, &mut nodes);
        if index >= from {
            out.push(StoredEntry {
                index,
                data,
                leaf,
                time_us: 1_700_000_000_000_000 + index as i64,
                nodes,
            });
        }
    }
    out
}

fn checkpoint(seq: u64, size: u64) -> StoredCheckpoint {
    StoredCheckpoint {
        seq,
        size,
        note: format!("note {seq}\n"),
        time_us: 7,
    }
}

#[test]
fn appended_entries_nodes_and_checkpoints_read_back_as_stored() {
    let db = database();
    let mut store = PostgresStore::open(&url(&db)).unwrap();
    assert_eq!(store.size().unwrap(), 0);
    assert_eq!(store.verifier_key().unwrap(), None);
    assert_eq!(store.latest_checkpoint().unwrap(), None);
    store.set_verifier_key("log+01020304+AAAA").unwrap();
    let all = entries(0, 20);
    store.append(&all[..8], Some(&checkpoint(1, 8))).unwrap();
    store.append(&all[8..], None).unwrap();
    store.append(&[], Some(&checkpoint(2, 20))).unwrap();

    assert_eq!(store.size().unwrap(), 20);
    assert_eq!(store.scan(0, 100).unwrap(), all);
    assert_eq!(store.scan(5, 3).unwrap(), all[5..8]);
    assert_eq!(store.scan(20, 3).unwrap(), vec![]);
    assert_eq!(
        store.checkpoints().unwrap(),
        vec![checkpoint(1, 8), checkpoint(2, 20)]
    );
    assert_eq!(store.latest_checkpoint().unwrap(), Some(checkpoint(2, 20)));
    assert_eq!(
        store.verifier_key().unwrap().as_deref(),
        Some("log+01020304+AAAA")
    );

    // Every perfect subtree, as the tree of the 20 leaves has it.
    let leaves: Vec<Hash> = all.iter().map(|e| e.leaf).collect();
    let memory = common::Memory::new(&leaves[..16]);
    let mut wanted = Vec::new();
    for (level, hashes) in memory.0.iter().enumerate() {
        for index in 0..hashes.len() as u64 {
            wanted.push((level as u32, index));
        }
    }
    let expected: Vec<Hash> = wanted
        .iter()
        .map(|&(l, i)| memory.0[l as usize][i as usize])
        .collect();
    assert_eq!(store.nodes(&wanted).unwrap(), expected);
    assert_eq!(store.node(4, 0).unwrap(), memory.0[4][0]);
    assert!(matches!(
        store.node(4, 1),
        Err(StoreError::MissingNode { level: 4, index: 1 })
    ));
}

#[test]
fn a_failed_append_rolls_back_whole_and_the_next_one_commits() {
    let db = database();
    let mut store = PostgresStore::open(&url(&db)).unwrap();
    let all = entries(0, 3);
    store.append(&all[..1], None).unwrap();
    // Refused before any insert: the log has 1 entry, not 2.
    let err = store.append(&all[2..], None).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 2,
                found: 1
            }
        ),
        "{err}"
    );
    // Refused by the primary key: the batch repeats an index. Nothing of it stays.
    let twice = [all[1].clone(), all[1].clone()];
    let err = store.append(&twice, None).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    // A checkpoint whose sequence number is taken is refused too, and so is its batch.
    store.append(&[], Some(&checkpoint(1, 1))).unwrap();
    let err = store
        .append(&all[1..2], Some(&checkpoint(1, 2)))
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert_eq!(store.size().unwrap(), 1);
    store.append(&all[1..], Some(&checkpoint(2, 3))).unwrap();
    assert_eq!(store.size().unwrap(), 3);
    assert_eq!(store.scan(0, 10).unwrap(), all);
}

#[test]
fn of_two_writers_on_two_connections_the_second_is_told_of_the_first() {
    let db = database();
    let mut first = PostgresStore::open(&url(&db)).unwrap();
    let mut second = PostgresStore::open(&url(&db)).unwrap();
    let all = entries(0, 4);
    first.append(&all[..2], None).unwrap();
    // The second writer still thinks the log has no entries.
    let err = second.append(&all[..1], None).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 0,
                found: 2
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "another writer changed the ledger: expected to append at index 0, but it has 2 entries"
    );
    second.append(&all[2..], None).unwrap();
    assert_eq!(first.scan(0, 10).unwrap(), all);
}

#[test]
fn racing_writers_never_share_an_index() {
    // Eight connections append at the index they last saw, as fast as they can: the sequencer
    // lets exactly one append through per index, and the log has no gap and no repeat.
    let db = database();
    let url = url(&db);
    let all = Arc::new(entries(0, 200));
    let start = Arc::new(Barrier::new(8));
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let (url, all, start) = (url.clone(), Arc::clone(&all), Arc::clone(&start));
            std::thread::spawn(move || {
                let mut store = PostgresStore::open(&url).unwrap();
                start.wait();
                let mut won = 0;
                loop {
                    let at = store.size().unwrap() as usize;
                    if at >= all.len() {
                        return won;
                    }
                    let end = (at + 3).min(all.len());
                    match store.append(&all[at..end], None) {
                        Ok(()) => won += end - at,
                        Err(StoreError::Conflict { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    let won: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(won, 200);
    let store = PostgresStore::open_read_only(&url).unwrap();
    assert_eq!(store.scan(0, 1000).unwrap(), *all);
}

#[test]
fn appends_are_durable_across_connections_and_reopening() {
    let db = database();
    let f = Fixture::new();
    let config = f.config(7);
    let ledger = Ledger::open_at(&location(&db), &config).unwrap();
    for i in 0..30 {
        ledger.append(&record(i)).unwrap();
    }
    // Committed when append returned: another connection sees every entry now.
    let other = PostgresStore::open_read_only(&url(&db)).unwrap();
    assert_eq!(other.size().unwrap(), 30);
    let root = ledger.root();
    ledger.close();

    let reopened = Ledger::open_at(&location(&db), &config).unwrap();
    assert_eq!((reopened.len(), reopened.root()), (30, root));
    reopened.append(&record(30)).unwrap();
    let c = reopened.checkpoint().unwrap();
    assert_eq!(c.checkpoint.size, 31);
    reopened.close();
    let report = verify_at(&location(&db), None).unwrap();
    assert_eq!(report.entries, 31);
    // Checkpoints at 7, 14, 21, 28, and the one asked for at 31 (closing at 30 signed one too).
    assert_eq!(report.checkpoints, 6);
}

#[test]
fn the_schema_is_versioned_and_applied_once() {
    let db = database();
    drop(PostgresStore::open(&url(&db)).unwrap());
    drop(PostgresStore::open(&url(&db)).unwrap());
    let mut sql = db.connect();
    let versions: Vec<i32> = sql
        .query("SELECT version FROM schema_version ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1]);
    // A database a newer release upgraded is refused, not misread.
    sql.execute("INSERT INTO schema_version (version) VALUES (2)", &[])
        .unwrap();
    for err in [
        PostgresStore::open(&url(&db)).err().unwrap(),
        PostgresStore::open_read_only(&url(&db)).err().unwrap(),
    ] {
        assert_eq!(
            err.to_string(),
            format!(
                "{}: ledger schema version 2 is newer than this build of truststack supports (1)",
                db.url()
            )
        );
    }
}

#[test]
fn read_only_opening_creates_nothing_and_says_why() {
    let db = database();
    let err = PostgresStore::open_read_only(&url(&db)).err().unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "{} is not a TrustStack ledger (the database has no schema_version table)",
            db.url()
        )
    );
    let tables: i64 = db
        .connect()
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);
    // And a read-only store cannot write.
    drop(PostgresStore::open(&url(&db)).unwrap());
    let mut ro = PostgresStore::open_read_only(&url(&db)).unwrap();
    let err = ro.append(&entries(0, 1), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "postgres: db error: ERROR: cannot execute SELECT FOR UPDATE in a read-only transaction"
    );
}

#[test]
fn an_unreachable_server_is_named_without_its_password() {
    let port = truststack_testkit::net::free_port();
    let text = format!("postgres://ts:s3cret@127.0.0.1:{port}/ledger?connect_timeout=2");
    let f = Fixture::new();
    let err = Ledger::open_at(&LedgerLocation::parse(&text).unwrap(), &f.config(0))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "postgres://ts:***@127.0.0.1:{port}/ledger?connect_timeout=2: error connecting to \
             server: Connection refused"
        )),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}

#[test]
fn two_ledgers_with_different_keys_cannot_share_a_database() {
    let db = database();
    let (a, b) = (Fixture::new(), Fixture::new());
    drop(Ledger::open_at(&location(&db), &a.config(0)).unwrap());
    let err = Ledger::open_at(&location(&db), &b.config(0)).unwrap_err();
    assert_contains!(err.to_string(), "the ledger was created with key");
    // The store itself refuses a second key.
    let mut store = PostgresStore::open(&url(&db)).unwrap();
    let err = store.set_verifier_key("other+00000000+AAAA").unwrap_err();
    assert_contains!(err.to_string(), "the ledger already records verifier key");
}

/// Appends the same records to a ledger, one by one then as a batch, and signs a checkpoint;
/// the log's roots, proofs and signed checkpoints.
fn fill(ledger: &Ledger) -> (Vec<Hash>, Vec<String>, Vec<Value>) {
    for i in 0..40 {
        ledger.append(&record(i)).unwrap();
    }
    let batch: Vec<Value> = (40..75).map(record).collect();
    ledger.append_batch(&batch).unwrap();
    ledger.checkpoint().unwrap();
    let roots = (0..=ledger.len())
        .map(|n| ledger.root_at(n).unwrap())
        .collect();
    let notes = ledger
        .checkpoints()
        .unwrap()
        .into_iter()
        .map(|c| c.note)
        .collect();
    let mut proofs = Vec::new();
    for (index, size) in [(0, 1), (3, 16), (39, 40), (40, 75), (74, 75), (17, 33)] {
        proofs.push(serde_json::to_value(ledger.inclusion_proof(index, size).unwrap()).unwrap());
    }
    for (old, new) in [(0, 75), (1, 75), (16, 40), (33, 64), (40, 75), (75, 75)] {
        proofs.push(serde_json::to_value(ledger.consistency_proof(old, new).unwrap()).unwrap());
    }
    (roots, notes, proofs)
}

#[test]
fn the_same_records_make_the_same_log_in_sqlite_and_postgres() {
    let db = database();
    let f = Fixture::new();
    let config = f.config(16);
    let sqlite = Ledger::open(&f.db, &config).unwrap();
    let postgres = Ledger::open_at(&location(&db), &config).unwrap();
    let from_sqlite = fill(&sqlite);
    let from_postgres = fill(&postgres);
    assert_eq!(from_sqlite.1.len(), 3, "checkpoints at 16, 32 and 75");
    assert_eq!(from_sqlite, from_postgres);
    let entries = |l: &Ledger| {
        l.entries(0..l.len())
            .unwrap()
            .into_iter()
            .map(|e| (e.index, e.data, e.leaf))
            .collect::<Vec<_>>()
    };
    assert_eq!(entries(&sqlite), entries(&postgres));
    sqlite.close();
    postgres.close();
    let (a, b) = (
        verify_file(&f.db, None).unwrap(),
        verify_at(&location(&db), None).unwrap(),
    );
    assert_eq!(
        (a.entries, a.checkpoints, a.root),
        (b.entries, b.checkpoints, b.root)
    );
}

/// A verified ledger of 40 records in `db`, checkpoints every 8.
fn filled(db: &TestDatabase) -> Fixture {
    let f = Fixture::new();
    let ledger = Ledger::open_at(&location(db), &f.config(8)).unwrap();
    for i in 0..40 {
        ledger.append(&record(i)).unwrap();
    }
    ledger.close();
    verify_at(&location(db), None).unwrap();
    f
}

#[test]
fn a_tampered_row_is_caught_and_named_as_for_sqlite() {
    let db = database();
    let _f = filled(&db);
    let mut sql = db.connect();
    sql.execute(
        "UPDATE entries SET record = replace(record, '\"c-17\"', '\"c-71\"') WHERE idx = 17",
        &[],
    )
    .unwrap();
    let err = verify_at(&location(&db), None).unwrap_err();
    assert_eq!(err.location(), Location::Entry(17), "{err}");
    assert_eq!(
        err.to_string(),
        "entry 17: stored record does not hash to its leaf"
    );
    // Rewritten with its leaf hash, the record still disagrees with the stored tree.
    sql.execute(
        "UPDATE entries SET leaf = sha256('\\x00'::bytea || convert_to(record, 'UTF8')) \
         WHERE idx = 17",
        &[],
    )
    .unwrap();
    let err = verify_at(&location(&db), None).unwrap_err();
    assert!(matches!(err, VerifyError::NodeMismatch { .. }), "{err}");
    assert_eq!(err.first_bad_index(), Some(16), "{err}");
    assert_contains!(
        err.to_string(),
        "entries 16..=17: stored tree node (level 1, index 8)"
    );
}

/// What `verify` says of a filled ledger after `sql` ran on it.
fn verified_after(sql: &str) -> VerifyError {
    let db = database();
    let _f = filled(&db);
    db.connect().execute(sql, &[]).unwrap();
    verify_at(&location(&db), None).unwrap_err()
}

#[test]
fn deleted_rows_are_named_as_for_sqlite() {
    let err = verified_after("DELETE FROM entries WHERE idx = 20");
    assert_eq!(
        err.to_string(),
        "entry 20 missing: indices jump from 19 to 21"
    );

    let err = verified_after("DELETE FROM entries WHERE idx >= 30");
    assert_eq!(
        err.to_string(),
        "checkpoint at size 32 (checkpoint 4): the log has only 30 entries; entries 30..32 \
         are missing (truncated)"
    );

    let err = verified_after("DELETE FROM checkpoints WHERE seq = 2");
    assert_eq!(err.location(), Location::Checkpoint(2), "{err}");
    assert_eq!(
        err.to_string(),
        "checkpoint 2 missing: sequence numbers jump from 1 to 3"
    );
}

#[test]
fn two_ledgers_writing_one_database_take_turns_and_the_log_verifies() {
    // Two writers (as two replicas would be) with the same key, appending at once: each one
    // that finds the other appended first places its batch after the other's, signs its
    // checkpoints at the log's real end, and every record lands exactly once.
    let db = database();
    let f = Fixture::new();
    let config = f.config(10);
    let writers: Vec<Arc<Ledger>> = (0..2)
        .map(|_| Arc::new(Ledger::open_at(&location(&db), &config).unwrap()))
        .collect();
    let start = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (ledger, start) = (Arc::clone(&writers[(t % 2) as usize]), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                (0..25)
                    .map(|i| {
                        let n = t * 1000 + i;
                        (ledger.append(&record(n)).unwrap(), n)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut placed: Vec<(u64, u64)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    placed.sort();
    assert_eq!(
        placed.iter().map(|p| p.0).collect::<Vec<_>>(),
        (0..100).collect::<Vec<_>>(),
        "every index once"
    );
    for ledger in &writers {
        ledger.checkpoint().unwrap();
    }
    drop(writers);
    let reader = Ledger::open_read_only_at(&location(&db)).unwrap();
    assert_eq!(reader.len(), 100);
    for (index, n) in placed {
        assert_eq!(reader.entry(index).unwrap().record().unwrap(), record(n));
    }
    let report = verify_at(&location(&db), None).unwrap();
    assert_eq!(report.entries, 100);
    assert!(report.checkpoints >= 10, "{report}");
}

#[test]
fn a_shared_ledger_is_signed_at_least_every_second_while_it_grows() {
    let (f, db) = (Fixture::new(), database());
    // As `[ledger]` settings open a database: no checkpoints by count here, only the time since
    // the last one makes one due.
    let config = truststack_ledger::LedgerConfig {
        checkpoint_interval_us: Some(1_000_000),
        ..f.config(0)
    };
    let ledger = Ledger::open_at(&location(&db), &config).unwrap();
    ledger.append(&record(0)).unwrap();
    let first = ledger
        .latest_checkpoint()
        .expect("the first append is signed");
    assert_eq!(first.checkpoint.size, 1);
    ledger.append(&record(1)).unwrap();
    assert_eq!(
        ledger.latest_checkpoint().unwrap().seq,
        first.seq,
        "not again within the second"
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    ledger.append(&record(2)).unwrap();
    let next = ledger.latest_checkpoint().unwrap();
    assert_eq!((next.seq, next.checkpoint.size), (first.seq + 1, 3));
    ledger.close();
    verify_at(&location(&db), None).unwrap();
}
