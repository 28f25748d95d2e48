//! Resuming on a ledger: the engine's state rebuilt from the records it wrote.

use super::{admit, approver_groups, context, system_now, Engine, PendingApproval};
use crate::decision::Verdict;
use crate::event::{format_time, parse_time, Principals, ToolCall};
use crate::log::clip;
use crate::record::{decode_all, PolicyActivation, PolicySource, Record};
use crate::recorder::{Recorder, WriteError};
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Engine {
    /// Resumes on a ledger, as the server and the gateway do at start: rebuilds the state from
    /// `records` (every record the ledger holds, in order, fed to [`Engine::restore`]), writes
    /// ahead to `recorder` from now on, and records that this bundle became active (`sources`:
    /// the policy files and their sizes). A record that cannot be restored is logged and
    /// skipped: it was written by an engine, so only a kind without state ends up there.
    pub fn resume(
        self,
        recorder: Arc<dyn Recorder>,
        records: &[Value],
        sources: &[(String, usize)],
    ) -> Result<Engine, WriteError> {
        let restored = self.catch_up(0, records);
        tracing::info!(restored, "engine state rebuilt from the ledger");
        recorder.record(self.activation_record(sources))?;
        Ok(self.with_recorder(recorder))
    }

    /// Applies ledger records this engine did not make (those another replica sharing the
    /// ledger wrote), in order: `records` are the ledger's entries from index `first`. Returns
    /// how many were restored; one that cannot be is logged and skipped, as at start-up.
    pub fn catch_up(&self, first: u64, records: &[Value]) -> usize {
        let mut restored = 0usize;
        let (decoded, unreadable) = decode_all(
            (first..)
                .zip(records.iter())
                .inspect(|(i, r)| report_truncated(*i, r)),
        );
        for e in &unreadable {
            tracing::warn!(error = %clip(&e.to_string()), "ledger record not restored");
        }
        for (index, record) in &decoded {
            match self.restore(record) {
                Ok(()) => restored += 1,
                Err(e) => {
                    tracing::warn!(entry = index, error = %clip(&e), "ledger record not restored")
                }
            }
        }
        restored
    }

    /// A new engine on this one's bundle, settings and recorder, with its state rebuilt from
    /// `records` (the whole ledger) alone: after a write failed part-way, this engine may hold
    /// what the ledger does not.
    pub fn rebuilt(&self, records: &[Value]) -> Engine {
        let mut engine = Engine::on_bundle(self.bundle(), Arc::clone(&self.settings));
        engine.recorder = Arc::clone(&self.recorder);
        engine.catch_up(0, records);
        engine
    }

    /// The record that says this engine's bundle became active (`sources`: the policy files).
    pub fn activation_record(&self, sources: &[(String, usize)]) -> Value {
        let bundle = self.bundle();
        Record::PolicyActivation(PolicyActivation {
            time: format_time(system_now()),
            policy_hash: bundle.hash.clone(),
            sources: sources
                .iter()
                .map(|(name, bytes)| PolicySource {
                    name: name.clone(),
                    bytes: *bytes,
                })
                .collect(),
            policies: bundle
                .policies
                .iter()
                .map(|p| p.policy.id.clone())
                .collect(),
        })
        .to_value()
    }

    /// Rebuilds state from one record previously written to the recorder (a ledger entry):
    /// admitted calls re-enter their scopes' monitors at their recorded time, held calls become
    /// pending again, answered approvals admit their call and restore leases, observations taint.
    /// Feeding every record of a ledger in order restores the engine a restart would otherwise
    /// reset — a rate limit cannot be escaped by restarting the server. Records of other kinds
    /// are ignored.
    pub fn restore(&self, record: &Record) -> Result<(), String> {
        match record {
            Record::Decision { call, decision } => {
                let now = parse_time(&decision.time)?;
                self.seq.fetch_add(1, Ordering::Relaxed);
                match decision.decision {
                    Verdict::Allow => self.admit_at(call, now),
                    Verdict::RequireApproval => {
                        let (Some(approval_id), Some(deadline)) =
                            (decision.approval_id.clone(), decision.deadline.clone())
                        else {
                            return Err(format!(
                                "held call {} without approval id or deadline",
                                call.id
                            ));
                        };
                        let bundle = self.bundle();
                        let pending = PendingApproval {
                            approval_id,
                            held_at: decision.time.clone(),
                            deadline_ms: parse_time(&deadline)?,
                            deadline,
                            approvers: approver_groups(&bundle, &decision.policies),
                            policies: decision.policies.clone(),
                            call: call.clone(),
                        };
                        self.park(pending);
                    }
                    Verdict::Deny => {}
                }
            }
            Record::Approval { outcome } => {
                let pending = self.approvals.lock().take(&outcome.approval_id);
                if let Some(pending) = &pending {
                    if outcome.decision == Verdict::Allow {
                        let now = parse_time(&outcome.time)?;
                        self.admit_at(&pending.call, now);
                        if let Some(until) = outcome.lease_until.as_deref() {
                            self.add_leases(pending, parse_time(until)?);
                        }
                    }
                    // Answered on another replica: whoever waits here learns the outcome.
                    self.resolve(outcome);
                }
            }
            Record::Observation { time, observation } => {
                let mut obs = observation.clone();
                obs.time = Some(time.clone());
                self.taint(&obs, parse_time(time)?);
            }
            Record::Input { input, .. } => {
                if let Some(input) = input.input() {
                    self.index_input(&input);
                }
            }
            Record::Grant { grant, .. } => self.restore_grant(grant)?,
            _ => {}
        }
        Ok(())
    }

    fn admit_at(&self, call: &ToolCall, now: i64) {
        let bundle = self.bundle();
        let p = Principals::of(&call.agent, call.session.as_deref(), &call.chain);
        let ctx = context(call, &p, now);
        let mut guards = self.lock_scopes(&bundle, &p);
        admit(&bundle, &ctx, bundle.tool(&call.tool), &mut guards);
    }
}

/// Says, at start-up, which ledger records nest past the readers' depth: such a record is
/// restored from the part that could be read (its agent, tool, verdict and labels: its calls
/// still count and its taint still applies).
fn report_truncated(index: u64, record: &Value) {
    if truncated_parts(record) > 0 {
        tracing::warn!(
            entry = index,
            limit = truststack_ledger::depth::MAX_RECORD_DEPTH,
            "ledger record nests deeper than readers read: restored from its readable part"
        );
    }
}

/// How many subtrees of a record were cut for their depth when it was read.
fn truncated_parts(record: &Value) -> usize {
    let mut n = 0;
    let mut stack = vec![record];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) if s == truststack_ledger::depth::TRUNCATED_MARKER => n += 1,
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    n
}
