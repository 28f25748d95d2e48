//! The whole analysis of one manifest, as the reports present it.

use crate::explore::{explore, Explored, Search, Stop};
use crate::fix::FixReport;
use crate::goal::{GoalKind, GoalScope};
use crate::manifest::{CatalogOrigin, PolicyOrigin};
use crate::montecarlo::{monte_carlo, McOptions, MonteCarlo};
use crate::quant::{sweeps, time_to_goal, Sweep, TimeToGoal};
use crate::taxonomy::Tactic;
use crate::toxic::{toxic_combinations, ToxicCombination};
use crate::trajectory::{build, Trajectory};
use crate::world::World;
use serde::Serialize;
use std::collections::BTreeMap;
use truststack_engine::DefaultDecision;
use truststack_policy::{Action, Target};

/// What became of a goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Reachable without any human saying yes.
    Unguarded,
    /// Reachable only through a call a human must approve.
    Gated,
    /// No trajectory reaches it (the exploration was exhaustive, or at the depth bound no state
    /// left to expand could still complete it).
    Unreachable,
    /// Not reached, but the exploration hit a bound before it was exhaustive.
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unguarded => "unguarded",
            Status::Gated => "gated",
            Status::Unreachable => "unreachable",
            Status::Unknown => "unknown",
        }
    }

    /// Whether the goal is acceptable for CI: gated or unreachable.
    pub fn is_safe(self) -> bool {
        matches!(self, Status::Gated | Status::Unreachable)
    }
}

/// A tactic as the taxonomy names it.
#[derive(Debug, Clone, Serialize)]
pub struct TacticRef {
    pub name: &'static str,
    pub attack_id: &'static str,
    pub title: &'static str,
    pub extension: bool,
}

impl From<Tactic> for TacticRef {
    fn from(t: Tactic) -> Self {
        TacticRef {
            name: t.name(),
            attack_id: t.attack_id(),
            title: t.title(),
            extension: t.is_extension(),
        }
    }
}

/// One goal's verdict and evidence.
#[derive(Debug, Clone, Serialize)]
pub struct GoalReport {
    pub id: String,
    pub title: String,
    pub description: String,
    pub summary: String,
    #[serde(flatten)]
    pub kind: GoalKind,
    pub scope: GoalScope,
    pub builtin: bool,
    pub tactics: Vec<TacticRef>,
    pub status: Status,
    /// Why the status is unknown: the bound to raise, or the manifest mistake to correct.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_reason: Option<String>,
    /// The shortest trajectory: unguarded if there is one, else gated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trajectory: Option<Trajectory>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_goal: Option<TimeToGoal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentSummary {
    pub name: String,
    pub identity: String,
    pub tools: Vec<String>,
    pub delegates_to: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launched_by: Option<String>,
    pub top_level: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActorSummary {
    pub label: String,
    pub identity: String,
    pub chain: Vec<String>,
    pub tools: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicySummary {
    pub id: String,
    pub action: Action,
    pub target: Target,
    pub source: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExplorationSummary {
    pub states: usize,
    pub decisions: usize,
    pub depth: usize,
    pub max_depth: usize,
    /// Every abstract state within the depth bound was expanded.
    pub exhaustive: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound: Option<String>,
    /// Stopped once every goal had an unguarded witness.
    pub early: bool,
    /// Stopped once no state left to expand could give a goal a witness it lacks (the policies
    /// certainly stop what is left): every goal not reached is settled.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub decided: bool,
    pub actors: usize,
    pub moves: usize,
    pub step_ms: i64,
    pub waits: bool,
    pub elapsed_ms: f64,
}

/// How to replay the trajectories with `truststack policy eval`.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayInfo {
    /// The catalog file; `None` when the manifest's catalog is inline (reports written with
    /// `--out` write it beside them).
    pub catalog: Option<String>,
    pub policies: Vec<String>,
    /// Extra flags eval needs for the manifest's settings.
    pub flags: Vec<String>,
}

impl ReplayInfo {
    /// The command line for a trace file.
    pub fn command(&self, trace: &str) -> String {
        let mut parts = vec!["truststack policy eval".to_string()];
        for p in &self.policies {
            parts.push(format!("--policy {p}"));
        }
        parts.push(format!(
            "--catalog {}",
            self.catalog.as_deref().unwrap_or("catalog.toml")
        ));
        parts.extend(self.flags.iter().cloned());
        parts.push("--approvals".into());
        parts.push(format!("--trace {trace}"));
        parts.join(" ")
    }
}

/// Everything `truststack prove` found for one manifest.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub manifest: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub agents: Vec<AgentSummary>,
    pub actors: Vec<ActorSummary>,
    pub policies: Vec<PolicySummary>,
    pub approvers: Vec<String>,
    pub exploration: ExplorationSummary,
    pub goals: Vec<GoalReport>,
    pub toxic: Vec<ToxicCombination>,
    pub sweeps: Vec<Sweep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub montecarlo: Option<MonteCarlo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<Box<FixReport>>,
    pub replay: ReplayInfo,
    pub warnings: Vec<String>,
    /// Every goal is gated or unreachable.
    pub safe: bool,
    /// The adversary's speed for time-to-goal.
    pub calls_per_second: f64,
    pub elapsed_ms: f64,
    /// The exploration itself, for `--fix` to start from.
    #[serde(skip)]
    pub explored: Option<std::sync::Arc<Explored>>,
}

impl Analysis {
    /// The goals that have a time to goal, each with it.
    pub fn times_to_goal(&self) -> Vec<(&GoalReport, &TimeToGoal)> {
        self.goals
            .iter()
            .filter_map(|g| g.time_to_goal.as_ref().map(|t| (g, t)))
            .collect()
    }

