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
//!   drops out of the comparison, and a progress value from which the moves acting in its scope
//!   cannot complete the goal is the same *dead* value. The liveness reads the policies (see
//!   the `liveness` module): a call an enforced `DENY` certainly stops — by what is known of the
//!   call and by what the progress says of the scope's history, such as a source read that
//!   taints it — completes nothing; behind no grant, once a goal has a gated witness, a call a
//!   `REQUIRE_HITL` certainly holds completes nothing either.
//! - **A goal nobody can still complete is settled.** A goal not reached is unreachable, not
//!   unknown, when every state left to expand is dead on it: no longer trajectory can reach it
//!   either. When every goal is settled so (or reached unguarded, or reached through a gate and
//!   dead behind no grant), the search stops there (*decided*), before its fixpoint or bound;
//!   at the depth bound, the goals dead in every state left are settled.
//! - **Monitors keep only the windows that read them** (see [`crate::abstraction`]): a
//!   `Trajectory_Contains('X')` monitor no predicate reads through `WITHIN` keeps presence only,
//!   even when another monitor is read through a window.
//! - **Interchangeable tools are explored once** (see [`World::representatives`]): two tools of
//!   one actor with the same catalog entry but the name, named by no policy, with the same
//!   argument variants and workload, are decided alike in every state and do the same to every goal.

use crate::liveness::Liveness;
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
    /// The reduced search stopped before its fixpoint and bounds because no state left to
    /// expand could give any goal a witness it lacks: every goal not reached unguarded is
    /// settled.
    pub decided: bool,
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
    let mut live = Liveness::new(world, &search.moves, &search.goals);
    // A goal just settled or witnessed: the states already kept are compared anew.
    let mut rekey = false;
    let key = |f: &Frontier, remaining: usize, live: &Liveness| {
        let mut k = Vec::with_capacity(64);
        abstraction.key(&f.engine.snapshot(), f.now, remaining, step_ms, &mut k);
        crate::abstraction::Abstraction::lease_key(&f.leases, f.now, &mut k);
        if reduce {
            live.key(&f.progress, f.gated, &mut k);
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
    // Per tracked goal: whether a witness it lacks can still come from the states left to
    // expand (an unguarded one, or any when it has none).
    let open = |frontier: &[Frontier], live: &Liveness, witnesses: &[Witnesses]| -> Vec<bool> {
        search
            .goals
            .iter()
            .zip(witnesses)
            .map(|(&g, w)| {
                w.unguarded.is_none()
                    && frontier
                        .iter()
                        .any(|f| live.open_in(g, &f.progress, f.gated))
            })
            .collect()
    };
    let mut decided = false;
    while !frontier.is_empty() && !done {
        if reduce && !open(&frontier, &live, &witnesses).contains(&true) {
            decided = true;
            break;
        }
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
    let exhaustive = bound.is_none() && !done && !decided;
    // At the depth bound, a goal is settled when no state left to expand can reach it.
    let depth_bound = matches!(bound_kind, Some(BoundKind::Depth(_)));
    let still = open(&frontier, &live, &witnesses);
    let settled = still
        .iter()
        .map(|open| exhaustive || decided || (reduce && depth_bound && !open))
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
        decided,
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
