//! Proofs as the CLI prints them and the server serves them: one JSON shape, hashes in base64.

use crate::base64_hash;
use crate::ledger::{Ledger, LedgerError};
use serde::Serialize;

/// An inclusion proof of one entry in the tree of `tree_size` entries (RFC 9162 §2.1.3).
#[derive(Debug, Clone, Serialize)]
pub struct InclusionView {
    pub leaf_index: u64,
    pub tree_size: u64,
    pub leaf_hash: String,
    pub root_hash: String,
    pub path: Vec<String>,
    /// The signed checkpoint of that size, when the log holds one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
}

/// A consistency proof between two tree sizes (RFC 9162 §2.1.4).
#[derive(Debug, Clone, Serialize)]
pub struct ConsistencyView {
    pub old_size: u64,
    pub new_size: u64,
    pub old_root: String,
    pub new_root: String,
    pub path: Vec<String>,
}

impl Ledger {
    /// The inclusion proof of entry `index` in the tree of `size` entries, with its root.
    pub fn inclusion_view(&self, index: u64, size: u64) -> Result<InclusionView, LedgerError> {
        let proof = self.inclusion_proof(index, size)?;
        Ok(InclusionView {
            leaf_index: proof.leaf_index,
            tree_size: proof.tree_size,
            leaf_hash: base64_hash(&self.entry(index)?.leaf),
            root_hash: base64_hash(&self.root_at(size)?),
            path: proof.path.iter().map(base64_hash).collect(),
            checkpoint: None,
        })
    }

    /// The consistency proof from `old` entries to `new`, with both roots.
    pub fn consistency_view(&self, old: u64, new: u64) -> Result<ConsistencyView, LedgerError> {
        let proof = self.consistency_proof(old, new)?;
        Ok(ConsistencyView {
            old_size: proof.old_size,
            new_size: proof.new_size,
            old_root: base64_hash(&self.root_at(old)?),
            new_root: base64_hash(&self.root_at(new)?),
            path: proof.path.iter().map(base64_hash).collect(),
        })
    }
}
