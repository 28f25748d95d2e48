//! Where decisions are written before they are returned (the ledger, in deployments).

use serde_json::Value;
use std::future::Future;
use std::pin::Pin;

/// What a recorder answers: a record's ledger index once it is durable (`None` when the
/// recorder keeps no index), or why it could not be written.
pub type Recorded = Result<Option<u64>, WriteError>;

/// Why a record could not be written. Either way nothing of it is kept, and the engine fails
/// closed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Boxed: a ledger error is large, and this travels in every decision's result.
    #[error(transparent)]
    Ledger(Box<truststack_ledger::LedgerError>),
    /// A recorder other than the ledger refused the record.
    #[error("{0}")]
    Refused(String),
}

impl From<truststack_ledger::LedgerError> for WriteError {
    fn from(e: truststack_ledger::LedgerError) -> WriteError {
        WriteError::Ledger(Box::new(e))
    }
}

/// A record handed to a recorder: either already settled, or queued for a commit still to come.
#[must_use = "a record is durable only once its recording settles"]
pub enum Recording {
    Settled(Recorded),
    Queued(Pin<Box<dyn Future<Output = Recorded> + Send>>),
}

impl Recording {
    /// Blocks the calling thread until the record is durable (or failed).
    pub fn wait(self) -> Recorded {
        match self {
            Recording::Settled(r) => r,
            Recording::Queued(durable) => futures_executor::block_on(durable),
        }
    }

    /// Waits for the record to be durable without blocking a thread.
    pub async fn durable(self) -> Recorded {
        match self {
            Recording::Settled(r) => r,
            Recording::Queued(durable) => durable.await,
        }
    }

    /// Whether the record has already been refused.
    pub fn failed(&self) -> bool {
        matches!(self, Recording::Settled(Err(_)))
    }
}

/// A write-ahead sink for decision records. `record` returns only when the record is durable,
/// with its index; an error makes the engine fail closed.
pub trait Recorder: Send + Sync {
    fn record(&self, record: Value) -> Recorded;

    /// Hands a record over and returns before it is durable, so the caller can release its
    /// locks while the commit happens; records are kept in the order they were submitted. The
    /// default records synchronously.
    fn submit(&self, record: Value) -> Recording {
        Recording::Settled(self.record(record))
    }

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
    fn record(&self, _record: Value) -> Recorded {
        Ok(None)
    }

    fn enabled(&self) -> bool {
        false
    }
}

/// The tamper-evident ledger: `record` returns once the record is durable (group commit).
impl Recorder for truststack_ledger::Ledger {
    fn record(&self, record: Value) -> Recorded {
        Ok(Some(self.append(&record)?))
    }

    fn submit(&self, record: Value) -> Recording {
        match truststack_ledger::Ledger::submit(self, &record) {
            Ok(ticket) => Recording::Queued(Box::pin(async move { Ok(Some(ticket.await?)) })),
            Err(e) => Recording::Settled(Err(e.into())),
        }
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
