//! Exhaustive exploration: every order in which the agents, acting adversarially and through
//! every permitted delegation chain, can call their tools — each call decided by the real engine
//! ([`Engine::queue`] on a [`Engine::fork`] of the state), on a simulated clock.
//!
//! Breadth-first over abstract states (see [`crate::abstraction`]): a state is the engine's
//! canonical snapshot, the goal automata's progress and the approvers' running leases. From each
//! state the adversary may
//!
//! - call any tool any of its actors holds, with any argument variant, `step` after the previous
//!   call; a call the engine holds for approval branches twice: **refused** (the gate as a stop)
//!   and **granted** by the first approver the engine accepts (the path becomes *gated*);
//! - wait until a monitor entry leaves a window some policy reads (only when some policy reads
//!   a window).
//!
//! A goal is *unguarded* when a path without any grant reaches it, *gated* when only paths with
//! a grant do, *unreachable* when no explored path does and the exploration was exhaustive.
//! Breadth-first order makes every reported trajectory a shortest one.
//!
//! The reductions of the search, each sound (it never hides a trajectory to a goal the plain
//! search would find) and each checked against the plain search on generated manifests. They
//! apply when the plain search, run first within [`PLAIN_BUDGET`] states, stops at a bound:
//!
//! - **Goal progress that no longer matters is forgotten.** States are compared on the goal
//!   automata's progress only where it can still change a verdict: a goal already reached
//!   unguarded (breadth-first, its shortest witness is found) or not tracked by this search
//!   drops out of the comparison, and in a scope whose actors hold no tools that could complete
//!   the goal from where it stands (a sequence step none of them can match, a data flow with no
//!   sink left), every progress value is the same *dead* one.
//! - **A goal nobody can still complete is settled at the depth bound.** When the search stops
//!   at `max_depth`, a goal not reached is unreachable, not unknown, if in every state left to
//!   expand every scope's progress on it is dead: no longer trajectory can reach it either.
//! - **Monitors keep only the windows that read them** (see [`crate::abstraction`]): a
//!   `Trajectory_Contains('X')` monitor no predicate reads through `WITHIN` keeps presence only,
//!   even when another monitor is read through a window.
//! - **Interchangeable tools are explored once** (see [`World::representatives`]): two tools of
//!   one actor with the same catalog entry but the name, named by no policy, with the same
//!   argument variants and workload, are decided alike in every state and do the same to every goal.

use crate::world::{Lease, Move, World};
use std::collections::HashMap;
use std::fmt::Write as _;
use truststack_engine::{Engine, Request, ToolCall, Verdict};
use truststack_policy::duration::format_duration;
use truststack_policy::Action as PolicyAction;

/// One step of an explored trajectory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStep {
    /// A call at `time`, and what became of it.
    Call {
        mv: Move,
        time: i64,
        /// The engine held the call for approval.
        held: bool,
        /// Who granted it (when held and granted).
        granted_by: Option<String>,
        /// Whether the call was admitted (allowed, or granted and then allowed).
        admitted: bool,
    },
    /// The adversary waited this long.
    Wait { ms: i64 },
}

#[derive(Debug, Clone)]
struct Rec {
    parent: u32,
    step: Option<PathStep>,
}

struct Frontier {
    engine: Engine,
    progress: Vec<u8>,
    leases: Vec<Lease>,
    now: i64,
    rec: u32,
    gated: bool,
}

/// When to stop early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Explore everything (within the bounds).
    Never,
    /// Stop as soon as every tracked goal has an unguarded witness.
    AllUnguarded,
}

/// What to explore.
#[derive(Debug, Clone)]
pub struct Search {
    /// The moves the adversary may make (a subset of the world's, for toxic-combination checks).
    pub moves: Vec<Move>,
    /// The goals to report on (indices into the world's goals).
    pub goals: Vec<usize>,
    pub stop: Stop,
    pub max_depth: usize,
    pub max_states: usize,
    /// When to apply the reductions (see the module documentation): `None`, never (to check
    /// them against the plain search); `Some(n)`, when the plain search, run first within `n`
    /// states, stops at a bound — so manifests it explores to the fixpoint are explored, and
    /// reported, exactly as without reductions; `Some(0)`, from the start.
    pub reduce: Option<usize>,
}

