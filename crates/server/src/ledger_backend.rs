//! The embedded SQLite ledger as the server's [`LedgerBackend`].

use crate::backend::LedgerBackend;
use serde_json::Value;
use truststack_engine::ledger::{
    ConsistencyView, InclusionView, Ledger, LedgerError, SignedCheckpoint,
};
use truststack_engine::{Recorder, Recording};

/// The checkpoint covering the whole log, signing a new one when entries came after the last.
fn current_checkpoint(ledger: &Ledger) -> Result<SignedCheckpoint, LedgerError> {
    match ledger.latest_checkpoint() {
        Some(c) if c.checkpoint.size == ledger.len() && !ledger.is_empty() => Ok(c),
        _ => ledger.checkpoint(),
    }
}

impl LedgerBackend for Ledger {
    fn append(&self, record: Value) -> Result<u64, LedgerError> {
        Ledger::append(self, &record)
    }

    fn submit(&self, record: Value) -> Recording {
        Recorder::submit(self, record)
    }

    /// The writer answers requests in order, so a checkpoint request returns after every
    /// append queued before it.
    fn sync(&self) -> Result<(), LedgerError> {
        Ledger::checkpoint(self).map(|_| ())
    }

    fn size(&self) -> u64 {
        self.len()
    }

    fn records(&self) -> Result<Vec<Value>, LedgerError> {
        Ledger::records(self)
    }

    fn records_in(&self, start: u64, end: u64) -> Result<Vec<Value>, LedgerError> {
        Ledger::records_in(self, start..end)
    }

    fn follow(&self) -> Result<u64, LedgerError> {
        Ledger::follow(self)
    }

    fn failed_appends(&self) -> u64 {
        Ledger::failed_appends(self)
    }

    fn entries(&self, start: u64, end: u64) -> Result<Vec<Value>, LedgerError> {
        Ledger::entries(self, start..end)?
            .iter()
            .map(|e| e.to_json().map_err(LedgerError::from))
            .collect()
    }

    fn checkpoint(&self) -> Result<String, LedgerError> {
        current_checkpoint(self).map(|c| c.note)
    }

    /// The proof with the signed checkpoint it verifies against (the latest, signed now if
    /// needed, when `size` is not given).
    fn inclusion_proof(&self, index: u64, size: Option<u64>) -> Result<InclusionView, LedgerError> {
        let (size, note) = match size {
            Some(size) => (size, None),
            None => {
                let c = current_checkpoint(self)?;
                (c.checkpoint.size, Some(c.note))
            }
        };
        let mut view = self.inclusion_view(index, size)?;
        view.checkpoint = note;
        Ok(view)
    }

    fn consistency_proof(
        &self,
        old: u64,
        new: Option<u64>,
    ) -> Result<ConsistencyView, LedgerError> {
        self.consistency_view(old, new.unwrap_or_else(|| self.len()))
    }

    fn verifier_key(&self) -> Option<String> {
        Some(Ledger::verifier_key(self).to_string())
    }
}