    pub fn goal(&self, id: &str) -> Option<&GoalReport> {
        self.goals.iter().find(|g| g.id == id)
    }

    pub fn count(&self, status: Status) -> usize {
        self.goals.iter().filter(|g| g.status == status).count()
    }
}

/// What to compute beyond the exhaustive exploration.
pub struct Options<'a> {
    /// Search toxic combinations for the unguarded goals.
    pub toxic: bool,
    /// Run Monte Carlo with these options.
    pub montecarlo: Option<McOptions>,
    /// Told how many Monte Carlo runs are done.
    pub progress: Option<&'a (dyn Fn(u64) + Sync)>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            toxic: true,
            montecarlo: None,
            progress: None,
        }
    }
}

/// Proves a compiled manifest: exhaustive exploration, evidence, toxic combinations,
/// time-to-goal, and (if asked) Monte Carlo.
pub fn analyse(world: &World, opts: &Options) -> Analysis {
    let started = std::time::Instant::now();
    let search = goal_search(world);
    let explored = explore(world, &search);
    analyse_explored(world, opts, std::sync::Arc::new(explored), started)
}

/// The search `prove` runs: every goal, until every goal has an unguarded witness or the
/// fixpoint.
pub fn goal_search(world: &World) -> Search {
    let mut search = Search::full(world);
    search.stop = Stop::AllUnguarded;
    search
}