/// The plain search's budget before the reduced one takes over: small manifests (the GTG-1002
/// ones keep a few dozen states) are explored and reported state for state as without the
/// reductions; the reduced search costs at most this many states more on large ones.
pub const PLAIN_BUDGET: usize = 2_000;

impl Search {
    /// Every move, every goal, the manifest's bounds.
    pub fn full(world: &World) -> Search {
        Search {
            moves: world.moves.clone(),
            goals: (0..world.goals.len()).collect(),
            stop: Stop::Never,
            max_depth: world.manifest.settings.max_depth,
            max_states: world.manifest.settings.max_states,
            reduce: Some(PLAIN_BUDGET),
        }
    }
}

/// What the moves of one search can still do to each goal, per progress slot.
struct Liveness {
    /// Per progress slot: its goal.
    goal: Vec<usize>,
    /// Per progress slot: the union of the effects of the moves acting in it.
    reach: Vec<crate::goal::Effect>,
    /// Per goal: it drops out of state comparison (untracked, or reached unguarded).
    settled: Vec<bool>,
    /// Per goal: it drops out of the comparison of states behind a grant (untracked, or
    /// reached at all): such states can only add gated witnesses, and its shortest is found.
    witnessed: Vec<bool>,
}

impl Liveness {
    fn new(world: &World, search: &Search) -> Liveness {
        let mut goal = vec![usize::MAX; world.progress_len];
        for g in 0..world.goals.len() {
            for a in 0..world.actors.len() {
                if let Some(x) = goal.get_mut(world.slot(g, a)) {
                    *x = g;
                }
            }
        }
        let mut reach = vec![crate::goal::Effect::default(); world.progress_len];
        for m in &search.moves {
            for g in 0..world.goals.len() {
                let e = world.variant_effects[m.tool][m.variant][g];
                if let Some(r) = reach.get_mut(world.slot(g, m.actor)) {
                    r.steps |= e.steps;
                    r.source |= e.source;
                    r.sink |= e.sink;
                }
            }
        }
        let settled: Vec<bool> = (0..world.goals.len())
            .map(|g| !search.goals.contains(&g))
            .collect();
        Liveness {
            goal,
            reach,
            witnessed: settled.clone(),
            settled,
        }
    }

    /// Whether slot `i` at `progress` can still complete its goal.
    fn alive(&self, world: &World, i: usize, progress: u8) -> bool {
        match (self.goal.get(i), self.reach.get(i)) {
            (Some(&g), Some(r)) if g < world.goals.len() => {
                world.goals[g].can_complete(progress, *r)
            }
            _ => false,
        }
    }

    /// Rewrites the kept states' keys after goals dropped out of the comparison, so that a state
    /// met again is still recognised. The progress vector ends every key; a state kept only
    /// behind a grant was compared with the goals reached at all dropped, the others with the
    /// goals reached unguarded dropped.
    fn rekey(&self, visited: &mut HashMap<Vec<u8>, bool>) {
        let len = self.goal.len();
        for (mut k, ungated) in std::mem::take(visited) {
            let dropped = if ungated {
                &self.settled
            } else {
                &self.witnessed
            };
            let base = k.len().saturating_sub(len);
            for (i, b) in k.iter_mut().skip(base).enumerate() {
                let g = self.goal.get(i).copied().unwrap_or(usize::MAX);
                if dropped.get(g).copied().unwrap_or(true) {
                    *b = 0xFF;
                }
            }
            let entry = visited.entry(k).or_insert(ungated);
            *entry |= ungated;
        }
    }

