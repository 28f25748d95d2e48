//! Tampering with real ledger files: every change is caught, and the error names the first bad
//! index (or, when only a signed checkpoint can tell, the checkpoint and the range it covers).
//!
//! The template ledger has 100 entries, appended one by one with a checkpoint every 16 entries
//! (sizes 16, 32, …, 96) and a final one at 100.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{record, Fixture};
use rusqlite::{params, Connection};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use truststack_ledger::checkpoint::Checkpoint;
use truststack_ledger::merkle::{leaf_hash, Frontier, Hash};
use truststack_ledger::sqlite::SqliteStore;
use truststack_ledger::verify::{verify, verify_file, Location, VerifyError};
use truststack_ledger::{LogKey, VerifierKey, DEFAULT_ORIGIN};
use truststack_testkit::assert_contains;
use truststack_testkit::write_file;

const N: u64 = 100;

struct Template {
    _fixture: Fixture,
    db: PathBuf,
    key: PathBuf,
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let f = Fixture::new();
        let ledger = f.open(16);
        for i in 0..N {
            ledger.append(&record(i)).unwrap();
        }
        ledger.checkpoint().unwrap();
        ledger.close();
        let (db, key) = (f.db.clone(), f.key.clone());
        assert!(
            !db.with_extension("db-wal").exists(),
            "closing checkpoints the WAL"
        );
        Template {
            _fixture: f,
            db,
            key,
        }
    })
}

/// A private copy of the template ledger.
struct Copy {
    dir: tempfile::TempDir,
}

impl Copy {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(&template().db, dir.path().join("ledger.db")).unwrap();
        Copy { dir }
    }
    /// A copy with `sql` run on it.
    fn altered(sql: &str) -> Self {
        let c = Copy::new();
        c.sql().execute_batch(sql).unwrap();
        c
    }
    fn path(&self) -> PathBuf {
        self.dir.path().join("ledger.db")
    }
    fn sql(&self) -> Connection {
        Connection::open(self.path()).unwrap()
    }
    fn verify(&self) -> Result<(), VerifyError> {
        verify_file(&self.path(), None).map(|_| ())
    }
}

fn trusted_key() -> VerifierKey {
    LogKey::load(&template().key).unwrap().verifier().clone()
}

fn stored_record(conn: &Connection, index: u64) -> Vec<u8> {
    conn.query_row("SELECT record FROM entries WHERE idx = ?1", [index], |r| {
        r.get::<_, String>(0)
    })
    .unwrap()
    .into_bytes()
}

fn set_record(conn: &Connection, index: u64, bytes: &[u8]) {
    conn.execute(
        "UPDATE entries SET record = ?1 WHERE idx = ?2",
        params![bytes, index],
    )
    .unwrap();
}

/// Recomputes every stored leaf and node hash from the (tampered) records, as an attacker
/// covering their tracks would.
fn rehash_everything(conn: &Connection) {
    let mut frontier = Frontier::new();
    for i in 0..N {
        let data = conn
            .query_row("SELECT record FROM entries WHERE idx = ?1", [i], |r| {
                r.get_ref(0).map(|v| v.as_bytes().unwrap().to_vec())
            })
            .unwrap();
        let leaf = leaf_hash(&data);
        let mut nodes: Vec<Hash> = Vec::new();
        frontier.push(leaf, &mut nodes);
        conn.execute(
            "UPDATE entries SET leaf = ?1, nodes = ?2 WHERE idx = ?3",
            params![&leaf[..], nodes.concat(), i],
        )
        .unwrap();
    }
}

fn expect_entry(result: Result<(), VerifyError>, index: u64) -> VerifyError {
    let err = result.expect_err("tampering went unnoticed");
    assert_eq!(err.location(), Location::Entry(index), "{err}");
    assert_eq!(err.first_bad_index(), Some(index));
    assert!(err.to_string().contains(&format!("entry {index}")), "{err}");
    err
}

