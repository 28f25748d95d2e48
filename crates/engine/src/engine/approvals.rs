//! Calls held for a human: parking them, answers (grant, refusal, cancellation, expiry) and
//! the waiters that wait for an outcome.

use super::decide::Tally;
use super::{admit, context, Engine};
use crate::decision::{ApprovalOutcome, ApprovalResult, FiredPolicy, Verdict};
use crate::event::{format_time, ApprovalAnswer, Caller, Principals, ToolCall};
use crate::record::Record;
use crate::recorder::WriteError;
use std::collections::HashMap;
use truststack_identity::id::UserId;
use truststack_policy::{Action, Bundle};

/// Why an approval answer was not applied. The held call stays pending unless said otherwise.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("no pending approval {0}")]
    Unknown(String),
    #[error("an approval answer must name `approval_id` or `call_id`")]
    Unnamed,
    #[error("approver `{0}` is not a human principal (`user:...`)")]
    NotHuman(String),
    #[error("separation of duties: `{approver}` is in the chain of command of call {call_id} and cannot approve it")]
    InChain { approver: String, call_id: String },
    #[error("`{approver}` is not in approver group `{group}` required by policy `{policy}`")]
    NotInGroup {
        approver: String,
        group: String,
        policy: String,
    },
    #[error("bad approval: {0}")]
    Invalid(String),
    #[error("`{caller}` did not make call {call_id}: only its caller can cancel it")]
    NotCaller { caller: String, call_id: String },
    /// The answer's record could not be written: nothing of it was applied, and the call stays
    /// held, as the ledger says it is (a restart finds it held too).
    #[error("approval not applied, the call stays held: the ledger cannot record the answer: {0}")]
    Unrecorded(#[source] WriteError),
}

/// A call held for a human.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PendingApproval {
    pub approval_id: String,
    pub call: ToolCall,
    pub held_at: String,
    pub deadline: String,
    #[serde(skip)]
    pub(super) deadline_ms: i64,
    pub policies: Vec<FiredPolicy>,
    pub approvers: Vec<String>,
}

#[derive(Default)]
pub(super) struct Approvals {
    by_id: HashMap<String, PendingApproval>,
    by_call: HashMap<String, String>,
    /// Approvals taken out of `by_id` whose outcome is still being recorded: waiters keep
    /// waiting for them rather than taking them for lost.
    /// Each with the agent whose call it holds.
    answering: HashMap<String, String>,
    /// Recently answered approvals, by approval id, for callers waiting on them (bounded:
    /// the oldest are forgotten first).
    resolved: HashMap<String, ApprovalOutcome>,
    /// The agent whose call each of `resolved` held: who may still wait on it.
    resolved_agent: HashMap<String, String>,
    resolved_order: std::collections::VecDeque<String>,
}

impl Approvals {
    /// The held calls alone, for a fork: answered approvals are remembered for this engine's
    /// waiters, and a fork has none.
    pub(super) fn insert(&mut self, pending: PendingApproval) {
        self.by_call
            .insert(pending.call.id.clone(), pending.approval_id.clone());
        self.by_id.insert(pending.approval_id.clone(), pending);
    }

    /// Takes a held call out of the queue (answered, or found answered in the ledger).
    pub(super) fn take(&mut self, id: &str) -> Option<PendingApproval> {
        let pending = self.by_id.remove(id)?;
        self.by_call.remove(&pending.call.id);
        Some(pending)
    }

    /// Takes a held call out of the queue to answer it: its waiters wait on until the answer
    /// is recorded.
    fn start_answer(&mut self, id: &str) -> Option<PendingApproval> {
        let pending = self.take(id)?;
        self.answering
            .insert(pending.approval_id.clone(), pending.call.agent.clone());
        Some(pending)
    }

    /// The held calls alone, for a fork: answered approvals are remembered for this engine's
    /// waiters, and a fork has none.
    pub(super) fn held(&self) -> Approvals {
        Approvals {
            by_id: self.by_id.clone(),
            by_call: self.by_call.clone(),
            ..Approvals::default()
        }
    }

