//! The embedded SQLite ledger as the server's [`LedgerBackend`].

use crate::backend::LedgerBackend;
use serde_json::Value;
use truststack_engine::ledger::{Ledger, SignedCheckpoint};
use truststack_engine::{Recorder, Recording};

/// The checkpoint covering the whole log, signing a new one when entries came after the last.
fn current_checkpoint(ledger: &Ledger) -> Result<SignedCheckpoint, String> {
    match ledger.latest_checkpoint() {
        Some(c) if c.checkpoint.size == ledger.len() && !ledger.is_empty() => Ok(c),
        _ => ledger.checkpoint().map_err(|e| e.to_string()),
    }
}

impl LedgerBackend for Ledger {
    fn append(&self, record: Value) -> Result<u64, String> {
        Ledger::append(self, &record).map_err(|e| e.to_string())
    }

    fn submit(&self, record: Value) -> Recording {
        Recorder::submit(self, record)
    }

    /// The writer answers requests in order, so a checkpoint request returns after every
    /// append queued before it.
    fn sync(&self) -> Result<(), String> {
        Ledger::checkpoint(self)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn size(&self) -> u64 {
        self.len()
    }

    fn records(&self) -> Result<Vec<Value>, String> {
        Ledger::records(self).map_err(|e| e.to_string())
    }

    fn entries(&self, start: u64, end: u64) -> Result<Vec<Value>, String> {
        Ledger::entries(self, start..end)
            .map_err(|e| e.to_string())?
            .iter()
            .map(|e| e.to_json().map_err(|e| e.to_string()))
            .collect()
    }

    fn checkpoint(&self) -> Result<String, String> {
        current_checkpoint(self).map(|c| c.note)
    }

    /// The proof, the leaf hash, the root, and the signed checkpoint it verifies against (the
    /// latest, signed now if needed, when `size` is not given).
    fn inclusion_proof(&self, index: u64, size: Option<u64>) -> Result<Value, String> {
        let (size, note) = match size {
            Some(size) => (size, None),
            None => {
                let c = current_checkpoint(self)?;
                (c.checkpoint.size, Some(c.note))
            }
        };
        let mut view = self
            .inclusion_view(index, size)
            .map_err(|e| e.to_string())?;
        view.checkpoint = note;
        serde_json::to_value(view).map_err(|e| e.to_string())
    }

    fn consistency_proof(&self, old: u64, new: Option<u64>) -> Result<Value, String> {
        let new = new.unwrap_or_else(|| self.len());
        let view = self.consistency_view(old, new).map_err(|e| e.to_string())?;
        serde_json::to_value(view).map_err(|e| e.to_string())
    }
}
