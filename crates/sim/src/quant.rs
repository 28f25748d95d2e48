//! Quantitative analysis: how long a goal takes under the policies' rate limits.
//!
//! The exhaustive search proves *whether* a goal is reachable; a rate limit only decides *how
//! fast*. Here every call of a goal's shortest trajectory is repeated as often as a real campaign
//! makes it (the manifest's `workload`: a /16 sweep is 65,536 scans), issued at the adversary's
//! speed (`calls_per_second`), one at a time, and delayed whenever a rate limit would deny it:
//! with a limit of N calls per window W (exact sliding window, as the engine enforces it), call k
//! of a scope cannot be admitted before call k−N's time plus W. The limits are read from the
//! policies' `Count` monitors: a `DENY` policy whose condition is certainly true once its count
//! exceeds the limit, for this tool and these arguments (the rest of the condition evaluated in
//! three-valued logic; a limit that depends on the trajectory is reported as conditional and not
//! applied, so times are lower bounds for the adversary).

use crate::explore::PathStep;
use crate::world::{Move, World};
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use truststack_engine::event::Principals;
use truststack_policy::ast::{CmpOp, Mode, Pred};
use truststack_policy::partial::{eval, Known, Truth};
use truststack_policy::{Action, Target};

/// The most calls a workload may ask for in one trajectory.
pub const MAX_CALLS: u64 = 20_000_000;

/// A rate limit read from a policy.
#[derive(Debug, Clone, Serialize)]
pub struct RateLimit {
    pub policy: String,
    pub pattern: String,
    pub target: Target,
    /// The most calls admitted in any window.
    pub max_calls: u64,
    pub window_ms: i64,
}

/// A limit as it applied to a trajectory.
#[derive(Debug, Clone, Serialize)]
pub struct LimitUse {
    #[serde(flatten)]
    pub limit: RateLimit,
    /// Calls the limit delayed.
    pub throttled_calls: u64,
}

/// Time to reach one goal.
#[derive(Debug, Clone, Serialize)]
pub struct TimeToGoal {
    pub goal: String,
    /// Calls with the workload's volumes.
    pub calls: u64,
    /// At the adversary's speed with no limit.
    pub unlimited_ms: f64,
    /// Under the policies' definite rate limits; `None` when a limit admits no call at all.
    pub limited_ms: Option<f64>,
    pub limits: Vec<LimitUse>,
    /// Count limits that may apply, depending on the trajectory (not applied).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditional: Vec<String>,
}

/// One mass tool alone: e.g. the /16 scan.
#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    pub tool: String,
    pub actor: String,
    pub calls: u64,
    pub unlimited_ms: f64,
    pub limited_ms: Option<f64>,
    pub limits: Vec<LimitUse>,
}

/// The rate limits that certainly apply to a call of `tool` with `args`, and the ones that may.
pub fn limits_for(world: &World, tool: usize, args: &Value) -> (Vec<RateLimit>, Vec<String>) {
    let bundle = world.base.bundle();
    let mut definite = Vec::new();
    let mut conditional = Vec::new();
    for cp in &bundle.policies {
        let p = &cp.policy;
        if p.action != Action::Deny || p.mode != Mode::Enforce {
            continue;
        }
        let known = Known {
            tool: &world.tools[tool].name,
            catalog: &bundle.catalog,
            args: Some(args),
            subject: None,
        };
        for count in p.condition.predicates() {
            let Pred::Count {
                pattern,
                op,
                n,
                window_ms,
            } = count
            else {
                continue;
            };
            if !known.matches(pattern) {
                continue;
            }
            let (op, n, window_ms, pattern) = (*op, *n, *window_ms, pattern.clone());
            let max_calls = match op {
                CmpOp::Gt => n,
                CmpOp::Ge => n.saturating_sub(1),
                _ => continue,
            };
            let limit = RateLimit {
                policy: p.id.clone(),
                pattern,
                target: p.target,
                max_calls,
                window_ms,
            };
            // This count exceeded: does the rest of the condition certainly hold?
            let exceeded = |pred: &Pred| std::ptr::eq(pred, count).then_some(Truth::True);
            match eval(&p.condition, &known, &exceeded) {
                Truth::True => definite.push(limit),
                Truth::Unknown => conditional.push(format!(
                    "{} ({} calls per {} at {}, when the rest of its condition holds)",
                    limit.policy,
                    limit.max_calls,
                    truststack_policy::duration::format_duration(limit.window_ms),
                    limit.target.as_str()
                )),
                Truth::False => {}
            }
        }
    }
    (definite, conditional)
}

struct Run {
    /// (volume, move, how long the trajectory waits before the first of these calls, in ms)
    calls: Vec<(u64, Move, f64)>,
}

