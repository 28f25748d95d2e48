//! The decision core: per-scope monitor state, `decide`, observations and approvals.

use crate::decision::{ApprovalOutcome, ApprovalResult, Brief, Decision, FiredPolicy, Verdict};
use crate::event::{
    format_time, parse_time, ApprovalAnswer, Caller, Event, Input, Observation, Principals,
    ToolCall,
};
use crate::log::clip;
use crate::record::{decode_all, PolicyActivation, PolicySource, Record, RecordedInput};
use crate::recorder::{private_payload, NoRecorder, Recorded, Recorder, Recording};
use crate::settings::{DefaultDecision, Settings, TimeSource};
use parking_lot::{Condvar, Mutex, RwLock};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use truststack_identity::id::UserId;
use truststack_ledger::depth::{value_depth, MAX_INPUT_DEPTH};
use truststack_policy::compile::CallContext;
use truststack_policy::compile::CompiledPolicy;
use truststack_policy::monitor::MonitorState;
use truststack_policy::{Action, Bundle, Mode, Target, ToolInfo};

type ScopeCell = Arc<Mutex<Vec<MonitorState>>>;
/// A call to decide: which, on whose verified behalf, and at what time.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    call: &'a ToolCall,
    caller: Option<&'a Caller>,
    at: Option<i64>,
}

impl<'a> Request<'a> {
    /// The call as it says, at the engine's time (on the event clock, the call's `time`).
    pub fn new(call: &'a ToolCall) -> Request<'a> {
        Request {
            call,
            caller: None,
            at: None,
        }
    }

    /// On behalf of a verified caller: the call's `agent` and `chain` are replaced by the
    /// credential's, and a tool outside the credential's allowed tools is denied before any
    /// policy is evaluated.
    pub fn for_caller(self, caller: &'a Caller) -> Request<'a> {
        Request {
            caller: Some(caller),
            ..self
        }
    }

    /// At `now` (epoch ms), whatever the engine's time source and the call's `time`: a
    /// simulated clock that need not format a timestamp for the engine to parse back.
    pub fn at(self, now: i64) -> Request<'a> {
        Request {
            at: Some(now),
            ..self
        }
    }
}

impl<'a> From<&'a ToolCall> for Request<'a> {
    fn from(call: &'a ToolCall) -> Request<'a> {
        Request::new(call)
    }
}

/// A lease: `(policy id, target, scope key)`.
type LeaseKey = (String, Target, Box<str>);
type ScopeGuard = parking_lot::ArcMutexGuard<parking_lot::RawMutex, Vec<MonitorState>>;

/// Why an approval answer was not applied. The held call stays pending unless said otherwise.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
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
    Unrecorded(String),
}

/// Why an input was not recorded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    /// The input itself is wrong (no human gave it, bad time): the caller's to fix.
    #[error("bad input: {0}")]
    Invalid(String),
    /// The ledger could not keep it; nothing was indexed.
    #[error("input not recorded: {0}")]
    Ledger(String),
}

/// A call held for a human.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PendingApproval {
    pub approval_id: String,
    pub call: ToolCall,
    pub held_at: String,
    pub deadline: String,
    #[serde(skip)]
    deadline_ms: i64,
    pub policies: Vec<FiredPolicy>,
    pub approvers: Vec<String>,
}

/// A decision made, with its record handed to the recorder: it may be returned to the caller
/// once that record is durable ([`Queued::wait`] blocks for it, [`Queued::durable`] awaits it).
/// If the record cannot be written, the decision becomes a denial that says so.
#[must_use = "a decision may be returned only once its record is durable"]
pub struct Queued<'e> {
    engine: &'e Engine,
    decision: Decision,
    recording: Option<Recording>,
    /// The held call, parked for approvers only once its decision is durable.
    held: Option<PendingApproval>,
    /// A denial made before any policy was evaluated (the credential does not allow the tool):
    /// if its record fails, it stays that denial and says the ledger failed too.
    denied_before_policy: bool,
    now: i64,
}

