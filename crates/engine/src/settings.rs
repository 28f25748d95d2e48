//! Engine settings: defaults for what no policy speaks about, and where time comes from.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The answer for a call no enforced policy fired on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DefaultDecision {
    #[default]
    Allow,
    Deny,
}

/// Where "now" comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimeSource {
    /// The engine's own clock: enforcement. Event timestamps are ignored (an agent does not get
    /// to say what time it is).
    #[default]
    System,
    /// The events' timestamps: replay and simulation, reproducible. Events must carry `time`.
    Event,
}

/// What the engine decides with beyond its policies. Built by each component from its own
/// configuration file (the server's `truststack.toml`, the gateway's `gateway.toml`, a proving
/// ground manifest's `[settings]`), never read from a file itself. The server and the gateway
/// write these settings with the same keys at the top level of their files; each declares them
/// in its own struct (serde cannot combine `flatten` with `deny_unknown_fields`, which gives an
/// unknown key its line), and a test keeps the two giving equal `Settings` for the same text.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub default_decision: DefaultDecision,
    /// Whether a tool missing from the catalog may be called at all (policies still apply).
    pub unknown_tools: DefaultDecision,
    /// How long a held call waits for an approver unless its policy sets `DEADLINE` (written
    /// `approval_deadline = "15min"` in every configuration).
    pub approval_deadline_ms: i64,
    pub time_source: TimeSource,
    /// Approver groups: group name → human principals.
    pub approver_groups: BTreeMap<String, Vec<String>>,
    /// Bytes the value provenance index of one scope may hold; past it, values not seen count
    /// as untrusted.
    pub provenance_bound: usize,
    /// What the ledger keeps of a user's input (`full`, `hash`, `redacted`).
    pub input_record: truststack_policy::RecordMode,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_decision: DefaultDecision::Allow,
            unknown_tools: DefaultDecision::Deny,
            approval_deadline_ms: 15 * 60 * 1000,
            time_source: TimeSource::System,
            approver_groups: BTreeMap::new(),
            provenance_bound: truststack_policy::provenance::DEFAULT_BOUND,
            input_record: truststack_policy::RecordMode::Full,
        }
    }
}

impl Settings {
    /// Whether a policy's `APPROVERS` group binds the approver (listed in `approver_groups`, or
    /// carrying the group in a verified credential). Always when deciding live, whichever
    /// component loaded the policy; on recorded time (replay) only when groups are configured,
    /// since a replayed answer's groups were checked when it was given.
    pub fn enforces_approver_groups(&self) -> bool {
        self.time_source == TimeSource::System || !self.approver_groups.is_empty()
    }

    /// Settings for replaying recorded events on their own clock.
    pub fn replay() -> Self {
        Settings {
            time_source: TimeSource::Event,
            ..Settings::default()
        }
    }
}
