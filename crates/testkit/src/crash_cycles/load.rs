//! The mixed load of one cycle: client threads that call the public HTTP API of every replica
//! until one of them is killed (and, with others left to answer, restarted), and remember every
//! answer they got (an acknowledgement).

use parking_lot::{Mutex, RwLock};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The human every agent of the load acts for.
pub const USER: &str = "user:ops@acme.example";
/// The approver: a human outside every chain of the load.
pub const APPROVER: &str = "user:approver@acme.example";
/// The agents that race for the scan limit (two threads share them).
pub const SCANNERS: [&str; 2] = [
    "spiffe://acme.example/agent/scanner-a",
    "spiffe://acme.example/agent/scanner-b",
];
const OPERATOR: &str = "spiffe://acme.example/agent/operator";

/// The analyst agent of a cycle: it uploads, is tainted by an observation, and is then refused.
pub fn analyst(cycle: u64) -> String {
    format!("spiffe://acme.example/agent/analyst-{cycle}")
}

/// A decision the server answered 200.
#[derive(Debug, Clone)]
pub struct DecisionAck {
    pub decision_id: String,
    pub call_id: String,
    pub agent: String,
    pub tool: String,
    pub verdict: String,
    pub approval_id: Option<String>,
    /// The replica that answered.
    pub replica: usize,
}

/// An approval answer the server answered 200.
#[derive(Debug, Clone)]
pub struct ApprovalAck {
    pub approval_id: String,
    /// `granted` or `refused`.
    pub result: String,
    /// The call's final verdict.
    pub decision: String,
}

/// Everything acknowledged during one cycle.
#[derive(Debug, Default)]
pub struct Acks {
    pub decisions: Vec<DecisionAck>,
    pub approvals: Vec<ApprovalAck>,
    /// The call ids of recorded observations.
    pub observations: Vec<String>,
    /// The bundle hashes of acknowledged reloads.
    pub reloads: Vec<String>,
    /// Held calls acknowledged but not (knowingly) answered: the next cycle answers them.
    pub held: Vec<String>,
    /// Held calls from an earlier cycle that the restarted server would not answer, with the
    /// HTTP status it gave.
    pub held_refused: Vec<(String, u16)>,
    /// Whether this cycle's analyst was tainted by an acknowledged observation.
    pub analyst_tainted: bool,
}

impl Acks {
    pub fn merge(&mut self, other: Acks) {
        self.decisions.extend(other.decisions);
        self.approvals.extend(other.approvals);
        self.observations.extend(other.observations);
        self.reloads.extend(other.reloads);
        self.held.extend(other.held);
        self.held_refused.extend(other.held_refused);
        self.analyst_tainted |= other.analyst_tainted;
    }
}

/// The failed requests a cycle reports one by one (the rest are only counted).
const FAILURES_SHOWN: usize = 10;

/// The replicas of one cycle, which the load's requests go to in turn (as a round-robin load
/// balancer sends them), and what became of those requests.
pub struct Fleet {
    /// `http://127.0.0.1:port` of each replica; the killed one's changes when it restarts.
    bases: RwLock<Vec<String>>,
    next: AtomicUsize,
    /// The replica killed in this cycle: its requests may go unanswered.
    victim: usize,
    /// 200 answers per replica.
    answered: Vec<AtomicU64>,
    failed: AtomicU64,
    /// The first failed requests, described.
    failures: Mutex<Vec<String>>,
}

impl Fleet {
    pub fn new(bases: Vec<String>, victim: usize) -> Self {
        Fleet {
            answered: bases.iter().map(|_| AtomicU64::new(0)).collect(),
            bases: RwLock::new(bases),
            next: AtomicUsize::new(0),
            victim,
            failed: AtomicU64::new(0),
            failures: Mutex::new(Vec::new()),
        }
    }

    /// Sends the next requests for `replica` to its new address (it was restarted).
    pub fn moved(&self, replica: usize, base: String) {
        self.bases.write()[replica] = base;
    }

    /// 200 answers per replica.
    pub fn answered(&self) -> Vec<u64> {
        self.answered
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }

    /// The requests that failed though they must not have: no answer from a replica that was
    /// not killed, or an answer other than 200 from any. Their count, and the first few.
    pub fn failures(&self) -> (u64, Vec<String>) {
        (
            self.failed.load(Ordering::Relaxed),
            self.failures.lock().clone(),
        )
    }

    /// How many replicas there are.
    pub fn len(&self) -> usize {
        self.answered.len()
    }

    fn pick(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.len()
    }

    fn base(&self, replica: usize) -> String {
        self.bases.read()[replica].clone()
    }

    fn fail(&self, replica: usize, path: &str, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut failures = self.failures.lock();
        if failures.len() < FAILURES_SHOWN {
            let killed = if replica == self.victim {
                "the replica killed in this cycle"
            } else {
                "a replica not killed in this cycle"
            };
            failures.push(format!(
                "POST {path} to replica {replica} ({killed}, {}): {what}",
                self.base(replica)
            ));
        }
    }

