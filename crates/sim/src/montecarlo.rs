//! Monte Carlo: stochastic agents run through the real engine on a simulated clock.
//!
//! An agent is a Markov chain over tactics (the manifest's `[montecarlo]` model, or the built-in
//! GTG-1002 campaign model). At each step it calls a tool tagged with its current tactic or a
//! tool tagged with no tactic at all — one of those moves its actors hold, uniformly: untagged
//! tools (a CRM lookup, an e-mail sender) are used alongside any activity, so goals they reach
//! are reached here as they are by the exhaustive search — the engine decides, a held call is granted with the
//! manifest's `grant_probability`, and admitted calls advance the goal automata. Calls arrive
//! with exponential gaps of mean `1 / calls_per_second`. A run ends when every goal is reached or
//! after `max_steps` steps.
//!
//! Runs are independent (each forks a fresh engine and draws from its own generator, derived
//! from the seed and the run number), so the result is the same for a seed whatever the number
//! of threads.

use crate::manifest::MarkovSpec;
use crate::rng::Rng;
use crate::taxonomy::Tactic;
use crate::world::{Move, World};
use serde::Serialize;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use truststack_engine::{ToolCall, Verdict};

/// What to run.
#[derive(Debug, Clone)]
pub struct McOptions {
    pub runs: u64,
    pub max_steps: u32,
    pub seed: u64,
    pub grant_probability: f64,
    /// Worker threads (at least 1).
    pub threads: usize,
}

