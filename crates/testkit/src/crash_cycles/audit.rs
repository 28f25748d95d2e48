//! Reading back what the killed server left in the ledger (through the restarted server's
//! public API, or from the database the replicas share) and checking every acknowledgement
//! against it.

use super::load::Acks;
use anyhow::{bail, Context};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use truststack_ledger::{Ledger, LedgerLocation};

/// Entries asked for per request (the API's page cap).
const PAGE: u64 = 1000;

/// Where an audit reads the ledger.
pub enum Source<'a> {
    /// `GET /v1/ledger/entries` of a running server: a server alone on its ledger serves it
    /// whole.
    Api {
        http: &'a reqwest::blocking::Client,
        base: &'a str,
    },
    /// The ledger itself, read-only: a replica serves only the entries it has followed.
    Ledger(&'a LedgerLocation),
}

impl Source<'_> {
    /// The entries from `start` (at most [`PAGE`]), as the API serves them; none at the end.
    fn page(&self, ledger: Option<&Ledger>, start: u64) -> anyhow::Result<Vec<Value>> {
        match self {
            Source::Api { http, base } => {
                let url = format!(
                    "{base}/v1/ledger/entries?start={start}&end={}",
                    start + PAGE
                );
                let resp = http
                    .get(&url)
                    .send()
                    .with_context(|| format!("GET {url}"))?;
                let status = resp.status().as_u16();
                let page: Value = resp
                    .json()
                    .with_context(|| format!("GET {url}: not JSON"))?;
                if status != 200 {
                    bail!("GET {url}: {status} {page}");
                }
                Ok(page["entries"].as_array().cloned().unwrap_or_default())
            }
            Source::Ledger(location) => {
                let ledger = ledger.context("the ledger is not open")?;
                let end = ledger.len().min(start + PAGE);
                ledger
                    .entries(start..end.max(start))
                    .with_context(|| format!("{location}: reading entries {start}..{end}"))?
                    .iter()
                    .map(|e| Ok(e.to_json()?))
                    .collect()
            }
        }
    }
}

/// One scan the ledger records as admitted.
struct Admitted {
    /// Milliseconds since the Unix epoch: the decision's own time.
    ms: i64,
    decision_id: String,
}

/// The rate limit the harness's policies impose on every scanner agent.
#[derive(Clone, Copy)]
pub struct Limit {
    pub calls: usize,
    pub window_ms: i64,
}

/// What the ledger says, accumulated over the run.
pub struct LedgerView {
    limit: Limit,
    /// The first index not yet read.
    next: u64,
    /// Decision id → verdict, for the entries read by the latest audit (acknowledgements are
    /// always checked against the entries the killed process wrote).
    decisions: HashMap<String, String>,
    /// Call ids of observations read by the latest audit.
    observations: HashSet<String>,
    /// Approval id → (result, decision), over the whole run.
    pub outcomes: HashMap<String, (String, String)>,
    /// Every bundle hash ever activated.
    activations: HashSet<String>,
    /// Admitted scans per agent within the last two windows.
    scans: HashMap<String, Vec<Admitted>>,
    /// Violations already reported (the id of the call over the limit).
    reported: HashSet<String>,
}

/// The figures and failures of one audit.
#[derive(Default)]
pub struct Findings {
    pub lost_decisions: u64,
    pub verdict_mismatches: u64,
    pub limit_violations: u64,
    pub lost_approvals: u64,
    pub lost_observations: u64,
    pub lost_reloads: u64,
    pub lost_held: u64,
    /// Requests that got no answer from a server that was not killed, or an answer but 200.
    pub failed_requests: u64,
    /// One precise line per failure.
    pub failures: Vec<String>,
}

impl Findings {
    /// Adds another audit's findings to these.
    pub fn absorb(&mut self, f: Findings) {
        self.lost_decisions += f.lost_decisions;
        self.verdict_mismatches += f.verdict_mismatches;
        self.limit_violations += f.limit_violations;
        self.lost_approvals += f.lost_approvals;
        self.lost_observations += f.lost_observations;
        self.lost_reloads += f.lost_reloads;
        self.lost_held += f.lost_held;
        self.failed_requests += f.failed_requests;
        self.failures.extend(f.failures);
    }
}

impl LedgerView {
    pub fn new(limit: Limit) -> Self {
        LedgerView {
            limit,
            next: 0,
            decisions: HashMap::new(),
            observations: HashSet::new(),
            outcomes: HashMap::new(),
            activations: HashSet::new(),
            scans: HashMap::new(),
            reported: HashSet::new(),
        }
    }

    /// The ledger's size after the latest audit.
    pub fn size(&self) -> u64 {
        self.next
    }