#[test]
fn untouched_ledger_verifies() {
    let c = Copy::new();
    let report = verify_file(&c.path(), Some(&trusted_key())).unwrap();
    assert_eq!(report.entries, N);
    assert_eq!(report.checkpoints, 7);
    assert!(report
        .to_string()
        .starts_with("ok: 100 entries, 7 checkpoints verified, root "));
}

#[test]
fn flipping_any_byte_of_a_record_is_caught_at_its_index() {
    let c = Copy::new();
    let store = SqliteStore::open(&c.path()).unwrap();
    store
        .connection()
        .execute_batch("PRAGMA synchronous=OFF;")
        .unwrap();
    // Thousands of verifications: without the checkpoints (whose signature checks dominate in
    // unoptimized test builds, and which other tests cover) this stays fast.
    store
        .connection()
        .execute("DELETE FROM checkpoints", [])
        .unwrap();
    for index in [0, 17, 99] {
        let original = stored_record(store.connection(), index);
        for pos in 0..original.len() {
            let mut bytes = original.clone();
            bytes[pos] ^= if pos % 2 == 0 { 0x01 } else { 0x80 };
            set_record(store.connection(), index, &bytes);
            let err = expect_entry(verify(&store, None).map(|_| ()), index);
            assert!(matches!(err, VerifyError::LeafMismatch { .. }), "{err}");
        }
        set_record(store.connection(), index, &original);
        verify(&store, None).unwrap();
    }
}

#[test]
fn flipping_a_byte_in_the_raw_file_is_caught() {
    let c = Copy::new();
    let mut raw = std::fs::read(c.path()).unwrap();
    let marker = br#""decision_id":"d-42""#;
    let at = raw
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("record 42 is in the main database file");
    raw[at + marker.len() - 2] ^= 0x01; // "d-42" becomes "d-52"
    std::fs::write(c.path(), raw).unwrap();
    let err = expect_entry(c.verify(), 42);
    assert_eq!(
        err.to_string(),
        "entry 42: stored record does not hash to its leaf"
    );
}

#[test]
fn a_deleted_entry_is_named() {
    for (index, message) in [
        (40, "entry 40 missing: indices jump from 39 to 41"),
        (0, "entry 0 missing: the first stored index is 1"),
    ] {
        let c = Copy::altered(&format!("DELETE FROM entries WHERE idx = {index}"));
        let err = expect_entry(c.verify(), index);
        assert_eq!(err.to_string(), message);
    }
}

#[test]
fn deleting_the_last_entry_is_caught_by_the_final_checkpoint() {
    let c = Copy::altered(&format!("DELETE FROM entries WHERE idx = {}", N - 1));
    let err = c.verify().unwrap_err();
    assert_eq!(err.location(), Location::Entries(99..100), "{err}");
    assert_eq!(err.first_bad_index(), Some(99));
    assert_contains!(err.to_string(), "entries 99..100 are missing");
}

#[test]
fn truncating_the_log_is_named() {
    let c = Copy::altered("DELETE FROM entries WHERE idx >= 60");
    let err = c.verify().unwrap_err();
    assert_eq!(err.first_bad_index(), Some(60), "{err}");
    assert_eq!(
        err.to_string(),
        "checkpoint at size 64 (checkpoint 4): the log has only 60 entries; entries 60..64 \
         are missing (truncated)"
    );
}

#[test]
fn truncating_the_file_is_caught() {
    let c = Copy::new();
    let len = std::fs::metadata(c.path()).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(c.path())
        .unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);
    let err = c.verify().unwrap_err();
    // SQLite can read the entries stored in the surviving pages; the first one it cannot read,
    // or the first checkpoint it cannot reach, is named.
    let first = err.first_bad_index();
    assert!(
        first.is_some_and(|i| i < N) || err.location() == Location::Ledger,
        "{err}"
    );
}