/// [`analyse`] from an exploration already made with [`goal_search`] (or the same search with
/// the reductions from the start), started at `started`.
pub fn analyse_explored(
    world: &World,
    opts: &Options,
    explored: std::sync::Arc<Explored>,
    started: std::time::Instant,
) -> Analysis {
    let manifest = &world.manifest;
    let search = goal_search(world);
    let mut goals = Vec::new();
    let mut unguarded = Vec::new();
    for (g, goal) in world.goals.iter().enumerate() {
        let w = &explored.witnesses[g];
        let (mut status, path) = match (&w.unguarded, &w.gated) {
            (Some(p), _) => (Status::Unguarded, Some(p)),
            (None, Some(p)) => (Status::Gated, Some(p)),
            (None, None) if explored.settled[g] => (Status::Unreachable, None),
            (None, None) => (Status::Unknown, None),
        };
        let mut unknown_reason = None;
        if status == Status::Unknown {
            unknown_reason = Some(match explored.bound_kind {
                Some(b) => format!(
                    "the exploration stopped at a bound before its fixpoint; {}",
                    b.advice()
                ),
                None => "the exploration stopped before its fixpoint".into(),
            });
        }
        // Not reached (or reached only through a gate) proves nothing when the manifest is
        // wrong: say so rather than call it safe.
        if let (true, Some(why)) = (
            status != Status::Unguarded,
            world.unprovable.get(g).cloned().flatten(),
        ) {
            status = Status::Unknown;
            unknown_reason = Some(why);
        }
        if status == Status::Unguarded {
            unguarded.push(g);
        }
        goals.push(GoalReport {
            id: goal.id.clone(),
            title: goal.title.clone(),
            description: goal.description.clone(),
            summary: goal.summary(),
            kind: goal.kind.clone(),
            scope: goal.scope,
            builtin: goal.builtin,
            tactics: goal.tactics().into_iter().map(TacticRef::from).collect(),
            status,
            unknown_reason,
            trajectory: path.map(|p| build(world, g, p)),
            time_to_goal: path.map(|p| time_to_goal(world, g, p)),
            line: goal.line,
        });
    }
    let mut warnings = world.warnings.clone();
    warnings.extend(ungrantable_warnings(world, &explored.ungrantable));
    for g in &goals {
        if g.trajectory.as_ref().is_some_and(|t| !t.replay_consistent) {
            warnings.push(format!(
                "goal `{}`: replaying its trajectory through the engine did not give the explored \
                 decisions (please report this)",
                g.id
            ));
        }
    }
    let toxic = if opts.toxic {
        toxic_combinations(world, &unguarded)
    } else {
        Vec::new()
    };
    let mut montecarlo = opts.montecarlo.as_ref().filter(|m| m.runs > 0).map(|m| {
        let noop = |_: u64| {};
        monte_carlo(world, m, opts.progress.unwrap_or(&noop))
    });
    if let Some(mc) = &mut montecarlo {
        explain_disagreement(world, &explored, &goals, mc);
    }
    let delegated: std::collections::BTreeSet<&str> = manifest
        .agents
        .iter()
        .flat_map(|a| a.delegates_to.iter().map(String::as_str))
        .collect();
    let bundle = world.base.bundle();
    let decision = |d: DefaultDecision| match d {
        DefaultDecision::Allow => "allow",
        DefaultDecision::Deny => "deny",
    };
    let mut flags = Vec::new();
    if manifest.settings.default_decision != DefaultDecision::Allow {
        flags.push(format!(
            "--default {}",
            decision(manifest.settings.default_decision)
        ));
    }
    if manifest.settings.unknown_tools != DefaultDecision::Deny {
        flags.push(format!(
            "--unknown-tools {}",
            decision(manifest.settings.unknown_tools)
        ));
    }
    let safe = goals.iter().all(|g| g.status.is_safe());
    Analysis {
        manifest: manifest.path.display().to_string(),
        name: manifest.name.clone(),
        description: manifest.description.clone(),
        agents: manifest
            .agents
            .iter()
            .map(|a| AgentSummary {
                name: a.name.clone(),
                identity: a.identity.clone(),
                tools: a.tools.clone(),
                delegates_to: a.delegates_to.clone(),
                launched_by: a.launched_by.clone(),
                top_level: a.launched_by.is_some() || !delegated.contains(a.name.as_str()),
            })
            .collect(),
        actors: world
            .actors
            .iter()
            .map(|a| ActorSummary {
                label: a.label.clone(),
                identity: a.identity.clone(),
                chain: a.chain.clone(),
                tools: a
                    .tools
                    .iter()
                    .map(|t| world.tools[*t].name.clone())
                    .collect(),
            })
            .collect(),
        policies: bundle
            .policies
            .iter()
            .map(|p| PolicySummary {
                id: p.policy.id.clone(),
                action: p.policy.action,
                target: p.policy.target,
                source: p.policy.source.to_string(),
            })
            .collect(),
        approvers: world.approvers.clone(),
        exploration: ExplorationSummary {
            states: explored.states,
            decisions: explored.decisions,
            depth: explored.depth,
            max_depth: search.max_depth,
            exhaustive: explored.exhaustive,
            bound: explored.bound.clone(),
            early: explored.early,
            decided: explored.decided,
            actors: world.actors.len(),
            moves: world.moves.len(),
            step_ms: manifest.settings.step_ms,
            waits: manifest.settings.waits && world.abstraction.has_windows(),
            elapsed_ms: explored.elapsed.as_secs_f64() * 1000.0,
        },
        goals,
        toxic,
        sweeps: sweeps(world),
        montecarlo,
        fix: None,
        replay: ReplayInfo {
            catalog: match &manifest.catalog_origin {
                CatalogOrigin::File(p) => Some(p.display().to_string()),
                CatalogOrigin::Inline => None,
            },
            policies: manifest
                .policy_origins
                .iter()
                .map(|o| match o {
                    PolicyOrigin::File(p) => p.display().to_string(),
                    PolicyOrigin::Inline(n) => format!("{n}.tsp"),
                })
                .collect(),
            flags,
        },
        warnings,
        safe,
        calls_per_second: manifest.settings.calls_per_second,
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        explored: Some(explored),
    }
}

