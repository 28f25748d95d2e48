//! Deciding a call: the request, the evaluation under the scope locks, the verdict and its
//! reason, and the queued decision that may be returned once its record is durable.

use super::{admit, context, system_now, Engine, PendingApproval, ScopeGuard};
use crate::decision::{Brief, Decision, FiredPolicy, Verdict};
use crate::event::{format_time, Caller, Principals, ToolCall};
use crate::log::clip;
use crate::record::Record;
use crate::recorder::{private_payload, Recorded, Recording};
use crate::settings::DefaultDecision;
use serde_json::Value;
use std::borrow::Cow;
use std::sync::atomic::Ordering;
use truststack_ledger::depth::{value_depth, MAX_INPUT_DEPTH};
use truststack_policy::compile::CallContext;
use truststack_policy::compile::{CompiledPolicy, Lookups};
use truststack_policy::monitor::MonitorState;
use truststack_policy::{Action, Bundle, Mode, ToolInfo};

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

/// Everything `evaluate` found.
pub(super) struct Evaluation {
    pub(super) fired: Vec<FiredPolicy>,
    shadow: Vec<FiredPolicy>,
}

/// What the enforced policies that fired add up to: all a verdict depends on.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Tally {
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

    pub(super) fn of(fired: &[FiredPolicy]) -> Tally {
        let mut t = Tally::default();
        for f in fired {
            t.add(f.action, f.lease_until.is_some());
        }
        t
    }
}

/// The policies (enforced and shadow) that may fire for the call, in bundle order, with the
/// monitor states of their target scope.
fn candidates<'e>(
    bundle: &'e Bundle,
    info: &'e ToolInfo,
    guards: &'e [Option<ScopeGuard>; 4],
) -> impl Iterator<Item = (&'e CompiledPolicy, &'e [MonitorState], usize)> + 'e {
    info.candidates.iter().filter_map(move |&pid| {
        let cp = bundle.policies.get(pid)?;
        let states = guards[cp.policy.target.index()]
            .as_deref()
            .map_or(&[][..], Vec::as_slice);
        Some((cp, states, pid))
    })
}

impl Engine {
    pub(super) fn evaluate(
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
        let mut lookups = Lookups::default();
        for (cp, states, pid) in candidates(bundle, info, guards) {
            let Some(monitors) = bundle.evaluate_explained(pid, ctx, info, states, &mut lookups)
            else {
                continue;
            };
            let mut fired = FiredPolicy {
                id: cp.policy.id.clone(),
                action: cp.policy.action,
                mode: cp.policy.mode,
                reason: cp.policy.reason.clone(),
                monitors,
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
        for (cp, states, pid) in candidates(bundle, info, guards) {
            if !bundle.evaluate(pid, ctx, info, states) {
                continue;
            }
            let policy = &cp.policy;
            if policy.mode == Mode::Shadow {
                continue;
            }
            t.add(policy.action, self.hitl_lease(policy, p, ctx.now).is_some());
        }
        t
    }

    /// Deny > require approval (unless granted) > allow > a lease > the default.
    pub(super) fn verdict(&self, info: &ToolInfo, t: Tally, hitl_granted: bool) -> Verdict {
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

    pub(super) fn reason(
        &self,
        call: &ToolCall,
        info: &ToolInfo,
        verdict: Verdict,
        fired: &[FiredPolicy],
    ) -> String {
        // `lead id (reason or held predicates), …`, written into one string.
        let describe = |lead: &str, action: Action| {
            // Room for a lead and two policies' predicates, so it rarely grows.
            let mut out = String::with_capacity(256);
            out.push_str(lead);
            for f in fired
                .iter()
                .filter(|f| f.action == action && f.lease_until.is_none())
            {
                if out.len() > lead.len() {
                    out.push_str(", ");
                }
                out.push_str(&f.id);
                out.push_str(" (");
                match &f.reason {
                    Some(r) => out.push_str(r),
                    None => held_atoms(f, &mut out),
                }
                out.push(')');
            }
            out
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
                describe("denied by policy ", Action::Deny)
            }
            Verdict::Deny => "no policy allows this call and the default is deny".into(),
            Verdict::RequireApproval => {
                describe("held for human approval by policy ", Action::RequireHitl)
            }
            Verdict::Allow if fired.iter().any(|f| f.lease_until.is_some()) => {
                "allowed under an approver's lease".into()
            }
            Verdict::Allow if fired.iter().any(|f| f.action == Action::Allow) => {
                describe("allowed by policy ", Action::Allow)
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
}

/// The predicates of a fired policy that held, with their numbers: `Count > 100 [= 101]`,
/// joined by ` and `, written to `out`.
fn held_atoms(f: &FiredPolicy, out: &mut String) {
    let mut first = true;
    for (label, e) in f.monitors.iter().filter(|(_, e)| e.holds()) {
        if !first {
            out.push_str(" and ");
        }
        first = false;
        out.push_str(label);
        if let Some(n) = e.number() {
            use std::fmt::Write;
            // Writing to a String cannot fail.
            let _ = write!(out, " [= {n}]");
        }
    }
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
