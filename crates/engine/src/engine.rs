//! The decision engine: per-scope monitor state, observations and inputs. Deciding a call,
//! held calls, leases and resuming on a ledger each have their own module below.

mod approvals;
mod decide;
mod lease;
mod restore;

use approvals::approver_groups;
use approvals::Approvals;
pub use approvals::{ApprovalError, PendingApproval};
pub use decide::{decision_record, Queued, Request};
use lease::LeaseKey;

use crate::decision::{ApprovalOutcome, Decision};
use crate::event::{format_time, parse_time, Event, Input, Observation, Principals, ToolCall};
use crate::record::{Record, RecordedInput};
use crate::recorder::{private_payload, NoRecorder, Recorder, Recording, WriteError};
use crate::settings::{Settings, TimeSource};
use parking_lot::{Condvar, Mutex, RwLock};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use truststack_ledger::depth::{value_depth, MAX_INPUT_DEPTH};
use truststack_policy::compile::CallContext;
use truststack_policy::monitor::MonitorState;
use truststack_policy::{Bundle, Target, ToolInfo};

type ScopeCell = Arc<Mutex<Vec<MonitorState>>>;

type ScopeGuard = parking_lot::ArcMutexGuard<parking_lot::RawMutex, Vec<MonitorState>>;

/// Why an observation was not applied or not recorded.
#[derive(Debug, thiserror::Error)]
pub enum ObservationError {
    /// The observation itself is wrong (bad time, nested too deep): nothing of it applies.
    #[error("bad observation: {0}")]
    Invalid(String),
    /// Its record could not be written (its taint still applies, erring toward denying).
    #[error("observation not recorded: {0}")]
    Ledger(#[from] WriteError),
}

/// Why an input was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The input itself is wrong (no human gave it, bad time): the caller's to fix.
    #[error("bad input: {0}")]
    Invalid(String),
    /// The ledger could not keep it; nothing was indexed.
    #[error("input not recorded: {0}")]
    Ledger(#[source] WriteError),
}

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

impl Engine {
    pub fn new(mut bundle: Bundle, settings: Settings) -> Self {
        bundle.provenance_bound = settings.provenance_bound;
        Engine::on_bundle(Arc::new(bundle), Arc::new(settings))
    }

