//! Helpers shared by the integration tests.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use truststack_ledger::merkle::{node_hash, Hash, MerkleError, NodeSource};
use truststack_ledger::{Ledger, LedgerConfig};

/// Every perfect subtree of a tree, kept in memory.
pub struct Memory(pub Vec<Vec<Hash>>);

impl Memory {
    pub fn new(leaves: &[Hash]) -> Self {
        let mut levels = vec![leaves.to_vec()];
        while levels.last().unwrap().len() > 1 {
            let l = levels.last().unwrap();
            let next = l.chunks_exact(2).map(|p| node_hash(&p[0], &p[1])).collect();
            levels.push(next);
        }
        Memory(levels)
    }
}

impl NodeSource for Memory {
    type Error = MerkleError;
    fn perfect(&self, level: u32, index: u64) -> Result<Hash, MerkleError> {
        Ok(self.0[level as usize][index as usize])
    }
}

/// A record like the engine writes.
pub fn record(i: u64) -> Value {
    json!({
        "kind": "decision",
        "call": {"id": format!("c-{i}"), "agent": format!("spiffe://acme.example/agent/a{}", i % 3),
                 "session": "s-1", "chain": ["user:alice@acme.example"], "tool": "nmap_scan",
                 "args": {"target": "10.0.3.0/24", "n": i}},
        "decision": {"decision": if i.is_multiple_of(5) { "deny" } else { "allow" },
                     "decision_id": format!("d-{i}"), "time": "2026-11-13T09:00:00.250Z"}
    })
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub key: PathBuf,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("ledger.db");
        let key = dir.path().join("log.key");
        Fixture { dir, db, key }
    }

    pub fn config(&self, checkpoint_every: u64) -> LedgerConfig {
        LedgerConfig {
            checkpoint_every,
            ..LedgerConfig::new(&self.key)
        }
    }

    pub fn open(&self, checkpoint_every: u64) -> Ledger {
        Ledger::open(&self.db, &self.config(checkpoint_every)).unwrap()
    }

    /// A ledger of `n` records with a checkpoint every `every` entries (and one at the end).
    pub fn filled(n: u64, every: u64) -> Self {
        let f = Fixture::new();
        let ledger = f.open(every);
        let records: Vec<Value> = (0..n).map(record).collect();
        ledger.append_batch(&records[..(n / 2) as usize]).unwrap();
        for r in &records[(n / 2) as usize..] {
            ledger.append(r).unwrap();
        }
        ledger.checkpoint().unwrap();
        ledger.close();
        f
    }

    pub fn path(&self) -> &Path {
        &self.db
    }
}