    /// The progress vector as states are compared on it (`gated`: of a state behind a grant).
    fn key(&self, world: &World, progress: &[u8], gated: bool, out: &mut Vec<u8>) {
        let settled = if gated {
            &self.witnessed
        } else {
            &self.settled
        };
        for (i, p) in progress.iter().enumerate() {
            let g = self.goal.get(i).copied().unwrap_or(usize::MAX);
            if settled.get(g).copied().unwrap_or(true) {
                out.push(0xFF);
            } else if !self.alive(world, i, *p) {
                out.push(0xFE);
            } else {
                out.push(*p);
            }
        }
    }
}

/// The shortest paths found to one goal.
#[derive(Debug, Clone, Default)]
pub struct Witnesses {
    pub unguarded: Option<Vec<PathStep>>,
    pub gated: Option<Vec<PathStep>>,
}

/// Which bound stopped an exploration before its fixpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundKind {
    /// `settings.max_depth`: trajectories longer than this were not explored.
    Depth(usize),
    /// `settings.max_states`: more distinct states than this.
    States(usize),
}

impl BoundKind {
    /// Which setting to raise, and from what.
    pub fn advice(self) -> String {
        match self {
            BoundKind::Depth(n) => format!("raise settings.max_depth (now {n})"),
            BoundKind::States(n) => format!("raise settings.max_states (now {n})"),
        }
    }
}

/// A held call nobody may grant: every approver the engine would accept for the policies that
/// held it is in the call's chain of command (or no approver is listed for their group). Such a
/// gate acts as a silent deny.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ungrantable {
    pub actor: usize,
    pub tool: usize,
    /// The REQUIRE_HITL policies that held it.
    pub policies: Vec<String>,
}

/// What an exploration found.
#[derive(Debug, Clone)]
pub struct Explored {
    /// Distinct abstract states kept.
    pub states: usize,
    /// Engine decisions taken.
    pub decisions: usize,
    /// The deepest layer expanded.
    pub depth: usize,
    /// Every reachable abstract state was expanded (a fixpoint before the bounds).
    pub exhaustive: bool,
    /// Why the exploration stopped before a fixpoint, if it did.
    pub bound: Option<String>,
    /// The same bound, as data.
    pub bound_kind: Option<BoundKind>,
    /// Held calls no approver may grant, one per actor and tool.
    pub ungrantable: Vec<Ungrantable>,
    /// Stopped because every tracked goal had an unguarded witness ([`Stop::AllUnguarded`]).
    pub early: bool,
    /// Per tracked goal (same order as `Search::goals`).
    pub witnesses: Vec<Witnesses>,
    /// Per tracked goal: "not reached unguarded" is final — the search reached its fixpoint,
    /// or stopped at the depth bound where no state left to expand can still complete it.
    pub settled: Vec<bool>,
    /// The reduced search gave this answer (the plain one stopped at a bound, or was skipped).
    pub reduced: bool,
    pub elapsed: std::time::Duration,
}

fn path(arena: &[Rec], mut rec: u32) -> Vec<PathStep> {
    let mut out = Vec::new();
    while let Some(r) = arena.get(rec as usize) {
        match &r.step {
            Some(s) => out.push(s.clone()),
            None => break,
        }
        rec = r.parent;
    }
    out.reverse();
    out
}

/// Runs an exploration.
pub fn explore(world: &World, search: &Search) -> Explored {
    let Some(budget) = search.reduce else {
        return explore_once(world, search, false);
    };
    if budget > 0 {
        let plain = explore_once(
            world,
            &Search {
                max_states: budget.min(search.max_states),
                ..search.clone()
            },
            false,
        );
        // A fixpoint (or an early stop) is final; at a bound, the reduced search may still
        // reach its fixpoint, or settle goals at the depth bound.
        if plain.bound_kind.is_none() {
            return plain;
        }
        let mut reduced = explore_once(world, search, true);
        reduced.decisions += plain.decisions;
        reduced.elapsed += plain.elapsed;
        return reduced;
    }
    explore_once(world, search, true)
}

