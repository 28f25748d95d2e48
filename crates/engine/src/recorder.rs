//! Where decisions are written before they are returned (the ledger, in deployments).

use serde_json::Value;

/// A write-ahead sink for decision records. `record` returns only when the record is durable,
/// with its index; an error makes the engine fail closed.
pub trait Recorder: Send + Sync {
    fn record(&self, record: Value) -> Result<Option<u64>, String>;
}

/// Records nothing: for replay, simulation and tests of the decision logic alone.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRecorder;

impl Recorder for NoRecorder {
    fn record(&self, _record: Value) -> Result<Option<u64>, String> {
        Ok(None)
    }
}