#[test]
fn swapping_two_records_is_caught_at_the_first() {
    let c = Copy::new();
    let conn = c.sql();
    let (a, b) = (stored_record(&conn, 30), stored_record(&conn, 70));
    set_record(&conn, 30, &b);
    set_record(&conn, 70, &a);
    let err = expect_entry(c.verify(), 30);
    assert!(matches!(err, VerifyError::LeafMismatch { .. }), "{err}");
}

#[test]
fn swapping_two_rows_with_their_leaf_hashes_is_caught_by_the_tree() {
    // Whole rows (record, leaf hash and tree nodes) swapped: each record still hashes to its
    // leaf, so the stored tree is what notices, at the smallest subtree covering the first.
    for (x, y, covering) in [(30u64, 70u64, 30..32), (31, 70, 30..32), (32, 33, 32..33)] {
        let c = Copy::new();
        let conn = c.sql();
        conn.execute_batch(&format!(
            "UPDATE entries SET idx = -1 WHERE idx = {x};
             UPDATE entries SET idx = {x} WHERE idx = {y};
             UPDATE entries SET idx = {y} WHERE idx = -1;"
        ))
        .unwrap();
        let err = c.verify().unwrap_err();
        let first = err.first_bad_index().unwrap();
        assert!(covering.contains(&first) && first <= x, "{x}<->{y}: {err}");
        match err.location() {
            Location::Entry(i) => assert_eq!(i, x, "{err}"),
            Location::Entries(r) => assert_eq!(r, covering, "{err}"),
            other => panic!("{other:?}: {err}"),
        }
    }
}

#[test]
fn a_rewrite_with_all_hashes_recomputed_is_caught_by_the_signed_checkpoint() {
    let c = Copy::new();
    let conn = c.sql();
    let mut forged: Value = serde_json::from_slice(&stored_record(&conn, 37)).unwrap();
    forged["call"]["tool"] = "http_upload".into();
    let bytes = truststack_ledger::canonical::canonicalize(&forged).unwrap();
    set_record(&conn, 37, &bytes);
    rehash_everything(&conn);
    let err = c.verify().unwrap_err();
    assert_eq!(err.location(), Location::Entries(32..48), "{err}");
    assert_eq!(err.first_bad_index(), Some(32));
    let msg = err.to_string();
    assert!(
        msg.starts_with("checkpoint at size 48 (checkpoint 3): root mismatch"),
        "{msg}"
    );
    assert_contains!(msg, "an entry in 32..48 was rewritten");
}

#[test]
fn a_non_canonical_record_is_caught_even_with_matching_hashes() {
    let c = Copy::new();
    let conn = c.sql();
    let pretty = serde_json::to_vec_pretty(
        &serde_json::from_slice::<Value>(&stored_record(&conn, 5)).unwrap(),
    )
    .unwrap();
    set_record(&conn, 5, &pretty);
    rehash_everything(&conn);
    let err = expect_entry(c.verify(), 5);
    assert!(
        err.to_string()
            .starts_with("entry 5: record is not in RFC 8785 canonical form"),
        "{err}"
    );
}

fn replace_checkpoint(c: &Copy, seq: u64, note: &str) {
    c.sql()
        .execute(
            "UPDATE checkpoints SET note = ?1 WHERE seq = ?2",
            params![note, seq],
        )
        .unwrap();
}

fn stored_checkpoint(c: &Copy, seq: u64) -> Checkpoint {
    let note: String = c
        .sql()
        .query_row("SELECT note FROM checkpoints WHERE seq = ?1", [seq], |r| {
            r.get(0)
        })
        .unwrap();
    Checkpoint::open(&note, &trusted_key()).unwrap()
}

#[test]
fn a_checkpoint_signed_by_another_key_is_named() {
    let c = Copy::new();
    let original = stored_checkpoint(&c, 3);
    let impostor = LogKey::generate(DEFAULT_ORIGIN).unwrap();
    replace_checkpoint(&c, 3, &original.sign(&impostor).unwrap());
    let err = c.verify().unwrap_err();
    assert_eq!(err.location(), Location::Checkpoint(3), "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("checkpoint 3 (size 48): bad signature"),
        "{msg}"
    );
    assert!(msg.contains(&impostor.verifier().label()), "{msg}");
}