impl Queued<'_> {
    /// Blocks until the record is durable, then gives the decision.
    pub fn wait(mut self) -> Decision {
        let recorded = self.recording.take().map(Recording::wait);
        self.settle(recorded)
    }

    /// Awaits the record's durability, then gives the decision.
    pub async fn durable(mut self) -> Decision {
        let recorded = match self.recording.take() {
            Some(recording) => Some(recording.durable().await),
            None => None,
        };
        self.settle(recorded)
    }

    fn settle(self, recorded: Option<Recorded>) -> Decision {
        let Queued {
            engine,
            mut decision,
            held,
            denied_before_policy,
            now,
            ..
        } = self;
        match recorded {
            Some(Err(e)) if denied_before_policy => {
                decision.reason = format!("{}; ledger unavailable: {e}", decision.reason);
                return decision;
            }
            Some(Err(e)) => {
                return engine.fail_closed_for(
                    &decision.call_id,
                    now,
                    format!("ledger unavailable, failing closed: {e}"),
                );
            }
            Some(Ok(index)) => decision.ledger_index = index,
            None => {}
        }
        if let Some(held) = held {
            engine.park(held);
        }
        decision
    }
}

#[derive(Default)]
struct Approvals {
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
type NotRecorded = Box<(PendingApproval, String)>;

/// How many answered approvals are remembered for late waiters.
const RESOLVED_KEPT: usize = 10_000;

/// The decision engine. Cheap to share across threads (`Arc<Engine>`); decisions for one scope
/// are linearizable because a decision locks every scope it reads and writes, in a fixed order.
pub struct Engine {
    bundle: RwLock<Arc<Bundle>>,
    /// Shared by forks: the proving ground forks an engine for every step it explores.
    settings: Arc<Settings>,
    scopes: [RwLock<HashMap<Box<str>, ScopeCell>>; 4],
    approvals: Mutex<Approvals>,
    /// `(policy id, target, scope key)` → lease expiry.
    leases: Mutex<HashMap<LeaseKey, i64>>,
    pub(crate) recorder: Arc<dyn Recorder>,
    seq: AtomicU64,
    /// Task grants in force, by session.
    pub(crate) grants: crate::grant::Grants,
    /// Signalled whenever an approval is resolved.
    resolved: Condvar,
    /// The same, for async waiters ([`Engine::outcome`]), which hold no thread while they wait.
    resolved_async: tokio::sync::Notify,
}

/// Everything `evaluate` found.
struct Evaluation {
    fired: Vec<FiredPolicy>,
    shadow: Vec<FiredPolicy>,
}

/// What the enforced policies that fired add up to: all a verdict depends on.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    deny: bool,
    /// A REQUIRE_HITL policy holds the call (no lease waves it through).
    hitl: bool,
    allow: bool,
    /// A REQUIRE_HITL policy was waved through by an approver's lease.
    leased: bool,
}

impl Tally {
    fn add(&mut self, action: Action, leased: bool) {
        match action {
            Action::Deny => self.deny = true,
            Action::RequireHitl if leased => self.leased = true,
            Action::RequireHitl => self.hitl = true,
            Action::Allow => self.allow = true,
        }
    }

    fn of(fired: &[FiredPolicy]) -> Tally {
        let mut t = Tally::default();
        for f in fired {
            t.add(f.action, f.lease_until.is_some());
        }
        t
    }
}

/// The policies (enforced and shadow) whose condition holds for the call, in bundle order,
/// with the monitor states of their target scope.
fn firing<'e>(
    bundle: &'e Bundle,
    ctx: &'e CallContext<'e>,
    info: &'e ToolInfo,
    guards: &'e [Option<ScopeGuard>; 4],
) -> impl Iterator<Item = (&'e CompiledPolicy, &'e [MonitorState], usize)> + 'e {
    info.candidates.iter().filter_map(move |&pid| {
        let cp = bundle.policies.get(pid)?;
        let states = guards[cp.policy.target.index()]
            .as_deref()
            .map_or(&[][..], Vec::as_slice);
        bundle
            .evaluate(pid, ctx, info, states)
            .then_some((cp, states, pid))
    })
}

impl Engine {
    pub fn new(mut bundle: Bundle, settings: Settings) -> Self {
        bundle.provenance_bound = settings.provenance_bound;
        Engine {
            bundle: RwLock::new(Arc::new(bundle)),
            settings: Arc::new(settings),
            scopes: Default::default(),
            approvals: Mutex::default(),
            leases: Mutex::default(),
            recorder: Arc::new(NoRecorder),
            seq: AtomicU64::new(0),
            grants: Default::default(),
            resolved: Condvar::new(),
            resolved_async: tokio::sync::Notify::new(),
        }
    }