    /// A request got no answer: expected of the killed replica only.
    fn unanswered(&self, replica: usize, path: &str, error: &reqwest::Error) {
        if replica == self.victim {
            return;
        }
        let mut what = format!("no answer: {error}");
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            what.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        self.fail(replica, path, what);
    }
}

/// A thin client of the public HTTP API of the fleet.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::blocking::Client,
    pub fleet: Arc<Fleet>,
    /// The replica every request goes to; `None`: each request to the next replica.
    pub pinned: Option<usize>,
}

impl Api {
    /// This client with every request sent to `replica`.
    pub fn on(&self, replica: usize) -> Api {
        Api {
            pinned: Some(replica),
            ..self.clone()
        }
    }

    /// POSTs `body`; `Some` only for a 200 answer with a JSON body: an acknowledgement.
    fn post(&self, path: &str, body: &Value) -> Option<Value> {
        self.post_status(path, body).ok().map(|(_, json)| json)
    }

    /// POSTs `body`: the replica that answered 200 and the JSON of its answer, else the status
    /// (`None`: no answer at all).
    fn post_status(&self, path: &str, body: &Value) -> Result<(usize, Value), Option<u16>> {
        let replica = self.pinned.unwrap_or_else(|| self.fleet.pick());
        let fleet = &self.fleet;
        let answer = self
            .http
            .post(format!("{}{path}", fleet.base(replica)))
            .json(body)
            .send()
            .and_then(|resp| Ok((resp.status().as_u16(), resp.text()?)));
        let (status, text) = answer.map_err(|e| {
            fleet.unanswered(replica, path, &e);
            None
        })?;
        if status != 200 {
            fleet.fail(replica, path, format!("answered {status}: {text}"));
            return Err(Some(status));
        }
        let json = serde_json::from_str(&text).map_err(|e| {
            fleet.fail(
                replica,
                path,
                format!("answered 200 with no JSON ({e}): {text}"),
            );
            None
        })?;
        fleet.answered[replica].fetch_add(1, Ordering::Relaxed);
        Ok((replica, json))
    }

    /// Asks for a decision; the acknowledgement, if the server answered.
    pub fn decide(
        &self,
        call_id: &str,
        agent: &str,
        tool: &str,
        args: Value,
    ) -> Option<DecisionAck> {
        let body = json!({"id": call_id, "tool": tool, "args": args, "session": "crash-cycles",
            "agent": agent, "chain": [USER]});
        let (replica, answer) = self.post_status("/v1/decide", &body).ok()?;
        Some(DecisionAck {
            decision_id: answer["decision_id"].as_str()?.to_string(),
            call_id: call_id.to_string(),
            agent: agent.to_string(),
            tool: tool.to_string(),
            verdict: answer["decision"].as_str()?.to_string(),
            approval_id: answer["approval_id"].as_str().map(str::to_string),
            replica,
        })
    }

    /// Grants (with an optional lease) or refuses a held call; else the status of the answer
    /// (`None`: no answer at all).
    pub fn answer(
        &self,
        approval_id: &str,
        grant: bool,
        lease: Option<&str>,
    ) -> Result<ApprovalAck, Option<u16>> {
        let (verb, mut body) = if grant {
            (
                "grant",
                json!({"approver": APPROVER, "comment": "crash cycles"}),
            )
        } else {
            (
                "refuse",
                json!({"approver": APPROVER, "comment": "crash cycles"}),
            )
        };
        if let Some(lease) = lease {
            body["lease"] = json!(lease);
        }
        let (_, answer) =
            self.post_status(&format!("/v1/approvals/{approval_id}/{verb}"), &body)?;
        let field = |name: &str| answer[name].as_str().map(str::to_string).ok_or(Some(200));
        Ok(ApprovalAck {
            approval_id: approval_id.to_string(),
            result: field("result")?,
            decision: field("decision")?,
        })
    }
}

/// Runs the load threads until `stop`; returns what was acknowledged.
pub fn run(
    api: &Api,
    cycle: u64,
    seed: u64,
    stop: &Arc<AtomicBool>,
    pending: Vec<String>,
    policies: &Path,
) -> Acks {
    let mut workers: Vec<std::thread::JoinHandle<Acks>> = Vec::new();
    for thread in 0..2u64 {
        let (api, stop) = (api.clone(), Arc::clone(stop));
        workers.push(std::thread::spawn(move || {
            scanner(&api, cycle, thread, &stop)
        }));
    }
    let (a, s) = (api.clone(), Arc::clone(stop));
    workers.push(std::thread::spawn(move || analyst_load(&a, cycle, &s)));
    let (a, s) = (api.clone(), Arc::clone(stop));
    workers.push(std::thread::spawn(move || {
        approvals(&a, cycle, seed, &s, pending)
    }));
    let (a, s) = (api.clone(), Arc::clone(stop));
    let policies = policies.to_path_buf();
    workers.push(std::thread::spawn(move || reloads(&a, seed, &s, &policies)));
    let mut acks = Acks::default();
    for worker in workers {
        if let Ok(part) = worker.join() {
            acks.merge(part);
        }
    }
    acks
}