#[test]
fn a_checkpoint_with_a_different_root_is_named() {
    // Signed with the real key (a stolen key, or a buggy signer): the root is what is wrong.
    let c = Copy::new();
    let mut forged = stored_checkpoint(&c, 5);
    forged.root[0] ^= 1;
    let key = LogKey::load(&template().key).unwrap();
    replace_checkpoint(&c, 5, &forged.sign(&key).unwrap());
    let err = c.verify().unwrap_err();
    assert_eq!(err.location(), Location::Entries(64..80), "{err}");
    assert!(
        err.to_string()
            .starts_with("checkpoint at size 80 (checkpoint 5): root mismatch"),
        "{err}"
    );
    // The same forged root signed by another key fails on the signature first.
    let impostor = LogKey::generate(DEFAULT_ORIGIN).unwrap();
    replace_checkpoint(&c, 5, &forged.sign(&impostor).unwrap());
    let err = c.verify().unwrap_err();
    assert_eq!(err.location(), Location::Checkpoint(5), "{err}");
}

#[test]
fn a_deleted_checkpoint_is_named() {
    let c = Copy::altered("DELETE FROM checkpoints WHERE seq = 2");
    let err = c.verify().unwrap_err();
    assert_eq!(err.location(), Location::Checkpoint(2), "{err}");
    assert_eq!(
        err.to_string(),
        "checkpoint 2 missing: sequence numbers jump from 1 to 3"
    );
}

#[test]
fn replacing_the_key_and_every_checkpoint_needs_a_trusted_key_to_catch() {
    let c = Copy::new();
    let conn = c.sql();
    let impostor = LogKey::generate(DEFAULT_ORIGIN).unwrap();
    let seqs: Vec<u64> = conn
        .prepare("SELECT seq FROM checkpoints")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for seq in seqs {
        let note = stored_checkpoint(&c, seq).sign(&impostor).unwrap();
        replace_checkpoint(&c, seq, &note);
    }
    conn.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'verifier_key'",
        [impostor.verifier().to_string()],
    )
    .unwrap();
    // Self-consistent against the key the file records...
    c.verify().unwrap();
    // ...but not against the key the operator trusts.
    let err = verify_file(&c.path(), Some(&trusted_key())).unwrap_err();
    assert_eq!(err.location(), Location::Ledger);
    assert_contains!(err.to_string(), "but the trusted key is");
}

#[test]
fn verify_reports_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.db");
    assert_eq!(
        verify_file(&missing, None).unwrap_err().location(),
        Location::Ledger
    );
    let junk = write_file(dir.path(), "junk.db", b"not a database");
    assert!(verify_file(Path::new(&junk), None).is_err());
}

#[test]
fn the_first_problem_is_named_even_when_a_later_one_is_read_first() {
    // Verification reads ahead while it checks, in chunks of 8192 entries: a problem in a later
    // chunk must not hide an earlier one, and must still be found on its own.
    let f = Fixture::new();
    let ledger = f.open(0);
    let records: Vec<Value> = (0..20_000).map(record).collect();
    ledger.append_batch(&records).unwrap();
    ledger.close();
    let conn = Connection::open(&f.db).unwrap();
    let break_leaf = |index: u64| {
        conn.execute("UPDATE entries SET leaf = x'0102' WHERE idx = ?1", [index])
            .unwrap();
    };
    break_leaf(19_000);
    let err = expect_entry(verify_file(&f.db, None).map(|_| ()), 19_000);
    assert!(matches!(err, VerifyError::Unreadable { .. }), "{err}");
    let mut bytes = stored_record(&conn, 3);
    bytes[10] ^= 1;
    set_record(&conn, 3, &bytes);
    let err = expect_entry(verify_file(&f.db, None).map(|_| ()), 3);
    assert!(matches!(err, VerifyError::LeafMismatch { .. }), "{err}");
}