    /// An independent copy of this engine's state (monitors, held calls, leases) sharing the
    /// bundle and recorder: the proving ground explores alternative futures from one state.
    pub fn fork(&self) -> Engine {
        let copy = |map: &RwLock<HashMap<Box<str>, ScopeCell>>| {
            RwLock::new(
                map.read()
                    .iter()
                    .map(|(k, cell)| (k.clone(), Arc::new(Mutex::new(cell.lock().clone()))))
                    .collect(),
            )
        };
        Engine {
            bundle: RwLock::new(self.bundle()),
            settings: Arc::clone(&self.settings),
            scopes: std::array::from_fn(|i| copy(&self.scopes[i])),
            approvals: Mutex::new({
                // Answered approvals are remembered for this engine's waiters; a fork has none.
                let approvals = self.approvals.lock();
                Approvals {
                    by_id: approvals.by_id.clone(),
                    by_call: approvals.by_call.clone(),
                    ..Approvals::default()
                }
            }),
            leases: Mutex::new(self.leases.lock().clone()),
            recorder: Arc::clone(&self.recorder),
            seq: AtomicU64::new(self.seq.load(Ordering::Relaxed)),
            grants: self.grants.copy(),
            resolved: Condvar::new(),
            resolved_async: tokio::sync::Notify::new(),
        }
    }