fn simulate(world: &World, run: &Run) -> (u64, f64, Option<f64>, Vec<LimitUse>, Vec<String>) {
    let interval = 1000.0 / world.manifest.settings.calls_per_second;
    let mut total = 0u64;
    let mut uses: Vec<LimitUse> = Vec::new();
    let mut conditional = Vec::new();
    let mut windows: HashMap<(usize, String), VecDeque<f64>> = HashMap::new();
    let mut t: Option<f64> = None;
    let mut blocked = false;
    let mut waited = 0.0;
    for (volume, mv, wait) in &run.calls {
        let actor = &world.actors[mv.actor];
        let args = world.tools[mv.tool]
            .variants
            .get(mv.variant)
            .cloned()
            .unwrap_or(Value::Null);
        let (limits, cond) = limits_for(world, mv.tool, &args);
        for c in cond {
            if !conditional.contains(&c) {
                conditional.push(c);
            }
        }
        let p = Principals::of(&actor.identity, Some(&actor.session), &actor.chain);
        let applied: Vec<(usize, String)> = limits
            .into_iter()
            .map(|l| {
                let scope = match l.target {
                    Target::AgentIdentity => p.agent,
                    Target::Session => p.session,
                    Target::User => p.user,
                    Target::DelegationRoot => p.root,
                }
                .to_string();
                let idx = match uses
                    .iter()
                    .position(|u| u.limit.policy == l.policy && u.limit.pattern == l.pattern)
                {
                    Some(i) => i,
                    None => {
                        uses.push(LimitUse {
                            limit: l,
                            throttled_calls: 0,
                        });
                        uses.len() - 1
                    }
                };
                (idx, scope)
            })
            .collect();
        let volume = (*volume).min(MAX_CALLS.saturating_sub(total));
        total += volume;
        if blocked {
            continue;
        }
        // A wait the trajectory needs (a taint window, a tight limit) comes before the batch:
        // a window opened by the previous batch's last call must pass first.
        waited += wait;
        for k in 0..volume {
            let gap = if k == 0 { interval + wait } else { interval };
            let mut at = t.map_or(0.0, |t| t + gap);
            for (idx, scope) in &applied {
                let Some(u) = uses.get_mut(*idx) else {
                    continue;
                };
                let max = u.limit.max_calls as usize;
                if max == 0 {
                    blocked = true;
                    break;
                }
                let w = windows.entry((*idx, scope.clone())).or_default();
                if w.len() >= max {
                    if let Some(oldest) = w.get(w.len() - max) {
                        let earliest = oldest + u.limit.window_ms as f64;
                        if earliest > at {
                            at = earliest;
                            u.throttled_calls += 1;
                        }
                    }
                }
            }
            if blocked {
                break;
            }
            for (idx, scope) in &applied {
                let max = uses.get(*idx).map_or(0, |u| u.limit.max_calls as usize);
                let w = windows.entry((*idx, scope.clone())).or_default();
                w.push_back(at);
                while w.len() > max {
                    w.pop_front();
                }
            }
            t = Some(at);
        }
    }
    let unlimited = total.saturating_sub(1) as f64 * interval + waited;
    let limited = if blocked {
        None
    } else {
        Some(t.unwrap_or(0.0))
    };
    (total, unlimited, limited, uses, conditional)
}

/// Time to reach a goal along an explored path.
pub fn time_to_goal(world: &World, goal: usize, path: &[PathStep]) -> TimeToGoal {
    let mut calls = Vec::new();
    let mut wait = 0.0;
    for s in path {
        match s {
            PathStep::Call {
                mv, admitted: true, ..
            } => {
                calls.push((world.tools[mv.tool].volume, *mv, wait));
                wait = 0.0;
            }
            PathStep::Wait { ms } => wait += *ms as f64,
            PathStep::Call { .. } => {}
        }
    }
    let (calls, unlimited_ms, limited_ms, limits, conditional) = simulate(world, &Run { calls });
    TimeToGoal {
        goal: world.goals[goal].id.clone(),
        calls,
        unlimited_ms,
        limited_ms,
        limits,
        conditional,
    }
}

/// Every mass tool (workload above 1) swept alone by the first actor that holds it.
pub fn sweeps(world: &World) -> Vec<Sweep> {
    let mut out = Vec::new();
    for (t, tool) in world.tools.iter().enumerate() {
        if tool.volume <= 1 {
            continue;
        }
        let Some(mv) = world.moves.iter().find(|m| m.tool == t).copied() else {
            continue;
        };
        let (calls, unlimited_ms, limited_ms, limits, _) = simulate(
            world,
            &Run {
                calls: vec![(tool.volume, mv, 0.0)],
            },
        );
        out.push(Sweep {
            tool: tool.name.clone(),
            actor: world.actors[mv.actor].label.clone(),
            calls,
            unlimited_ms,
            limited_ms,
            limits,
        });
    }
    out
}

/// `2d 6h 35m`, `4h 33m 3s`, `1.25 s`, `250 ms`.
pub fn human_duration(ms: f64) -> String {
    if !ms.is_finite() {
        return "never".into();
    }
    if ms < 1000.0 {
        return format!("{} ms", ms.round());
    }
    if ms < 60_000.0 {
        return format!("{:.2} s", ms / 1000.0);
    }
    let total = (ms / 1000.0).round() as u64;
    let (d, h, m, s) = (
        total / 86_400,
        total / 3600 % 24,
        total / 60 % 60,
        total % 60,
    );
    match (d, h) {
        (0, 0) => format!("{m}m {s}s"),
        (0, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::human_duration;

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(250.0), "250 ms");
        assert_eq!(human_duration(1250.0), "1.25 s");
        assert_eq!(human_duration(16_383_750.0), "4h 33m 4s");
        assert_eq!(human_duration(196_508_750.0), "2d 6h 35m");
    }
}