impl McOptions {
    /// The manifest's settings, on every available core.
    pub fn from_world(world: &World) -> McOptions {
        let m = &world.manifest.montecarlo;
        McOptions {
            runs: m.runs,
            max_steps: m.max_steps,
            seed: m.seed,
            grant_probability: m.grant_probability,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// The Markov model as used: states, cumulative weights, the moves of each state.
#[derive(Debug, Clone, Serialize)]
pub struct Model {
    pub tactics: Vec<Tactic>,
    /// Initial weights, per tactic.
    pub start: Vec<f64>,
    /// `transitions[i][j]`: weight of going from tactic i to tactic j.
    pub transitions: Vec<Vec<f64>>,
    /// Whether this is the built-in campaign model.
    pub builtin: bool,
    /// Tools tagged with no tactic: called in every state of the chain.
    pub untagged: Vec<String>,
    /// Per tactic: indices of the world's moves tagged with it, then the untagged moves.
    #[serde(skip)]
    moves: Vec<Vec<usize>>,
    /// The untagged moves (every state's, and the only ones when no tool has a tactic).
    #[serde(skip)]
    untagged_moves: Vec<usize>,
    #[serde(skip)]
    start_cum: Vec<f64>,
    #[serde(skip)]
    trans_cum: Vec<Vec<f64>>,
}

fn cumulative(w: &[f64]) -> Vec<f64> {
    w.iter()
        .scan(0.0, |acc, x| {
            *acc += x;
            Some(*acc)
        })
        .collect()
}

impl Model {
    /// The manifest's model, or the built-in one: the tactics the agents hold, in campaign
    /// order; from each, stay with weight 0.5, advance to the next with 0.4, restart at the
    /// first with 0.1 (the last tactic: stay 0.5, restart 0.5).
    pub fn new(world: &World, spec: Option<&MarkovSpec>) -> Model {
        let held: Vec<Tactic> = {
            let mut t: Vec<Tactic> = world
                .moves
                .iter()
                .flat_map(|m| world.tools[m.tool].tactics.iter().copied())
                .collect();
            t.sort_by_key(|t| (t.campaign_rank(), *t));
            t.dedup();
            t
        };
        let (tactics, start, transitions, builtin) = match spec {
            Some(spec) => {
                let mut tactics: Vec<Tactic> = spec.start.iter().map(|(t, _)| *t).collect();
                for (from, to) in &spec.transitions {
                    tactics.push(*from);
                    tactics.extend(to.iter().map(|(t, _)| *t));
                }
                tactics.sort_by_key(|t| (t.campaign_rank(), *t));
                tactics.dedup();
                let idx = |t: Tactic| tactics.iter().position(|x| *x == t).unwrap_or(0);
                let mut start = vec![0.0; tactics.len()];
                for (t, w) in &spec.start {
                    start[idx(*t)] += w;
                }
                let mut trans = vec![vec![0.0; tactics.len()]; tactics.len()];
                for (from, to) in &spec.transitions {
                    for (t, w) in to {
                        trans[idx(*from)][idx(*t)] += w;
                    }
                }
                // A tactic with no way out stays where it is.
                for (i, row) in trans.iter_mut().enumerate() {
                    if row.iter().all(|w| *w <= 0.0) {
                        row[i] = 1.0;
                    }
                }
                (tactics, start, trans, false)
            }
            None => {
                let n = held.len();
                let mut start = vec![0.0; n];
                if let Some(s) = start.first_mut() {
                    *s = 1.0;
                }
                let trans = (0..n)
                    .map(|i| {
                        let mut row = vec![0.0; n];
                        row[i] += 0.5;
                        if i + 1 < n {
                            row[i + 1] += 0.4;
                            row[0] += 0.1;
                        } else {
                            row[0] += 0.5;
                        }
                        row
                    })
                    .collect();
                (held, start, trans, true)
            }
        };
        let untagged_moves: Vec<usize> = world
            .moves
            .iter()
            .enumerate()
            .filter(|(_, m)| world.tools[m.tool].tactics.is_empty())
            .map(|(i, _)| i)
            .collect();
        let mut untagged: Vec<String> = untagged_moves
            .iter()
            .map(|i| world.tools[world.moves[*i].tool].name.clone())
            .collect();
        untagged.sort();
        untagged.dedup();
        let moves = tactics
            .iter()
            .map(|t| {
                world
                    .moves
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| world.tools[m.tool].tactics.contains(t))
                    .map(|(i, _)| i)
                    .chain(untagged_moves.iter().copied())
                    .collect()
            })
            .collect();
        Model {
            untagged,
            untagged_moves,
            start_cum: cumulative(&start),
            trans_cum: transitions.iter().map(|r| cumulative(r)).collect(),
            tactics,
            start,
            transitions,
            builtin,
            moves,
        }
    }
}

/// Summary statistics of a sample.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub mean: f64,
    pub median: f64,
    pub p90: f64,
    /// 95% confidence interval of the mean (normal approximation).
    pub ci_low: f64,
    pub ci_high: f64,
}

impl Stats {
    fn of(mut xs: Vec<f64>) -> Option<Stats> {
        if xs.is_empty() {
            return None;
        }
        xs.sort_by(|a, b| a.total_cmp(b));
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = if xs.len() > 1 {
            xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        let half = 1.96 * (var / n).sqrt();
        let q = |p: f64| xs[((p * (n - 1.0)).round() as usize).min(xs.len() - 1)];
        Some(Stats {
            mean,
            median: q(0.5),
            p90: q(0.9),
            ci_low: mean - half,
            ci_high: mean + half,
        })
    }
}

/// `k` of `n` as a fraction (0 when there were none).
fn share(k: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        k as f64 / n as f64
    }
}

/// The Wilson score interval (95%) for `k` successes in `n` trials.
pub fn wilson(k: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = 1.96f64;
    let n = n as f64;
    let p = k as f64 / n;
    let denom = 1.0 + z * z / n;
    let center = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    ((center - half).max(0.0), (center + half).min(1.0))
}

/// How often and how fast one goal was reached.
#[derive(Debug, Clone, Serialize)]
pub struct GoalFrequency {
    pub goal: String,
    pub reached: u64,
    pub rate: f64,
    pub rate_ci: (f64, f64),
    /// Reached without any human grant on the way.
    pub unguarded: u64,
    pub unguarded_rate: f64,
    pub unguarded_ci: (f64, f64),
    /// Calls until the goal was reached (runs that reached it).
    pub steps: Option<Stats>,
    /// Simulated milliseconds until the goal was reached.
    pub time_ms: Option<Stats>,
    /// Why this disagrees with the exhaustive search, when it does (set by the analysis).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The Monte Carlo result.
#[derive(Debug, Clone, Serialize)]
pub struct MonteCarlo {
    pub runs: u64,
    pub seed: u64,
    pub max_steps: u32,
    pub grant_probability: f64,
    pub threads: usize,
    pub model: Model,
    /// Engine decisions taken (calls decided, plus approvals).
    pub decisions: u64,
    pub elapsed_ms: f64,
    pub decisions_per_second: f64,
    pub goals: Vec<GoalFrequency>,
}

/// Per goal: (steps, ms, unguarded) when reached.
type Outcome = Vec<Option<(u32, i64, bool)>>;

fn run_one(
    world: &World,
    model: &Model,
    opts: &McOptions,
    run: u64,
    calls: &mut [ToolCall],
    decisions: &mut u64,
) -> Outcome {
    let mut rng = Rng::for_run(opts.seed, run);
    let engine = world.base.fork();
    let mut progress = vec![0u8; world.progress_len];
    let mut reached: Outcome = vec![None; world.goals.len()];
    let mut left = world.goals.len();
    let mut gated = false;
    let start = world.manifest.settings.start_ms;
    let mut now = start;
    let mean_gap = 1000.0 / world.manifest.settings.calls_per_second;
    let mut done = Vec::new();
    // With no tactic in the model, the agent only has the untagged tools.
    let chain = !model.tactics.is_empty();
    if !chain && model.untagged_moves.is_empty() {
        return reached;
    }
    let mut state = if chain { rng.pick(&model.start_cum) } else { 0 };
    for step in 0..opts.max_steps {
        let moves = if chain {
            &model.moves[state]
        } else {
            &model.untagged_moves
        };
        if !moves.is_empty() {
            let idx = moves[rng.below(moves.len())];
            let mv: Move = world.moves[idx];
            if let Some(call) = calls.get_mut(idx) {
                call.id.clear();
                let _ = write!(call.id, "m{step}");
                let d = engine.decide_brief(call, now);
                *decisions += 1;
                let admitted = match d.decision {
                    Verdict::Allow => true,
                    Verdict::Deny => false,
                    Verdict::RequireApproval => {
                        if rng.unit() < opts.grant_probability {
                            let ok = match world.grant(&engine, &d.approval_id, None, now) {
                                Some((_, o)) => {
                                    *decisions += 1;
                                    o.decision == Verdict::Allow
                                }
                                None => false,
                            };
                            gated |= ok;
                            ok
                        } else {
                            false
                        }
                    }
                };
                if admitted {
                    done.clear();
                    world.advance(&mut progress, mv, &mut done);
                    for g in &done {
                        if let Some(slot) = reached.get_mut(*g) {
                            if slot.is_none() {
                                *slot = Some((step + 1, now - start, !gated));
                                left -= 1;
                            }
                        }
                    }
                }
            }
        }
        if left == 0 {
            break;
        }
        now += rng.exponential(mean_gap).round().max(1.0) as i64;
        if chain {
            state = rng.pick(&model.trans_cum[state]);
        }
    }
    reached
}

/// Runs the Monte Carlo analysis; `progress` is told how many runs are done, now and then.
pub fn monte_carlo(world: &World, opts: &McOptions, progress: &(dyn Fn(u64) + Sync)) -> MonteCarlo {
    let started = std::time::Instant::now();
    let model = Model::new(world, world.manifest.montecarlo.model.as_ref());
    let threads = opts.threads.max(1).min(opts.runs.max(1) as usize);
    let next = AtomicU64::new(0);
    let finished = AtomicU64::new(0);
    let results: Mutex<Vec<(u64, Outcome)>> = Mutex::new(Vec::with_capacity(opts.runs as usize));
    let total_decisions = AtomicU64::new(0);
    const BATCH: u64 = 32;
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut calls: Vec<ToolCall> =
                    world.moves.iter().map(|m| world.untimed_call(*m)).collect();
                let mut local = Vec::new();
                let mut decisions = 0u64;
                loop {
                    let first = next.fetch_add(BATCH, Ordering::Relaxed);
                    if first >= opts.runs {
                        break;
                    }
                    let last = (first + BATCH).min(opts.runs);
                    for run in first..last {
                        local.push((
                            run,
                            run_one(world, &model, opts, run, &mut calls, &mut decisions),
                        ));
                    }
                    let n = finished.fetch_add(last - first, Ordering::Relaxed) + (last - first);
                    progress(n);
                }
                total_decisions.fetch_add(decisions, Ordering::Relaxed);
                if let Ok(mut r) = results.lock() {
                    r.extend(local);
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(r, _)| *r);
    let n = results.len() as u64;
    let goals = world
        .goals
        .iter()
        .enumerate()
        .map(|(g, goal)| {
            let hits: Vec<(u32, i64, bool)> = results
                .iter()
                .filter_map(|(_, o)| o.get(g).copied().flatten())
                .collect();
            let reached = hits.len() as u64;
            let unguarded = hits.iter().filter(|h| h.2).count() as u64;
            GoalFrequency {
                goal: goal.id.clone(),
                reached,
                rate: share(reached, n),
                rate_ci: wilson(reached, n),
                unguarded,
                unguarded_rate: share(unguarded, n),
                unguarded_ci: wilson(unguarded, n),
                steps: Stats::of(hits.iter().map(|h| f64::from(h.0)).collect()),
                time_ms: Stats::of(hits.iter().map(|h| h.1 as f64).collect()),
                note: None,
            }
        })
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    let decisions = total_decisions.load(Ordering::Relaxed);
    MonteCarlo {
        runs: n,
        seed: opts.seed,
        max_steps: opts.max_steps,
        grant_probability: opts.grant_probability,
        threads,
        model,
        decisions,
        elapsed_ms: elapsed * 1000.0,
        decisions_per_second: if elapsed > 0.0 {
            decisions as f64 / elapsed
        } else {
            0.0
        },
        goals,
    }
}

impl Model {
    /// Whether a stochastic agent of this model ever calls `tool`.
    pub fn calls(&self, world: &World, tool: usize) -> bool {
        self.moves
            .iter()
            .flatten()
            .chain(&self.untagged_moves)
            .any(|i| world.moves.get(*i).is_some_and(|m| m.tool == tool))
    }
}

#[cfg(test)]
mod tests {
    use super::wilson;

    #[test]
    fn wilson_intervals() {
        let (lo, hi) = wilson(50, 100);
        assert!(
            (lo - 0.4038).abs() < 1e-3 && (hi - 0.5962).abs() < 1e-3,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson(0, 100);
        assert_eq!(lo, 0.0);
        assert!(hi > 0.03 && hi < 0.04);
        assert_eq!(wilson(0, 0), (0.0, 1.0));
    }
}