    /// Every scope's monitor states, sorted by scope: two engines with equal snapshots decide
    /// every future call alike (given equal held calls and leases).
    pub fn snapshot(&self) -> Vec<(Target, String, Vec<MonitorState>)> {
        let mut out = Vec::new();
        for (i, map) in self.scopes.iter().enumerate() {
            for (key, cell) in map.read().iter() {
                out.push((Target::ALL[i], key.to_string(), cell.lock().clone()));
            }
        }
        out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        out
    }

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
    fn resolve(&self, outcome: &ApprovalOutcome) {
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

    /// Writes every decision, observation and approval to `recorder` before answering.
    pub fn with_recorder(mut self, recorder: Arc<dyn Recorder>) -> Self {
        self.recorder = recorder;
        self
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn bundle(&self) -> Arc<Bundle> {
        Arc::clone(&self.bundle.read())
    }

    pub(crate) fn now(&self, time: Option<&str>) -> Result<i64, String> {
        match self.settings.time_source {
            TimeSource::System => Ok(system_now()),
            TimeSource::Event => match time {
                Some(t) => parse_time(t),
                None => Err("event has no `time` and the engine runs on event time".into()),
            },
        }
    }

    pub(crate) fn next_id(&self, prefix: &str, now: i64) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{now:x}-{n}")
    }

    fn scope(&self, target: Target, key: &str) -> ScopeCell {
        let map = &self.scopes[target.index()];
        if let Some(cell) = map.read().get(key) {
            return Arc::clone(cell);
        }
        let bundle = self.bundle.read();
        let mut w = map.write();
        Arc::clone(
            w.entry(key.into())
                .or_insert_with(|| Arc::new(Mutex::new(bundle.new_states(target)))),
        )
    }

    /// Locks every scope the bundle's policies use, in target order (deadlock-free).
    fn lock_scopes(&self, bundle: &Bundle, p: &Principals) -> [Option<ScopeGuard>; 4] {
        std::array::from_fn(|i| {
            let target = Target::ALL[i];
            bundle
                .uses_target(target)
                .then(|| self.scope(target, &p.scope_key(target)).lock_arc())
        })
    }

    /// Until when an approver's lease waves a REQUIRE_HITL policy through for this call's scope.
    fn hitl_lease(
        &self,
        policy: &truststack_policy::Policy,
        p: &Principals,
        now: i64,
    ) -> Option<i64> {
        if policy.action != Action::RequireHitl {
            return None;
        }
        let leases = self.leases.lock();
        // Most engines never see a lease: spare the key's allocations.
        if leases.is_empty() {
            return None;
        }
        let key = (
            policy.id.clone(),
            policy.target,
            p.scope_key(policy.target).into(),
        );
        leases.get(&key).copied().filter(|until| *until > now)
    }

    fn evaluate(
        &self,
        bundle: &Bundle,
        ctx: &CallContext,
        p: &Principals,
        info: &ToolInfo,
        guards: &[Option<ScopeGuard>; 4],
    ) -> Evaluation {
        let mut eval = Evaluation {
            fired: Vec::new(),
            shadow: Vec::new(),
        };
        for (cp, states, pid) in firing(bundle, ctx, info, guards) {
            let mut fired = FiredPolicy {
                id: cp.policy.id.clone(),
                action: cp.policy.action,
                mode: cp.policy.mode,
                reason: cp.policy.reason.clone(),
                monitors: bundle.explain(pid, ctx, info, states),
                lease_until: None,
            };
            if cp.policy.mode == Mode::Shadow {
                eval.shadow.push(fired);
                continue;
            }
            fired.lease_until = self.hitl_lease(&cp.policy, p, ctx.now).map(format_time);
            eval.fired.push(fired);
        }
        eval
    }

    /// What `evaluate` would tally, without building the fired policies' explanations.
    fn tally(
        &self,
        bundle: &Bundle,
        ctx: &CallContext,
        p: &Principals,
        info: &ToolInfo,
        guards: &[Option<ScopeGuard>; 4],
    ) -> Tally {
        let mut t = Tally::default();
        for (cp, _, _) in firing(bundle, ctx, info, guards) {
            let policy = &cp.policy;
            if policy.mode == Mode::Shadow {
                continue;
            }
            t.add(policy.action, self.hitl_lease(policy, p, ctx.now).is_some());
        }
        t
    }

    /// Deny > require approval (unless granted) > allow > a lease > the default.
    fn verdict(&self, info: &ToolInfo, t: Tally, hitl_granted: bool) -> Verdict {
        if !info.known && self.settings.unknown_tools == DefaultDecision::Deny {
            return Verdict::Deny;
        }
        if t.deny {
            Verdict::Deny
        } else if t.hitl && !hitl_granted {
            Verdict::RequireApproval
        } else if t.hitl || t.allow || t.leased || hitl_granted {
            Verdict::Allow
        } else {
            match self.settings.default_decision {
                DefaultDecision::Allow => Verdict::Allow,
                DefaultDecision::Deny => Verdict::Deny,
            }
        }
    }

    fn reason(
        &self,
        call: &ToolCall,
        info: &ToolInfo,
        verdict: Verdict,
        fired: &[FiredPolicy],
    ) -> String {
        let describe = |action: Action| {
            fired
                .iter()
                .filter(|f| f.action == action && f.lease_until.is_none())
                .map(|f| match &f.reason {
                    Some(r) => format!("{} ({r})", f.id),
                    None => format!("{} ({})", f.id, held_atoms(f)),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        match verdict {
            Verdict::Deny
                if !info.known && self.settings.unknown_tools == DefaultDecision::Deny =>
            {
                format!(
                    "tool `{}` is not in the catalog and unknown tools are denied",
                    call.tool
                )
            }
            Verdict::Deny if fired.iter().any(|f| f.action == Action::Deny) => {
                format!("denied by policy {}", describe(Action::Deny))
            }
            Verdict::Deny => "no policy allows this call and the default is deny".into(),
            Verdict::RequireApproval => format!(
                "held for human approval by policy {}",
                describe(Action::RequireHitl)
            ),
            Verdict::Allow if fired.iter().any(|f| f.lease_until.is_some()) => {
                "allowed under an approver's lease".into()
            }
            Verdict::Allow if fired.iter().any(|f| f.action == Action::Allow) => {
                format!("allowed by policy {}", describe(Action::Allow))
            }
            Verdict::Allow => "allowed: no policy objects".into(),
        }
    }

    /// Decides a call: the one entry point. The decision is made, its record handed to the
    /// recorder and the scope locks released; the [`Queued`] decision may be returned once its
    /// record is durable (`.wait()` blocks for it, `.durable().await` awaits it).
    pub fn queue<'r>(&self, request: impl Into<Request<'r>>) -> Queued<'_> {
        let request = request.into();
        match self.prepare(request) {
            Ok((call, now)) => self.queue_at(&call, now),
            Err(refused) => *refused,
        }
    }

    /// What every decision goes through before its policies are evaluated: the caller's
    /// identity replaces the call's, the credential's allowed tools and the call's depth are
    /// checked, and its time is fixed. A call refused here is answered by the `Queued` denial.
    fn prepare<'c>(
        &self,
        request: Request<'c>,
    ) -> Result<(Cow<'c, ToolCall>, i64), Box<Queued<'_>>> {
        let mut call = Cow::Borrowed(request.call);
        let now = match request.at {
            Some(now) => Ok(now),
            None => self.now(call.time.as_deref()),
        };
        if let Some(caller) = request.caller {
            let owned = call.to_mut();
            owned.agent.clone_from(&caller.agent);
            owned.chain.clone_from(&caller.chain);
            if let Some(reason) = self.credential_refusal(caller, owned) {
                let now = now.as_ref().copied().unwrap_or_else(|_| system_now());
                return Err(Box::new(self.deny_before_policy(owned, now, reason)));
            }
        }
        let refused = match now {
            // Its record must be readable back by every reader: refused, and not recorded.
            Ok(_) if value_depth(&call.args) > MAX_INPUT_DEPTH => format!(
                "cannot decide: `args` nest {} levels deep; at most {MAX_INPUT_DEPTH} are accepted",
                value_depth(&call.args)
            ),
            Ok(now) => match self.grant_refusal(&call) {
                Some(reason) => return Err(Box::new(self.deny_before_policy(&call, now, reason))),
                None => return Ok((call, now)),
            },
            Err(e) => format!("cannot decide: {e}"),
        };
        let now = system_now();
        Err(Box::new(Queued {
            engine: self,
            decision: self.fail_closed(&call, now, refused),
            recording: None,
            held: None,
            denied_before_policy: false,
            now,
        }))
    }

    /// Why the caller's credential does not allow the call's tool, if it does not.
    fn credential_refusal(&self, caller: &Caller, call: &ToolCall) -> Option<String> {
        let allowed = caller.tools.as_ref()?;
        let bundle = self.bundle();
        let spec = bundle.catalog.tool(&call.tool);
        if crate::visibility::credential_allows(caller, &call.tool, spec) {
            return None;
        }
        Some(format!(
            "the credential{} of {} does not allow tool `{}` (allowed: {})",
            caller
                .credential_id
                .as_deref()
                .map(|j| format!(" {j}"))
                .unwrap_or_default(),
            caller.agent,
            call.tool,
            allowed.join(", ")
        ))
    }

    /// Denied before policy evaluation (the credential or the session's task grant does not
    /// allow the call), and written to the ledger like any decision.
    fn deny_before_policy(&self, call: &ToolCall, now: i64, reason: String) -> Queued<'_> {
        let decision = self.fail_closed(call, now, reason);
        let recording = self
            .recorder
            .submit(decision_record(&self.bundle(), call, &decision));
        Queued {
            engine: self,
            decision,
            recording: Some(recording),
            held: None,
            denied_before_policy: true,
            now,
        }
    }

    /// Decides under the scope locks, hands the record to the recorder and, for an allowed call,
    /// updates the monitors before releasing the locks — so the ledger keeps each scope's
    /// decisions in the order they were made, and racing calls never both take a last slot. A
    /// record the recorder refuses at once leaves the monitors untouched; one whose commit fails
    /// later has been counted, which errs on the side of denying, and its decision becomes a
    /// denial.
    fn queue_at(&self, call: &ToolCall, now: i64) -> Queued<'_> {
        let bundle = self.bundle();
        let p = Principals::of(&call.agent, call.session.as_deref(), &call.chain);
        let ctx = context(call, &p, now);
        let info = bundle.tool(&call.tool);
        let mut guards = self.lock_scopes(&bundle, &p);
        let eval = self.evaluate(&bundle, &ctx, &p, info, &guards);
        let verdict = self.verdict(info, Tally::of(&eval.fired), false);
        let mut decision = Decision {
            decision: verdict,
            decision_id: self.next_id("d", now),
            call_id: call.id.clone(),
            reason: self.reason(call, info, verdict, &eval.fired),
            policies: eval.fired,
            shadow: eval.shadow,
            approval_id: None,
            deadline: None,
            ledger_index: None,
            policy_hash: bundle.hash.clone(),
            time: format_time(now),
        };
        let mut held = None;
        if verdict == Verdict::RequireApproval {
            let pending = self.hold(&bundle, call, now, &decision.policies);
            decision.approval_id = Some(pending.approval_id.clone());
            decision.deadline = Some(pending.deadline.clone());
            held = Some(pending);
        }
        let recording = self.recorder.enabled().then(|| {
            self.recorder
                .submit(decision_record(&bundle, call, &decision))
        });
        if verdict == Verdict::Allow && !recording.as_ref().is_some_and(Recording::failed) {
            admit(&bundle, &ctx, info, &mut guards);
        }
        drop(guards);
        Queued {
            engine: self,
            decision,
            recording,
            held,
            denied_before_policy: false,
            now,
        }
    }