/// A failed request means the server is gone: back off a little rather than spin.
fn idle() {
    std::thread::sleep(Duration::from_millis(5));
}

/// Scans as fast as the server answers, alternating between the two scanner agents.
fn scanner(api: &Api, cycle: u64, thread: u64, stop: &AtomicBool) -> Acks {
    let mut acks = Acks::default();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let agent = SCANNERS[(i % 2) as usize];
        let call = format!("scan-{cycle}-{thread}-{i}");
        match api.decide(&call, agent, "nmap_scan", json!({"target": "10.0.0.1"})) {
            Some(ack) => acks.decisions.push(ack),
            None => idle(),
        }
        i += 1;
    }
    acks
}

/// Reads docs, uploads, then reports reading the production database: later uploads are denied.
fn analyst_load(api: &Api, cycle: u64, stop: &AtomicBool) -> Acks {
    let mut acks = Acks::default();
    let agent = analyst(cycle);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let call = format!("an-{cycle}-{i}");
        let (tool, args) = match i % 3 {
            0 => ("read_docs", json!({"page": i})),
            1 => (
                "http_upload",
                json!({"url": "https://files.acme.example/x"}),
            ),
            _ => ("prod_db_query", json!({"query": "select 1"})),
        };
        match api.decide(&call, &agent, tool, args) {
            Some(ack) => {
                // An admitted read of a catalog data source taints the agent too.
                acks.analyst_tainted |= tool == "prod_db_query" && ack.verdict == "allow";
                acks.decisions.push(ack);
            }
            None => idle(),
        }
        if i == 4 {
            let body = json!({"call_id": call, "tool": "prod_db_query", "agent": agent, "chain": [USER],
                "data_sources": [{"name": "Internal_Prod_DB", "mode": "read"}], "result": {"rows": 1}});
            if api
                .post("/v1/observations", &body)
                .is_some_and(|a| a["recorded"] == true)
            {
                acks.observations.push(call);
                acks.analyst_tainted = true;
            }
        }
        i += 1;
    }
    acks
}

/// Makes held calls and answers them (on the next replica): grants, refusals, now and then a
/// lease, and some left held across the kill. First answers the calls the previous cycle left
/// held.
fn approvals(api: &Api, cycle: u64, seed: u64, stop: &AtomicBool, pending: Vec<String>) -> Acks {
    let mut acks = Acks::default();
    let mut rng = StdRng::seed_from_u64(seed ^ 0xa5a5);
    for approval_id in pending {
        if stop.load(Ordering::Relaxed) {
            acks.held.push(approval_id);
            continue;
        }
        match api.answer(&approval_id, rng.gen_bool(0.5), None) {
            Ok(ack) => acks.approvals.push(ack),
            // The ledger holds no answer for it (the audit dropped those), so the restarted
            // server must still hold it.
            Err(Some(status)) => acks.held_refused.push((approval_id, status)),
            Err(None) => acks.held.push(approval_id),
        }
    }
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let call = format!("ex-{cycle}-{i}");
        i += 1;
        let Some(ack) = api.decide(
            &call,
            OPERATOR,
            "exploit_runner",
            json!({"target": "10.0.0.9"}),
        ) else {
            idle();
            continue;
        };
        let approval_id = ack.approval_id.clone();
        // Answered on another replica than the one that held it, when there is another.
        let approver = api.on((ack.replica + 1) % api.fleet.len());
        acks.decisions.push(ack);
        let Some(approval_id) = approval_id else {
            continue; // allowed under a lease
        };
        if rng.gen_bool(0.2) {
            acks.held.push(approval_id); // left for the next cycle
            continue;
        }
        let grant = rng.gen_bool(0.5);
        let lease = (grant && rng.gen_bool(0.25)).then_some("1s");
        match approver.answer(&approval_id, grant, lease) {
            Ok(ack) => acks.approvals.push(ack),
            Err(_) => acks.held.push(approval_id),
        }
    }
    acks
}

/// Reloads the policy bundle every few hundred milliseconds, switching between two bundles.
fn reloads(api: &Api, seed: u64, stop: &AtomicBool, policies: &Path) -> Acks {
    let mut acks = Acks::default();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5a5a);
    loop {
        // A pause that ends with the load, so the cycle does not wait for it.
        let until = Instant::now() + Duration::from_millis(rng.gen_range(100..400));
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if super::write_policies(policies, rng.gen_bool(0.5)).is_err() {
            continue;
        }
        if let Some(answer) = api.post("/v1/policies/reload", &json!({})) {
            if let Some(hash) = answer["policy_hash"].as_str() {
                acks.reloads.push(hash.to_string());
            }
        }
    }
    acks
}
