//! Evidence: an explored path as a JSONL trace of events (tool calls and approvals) that
//! `truststack policy eval` replays, and the decisions that replay gives.
//!
//! Every trajectory is replayed through a fresh engine with [`truststack_engine::replay::replay`]
//! — the very function behind `policy eval`, with eval's settings — and the replayed decisions
//! are what the report shows. A trajectory whose replay disagrees with the exploration (which
//! would be a bug) is flagged `replay_consistent: false`.

use crate::explore::PathStep;
use crate::taxonomy::Tactic;
use crate::world::World;
use serde::Serialize;
use truststack_engine::event::format_time;
use truststack_engine::replay::replay;
use truststack_engine::Processed;
use truststack_engine::{ApprovalAnswer, ApprovalResult, Engine, Event, Verdict};
use truststack_policy::duration::format_duration;

/// An approver's answer on a trajectory.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalStep {
    pub approver: String,
    pub result: ApprovalResult,
    pub decision: Verdict,
    pub reason: String,
}

/// One call of a trajectory, as the engine decided it on replay.
#[derive(Debug, Clone, Serialize)]
pub struct TrajectoryStep {
    pub call_id: String,
    pub time: String,
    /// The delegation path of the acting agent (`orchestrator → recon`).
    pub actor: String,
    pub agent: String,
    pub chain: Vec<String>,
    pub tool: String,
    /// The argument variant called, when what the call does to a goal depends on it (a sink
    /// whose condition reads an argument); the full arguments are in the trace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<serde_json::Value>,
    pub tactics: Vec<Tactic>,
    pub decision: Verdict,
    pub policies: Vec<String>,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalStep>,
    /// How long the adversary waited before this call, beyond the usual step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<i64>,
    /// Whether the call entered the trajectory (allowed, or granted).
    pub admitted: bool,
}

impl TrajectoryStep {
    /// The tool, with the argument variant when it matters (`http_upload {"url":"..."}`).
    pub fn call_label(&self) -> String {
        match &self.args {
            Some(args) => format!("{} {args}", self.tool),
            None => self.tool.clone(),
        }
    }
}

/// A trajectory: evidence that a goal is reachable.
#[derive(Debug, Clone, Serialize)]
pub struct Trajectory {
    pub steps: Vec<TrajectoryStep>,
    /// The events, in order: replay them with `truststack policy eval`.
    pub events: Vec<Event>,
    /// Policies whose hold a human granted on the way.
    pub gates: Vec<String>,
    /// Simulated time from the first call to the last.
    pub duration_ms: i64,
    /// The replayed decisions match the exploration's, and the goal is reached.
    pub replay_consistent: bool,
}

impl Trajectory {
    /// The events as JSONL, one per line.
    pub fn jsonl(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| serde_json::to_string(e).ok())
            .map(|l| l + "\n")
            .collect()
    }

    /// Calls on the trajectory.
    pub fn calls(&self) -> usize {
        self.steps.len()
    }
}

/// Builds the evidence for `goal` from an explored path.
pub fn build(world: &World, goal: usize, path: &[PathStep]) -> Trajectory {
    let mut events = Vec::new();
    let mut expected = Vec::new();
    let mut waited = 0i64;
    let mut waits = Vec::new();
    let mut moves = Vec::new();
    for (k, step) in path.iter().enumerate() {
        match step {
            PathStep::Wait { ms } => waited += ms,
            PathStep::Call {
                mv,
                time,
                held,
                granted_by,
                admitted,
            } => {
                let call = world.call(*mv, *time, format!("c{}", k + 1));
                let id = call.id.clone();
                events.push(Event::ToolCall(call));
                if let Some(approver) = granted_by {
                    events.push(Event::Approval(ApprovalAnswer {
                        approval_id: None,
                        call_id: Some(id),
                        approver: approver.clone(),
                        groups: Vec::new(),
                        grant: true,
                        lease: world
                            .manifest
                            .settings
                            .approval_lease_ms
                            .map(format_duration),
                        time: Some(format_time(*time)),
                    }));
                }
                expected.push((*held, granted_by.is_some(), *admitted));
                waits.push((waited > 0).then_some(waited));
                waited = 0;
                moves.push(*mv);
            }
        }
    }
    let bundle = (*world.base.bundle()).clone();
    let engine = Engine::new(bundle, world.eval_settings());
    let mut steps: Vec<TrajectoryStep> = Vec::new();
    let mut consistent = true;
    let mut call_index = 0usize;
    for step in replay(&engine, &events) {
        match step {
            Processed::Decision(d) => {
                let Some(mv) = moves.get(call_index) else {
                    consistent = false;
                    continue;
                };
                let actor = &world.actors[mv.actor];
                let tool = &world.tools[mv.tool];
                steps.push(TrajectoryStep {
                    call_id: d.call_id.clone(),
                    time: d.time.clone(),
                    actor: actor.label.clone(),
                    agent: actor.identity.clone(),
                    chain: actor.chain.clone(),
                    tool: tool.name.clone(),
                    args: world
                        .variant_matters(mv.tool)
                        .then(|| tool.variants.get(mv.variant).cloned())
                        .flatten(),
                    tactics: tool.tactics.clone(),
                    decision: d.decision,
                    policies: d.policies.iter().map(|p| p.id.clone()).collect(),
                    reason: d.reason.clone(),
                    approval: None,
                    waited_ms: waits.get(call_index).copied().flatten(),
                    admitted: d.decision == Verdict::Allow,
                });
                call_index += 1;
            }
            Processed::Approval(result) => match (result, steps.last_mut()) {
                (Ok(outcome), Some(last)) => {
                    last.admitted = outcome.decision == Verdict::Allow;
                    last.approval = Some(ApprovalStep {
                        approver: outcome.approver,
                        result: outcome.result,
                        decision: outcome.decision,
                        reason: outcome.reason,
                    });
                }
                _ => consistent = false,
            },
            _ => {}
        }
    }
    for (s, (held, granted, admitted)) in steps.iter().zip(&expected) {
        let decided = if *held {
            Verdict::RequireApproval
        } else if *admitted {
            Verdict::Allow
        } else {
            Verdict::Deny
        };
        if s.decision != decided || s.admitted != *admitted || s.approval.is_some() != *granted {
            consistent = false;
        }
    }
    // The goal must be reached by the admitted calls, in order.
    let mut progress = vec![0u8; world.progress_len];
    let mut done = Vec::new();
    for (s, mv) in steps.iter().zip(&moves) {
        if s.admitted {
            world.advance(&mut progress, *mv, &mut done);
        }
    }
    if !done.contains(&goal) || steps.len() != expected.len() {
        consistent = false;
    }
    let gates = steps
        .iter()
        .filter(|s| s.approval.is_some())
        .flat_map(|s| s.policies.iter().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let duration_ms = match (
        path.iter().find_map(time_of),
        path.iter().rev().find_map(time_of),
    ) {
        (Some(a), Some(b)) => b - a,
        _ => 0,
    };
    Trajectory {
        steps,
        events,
        gates,
        duration_ms,
        replay_consistent: consistent,
    }
}

fn time_of(step: &PathStep) -> Option<i64> {
    match step {
        PathStep::Call { time, .. } => Some(*time),
        PathStep::Wait { .. } => None,
    }
}