    /// [`Engine::queue`] at `now`, without the explanation, for the proving ground's millions of
    /// simulated calls: the same verdict, and the same effects on the engine's state (monitors,
    /// held calls, ids). A held call is still explained in full, as its pending approval keeps
    /// the policies that hold it; so is every call when the recorder keeps records.
    pub fn decide_brief(&self, call: &ToolCall, now: i64) -> Brief {
        if self.recorder.enabled() {
            let d = self.queue(Request::new(call).at(now)).wait();
            return Brief {
                decision: d.decision,
                approval_id: d.approval_id,
            };
        }
        let bundle = self.bundle();
        let p = Principals::of(&call.agent, call.session.as_deref(), &call.chain);
        let ctx = context(call, &p, now);
        let info = bundle.tool(&call.tool);
        let mut guards = self.lock_scopes(&bundle, &p);
        let verdict = self.verdict(info, self.tally(&bundle, &ctx, &p, info, &guards), false);
        // The decision id `queue` would have taken.
        self.seq.fetch_add(1, Ordering::Relaxed);
        let mut approval_id = None;
        match verdict {
            Verdict::Allow => admit(&bundle, &ctx, info, &mut guards),
            Verdict::RequireApproval => {
                let eval = self.evaluate(&bundle, &ctx, &p, info, &guards);
                let held = self.hold(&bundle, call, now, &eval.fired);
                drop(guards);
                approval_id = Some(held.approval_id.clone());
                self.park(held);
            }
            Verdict::Deny => {}
        }
        Brief {
            decision: verdict,
            approval_id,
        }
    }

