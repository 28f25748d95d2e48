//! Replaying a JSONL trace of events through an engine: the contract of
//! `truststack policy eval`, shared by every component that needs the same answers.

use crate::decision::{ApprovalOutcome, Decision, Verdict};
use crate::engine::{Engine, Processed};
use crate::event::Event;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{file}:{line}:{column}: {message}")]
    Json {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
}

/// Parses a JSONL trace; blank lines and lines starting with `#` or `//` are skipped.
pub fn parse_trace(file: &str, text: &str) -> Result<Vec<Event>, TraceError> {
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("//") {
            continue;
        }
        let event: Event = serde_json::from_str(trimmed).map_err(|e| TraceError::Json {
            file: file.to_string(),
            line: i + 1,
            column: e.column() + (line.len() - line.trim_start().len()),
            message: format!("not a valid event: {e} (expected a JSON object with `type`: tool_call, observation or approval)"),
        })?;
        events.push(event);
    }
    Ok(events)
}

/// One line of `policy eval` output: the decision for one tool call. Stable interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalLine {
    pub id: String,
    pub decision: Verdict,
    pub policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadow: Vec<String>,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
}

impl From<&Decision> for EvalLine {
    fn from(d: &Decision) -> Self {
        EvalLine {
            id: d.call_id.clone(),
            decision: d.decision,
            policies: d.policies.iter().map(|p| p.id.clone()).collect(),
            shadow: d.shadow.iter().map(|p| p.id.clone()).collect(),
            reason: d.reason.clone(),
            approval_id: d.approval_id.clone(),
        }
    }
}

/// What happened at one event of a replay.
#[derive(Debug)]
pub enum Step {
    Decision(Box<Decision>),
    Approval(Result<ApprovalOutcome, String>),
    Observation(Result<(), String>),
}

/// Runs every event through the engine, in order.
pub fn replay(engine: &Engine, events: &[Event]) -> Vec<Step> {
    events
        .iter()
        .map(|e| match engine.process(e) {
            Processed::Decision(d) => Step::Decision(Box::new(d)),
            Processed::Approval(r) => Step::Approval(r.map_err(|e| e.to_string())),
            Processed::Observation(r) => Step::Observation(r.map(|_| ())),
        })
        .collect()
}