/// Where the exhaustive search reaches a goal that no Monte Carlo run reached, says why: the
/// stochastic model never calls a tool the shortest trajectory needs, or the trajectory is one
/// the model draws too rarely for the runs made.
fn explain_disagreement(
    world: &World,
    explored: &crate::explore::Explored,
    goals: &[GoalReport],
    mc: &mut MonteCarlo,
) {
    for (g, freq) in mc.goals.iter_mut().enumerate() {
        let Some(report) = goals.get(g) else { continue };
        if freq.reached > 0 || !matches!(report.status, Status::Unguarded | Status::Gated) {
            continue;
        }
        let Some(w) = explored.witnesses.get(g) else {
            continue;
        };
        let Some(path) = w.unguarded.as_ref().or(w.gated.as_ref()) else {
            continue;
        };
        let needed: Vec<usize> = path
            .iter()
            .filter_map(|s| match s {
                crate::explore::PathStep::Call {
                    mv, admitted: true, ..
                } => Some(mv.tool),
                _ => None,
            })
            .collect();
        let mut missing: Vec<&str> = needed
            .iter()
            .filter(|t| !mc.model.calls(world, **t))
            .map(|t| world.tools[*t].name.as_str())
            .collect();
        missing.dedup();
        let calls = needed.len();
        freq.note = Some(if !missing.is_empty() {
            format!(
                "the exhaustive search reaches it in {calls} call(s), but the Monte Carlo model \
                 never calls {} (its tactics are not in the model's states)",
                missing
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else if report.status == Status::Gated && mc.grant_probability <= 0.0 {
            format!(
                "the exhaustive search reaches it in {calls} call(s) through a gate; Monte Carlo \
                 grants no held call (grant_probability = 0)"
            )
        } else {
            format!(
                "the exhaustive search reaches it in {calls} call(s); the stochastic agents did \
                 not draw that trajectory in {} runs of at most {} steps (a rate below {:.1}% \
                 is consistent with this)",
                mc.runs,
                mc.max_steps,
                freq.rate_ci.1 * 100.0
            )
        });
    }
}

/// One warning per gate that held calls nobody may grant: such a gate is a silent deny, and a
/// goal it stops is not "proved by a gate".
pub fn ungrantable_warnings(world: &World, found: &[crate::explore::Ungrantable]) -> Vec<String> {
    let mut by_policy: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
    for u in found {
        let actor = &world.actors[u.actor];
        let who = format!("`{}` ({})", world.tools[u.tool].name, actor.label);
        let calls = by_policy.entry(u.policies.clone()).or_default();
        if !calls.contains(&who) {
            calls.push(who);
        }
    }
    let bundle = world.base.bundle();
    by_policy
        .into_iter()
        .map(|(policies, calls)| {
            let groups: Vec<String> = policies
                .iter()
                .filter_map(|id| {
                    let cp = bundle.policy(id)?;
                    let group = cp.policy.approvers.as_ref()?;
                    let members = world.manifest.approvers.get(group);
                    Some(format!(
                        "group `{group}`: {}",
                        members.map_or("not listed".into(), |m| m.join(", "))
                    ))
                })
                .collect();
            format!(
                "gate {} holds calls that no approver may grant, because every eligible approver \
                 ({}) is in the chain of command of the agent it holds (or not listed): {}; it \
                 acts as a deny, not a gate — add an approver outside that chain of command",
                policies
                    .iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if groups.is_empty() {
                    world.approvers.join(", ")
                } else {
                    groups.join("; ")
                },
                calls.join(", ")
            )
        })
        .collect()
}

/// Per-goal statuses, for comparing analyses.
pub fn statuses(a: &Analysis) -> BTreeMap<String, Status> {
    a.goals.iter().map(|g| (g.id.clone(), g.status)).collect()
}