    /// A call held at `now` by the REQUIRE_HITL policies among `fired`.
    fn hold(
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
    fn park(&self, pending: PendingApproval) {
        let mut approvals = self.approvals.lock();
        approvals
            .by_call
            .insert(pending.call.id.clone(), pending.approval_id.clone());
        approvals.by_id.insert(pending.approval_id.clone(), pending);
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

    fn fail_closed(&self, call: &ToolCall, now: i64, reason: String) -> Decision {
        self.fail_closed_for(&call.id, now, reason)
    }

    fn fail_closed_for(&self, call_id: &str, now: i64, reason: String) -> Decision {
        tracing::warn!(call = %clip(call_id), reason = %clip(&reason), "denied before policy evaluation");
        Decision::denied(
            call_id,
            self.next_id("d", now),
            reason,
            self.bundle.read().hash.clone(),
            now,
        )
    }

    /// Records an observation: its data-source labels taint every scope of its agent. Blocks
    /// until its record is durable (see [`Engine::queue_observation`]).
    pub fn observe(&self, obs: &Observation) -> Result<Option<u64>, String> {
        self.queue_observation(obs)?.wait()
    }

    /// Applies an observation to its scopes at once (its data-source labels taint them, its
    /// result's values enter the provenance index) and hands its record to the recorder, with
    /// the result as the tool's catalog `record` mode keeps it. The scopes know the observation
    /// before its record is durable: if the record fails, the taint stays, which errs toward
    /// denying.
    pub fn queue_observation(&self, obs: &Observation) -> Result<Recording, String> {
        let now = self.now(obs.time.as_deref())?;
        if let Some(depth) = obs.result.as_ref().map(value_depth) {
            if depth > MAX_INPUT_DEPTH {
                return Err(format!(
                    "`result` nests {depth} levels deep; at most {MAX_INPUT_DEPTH} are accepted"
                ));
            }
        }
        let recording = self.recorder.enabled().then(|| {
            let mode = obs
                .tool
                .as_deref()
                .and_then(|t| self.bundle().catalog.tool(t).map(|s| s.record))
                .unwrap_or_default();
            let mut observation = obs.clone();
            // Kept whole, the clone already is what the ledger keeps.
            if mode != truststack_policy::RecordMode::Full {
                if let Some(result) = observation.result.as_mut() {
                    *result = private_payload(mode, result);
                }
            }
            self.recorder.submit(
                Record::Observation {
                    time: format_time(now),
                    observation,
                }
                .to_value(),
            )
        });
        self.taint(obs, now);
        Ok(recording.unwrap_or(Recording::Settled(Ok(None))))
    }

    /// Whether observations need their results: to record them, or to index their values for a
    /// policy's provenance predicates. Without either, a caller need not parse them at all.
    pub fn wants_results(&self) -> bool {
        let bundle = self.bundle();
        self.recorder.enabled() || Target::ALL.iter().any(|t| bundle.indexes(*t))
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
            let pending = approvals
                .by_id
                .remove(&id)
                .ok_or(ApprovalError::Unknown(id))?;
            approvals.by_call.remove(&pending.call.id);
            approvals
                .answering
                .insert(pending.approval_id.clone(), pending.call.agent.clone());
            pending
        };
        let outcome = if now > pending.deadline_ms {
            self.close(pending, &ans.approver, now, ApprovalResult::Expired)
        } else if !ans.grant {
            self.close(pending, &ans.approver, now, ApprovalResult::Refused)
        } else {
            self.grant(pending, &ans.approver, now, lease_ms)
        };
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
        approvals
            .by_call
            .insert(pending.call.id.clone(), pending.approval_id.clone());
        approvals.by_id.insert(pending.approval_id.clone(), pending);
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
            let pending = approvals
                .by_id
                .remove(approval_id)
                .ok_or_else(|| ApprovalError::Unknown(approval_id.to_string()))?;
            approvals.by_call.remove(&pending.call.id);
            approvals
                .answering
                .insert(pending.approval_id.clone(), pending.call.agent.clone());
            pending
        };
        match self.close(pending, &caller.agent, now, ApprovalResult::Cancelled) {
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
    fn record_outcome(&self, outcome: &mut ApprovalOutcome) -> Result<(), String> {
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
    ) -> Result<Engine, String> {
        let mut restored = 0usize;
        let (decoded, unreadable) = decode_all(
            (0u64..)
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
        tracing::info!(restored, "engine state rebuilt from the ledger");
        recorder.record(self.activation_record(sources))?;
        Ok(self.with_recorder(recorder))
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
                            approval_id: approval_id.clone(),
                            held_at: decision.time.clone(),
                            deadline_ms: parse_time(&deadline)?,
                            deadline,
                            approvers: approver_groups(&bundle, &decision.policies),
                            policies: decision.policies.clone(),
                            call: call.clone(),
                        };
                        let mut approvals = self.approvals.lock();
                        approvals
                            .by_call
                            .insert(call.id.clone(), approval_id.clone());
                        approvals.by_id.insert(approval_id, pending);
                    }
                    Verdict::Deny => {}
                }
            }
            Record::Approval { outcome } => {
                let pending = {
                    let mut approvals = self.approvals.lock();
                    approvals.by_call.remove(&outcome.call_id);
                    approvals.by_id.remove(&outcome.approval_id)
                };
                if let (Some(pending), Verdict::Allow) = (pending, outcome.decision) {
                    let now = parse_time(&outcome.time)?;
                    self.admit_at(&pending.call, now);
                    if let Some(until) = outcome.lease_until.as_deref() {
                        self.add_leases(&pending, parse_time(until)?);
                    }
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

    fn add_leases(&self, pending: &PendingApproval, until: i64) {
        let bundle = self.bundle();
        let call = &pending.call;
        let p = Principals::of(&call.agent, call.session.as_deref(), &call.chain);
        let mut leases = self.leases.lock();
        // Only the policies that held the call: one already under a lease did not, and must not
        // have that lease replaced by this grant's.
        for f in pending
            .policies
            .iter()
            .filter(|f| f.action == Action::RequireHitl && f.lease_until.is_none())
        {
            if let Some(cp) = bundle.policy(&f.id) {
                let target = cp.policy.target;
                leases.insert((f.id.clone(), target, p.scope_key(target).into()), until);
            }
        }
    }

    /// Applies an observation to its scopes: data-source labels taint them, and the result's
    /// values enter the provenance index of every scope a policy reads one in.
    fn taint(&self, obs: &Observation, now: i64) {
        let bundle = self.bundle();
        let indexes = obs.result.is_some() && Target::ALL.iter().any(|t| bundle.indexes(*t));
        if obs.data_sources.is_empty() && !indexes {
            return;
        }
        let p = Principals::of(&obs.agent, obs.session.as_deref(), &obs.chain);
        let mut guards = self.lock_scopes(&bundle, &p);
        for (i, guard) in guards.iter_mut().enumerate() {
            if let Some(states) = guard.as_deref_mut() {
                let target = Target::ALL[i];
                for access in &obs.data_sources {
                    bundle.observe_access(target, &access.name, &access.mode, now, states);
                }
                if let Some(result) = obs.result.as_ref().filter(|_| bundle.indexes(target)) {
                    bundle.observe_result(target, obs.tool.as_deref(), result, states);
                }
            }
        }
    }

    fn index_input(&self, input: &Input) {
        let bundle = self.bundle();
        if !Target::ALL.iter().any(|t| bundle.indexes(*t)) {
            return;
        }
        let p = Principals::of(&input.agent, input.session.as_deref(), &input.chain);
        let mut guards = self.lock_scopes(&bundle, &p);
        for (i, guard) in guards.iter_mut().enumerate() {
            if let Some(states) = guard.as_deref_mut() {
                bundle.observe_input(Target::ALL[i], &input.text, &input.values, states);
            }
        }
    }

    /// Records a human's instruction and indexes its values as the user's. The principal must
    /// be a human (`user:...`) of the chain; the ledger keeps the text and values as the
    /// `input_record` setting says.
    pub fn input(&self, input: &Input) -> Result<Option<u64>, InputError> {
        let now = self
            .now(input.time.as_deref())
            .map_err(InputError::Invalid)?;
        crate::event::check_human(
            "input",
            input.principal.as_deref(),
            &input.chain,
            &input.agent,
        )
        .map_err(InputError::Invalid)?;
        let record = Record::Input {
            time: format_time(now),
            input: RecordedInput::new(input, self.settings.input_record),
        };
        let index = self
            .recorder
            .record(record.to_value())
            .map_err(InputError::Ledger)?;
        self.index_input(input);
        Ok(index)
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
                .filter_map(|id| {
                    let p = approvals.by_id.remove(id)?;
                    approvals.by_call.remove(&p.call.id);
                    approvals
                        .answering
                        .insert(p.approval_id.clone(), p.call.agent.clone());
                    Some(p)
                })
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

    /// Bytes held by the monitor state of one scope (`None` if the scope has no state).
    pub fn scope_memory(&self, target: Target, key: &str) -> Option<usize> {
        let cell = Arc::clone(self.scopes[target.index()].read().get(key)?);
        let states = cell.lock();
        Some(
            states.iter().map(MonitorState::memory_bytes).sum::<usize>()
                + std::mem::size_of::<Mutex<Vec<MonitorState>>>(),
        )
    }

    /// Processes one event of a trace.
    pub fn process(&self, event: &Event) -> Processed {
        match event {
            Event::ToolCall(call) => Processed::Decision(self.queue(call).wait()),
            Event::Observation(obs) => Processed::Observation(self.observe(obs)),
            Event::Approval(ans) => Processed::Approval(self.answer(ans)),
            Event::Input(input) => Processed::Input(self.input(input)),
            Event::Grant(grant) => Processed::Grant(self.declare_grant(grant)),
        }
    }
}

/// The result of [`Engine::process`].
#[derive(Debug)]
pub enum Processed {
    Decision(Decision),
    Observation(Result<Option<u64>, String>),
    Approval(Result<ApprovalOutcome, ApprovalError>),
    Input(Result<Option<u64>, InputError>),
    Grant(Result<crate::grant::Declared, crate::grant::GrantError>),
}

fn context<'a>(call: &'a ToolCall, p: &Principals<'a>, now: i64) -> CallContext<'a> {
    CallContext {
        tool: &call.tool,
        args: &call.args,
        agent: p.agent,
        session: p.session,
        user: p.user,
        root: p.root,
        chain: &call.chain,
        now,
    }
}

fn admit(
    bundle: &Bundle,
    ctx: &CallContext,
    info: &ToolInfo,
    guards: &mut [Option<ScopeGuard>; 4],
) {
    for (i, guard) in guards.iter_mut().enumerate() {
        if let Some(states) = guard.as_deref_mut() {
            bundle.admit(Target::ALL[i], ctx, info, states);
        }
    }
}

fn approver_groups(bundle: &Bundle, fired: &[FiredPolicy]) -> Vec<String> {
    let mut groups: Vec<String> = fired
        .iter()
        .filter_map(|f| bundle.policy(&f.id))
        .filter_map(|p| p.policy.approvers.clone())
        .collect();
    groups.sort();
    groups.dedup();
    groups
}

/// The predicates of a fired policy that held, with their values: `Count > 100 (= 101)`.
fn held_atoms(f: &FiredPolicy) -> String {
    let held: Vec<String> = f
        .monitors
        .iter()
        .filter_map(|(label, v)| match v {
            Value::Bool(true) => Some(label.clone()),
            Value::Object(o) if o.get("holds") == Some(&Value::Bool(true)) => {
                match o.get("value") {
                    Some(Value::Number(n)) => Some(format!("{label} [= {n}]")),
                    _ => Some(label.clone()),
                }
            }
            _ => None,
        })
        .collect();
    held.join(" and ")
}

/// Milliseconds since the Unix epoch on the system clock.
pub fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The ledger record of a decision: the call (its arguments kept as the catalog's `record` mode
/// says), the decision with the bundle hash, the policies that fired and why, the agent and its
/// full delegation chain.
pub fn decision_record(bundle: &Bundle, call: &ToolCall, decision: &Decision) -> Value {
    let mode = bundle
        .catalog
        .tool(&call.tool)
        .map(|t| t.record)
        .unwrap_or_default();
    let mut call = call.clone();
    if mode != truststack_policy::RecordMode::Full {
        call.args = private_payload(mode, &call.args);
    }
    Record::Decision {
        call,
        decision: decision.clone(),
    }
    .to_value()
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
