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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub default_decision: DefaultDecision,
    /// Whether a tool missing from the catalog may be called at all (policies still apply).
    pub unknown_tools: DefaultDecision,
    /// How long a held call waits for an approver unless its policy sets `DEADLINE`; written
    /// as a duration (`approval_deadline = "15min"`), as in every configuration.
    #[serde(rename = "approval_deadline", with = "duration_text")]
    pub approval_deadline_ms: i64,
    pub time_source: TimeSource,
    /// Approver groups: group name → human principals.
    pub approver_groups: BTreeMap<String, Vec<String>>,
    /// When set, a policy's `APPROVERS` group is always enforced: the approver must be listed in
    /// `approver_groups` or carry the group in a verified credential. When unset (replay), the
    /// group is enforced only if `approver_groups` is configured.
    pub require_approver_group: bool,
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
            require_approver_group: false,
            provenance_bound: truststack_policy::provenance::DEFAULT_BOUND,
            input_record: truststack_policy::RecordMode::Full,
        }
    }
}

impl Settings {
    /// Settings for replaying recorded events on their own clock.
    pub fn replay() -> Self {
        Settings {
            time_source: TimeSource::Event,
            ..Settings::default()
        }
    }
}

/// Durations as every configuration writes them (`"15min"`, `"1s"`), milliseconds in the
/// program.
pub mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use truststack_policy::duration::{format_duration, parse_duration};

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }
}
