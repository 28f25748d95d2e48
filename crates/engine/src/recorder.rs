//! Where decisions are written before they are returned (the ledger, in deployments).

use serde_json::Value;

/// A write-ahead sink for decision records. `record` returns only when the record is durable,
/// with its index; an error makes the engine fail closed.
pub trait Recorder: Send + Sync {
    fn record(&self, record: Value) -> Result<Option<u64>, String>;

    /// Whether records are kept at all. A recorder that drops them says so, and the engine
    /// skips building decision records (the proving ground decides millions of calls).
    fn enabled(&self) -> bool {
        true
    }
}

/// Records nothing: for replay, simulation and tests of the decision logic alone.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRecorder;

impl Recorder for NoRecorder {
    fn record(&self, _record: Value) -> Result<Option<u64>, String> {
        Ok(None)
    }

    fn enabled(&self) -> bool {
        false
    }
}

/// The tamper-evident ledger: `record` returns once the record is durable (group commit).
impl Recorder for truststack_ledger::Ledger {
    fn record(&self, record: Value) -> Result<Option<u64>, String> {
        self.append(&record).map(Some).map_err(|e| e.to_string())
    }
}

/// What of a payload the ledger keeps for a tool, from its catalog `record` mode. The digest
/// forms still commit to the payload, so a disclosed payload can be proved later.
pub fn private_payload(mode: truststack_policy::RecordMode, payload: &Value) -> Value {
    use truststack_ledger::PayloadMode;
    let mode = match mode {
        truststack_policy::RecordMode::Full => return payload.clone(),
        truststack_policy::RecordMode::Hash => PayloadMode::Hash,
        truststack_policy::RecordMode::Redacted => PayloadMode::Redacted,
    };
    // A payload that cannot be canonicalized (a number JCS cannot represent) is withheld whole.
    truststack_ledger::stored_payload(payload, mode)
        .unwrap_or_else(|e| serde_json::json!({"redacted": true, "error": e.to_string()}))
}
