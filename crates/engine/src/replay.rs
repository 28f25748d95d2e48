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
            message: format!("not a valid event: {e} (expected a JSON object with `type`: tool_call, observation, approval or input)"),
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
            Processed::Input(r) => Step::Observation(r.map(|_| ()).map_err(|e| e.to_string())),
            Processed::Grant(r) => Step::Observation(r.map(|_| ()).map_err(|e| e.to_string())),
        })
        .collect()
}

/// A recorded decision that another bundle decides differently.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Divergence {
    pub ledger_index: u64,
    pub call_id: String,
    pub agent: String,
    pub tool: String,
    pub time: String,
    pub recorded: Verdict,
    pub replayed: Verdict,
    pub recorded_policies: Vec<String>,
    pub replayed_policies: Vec<String>,
    /// The recorded decision's reason.
    pub recorded_reason: String,
    /// The replayed decision's reason.
    pub reason: String,
}

/// Reconstructs the event stream from ledger records (`(index, record)`, in order): decisions
/// become tool calls at their decision time, approval outcomes become answers at theirs,
/// observations, inputs and task grants stay what they were. Each tool call carries its
/// recorded decision. Calls whose arguments were recorded as a hash replay with the digest in
/// place of the arguments.
pub fn events_from_records(
    records: &[(u64, serde_json::Value)],
) -> Vec<(u64, Event, Option<Decision>)> {
    use serde_json::Value;
    let mut out = Vec::new();
    for (index, record) in records {
        match record.get("kind").and_then(Value::as_str) {
            Some("decision") => {
                let call = serde_json::from_value::<crate::event::ToolCall>(record["call"].clone());
                let decision = serde_json::from_value::<Decision>(record["decision"].clone());
                if let (Ok(mut call), Ok(decision)) = (call, decision) {
                    call.time = Some(decision.time.clone());
                    out.push((*index, Event::ToolCall(call), Some(decision)));
                }
            }
            Some("approval") => {
                let Ok(o) = serde_json::from_value::<ApprovalOutcome>(record["outcome"].clone())
                else {
                    continue;
                };
                let grant = match o.result {
                    crate::decision::ApprovalResult::Granted
                    | crate::decision::ApprovalResult::GrantedButDenied => true,
                    crate::decision::ApprovalResult::Refused
                    | crate::decision::ApprovalResult::Cancelled => false,
                    // Nobody answered: in the replay the call stays held, as it did.
                    crate::decision::ApprovalResult::Expired => continue,
                };
                let lease = o.lease_until.as_deref().and_then(|until| {
                    let ms = crate::event::parse_time(until).ok()?
                        - crate::event::parse_time(&o.time).ok()?;
                    (ms > 0).then(|| format!("{ms}ms"))
                });
                out.push((
                    *index,
                    Event::Approval(crate::event::ApprovalAnswer {
                        approval_id: None,
                        call_id: Some(o.call_id),
                        approver: o.approver,
                        groups: Vec::new(),
                        grant,
                        lease,
                        time: Some(o.time),
                    }),
                    None,
                ));
            }
            Some("observation") => {
                if let Ok(mut obs) = serde_json::from_value::<crate::event::Observation>(
                    record["observation"].clone(),
                ) {
                    obs.time = record.get("time").and_then(Value::as_str).map(String::from);
                    out.push((*index, Event::Observation(obs), None));
                }
            }
            Some("input") => {
                if let Ok(mut input) =
                    serde_json::from_value::<crate::event::Input>(record["input"].clone())
                {
                    input.time = record.get("time").and_then(Value::as_str).map(String::from);
                    out.push((*index, Event::Input(input), None));
                }
            }
            Some("grant") => {
                if let Ok(mut grant) =
                    serde_json::from_value::<crate::grant::Grant>(record["grant"].clone())
                {
                    grant.time = record.get("time").and_then(Value::as_str).map(String::from);
                    out.push((*index, Event::Grant(grant), None));
                }
            }
            _ => {}
        }
    }
    out
}

/// Re-decides every recorded call with `engine` (which must run on event time) and returns the
/// calls it decides differently: "what would this policy change have done last week".
pub fn divergences(
    engine: &Engine,
    records: &[(u64, serde_json::Value)],
) -> (usize, Vec<Divergence>) {
    let mut calls = 0;
    let mut out = Vec::new();
    for (index, event, recorded) in events_from_records(records) {
        let Processed::Decision(replayed) = engine.process(&event) else {
            continue;
        };
        calls += 1;
        let (Some(recorded), Event::ToolCall(call)) = (recorded, &event) else {
            continue;
        };
        let ids = |d: &Decision| d.policies.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
        if recorded.decision != replayed.decision {
            out.push(Divergence {
                ledger_index: index,
                call_id: call.id.clone(),
                agent: call.agent.clone(),
                tool: call.tool.clone(),
                time: recorded.time.clone(),
                recorded: recorded.decision,
                replayed: replayed.decision,
                recorded_policies: ids(&recorded),
                replayed_policies: ids(&replayed),
                recorded_reason: recorded.reason.clone(),
                reason: replayed.reason.clone(),
            });
        }
    }
    (calls, out)
}
