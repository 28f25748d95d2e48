//! Replaying a JSONL trace of events through an engine: the contract of
//! `truststack policy eval`, shared by every component that needs the same answers.

use crate::decision::{ApprovalResult, Decision, Verdict};
use crate::engine::{Engine, Processed};
use crate::event::{parse_time, ApprovalAnswer, Event};
use crate::record::{decode_all, Record, RecordError};
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

/// Runs every event through the engine, in order: what each did.
pub fn replay(engine: &Engine, events: &[Event]) -> Vec<Processed> {
    events.iter().map(|e| engine.process(e)).collect()
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

/// Reconstructs the event stream from decoded ledger records (`(index, record)`, in order):
/// decisions become tool calls at their decision time, approval outcomes become answers at
/// theirs, observations and task grants stay what they were, inputs kept whole stay inputs.
/// Each tool call carries
/// its recorded decision. Calls whose arguments were recorded as a hash replay with the digest
/// in place of the arguments; an input kept only as a digest cannot be replayed and is left out.
pub fn events_from_records(records: &[(u64, Record)]) -> Vec<(u64, Event, Option<Decision>)> {
    let mut out = Vec::new();
    for (index, record) in records {
        match record {
            Record::Decision { call, decision } => {
                let mut call = call.clone();
                call.time = Some(decision.time.clone());
                out.push((*index, Event::ToolCall(call), Some(decision.clone())));
            }
            Record::Approval { outcome: o } => {
                let grant = match o.result {
                    ApprovalResult::Granted | ApprovalResult::GrantedButDenied => true,
                    ApprovalResult::Refused | ApprovalResult::Cancelled => false,
                    // Nobody answered: in the replay the call stays held, as it did.
                    ApprovalResult::Expired => continue,
                };
                let lease = o.lease_until.as_deref().and_then(|until| {
                    let ms = parse_time(until).ok()? - parse_time(&o.time).ok()?;
                    (ms > 0).then(|| format!("{ms}ms"))
                });
                out.push((
                    *index,
                    Event::Approval(ApprovalAnswer {
                        approval_id: None,
                        call_id: Some(o.call_id.clone()),
                        approver: o.approver.clone(),
                        groups: Vec::new(),
                        grant,
                        lease,
                        time: Some(o.time.clone()),
                    }),
                    None,
                ));
            }
            Record::Observation { time, observation } => {
                let mut obs = observation.clone();
                obs.time = Some(time.clone());
                out.push((*index, Event::Observation(obs), None));
            }
            Record::Input { time, input } => {
                if let Some(mut input) = input.input() {
                    input.time = Some(time.clone());
                    out.push((*index, Event::Input(input), None));
                }
            }
            Record::Grant { time, grant } => {
                let mut grant = grant.clone();
                grant.time = Some(time.clone());
                out.push((*index, Event::Grant(grant), None));
            }
            _ => {}
        }
    }
    out
}

/// What re-deciding a ledger found.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Recorded calls re-decided.
    pub calls: usize,
    /// Those decided differently.
    pub divergences: Vec<Divergence>,
    /// Entries that are not valid records, each with its index and why: not replayed, and
    /// reported (as restoring an engine from the same ledger reports them).
    pub unreadable: Vec<RecordError>,
}

/// Re-decides every recorded call with `engine` (which must run on event time) and returns the
/// calls it decides differently: "what would this policy change have done last week".
pub fn divergences(engine: &Engine, entries: &[(u64, serde_json::Value)]) -> Replayed {
    let (records, unreadable) = decode_all(entries.iter().map(|(i, v)| (*i, v)));
    let mut replayed_all = Replayed {
        unreadable,
        ..Replayed::default()
    };
    for (index, event, recorded) in events_from_records(&records) {
        let Processed::Decision(replayed) = engine.process(&event) else {
            continue;
        };
        replayed_all.calls += 1;
        let (Some(recorded), Event::ToolCall(call)) = (recorded, &event) else {
            continue;
        };
        let ids = |d: &Decision| d.policies.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
        if recorded.decision != replayed.decision {
            replayed_all.divergences.push(Divergence {
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
    replayed_all
}