    /// An engine with no state on a bundle already set up for `settings`.
    fn on_bundle(bundle: Arc<Bundle>, settings: Arc<Settings>) -> Self {
        Engine {
            bundle: RwLock::new(bundle),
            settings,
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
            approvals: Mutex::new(self.approvals.lock().held()),
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
        // Written piece by piece: an id is taken for every decision.
        let mut id = String::with_capacity(prefix.len() + 32);
        id.push_str(prefix);
        id.push('-');
        // `{:x}` of an `i64` writes its bits.
        push_digits(&mut id, now as u64, 16);
        id.push('-');
        push_digits(&mut id, n, 10);
        id
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

    /// Records an observation: its data-source labels taint every scope of its agent. Blocks
    /// until its record is durable (see [`Engine::queue_observation`]).
    pub fn observe(&self, obs: &Observation) -> Result<Option<u64>, ObservationError> {
        Ok(self.queue_observation(obs)?.wait()?)
    }

    /// Applies an observation to its scopes at once (its data-source labels taint them, its
    /// result's values enter the provenance index) and hands its record to the recorder, with
    /// the result as the tool's catalog `record` mode keeps it. The scopes know the observation
    /// before its record is durable: if the record fails, the taint stays, which errs toward
    /// denying.
    pub fn queue_observation(&self, obs: &Observation) -> Result<Recording, ObservationError> {
        let now = self
            .now(obs.time.as_deref())
            .map_err(ObservationError::Invalid)?;
        if let Some(depth) = obs.result.as_ref().map(value_depth) {
            if depth > MAX_INPUT_DEPTH {
                return Err(ObservationError::Invalid(format!(
                    "`result` nests {depth} levels deep; at most {MAX_INPUT_DEPTH} are accepted"
                )));
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

    /// Where each scalar of a call's arguments came from, as the provenance index of the call's
    /// session knows it (or, when no policy indexes sessions, of the first scope kind that is
    /// indexed): what an approver should see beside the arguments. Empty when no policy reads
    /// provenance. At most [`ARGUMENT_SOURCES_SHOWN`] values, in document order.
    pub fn argument_provenance(&self, call: &ToolCall) -> Vec<ArgumentSource> {
        let bundle = self.bundle();
        let Some(target) = [Target::Session]
            .into_iter()
            .chain(Target::ALL)
            .find(|t| bundle.indexes(*t))
        else {
            return Vec::new();
        };
        let p = Principals::of(&call.agent, call.session.as_deref(), &call.chain);
        let cell = self.scopes[target.index()]
            .read()
            .get(p.scope_key(target).as_ref())
            .map(Arc::clone);
        // Looked up under the scope's lock, not copied: an index may hold megabytes.
        let guard = cell.as_ref().map(|c| c.lock());
        let states = guard.as_deref().map_or(&[][..], Vec::as_slice);
        let mut out = Vec::new();
        let mut pointer = String::new();
        argument_leaves(&call.args, &mut pointer, &mut |pointer, value| {
            if out.len() < ARGUMENT_SOURCES_SHOWN {
                let seen = bundle
                    .provenance_of(target, states, value)
                    .unwrap_or_default();
                out.push(ArgumentSource {
                    pointer: pointer.to_string(),
                    value: value.clone(),
                    source: truststack_policy::provenance::strongest(seen.sources),
                });
            }
        });
        out
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

/// How many argument values [`Engine::argument_provenance`] reports at most.
pub const ARGUMENT_SOURCES_SHOWN: usize = 100;

/// Where one argument value came from: `user`, `trusted`, `untrusted` or `none` (never seen).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ArgumentSource {
    /// The value's JSON pointer in the arguments (`/recipients/0`).
    pub pointer: String,
    pub value: Value,
    pub source: &'static str,
}

/// Every scalar of `v` with its JSON pointer (RFC 6901 escaping).
fn argument_leaves(v: &Value, pointer: &mut String, f: &mut impl FnMut(&str, &Value)) {
    let len = pointer.len();
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pointer.push('/');
                pointer.push_str(&i.to_string());
                argument_leaves(item, pointer, f);
                pointer.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                argument_leaves(item, pointer, f);
                pointer.truncate(len);
            }
        }
        Value::Null => {}
        scalar => f(pointer, scalar),
    }
}

/// The result of [`Engine::process`].
#[derive(Debug)]
pub enum Processed {
    Decision(Decision),
    Observation(Result<Option<u64>, ObservationError>),
    Approval(Result<ApprovalOutcome, ApprovalError>),
    Input(Result<Option<u64>, InputError>),
    Grant(Result<crate::grant::Declared, crate::grant::GrantError>),
}

fn context<'a>(call: &'a ToolCall, p: &Principals<'a>, now: i64) -> CallContext<'a> {
    CallContext {
        tool: &call.tool,
        args: &call.args,
        who: *p,
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

/// Milliseconds since the Unix epoch on the system clock.
pub fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `n` in base `radix` (at most 16), lowercase, as `{}` and `{:x}` write it, without the
/// formatting machinery.
fn push_digits(out: &mut String, n: u64, radix: u64) {
    let mut digits = [b'0'; 64];
    let mut at = digits.len();
    let mut rest = n;
    while let Some(slot) = at.checked_sub(1).and_then(|i| digits.get_mut(i)) {
        *slot = b"0123456789abcdef"[(rest % radix) as usize];
        at -= 1;
        rest /= radix;
        if rest == 0 {
            break;
        }
    }
    out.extend(digits.iter().skip(at).map(|&d| d as char));
}

#[cfg(test)]
mod tests {
    use super::push_digits;
    use proptest::prelude::*;

    fn digits(n: u64, radix: u64) -> String {
        let mut out = String::new();
        push_digits(&mut out, n, radix);
        out
    }

    #[test]
    fn the_edges_are_written_as_format_writes_them() {
        assert_eq!(digits(0, 10), "0");
        assert_eq!(digits(0, 16), "0");
        assert_eq!(digits(u64::MAX, 10), u64::MAX.to_string());
        assert_eq!(digits(-1i64 as u64, 16), format!("{:x}", -1i64));
    }

    proptest! {
        #[test]
        fn digits_are_written_as_format_writes_them(now: i64, n: u64) {
            prop_assert_eq!(digits(now as u64, 16), format!("{now:x}"));
            prop_assert_eq!(digits(n, 10), n.to_string());
        }
    }
}