fn explore_once(world: &World, search: &Search, reduce: bool) -> Explored {
    let started = std::time::Instant::now();
    let settings = &world.manifest.settings;
    let step_ms = settings.step_ms;
    let lease_ms = settings.approval_lease_ms;
    let mut arena = vec![Rec {
        parent: 0,
        step: None,
    }];
    let mut witnesses = vec![Witnesses::default(); search.goals.len()];
    let tracked: Vec<Option<usize>> = (0..world.goals.len())
        .map(|g| search.goals.iter().position(|x| *x == g))
        .collect();
    let mut visited: HashMap<Vec<u8>, bool> = HashMap::new();
    // Distinct states kept, counted when kept: re-keying may merge entries of `visited` later.
    let mut kept = 1usize;
    let mut decisions = 0usize;
    let root = Frontier {
        engine: world.base.fork(),
        progress: vec![0; world.progress_len],
        leases: Vec::new(),
        now: settings.start_ms,
        rec: 0,
        gated: false,
    };
    let plain;
    let abstraction = if reduce {
        &world.abstraction
    } else {
        plain = crate::abstraction::Abstraction::per_kind_only(&world.base.bundle());
        &plain
    };
    let mut live = Liveness::new(world, search);
    // A goal just settled or witnessed: the states already kept are compared anew.
    let mut rekey = false;
    let key = |f: &Frontier, remaining: usize, live: &Liveness| {
        let mut k = Vec::with_capacity(64);
        abstraction.key(&f.engine.snapshot(), f.now, remaining, step_ms, &mut k);
        crate::abstraction::Abstraction::lease_key(&f.leases, f.now, &mut k);
        if reduce {
            live.key(world, &f.progress, f.gated, &mut k);
        } else {
            k.extend_from_slice(&f.progress);
        }
        k
    };
    visited.insert(key(&root, search.max_depth, &live), true);
    let mut frontier = vec![root];
    let moves = if reduce {
        world.representatives(&search.moves)
    } else {
        search.moves.clone()
    };
    let mut calls: Vec<ToolCall> = moves.iter().map(|m| world.untimed_call(*m)).collect();
    let mut depth = 0;
    let mut bound = None;
    let mut bound_kind = None;
    let mut ungrantable: std::collections::BTreeMap<(usize, usize), Vec<String>> =
        std::collections::BTreeMap::new();
    let mut done = false;
    let waits_enabled = settings.waits && abstraction.has_windows();
    let mut completed = Vec::new();
    while !frontier.is_empty() && !done {
        if depth >= search.max_depth {
            bound = Some(format!(
                "depth bound: trajectories longer than {} steps were not explored",
                search.max_depth
            ));
            bound_kind = Some(BoundKind::Depth(search.max_depth));
            break;
        }
        let remaining = search.max_depth - depth - 1;
        for call in &mut calls {
            call.id.clear();
            let _ = write!(call.id, "c{}", depth + 1);
        }
        let mut next = Vec::new();
        'states: for f in frontier.drain(..) {
            let mut children: Vec<(Frontier, Vec<usize>)> = Vec::new();
            for (&mv, call) in moves.iter().zip(&calls) {
                let engine = f.engine.fork();
                let decision = engine.decide_brief(call, f.now);
                decisions += 1;
                let base_step = |held, granted_by, admitted| PathStep::Call {
                    mv,
                    time: f.now,
                    held,
                    granted_by,
                    admitted,
                };
                let mut outcomes: Vec<(Engine, PathStep, bool, Vec<Lease>)> = Vec::new();
                match decision.decision {
                    Verdict::Allow => outcomes.push((
                        engine,
                        base_step(false, None, true),
                        false,
                        f.leases.clone(),
                    )),
                    Verdict::Deny => outcomes.push((
                        engine,
                        base_step(false, None, false),
                        false,
                        f.leases.clone(),
                    )),
                    Verdict::RequireApproval => {
                        let granted = engine.fork();
                        let grant = world.grant(
                            &granted,
                            &decision.approval_id,
                            lease_ms.map(format_duration),
                            f.now,
                        );
                        if grant.is_none() {
                            // Which policies held it: decided again, in full, once per actor
                            // and tool (this path is rare; the brief decision does not say).
                            ungrantable.entry((mv.actor, mv.tool)).or_insert_with(|| {
                                let mut c = call.clone();
                                c.time = Some(crate::clock::rfc3339(f.now));
                                f.engine
                                    .fork()
                                    .queue(Request::new(&c).at(f.now))
                                    .wait()
                                    .policies
                                    .iter()
                                    .filter(|p| p.action == PolicyAction::RequireHitl)
                                    .map(|p| p.id.clone())
                                    .collect()
                            });
                        }
                        // The gate as a stop: refused (the engine keeps it pending; a pending
                        // call changes no decision).
                        outcomes.push((
                            engine,
                            base_step(true, None, false),
                            false,
                            f.leases.clone(),
                        ));
                        if let Some((approver, outcome)) = grant {
                            decisions += 1;
                            let admitted = outcome.decision == Verdict::Allow;
                            let mut leases = f.leases.clone();
                            if let (true, Some(ms)) = (admitted, lease_ms) {
                                let p = truststack_engine::event::Principals::of(
                                    &call.agent,
                                    call.session.as_deref(),
                                    &call.chain,
                                );
                                let bundle = world.base.bundle();
                                // Granted at the time it was held, in the same state: the
                                // policies that fire are the held decision's.
                                for fired in outcome
                                    .policies
                                    .iter()
                                    .filter(|x| x.action == PolicyAction::RequireHitl)
                                {
                                    if let Some(cp) = bundle.policy(&fired.id) {
                                        let target = cp.policy.target;
                                        let scope = match target {
                                            truststack_policy::Target::AgentIdentity => p.agent,
                                            truststack_policy::Target::Session => p.session,
                                            truststack_policy::Target::User => p.user,
                                            truststack_policy::Target::DelegationRoot => p.root,
                                        };
                                        leases.retain(|l| {
                                            !(l.policy == fired.id
                                                && l.target == target
                                                && l.scope == scope)
                                        });
                                        leases.push(Lease {
                                            policy: fired.id.clone(),
                                            target,
                                            scope: scope.to_string(),
                                            until: f.now + ms,
                                        });
                                    }
                                }
                            }
                            outcomes.push((
                                granted,
                                base_step(true, Some(approver.to_string()), admitted),
                                admitted,
                                leases,
                            ));
                        }
                    }
                }
                for (engine, step, granted, leases) in outcomes {
                    let admitted = matches!(step, PathStep::Call { admitted: true, .. });
                    let mut progress = f.progress.clone();
                    completed.clear();
                    if admitted {
                        world.advance(&mut progress, mv, &mut completed);
                    }
                    let child = Frontier {
                        engine,
                        progress,
                        leases,
                        now: f.now + step_ms,
                        rec: 0,
                        gated: f.gated || granted,
                    };
                    let step_rec = Rec {
                        parent: f.rec,
                        step: Some(step),
                    };
                    let reached = completed.clone();
                    children.push((child, reached));
                    let last = children.len() - 1;
                    if let Some((c, _)) = children.get_mut(last) {
                        arena.push(step_rec);
                        c.rec = (arena.len() - 1) as u32;
                    }
                }
            }
            if waits_enabled {
                let snap = f.engine.snapshot();
                for w in abstraction.waits(&snap, f.now, remaining) {
                    arena.push(Rec {
                        parent: f.rec,
                        step: Some(PathStep::Wait { ms: w }),
                    });
                    children.push((
                        Frontier {
                            engine: f.engine.fork(),
                            progress: f.progress.clone(),
                            leases: f.leases.clone(),
                            now: f.now + w,
                            rec: (arena.len() - 1) as u32,
                            gated: f.gated,
                        },
                        Vec::new(),
                    ));
                }
            }
            for (child, reached) in children {
                for g in reached {
                    if let Some(Some(t)) = tracked.get(g) {
                        let w = &mut witnesses[*t];
                        if !child.gated && w.unguarded.is_none() {
                            w.unguarded = Some(path(&arena, child.rec));
                            if let Some(s) = live.settled.get_mut(g) {
                                rekey |= !*s;
                                *s = true;
                            }
                        } else if child.gated && w.gated.is_none() && w.unguarded.is_none() {
                            w.gated = Some(path(&arena, child.rec));
                        }
                        if let Some(s) = live.witnessed.get_mut(g) {
                            rekey |= !*s;
                            *s = true;
                        }
                    }
                }
                if std::mem::take(&mut rekey) && reduce {
                    live.rekey(&mut visited);
                }
                if search.stop == Stop::AllUnguarded
                    && witnesses.iter().all(|w| w.unguarded.is_some())
                {
                    done = true;
                    break 'states;
                }
                // Behind a grant, a state can only add gated witnesses: once every goal has a
                // witness, it has nothing left to show.
                if reduce && child.gated && live.witnessed.iter().all(|w| *w) {
                    continue;
                }
                let k = key(&child, remaining, &live);
                match visited.get_mut(&k) {
                    None => {
                        visited.insert(k, !child.gated);
                        kept += 1;
                        next.push(child);
                    }
                    Some(ungated) if !*ungated && !child.gated => {
                        *ungated = true;
                        next.push(child);
                    }
                    Some(_) => {}
                }
                if visited.len() >= search.max_states {
                    bound = Some(format!(
                        "state bound: more than {} distinct states",
                        search.max_states
                    ));
                    bound_kind = Some(BoundKind::States(search.max_states));
                    done = true;
                    break 'states;
                }
            }
        }
        frontier = next;
        depth += 1;
    }
    let early = done && bound.is_none();
    let exhaustive = bound.is_none() && !done;
    // At the depth bound, a goal is settled when every state left to expand is dead on it.
    let depth_bound = matches!(bound_kind, Some(BoundKind::Depth(_)));
    let settled = search
        .goals
        .iter()
        .map(|&g| {
            exhaustive
                || (reduce
                    && depth_bound
                    && frontier.iter().all(|f| {
                        f.progress
                            .iter()
                            .enumerate()
                            .all(|(i, p)| live.goal.get(i) != Some(&g) || !live.alive(world, i, *p))
                    }))
        })
        .collect();
    Explored {
        states: kept,
        decisions,
        depth,
        exhaustive,
        bound,
        bound_kind,
        ungrantable: ungrantable
            .into_iter()
            .map(|((actor, tool), policies)| Ungrantable {
                actor,
                tool,
                policies,
            })
            .collect(),
        early,
        witnesses,
        settled,
        reduced: reduce,
        elapsed: started.elapsed(),
    }
}

/// Whether `path`, a trajectory without grants, is decided in `world` as it was recorded: every
/// call allowed, denied or held (and refused) alike, at the same times. Goal progress depends on
/// the admitted calls only, so the path then reaches the same goals unguarded in `world` — how
/// `--fix` knows, without exploring again, that a goal is still open after a policy it added.
pub fn replays_unguarded(world: &World, path: &[PathStep]) -> bool {
    let engine = world.base.fork();
    for (i, step) in path.iter().enumerate() {
        let PathStep::Call {
            mv,
            time,
            held,
            granted_by,
            admitted,
        } = step
        else {
            continue;
        };
        if granted_by.is_some() || mv.actor >= world.actors.len() || mv.tool >= world.tools.len() {
            return false;
        }
        let mut call = world.untimed_call(*mv);
        let _ = write!(call.id, "c{}", i + 1);
        let same = match engine.decide_brief(&call, *time).decision {
            Verdict::Allow => *admitted && !*held,
            Verdict::Deny => !*admitted && !*held,
            Verdict::RequireApproval => *held && !*admitted,
        };
        if !same {
            return false;
        }
    }
    true
}
