//! The ledger's public contract: durable, contiguous indices under concurrency, checkpoint
//! cadence, reopening, key binding, read-only access, and proofs against signed checkpoints.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{record, Fixture};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use truststack_ledger::merkle::root_from_leaves;
use truststack_ledger::verify::{verify_file, KeySource};
use truststack_ledger::{Ledger, LedgerConfig, LedgerError, LogKey};
use truststack_testkit::assert_contains;

#[test]
fn concurrent_appends_get_unique_contiguous_indices() {
    let f = Fixture::new();
    let ledger = Arc::new(f.open(100));
    let handles: Vec<_> = (0..8u64)
        .map(|t| {
            let ledger = Arc::clone(&ledger);
            std::thread::spawn(move || {
                (0..50u64)
                    .map(|i| {
                        let r = json!({"kind": "tool_call", "thread": t, "i": i});
                        (ledger.append(&r).unwrap(), r)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seen = BTreeSet::new();
    for h in handles {
        for (index, r) in h.join().unwrap() {
            assert!(seen.insert(index), "index {index} given twice");
            assert_eq!(ledger.entry(index).unwrap().record().unwrap(), r);
        }
    }
    assert_eq!(seen, (0..400).collect());
    assert_eq!(ledger.len(), 400);
    let leaves: Vec<_> = ledger
        .entries(0..400)
        .unwrap()
        .into_iter()
        .map(|e| e.leaf)
        .collect();
    assert_eq!(ledger.root(), root_from_leaves(&leaves));
    drop(ledger);
    let report = verify_file(&f.db, None).unwrap();
    assert_eq!(report.entries, 400);
    assert_eq!(report.key_source, KeySource::Recorded);
}

#[test]
fn submitted_appends_are_committed_in_submission_order() {
    let f = Fixture::new();
    let ledger = f.open(100);
    let tickets: Vec<_> = (0..200)
        .map(|i| ledger.submit(&record(i)).unwrap())
        .collect();
    // The first ticket is awaited, the rest blocked on: both settle on the same commit order.
    let mut tickets = tickets.into_iter();
    let first = futures_executor::block_on(tickets.next().unwrap()).unwrap();
    assert_eq!(first, 0);
    for (i, ticket) in (1u64..).zip(tickets) {
        let index = ticket.wait().unwrap();
        assert_eq!(index, i, "records keep the order they were submitted in");
        assert_eq!(ledger.entry(index).unwrap().record().unwrap(), record(i));
    }
    assert_eq!(ledger.len(), 200);
    // A record that cannot be canonicalized (nested too deep) is refused before anything is
    // queued.
    let mut deep = json!(0);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let err = ledger.submit(&deep).unwrap_err();
    assert!(matches!(err, LedgerError::Record { .. }), "{err}");
    assert_eq!(ledger.len(), 200);
    drop(ledger);
    assert_eq!(verify_file(&f.db, None).unwrap().entries, 200);
}

#[test]
fn checkpoints_follow_the_cadence_and_on_demand_requests() {
    let f = Fixture::new();
    let ledger = f.open(10);
    for i in 0..35 {
        ledger.append(&record(i)).unwrap();
    }
    let sizes: Vec<u64> = ledger
        .checkpoints()
        .unwrap()
        .iter()
        .map(|c| c.checkpoint.size)
        .collect();
    assert_eq!(sizes, vec![10, 20, 30]);
    let c = ledger.checkpoint().unwrap();
    assert_eq!((c.seq, c.checkpoint.size), (4, 35));
    assert_eq!(c.checkpoint.root, ledger.root());
    // Nothing new: the same checkpoint comes back.
    assert_eq!(ledger.checkpoint().unwrap(), c);
    assert_eq!(ledger.latest_checkpoint(), Some(c.clone()));
    assert!(c.note.starts_with("truststack.local/ledger\n35\n"));
    assert_contains!(c.note, "\n\n— truststack.local/ledger ");
    // Every entry is provably in the checkpoint, and checkpoints extend each other.
    for i in 0..35 {
        let proof = ledger.inclusion_proof(i, 35).unwrap();
        proof
            .verify(&ledger.entry(i).unwrap().leaf, &c.checkpoint.root)
            .unwrap();
    }
    let all = ledger.checkpoints().unwrap();
    for pair in all.windows(2) {
        let (a, b) = (&pair[0].checkpoint, &pair[1].checkpoint);
        ledger
            .consistency_proof(a.size, b.size)
            .unwrap()
            .verify(&a.root, &b.root)
            .unwrap();
    }
}

#[test]
fn an_empty_ledger_checkpoints_the_empty_tree() {
    let f = Fixture::new();
    let ledger = f.open(0);
    assert!(ledger.is_empty());
    let c = ledger.checkpoint().unwrap();
    assert_eq!(c.checkpoint.size, 0);
    assert_eq!(c.checkpoint.root, truststack_ledger::merkle::empty_root());
    drop(ledger);
    assert_eq!(verify_file(&f.db, None).unwrap().checkpoints, 1);
}

#[test]
fn reopening_continues_the_same_log() {
    let f = Fixture::new();
    let (root, checkpoint) = {
        let ledger = f.open(0);
        ledger
            .append_batch(&[record(0), record(1), record(2)])
            .unwrap();
        (ledger.root(), ledger.checkpoint().unwrap())
    };
    let ledger = f.open(0);
    assert_eq!(ledger.len(), 3);
    assert_eq!(ledger.root(), root);
    assert_eq!(ledger.latest_checkpoint(), Some(checkpoint.clone()));
    assert_eq!(ledger.append(&record(3)).unwrap(), 3);
    let next = ledger.checkpoint().unwrap();
    assert_eq!(next.seq, 2);
    ledger
        .consistency_proof(3, 4)
        .unwrap()
        .verify(&checkpoint.checkpoint.root, &next.checkpoint.root)
        .unwrap();
}

#[test]
fn a_ledger_stays_bound_to_its_key() {
    let f = Fixture::new();
    drop(f.open(0));
    let other_key = f.dir.path().join("other.key");
    let err = Ledger::open(&f.db, &LedgerConfig::new(&other_key)).unwrap_err();
    assert!(matches!(err, LedgerError::WrongKey { .. }), "{err}");
    let renamed = LedgerConfig {
        origin: "example.com/renamed".into(),
        ..f.config(0)
    };
    let err = Ledger::open(&f.db, &renamed).unwrap_err();
    assert_contains!(err.to_string(), "holds the key of");
    // And verification against the operator's copy of the public key works.
    let trusted = LogKey::load(&f.key).unwrap().verifier().clone();
    let report = verify_file(&f.db, Some(&trusted)).unwrap();
    assert_eq!(report.key_source, KeySource::Trusted);
}

#[test]
fn batches_are_contiguous_and_atomic() {
    let f = Fixture::new();
    let ledger = f.open(0);
    assert_eq!(ledger.append_batch(&[]).unwrap(), 0..0);
    assert_eq!(ledger.append_batch(&[record(0), record(1)]).unwrap(), 0..2);
    let mut deep = json!(0);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let err = ledger
        .append_batch(&[record(2), deep.clone(), record(3)])
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::Record { position: 1, .. }),
        "{err}"
    );
    assert!(ledger.append(&deep).is_err());
    assert_eq!(ledger.len(), 2);
    assert_eq!(ledger.append(&record(2)).unwrap(), 2);
}

#[test]
fn records_are_stored_canonically() {
    let f = Fixture::new();
    let ledger = f.open(0);
    let messy: Value =
        serde_json::from_str(r#"{ "z": 1.50, "a": {"y": [true, null], "b": "é\u0007"} }"#).unwrap();
    let i = ledger.append(&messy).unwrap();
    let entry = ledger.entry(i).unwrap();
    assert_eq!(
        std::str::from_utf8(&entry.data).unwrap(),
        "{\"a\":{\"b\":\"é\\u0007\",\"y\":[true,null]},\"z\":1.5}"
    );
    assert_eq!(entry.record().unwrap(), messy);
    assert_eq!(
        entry.leaf,
        truststack_ledger::merkle::leaf_hash(&entry.data)
    );
    let j = entry.to_json().unwrap();
    assert_eq!(j["index"], 0);
    assert_eq!(j["record"], messy);
}

#[test]
fn read_only_ledgers_read_but_do_not_write() {
    let f = Fixture::filled(20, 5);
    let ledger = Ledger::open_read_only(&f.db).unwrap();
    assert_eq!(ledger.len(), 20);
    assert!(matches!(
        ledger.append(&record(99)),
        Err(LedgerError::ReadOnly)
    ));
    assert!(matches!(ledger.checkpoint(), Err(LedgerError::ReadOnly)));
    assert_eq!(ledger.entries(5..8).unwrap().len(), 3);
    assert!(matches!(
        ledger.entry(20),
        Err(LedgerError::NoSuchEntry {
            index: 20,
            size: 20
        })
    ));
    assert!(matches!(
        ledger.inclusion_proof(0, 21),
        Err(LedgerError::SizeBeyondLog { size: 21, len: 20 })
    ));
    assert!(ledger.inclusion_proof(20, 20).is_err());
    assert!(ledger.consistency_proof(21, 20).is_err());
    assert_eq!(ledger.latest_checkpoint().unwrap().checkpoint.size, 20);
    assert!(Ledger::open_read_only(&f.dir.path().join("missing.db")).is_err());
}

#[cfg(unix)]
#[test]
fn the_key_file_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let f = Fixture::new();
    drop(f.open(0));
    let mode = std::fs::metadata(&f.key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&f.key).unwrap();
    assert!(text.starts_with("PRIVATE+KEY+truststack.local/ledger+"));
    assert!(text.ends_with('\n'));
}