    /// Whether an approval still has an outcome to come: held, or being answered.
    fn awaited(&self, id: &str) -> bool {
        self.by_id.contains_key(id) || self.answering.contains_key(id)
    }

    /// The agent whose call the approval holds (or held, if recently answered).
    fn agent(&self, id: &str) -> Option<&str> {
        self.by_id
            .get(id)
            .map(|p| p.call.agent.as_str())
            .or_else(|| self.answering.get(id).map(String::as_str))
            .or_else(|| self.resolved_agent.get(id).map(String::as_str))
    }
}

/// An answer whose record could not be written: the held call, to hold again, and why.
type NotRecorded = Box<(PendingApproval, WriteError)>;

/// How many answered approvals are remembered for late waiters.
const RESOLVED_KEPT: usize = 10_000;

impl Engine {
    /// Blocks until the approval is answered or expires, or `timeout` passes; returns its
    /// outcome. Async callers run this on a blocking thread.
    pub fn wait_outcome(
        &self,
        approval_id: &str,
        timeout: std::time::Duration,
    ) -> Option<ApprovalOutcome> {
        let deadline = std::time::Instant::now() + timeout;
        let mut approvals = self.approvals.lock();
        loop {
            if let Some(outcome) = approvals.resolved.get(approval_id) {
                return Some(outcome.clone());
            }
            if !approvals.awaited(approval_id) {
                return None;
            }
            if self
                .resolved
                .wait_until(&mut approvals, deadline)
                .timed_out()
            {
                return approvals.resolved.get(approval_id).cloned();
            }
        }
    }