    /// Reads the entries written since the previous audit.
    pub fn read_new(&mut self, source: &Source<'_>) -> anyhow::Result<()> {
        self.decisions.clear();
        self.observations.clear();
        // A read-only ledger sees the entries committed when it was opened: all of them, as
        // the audit runs when nothing is writing.
        let ledger = match source {
            Source::Ledger(location) => Some(
                Ledger::open_read_only_at(location)
                    .with_context(|| format!("{location}: opening the ledger read-only"))?,
            ),
            Source::Api { .. } => None,
        };
        loop {
            let entries = source.page(ledger.as_ref(), self.next)?;
            if entries.is_empty() {
                return Ok(());
            }
            for entry in &entries {
                let index = entry["index"]
                    .as_u64()
                    .with_context(|| format!("an entry without an index: {entry}"))?;
                if index != self.next {
                    bail!("entry {index} where {} was expected", self.next);
                }
                self.take(&entry["record"])
                    .with_context(|| format!("ledger entry {index}"))?;
                self.next += 1;
            }
        }
    }

    fn take(&mut self, record: &Value) -> anyhow::Result<()> {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        match record["kind"].as_str() {
            Some("decision") => {
                let decision = &record["decision"];
                let (id, verdict) = (text(&decision["decision_id"]), text(&decision["decision"]));
                if verdict == "allow" && record["call"]["tool"] == "nmap_scan" {
                    let time = text(&decision["time"]);
                    let at = truststack_ledger::query::parse_time(&time)
                        .with_context(|| format!("decision {id}: its time {time:?}"))?;
                    let ms = i64::try_from(at.unix_timestamp_nanos() / 1_000_000)?;
                    self.scans
                        .entry(text(&record["call"]["agent"]))
                        .or_default()
                        .push(Admitted {
                            ms,
                            decision_id: id.clone(),
                        });
                }
                self.decisions.insert(id, verdict);
            }
            Some("approval") => {
                let outcome = &record["outcome"];
                self.outcomes.insert(
                    text(&outcome["approval_id"]),
                    (text(&outcome["result"]), text(&outcome["decision"])),
                );
            }
            Some("observation") => {
                self.observations
                    .insert(text(&record["observation"]["call_id"]));
            }
            Some("policy_activation") => {
                self.activations.insert(text(&record["policy_hash"]));
            }
            _ => {}
        }
        Ok(())
    }

    /// Checks the acknowledgements of `cycle` against the entries just read, and the scan
    /// limit over everything read so far.
    pub fn check(&mut self, cycle: u64, acks: &Acks) -> Findings {
        let mut f = Findings::default();
        for d in &acks.decisions {
            let what = format!(
                "cycle {cycle}: decision {} (call {}, agent {}, tool {}) was answered {}",
                d.decision_id, d.call_id, d.agent, d.tool, d.verdict
            );
            match self.decisions.get(&d.decision_id) {
                None => {
                    f.lost_decisions += 1;
                    f.failures.push(format!("{what} but is not in the ledger"));
                }
                Some(v) if *v != d.verdict => {
                    f.verdict_mismatches += 1;
                    f.failures
                        .push(format!("{what} but the ledger records {v}"));
                }
                Some(_) => {}
            }
        }
        for a in &acks.approvals {
            let answered = (a.result.clone(), a.decision.clone());
            match self.outcomes.get(&a.approval_id) {
                Some(recorded) if *recorded == answered => {}
                recorded => {
                    f.lost_approvals += 1;
                    f.failures.push(format!(
                        "cycle {cycle}: approval {} was answered {} ({}) but the ledger records {recorded:?}",
                        a.approval_id, a.result, a.decision
                    ));
                }
            }
        }
        for call in &acks.observations {
            if !self.observations.contains(call) {
                f.lost_observations += 1;
                f.failures.push(format!(
                    "cycle {cycle}: the observation of call {call} was recorded (200) but is not in the ledger"
                ));
            }
        }
        for hash in &acks.reloads {
            if !self.activations.contains(hash) {
                f.lost_reloads += 1;
                f.failures.push(format!(
                    "cycle {cycle}: a reload activated {hash} (200) but no policy_activation records it"
                ));
            }
        }
        for (approval_id, status) in &acks.held_refused {
            f.lost_held += 1;
            f.failures.push(format!(
                "cycle {cycle}: held call {approval_id} has no answer in the ledger, yet the restarted server answered {status} to answering it"
            ));
        }
        self.check_limit(cycle, &mut f);
        f
    }

    /// At most `calls` admitted scans per agent in any window `(t − W, t]`: with the scans in
    /// time order, the one `calls` places later must be at least W after each.
    fn check_limit(&mut self, cycle: u64, f: &mut Findings) {
        let Limit { calls, window_ms } = self.limit;
        for (agent, scans) in &mut self.scans {
            scans.sort_by_key(|s| s.ms);
            for (first, last) in scans.iter().zip(scans.iter().skip(calls)) {
                if last.ms - first.ms < window_ms && self.reported.insert(last.decision_id.clone())
                {
                    f.limit_violations += 1;
                    f.failures.push(format!(
                        "cycle {cycle}: agent {agent} was admitted {} scans within {} ms (from {} to {}): the limit is {calls} per {window_ms} ms",
                        calls + 1,
                        last.ms - first.ms,
                        first.decision_id,
                        last.decision_id
                    ));
                }
            }
            // Older scans can no longer share a window with a later one.
            if let Some(newest) = scans.last().map(|s| s.ms) {
                scans.retain(|s| newest - s.ms < 2 * window_ms);
            }
        }
    }
}