    /// Waits, without holding a thread, until the approval is answered or expires; returns its
    /// outcome, or `None` at once when the approval is neither held nor recently answered.
    /// Callers bound the wait themselves (e.g. `tokio::time::timeout`); dropping the future
    /// ends it.
    pub async fn outcome(&self, approval_id: &str) -> Option<ApprovalOutcome> {
        loop {
            let mut notified = std::pin::pin!(self.resolved_async.notified());
            // Registered before the check, so a resolution between the check and the await
            // still wakes this waiter.
            notified.as_mut().enable();
            {
                let approvals = self.approvals.lock();
                if let Some(outcome) = approvals.resolved.get(approval_id) {
                    return Some(outcome.clone());
                }
                if !approvals.awaited(approval_id) {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Remembers an outcome for waiters and wakes them.
    pub(super) fn resolve(&self, outcome: &ApprovalOutcome) {
        let mut approvals = self.approvals.lock();
        if let Some(agent) = approvals.answering.remove(&outcome.approval_id) {
            approvals
                .resolved_agent
                .insert(outcome.approval_id.clone(), agent);
        }
        approvals
            .resolved
            .insert(outcome.approval_id.clone(), outcome.clone());
        approvals
            .resolved_order
            .push_back(outcome.approval_id.clone());
        while approvals.resolved_order.len() > RESOLVED_KEPT {
            if let Some(old) = approvals.resolved_order.pop_front() {
                approvals.resolved.remove(&old);
                approvals.resolved_agent.remove(&old);
            }
        }
        drop(approvals);
        self.resolved.notify_all();
        self.resolved_async.notify_waiters();
    }

    /// A call held at `now` by the REQUIRE_HITL policies among `fired`.
    pub(super) fn hold(
        &self,
        bundle: &Bundle,
        call: &ToolCall,
        now: i64,
        fired: &[FiredPolicy],
    ) -> PendingApproval {
        let deadline_ms = now.saturating_add(self.deadline_for(bundle, fired));
        PendingApproval {
            approval_id: self.next_id("a", now),
            call: call.clone(),
            held_at: format_time(now),
            deadline: format_time(deadline_ms),
            deadline_ms,
            approvers: approver_groups(bundle, fired),
            policies: fired.to_vec(),
        }
    }

    /// Keeps a held call until it is answered or expires.
    pub(super) fn park(&self, pending: PendingApproval) {
        self.approvals.lock().insert(pending);
    }

    /// The deadline of a held call: the shortest `DEADLINE` among the policies that hold it (a
    /// REQUIRE_HITL policy waved through by a lease does not hold it).
    fn deadline_for(&self, bundle: &Bundle, fired: &[FiredPolicy]) -> i64 {
        fired
            .iter()
            .filter(|f| f.action == Action::RequireHitl && f.lease_until.is_none())
            .filter_map(|f| bundle.policy(&f.id))
            .filter_map(|p| p.policy.deadline_ms)
            .min()
            .unwrap_or(self.settings.approval_deadline_ms)
    }

    /// Applies a human's answer to a held call.
    pub fn answer(&self, ans: &ApprovalAnswer) -> Result<ApprovalOutcome, ApprovalError> {
        let now = self
            .now(ans.time.as_deref())
            .map_err(ApprovalError::Invalid)?;
        let lease_ms = ans
            .lease
            .as_deref()
            .map(truststack_policy::duration::parse_duration)
            .transpose()
            .map_err(ApprovalError::Invalid)?;
        let pending = {
            let mut approvals = self.approvals.lock();
            let id = match (&ans.approval_id, &ans.call_id) {
                (Some(id), _) => id.clone(),
                (None, Some(call)) => approvals
                    .by_call
                    .get(call)
                    .cloned()
                    .ok_or_else(|| ApprovalError::Unknown(format!("for call {call}")))?,
                (None, None) => return Err(ApprovalError::Unnamed),
            };
            let pending = approvals
                .by_id
                .get(&id)
                .ok_or_else(|| ApprovalError::Unknown(id.clone()))?;
            if now <= pending.deadline_ms {
                self.check_approver(ans, pending)?;
            }
            approvals
                .start_answer(&id)
                .ok_or(ApprovalError::Unknown(id))?
        };
        let outcome = if now > pending.deadline_ms {
            self.close(pending, &ans.approver, now, ApprovalResult::Expired)
        } else if !ans.grant {
            self.close(pending, &ans.approver, now, ApprovalResult::Refused)
        } else {
            self.grant(pending, &ans.approver, now, lease_ms)
        };
        self.settle_answer(outcome)
    }

    /// An answer recorded is resolved for its waiters; one that could not be recorded holds
    /// its call again.
    fn settle_answer(
        &self,
        outcome: Result<ApprovalOutcome, NotRecorded>,
    ) -> Result<ApprovalOutcome, ApprovalError> {
        match outcome {
            Ok(outcome) => {
                self.resolve(&outcome);
                Ok(outcome)
            }
            Err(unrecorded) => {
                let (pending, e) = *unrecorded;
                self.unanswer(pending);
                Err(ApprovalError::Unrecorded(e))
            }
        }
    }

    /// Holds a call again whose answer could not be recorded: in memory as in the ledger, it
    /// has no answer yet. Its waiters keep waiting.
    fn unanswer(&self, pending: PendingApproval) {
        let mut approvals = self.approvals.lock();
        approvals.answering.remove(&pending.approval_id);
        approvals.insert(pending);
    }

    /// Withdraws a held call for its caller (the same agent and chain that made it): its client
    /// cancelled the request or ended the session. The call is denied, recorded as
    /// [`ApprovalResult::Cancelled`], and can no longer be granted. `time` is read only on the
    /// event clock.
    pub fn cancel(
        &self,
        approval_id: &str,
        caller: &Caller,
        time: Option<&str>,
    ) -> Result<ApprovalOutcome, ApprovalError> {
        let now = self.now(time).map_err(ApprovalError::Invalid)?;
        let pending = {
            let mut approvals = self.approvals.lock();
            let pending = approvals
                .by_id
                .get(approval_id)
                .ok_or_else(|| ApprovalError::Unknown(approval_id.to_string()))?;
            if pending.call.agent != caller.agent || pending.call.chain != caller.chain {
                return Err(ApprovalError::NotCaller {
                    caller: caller.agent.clone(),
                    call_id: pending.call.id.clone(),
                });
            }
            approvals
                .start_answer(approval_id)
                .ok_or_else(|| ApprovalError::Unknown(approval_id.to_string()))?
        };
        self.settle_answer(self.close(pending, &caller.agent, now, ApprovalResult::Cancelled))
    }

    fn check_approver(
        &self,
        ans: &ApprovalAnswer,
        pending: &PendingApproval,
    ) -> Result<(), ApprovalError> {
        let approver = ans.approver.as_str();
        if UserId::parse(approver).is_err() {
            return Err(ApprovalError::NotHuman(approver.to_string()));
        }
        let call = &pending.call;
        let p = Principals::of(&call.agent, call.session.as_deref(), &call.chain);
        if p.involves(approver) {
            return Err(ApprovalError::InChain {
                approver: approver.to_string(),
                call_id: call.id.clone(),
            });
        }
        if !self.settings.enforces_approver_groups() {
            return Ok(());
        }
        let bundle = self.bundle();
        for fired in &pending.policies {
            let group = bundle
                .policy(&fired.id)
                .and_then(|p| p.policy.approvers.clone());
            let Some(group) = group else { continue };
            let listed = self
                .settings
                .approver_groups
                .get(&group)
                .is_some_and(|members| members.iter().any(|m| m == approver));
            if !listed && !ans.groups.contains(&group) {
                return Err(ApprovalError::NotInGroup {
                    approver: approver.to_string(),
                    group,
                    policy: fired.id.clone(),
                });
            }
        }
        Ok(())
    }

    /// Refusal or expiry: the call is denied once the refusal is recorded. If it cannot be,
    /// the held call comes back with the ledger's error.
    fn close(
        &self,
        pending: PendingApproval,
        approver: &str,
        now: i64,
        result: ApprovalResult,
    ) -> Result<ApprovalOutcome, NotRecorded> {
        let reason = match result {
            ApprovalResult::Expired => format!(
                "no approver answered before the deadline {}",
                pending.deadline
            ),
            ApprovalResult::Cancelled => {
                format!("cancelled by its caller {approver} while held")
            }
            _ => format!("refused by {approver}"),
        };
        let mut outcome = ApprovalOutcome {
            approval_id: pending.approval_id.clone(),
            call_id: pending.call.id.clone(),
            approver: approver.to_string(),
            result,
            decision: Verdict::Deny,
            policies: pending.policies.clone(),
            reason,
            lease_until: None,
            ledger_index: None,
            time: format_time(now),
        };
        match self.record_outcome(&mut outcome) {
            Ok(()) => Ok(outcome),
            Err(e) => Err(Box::new((pending, e))),
        }
    }

    /// Writes an approval's outcome to the recorder, noting its ledger index.
    fn record_outcome(&self, outcome: &mut ApprovalOutcome) -> Result<(), WriteError> {
        let record = Record::Approval {
            outcome: outcome.clone(),
        };
        outcome.ledger_index = self.recorder.record(record.to_value())?;
        Ok(())
    }

    /// A grant: re-decide the call at approval time with its HITL gates passed; a DENY that
    /// fires now (a rate limit that filled meanwhile) still wins. Admitted from now on.
    fn grant(
        &self,
        pending: PendingApproval,
        approver: &str,
        now: i64,
        lease_ms: Option<i64>,
    ) -> Result<ApprovalOutcome, NotRecorded> {
        let bundle = self.bundle();
        let call = pending.call.clone();
        let p = Principals::of(&call.agent, call.session.as_deref(), &call.chain);
        let ctx = context(&call, &p, now);
        let info = bundle.tool(&call.tool);
        let mut guards = self.lock_scopes(&bundle, &p);
        let eval = self.evaluate(&bundle, &ctx, &p, info, &guards);
        let verdict = self.verdict(info, Tally::of(&eval.fired), true);
        let result = if verdict == Verdict::Allow {
            ApprovalResult::Granted
        } else {
            ApprovalResult::GrantedButDenied
        };
        let lease_until = lease_ms
            .filter(|_| verdict == Verdict::Allow)
            .map(|ms| now.saturating_add(ms));
        let mut outcome = ApprovalOutcome {
            approval_id: pending.approval_id.clone(),
            call_id: call.id.clone(),
            approver: approver.to_string(),
            result,
            decision: verdict,
            reason: match verdict {
                Verdict::Allow => format!("approved by {approver}"),
                _ => format!(
                    "approved by {approver}, but {}",
                    self.reason(&call, info, verdict, &eval.fired)
                ),
            },
            policies: eval.fired,
            lease_until: lease_until.map(format_time),
            ledger_index: None,
            time: format_time(now),
        };
        if let Err(e) = self.record_outcome(&mut outcome) {
            // Nothing admitted, no lease: the call is held again, as the ledger has it.
            drop(guards);
            return Err(Box::new((pending, e)));
        }
        if verdict == Verdict::Allow {
            admit(&bundle, &ctx, info, &mut guards);
            if let Some(until) = lease_until {
                self.add_leases(&pending, until);
            }
        }
        Ok(outcome)
    }

    /// Whether a held call's deadline has passed at `now` ([`Engine::expire`] has work to do).
    pub fn overdue(&self, now: i64) -> bool {
        self.approvals
            .lock()
            .by_id
            .values()
            .any(|p| p.deadline_ms < now)
    }

    /// Refuses every held call whose deadline is before `now` (epoch ms).
    pub fn expire(&self, now: i64) -> Vec<ApprovalOutcome> {
        let expired: Vec<PendingApproval> = {
            let mut approvals = self.approvals.lock();
            let ids: Vec<String> = approvals
                .by_id
                .values()
                .filter(|p| p.deadline_ms < now)
                .map(|p| p.approval_id.clone())
                .collect();
            ids.iter()
                .filter_map(|id| approvals.start_answer(id))
                .collect()
        };
        // An expiry that cannot be recorded leaves the call held (past its deadline, no answer
        // can grant it): the next sweep tries again.
        expired
            .into_iter()
            .filter_map(
                |p| match self.close(p, "deadline", now, ApprovalResult::Expired) {
                    Ok(outcome) => {
                        self.resolve(&outcome);
                        Some(outcome)
                    }
                    Err(unrecorded) => {
                        let (pending, e) = *unrecorded;
                        tracing::warn!(approval = %pending.approval_id, error = %e, "expiry not recorded; the call stays held");
                        self.unanswer(pending);
                        None
                    }
                },
            )
            .collect()
    }

    /// Held calls, oldest first.
    pub fn pending(&self) -> Vec<PendingApproval> {
        let mut list: Vec<PendingApproval> =
            self.approvals.lock().by_id.values().cloned().collect();
        list.sort_by(|a, b| {
            a.held_at
                .cmp(&b.held_at)
                .then(a.approval_id.cmp(&b.approval_id))
        });
        list
    }

    /// How many calls are held (without copying them, as `pending` does).
    pub fn pending_count(&self) -> usize {
        self.approvals.lock().by_id.len()
    }

    /// The agent whose call the approval `id` holds, or held if it was answered recently:
    /// who, besides approvers, may wait on it.
    pub fn approval_agent(&self, id: &str) -> Option<String> {
        self.approvals.lock().agent(id).map(String::from)
    }

    /// Whether the approval `id` still has an outcome to come: held, waiting for an answer, or
    /// answered with the outcome still being recorded.
    pub fn is_pending(&self, id: &str) -> bool {
        self.approvals.lock().awaited(id)
    }
}

pub(super) fn approver_groups(bundle: &Bundle, fired: &[FiredPolicy]) -> Vec<String> {
    let mut groups: Vec<String> = fired
        .iter()
        .filter_map(|f| bundle.policy(&f.id))
        .filter_map(|p| p.policy.approvers.clone())
        .collect();
    groups.sort();
    groups.dedup();
    groups
}
