//! Which goal progress can still change a verdict, read from the moves of a search and from the
//! policies: a progress value is *dead* when no sequence of the search's moves can take it to
//! its goal, counting as impossible the calls an enforced policy certainly stops.
//!
//! A call is certainly stopped when the policy's condition is true by partial evaluation over
//! what is known of it (its tool, argument variant and chain of command) and over what the
//! goal's progress says of its scope's history:
//!
//! - a data flow past its source read: that scope has read the source, so
//!   `DataSource('D') [== 'read']` without `WITHIN` holds (a taint without a window never ends);
//! - a sequence past step `j`: a call matching step `j` was admitted, so when every move that
//!   matches step `j` matches `X`, `Trajectory_Contains('X')` without `WITHIN` holds.
//!
//! These facts are about the goal's scope (a delegation root, a human, an identity); the engine
//! keeps a policy's monitors per scope of its `TARGET`, keyed by the place in the chain of
//! command. A fact is used for a policy only when every actor sharing the goal's progress slot
//! has one and the same scope of that policy's target: then the call that made the progress
//! was recorded where the policy looks. Partial evaluation is monotone (a condition true under
//! fewer facts stays true under more), and the facts only grow with progress.
//!
//! Two liveness modes: through any path (a `DENY` stops a call, a `REQUIRE_HITL` may be granted)
//! and through paths without a grant (both stop it: a held call is refused, or granted and the
//! path is gated). A state behind no grant, on a goal that already has a (shortest) gated
//! witness, only matters for an unguarded one, so the second mode applies to it.

use crate::goal::GoalKind;
use crate::world::{Move, World};
use std::collections::HashMap;
use truststack_policy::ast::Pred;
use truststack_policy::partial::{eval, Known, Truth};
use truststack_policy::principals::Principals;
use truststack_policy::{Action, Mode, Target};

/// What the moves of one search can still do to each goal, per progress slot.
pub(crate) struct Liveness {
    /// Per progress slot: its goal.
    goal: Vec<usize>,
    /// Per progress slot, per progress value below its goal's target: whether the slot can still
    /// reach the target through any path (`[0]`), through paths without a grant (`[1]`).
    can: Vec<[Vec<bool>; 2]>,
    /// Per goal: it drops out of state comparison (untracked, or reached unguarded).
    pub settled: Vec<bool>,
    /// Per goal: it drops out of the comparison of states behind a grant (untracked, or
    /// reached at all): such states can only add gated witnesses, and its shortest is found.
    pub witnessed: Vec<bool>,
}

/// A fact about a scope's history that a goal's progress guarantees.
enum Fact<'a> {
    /// `DataSource(source)` read in `mode`, without a window.
    Read { source: &'a str, mode: &'a str },
    /// `Trajectory_Contains(pattern)`, without a window.
    Contains(&'a str),
}

/// What the scope's history holds once one of `moves` was admitted in it (which one is not
/// known): every pattern (a tool name or class) all of them match, the data source all of them
/// read. Nothing when `moves` is empty.
fn common_facts<'w>(world: &'w World, moves: &[Move]) -> Vec<Fact<'w>> {
    let Some(first) = moves.first() else {
        return Vec::new();
    };
    let catalog = &world.manifest.catalog;
    let tool = &world.tools[first.tool];
    let mut facts: Vec<Fact> = std::iter::once(&tool.name)
        .chain(&tool.classes)
        .filter(|pattern| {
            moves.iter().all(|m| {
                let t = &world.tools[m.tool];
                t.name == **pattern || t.classes.contains(pattern)
            })
        })
        .map(|pattern| Fact::Contains(pattern))
        .collect();
    let read = |m: &Move| {
        catalog
            .tool(&world.tools[m.tool].name)
            .and_then(|s| s.data_source.as_ref())
    };
    if let Some(d) = read(first) {
        if moves
            .iter()
            .all(|m| read(m).is_some_and(|x| x.name == d.name && x.mode == d.mode))
        {
            facts.push(Fact::Read {
                source: &d.name,
                mode: &d.mode,
            });
        }
    }
    facts
}

impl Fact<'_> {
    fn implies(&self, pred: &Pred) -> bool {
        match (self, pred) {
            (
                Fact::Read { source, mode },
                Pred::DataSource {
                    source: s,
                    mode: m,
                    window_ms: None,
                },
            ) => s == source && m.as_deref().is_none_or(|m| m == *mode),
            (
                Fact::Contains(pattern),
                Pred::Contains {
                    pattern: p,
                    window_ms: None,
                },
            ) => p == pattern,
            _ => false,
        }
    }
}

impl Liveness {
    pub fn new(world: &World, moves: &[Move], goals: &[usize]) -> Liveness {
        let mut goal = vec![usize::MAX; world.progress_len];
        // Per slot: the actors whose calls advance it.
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); world.progress_len];
        for g in 0..world.goals.len() {
            for a in 0..world.actors.len() {
                let i = world.slot(g, a);
                if let Some(x) = goal.get_mut(i) {
                    *x = g;
                }
                if let Some(m) = members.get_mut(i) {
                    m.push(a);
                }
            }
        }
        let stops = Stops::new(world, moves);
        let can: Vec<[Vec<bool>; 2]> = (0..world.progress_len)
            .map(|i| {
                let Some(&g) = goal.get(i).filter(|g| **g < world.goals.len()) else {
                    return [Vec::new(), Vec::new()];
                };
                let slot_moves: Vec<Move> = moves
                    .iter()
                    .filter(|m| world.slot(g, m.actor) == i)
                    .copied()
                    .collect();
                let uniform = |target: Target| {
                    let mut keys = members[i].iter().map(|a| stops.scope(*a, target));
                    let first = keys.next();
                    keys.all(|k| Some(k) == first)
                };
                [false, true]
                    .map(|unguarded| stops.can_complete(world, g, &slot_moves, &uniform, unguarded))
            })
            .collect();
        let settled: Vec<bool> = (0..world.goals.len())
            .map(|g| !goals.contains(&g))
            .collect();
        Liveness {
            goal,
            can,
            witnessed: settled.clone(),
            settled,
        }
    }

    /// Whether slot `i` at `progress` can still complete its goal (`unguarded`: without a grant).
    fn alive(&self, i: usize, progress: u8, unguarded: bool) -> bool {
        self.can
            .get(i)
            .and_then(|c| c[usize::from(unguarded)].get(usize::from(progress)))
            .copied()
            .unwrap_or(false)
    }

    /// Whether slot `i` at `progress` can still change a verdict in a state behind a grant
    /// (`gated`) or not: `None` when its goal dropped out of the comparison.
    fn matters(&self, i: usize, progress: u8, gated: bool) -> Option<bool> {
        let g = self.goal.get(i).copied().unwrap_or(usize::MAX);
        let witnessed = self.witnessed.get(g).copied().unwrap_or(true);
        if self.settled.get(g).copied().unwrap_or(true) || (gated && witnessed) {
            return None;
        }
        // Behind no grant, a goal with a gated witness can only gain an unguarded one.
        Some(self.alive(i, progress, !gated && witnessed))
    }

    /// Whether goal `g` can still gain a witness from a state with `progress`: an unguarded
    /// one, or any when it has none yet.
    pub fn open_in(&self, g: usize, progress: &[u8], gated: bool) -> bool {
        progress
            .iter()
            .enumerate()
            .any(|(i, p)| self.goal.get(i) == Some(&g) && self.matters(i, *p, gated) == Some(true))
    }

    /// Rewrites the kept states' keys after goals dropped out of the comparison or gained a
    /// witness, so that a state met again is still recognised. The progress vector ends every
    /// key; `true` marks a state kept behind no grant.
    pub fn rekey(&self, visited: &mut HashMap<Vec<u8>, bool>) {
        let len = self.goal.len();
        for (mut k, ungated) in std::mem::take(visited) {
            let base = k.len().saturating_sub(len);
            for (i, b) in k.iter_mut().skip(base).enumerate() {
                *b = self.byte(i, *b, !ungated);
            }
            let entry = visited.entry(k).or_insert(ungated);
            *entry |= ungated;
        }
    }

    /// One slot's byte in a key: its progress, `0xFE` when dead, `0xFF` when its goal dropped
    /// out. Dead stays dead (`0xFE` is past every target).
    fn byte(&self, i: usize, progress: u8, gated: bool) -> u8 {
        match self.matters(i, progress, gated) {
            None => 0xFF,
            Some(false) => 0xFE,
            Some(true) => progress,
        }
    }

    /// The progress vector as states are compared on it (`gated`: of a state behind a grant).
    pub fn key(&self, progress: &[u8], gated: bool, out: &mut Vec<u8>) {
        out.extend(
            progress
                .iter()
                .enumerate()
                .map(|(i, p)| self.byte(i, *p, gated)),
        );
    }
}

/// The enforced policies, read for the calls they certainly stop.
struct Stops<'w> {
    world: &'w World,
    /// Per actor and target (in `Target::ALL` order): the engine's scope key.
    scopes: Vec<[String; 4]>,
    /// Per move: it is stopped whatever the history, `[through any path, without a grant]`,
    /// memoised for the common case of no facts.
    cache: HashMap<Move, [bool; 2]>,
}

impl<'w> Stops<'w> {
    fn new(world: &'w World, moves: &[Move]) -> Stops<'w> {
        let scopes = world
            .actors
            .iter()
            .map(|a| {
                let p = Principals::of(&a.identity, Some(&a.session), &a.chain);
                Target::ALL.map(|t| p.scope_key(t).into_owned())
            })
            .collect();
        let mut stops = Stops {
            world,
            scopes,
            cache: HashMap::new(),
        };
        for &m in moves {
            let both = [false, true].map(|u| stops.stopped(m, &[], &|_| false, u));
            stops.cache.insert(m, both);
        }
        stops
    }

    fn scope(&self, actor: usize, target: Target) -> Option<&str> {
        let t = Target::ALL.iter().position(|x| *x == target)?;
        self.scopes.get(actor).map(|s| s[t].as_str())
    }

    /// Whether an enforced `DENY` (or, `unguarded`, a `REQUIRE_HITL`) certainly stops `m` when
    /// `facts` hold in the scopes of the targets `uniform` accepts.
    fn stopped(
        &self,
        m: Move,
        facts: &[Fact],
        uniform: &dyn Fn(Target) -> bool,
        unguarded: bool,
    ) -> bool {
        if facts.is_empty() {
            if let Some(c) = self.cache.get(&m) {
                return c[usize::from(unguarded)];
            }
        }
        let world = self.world;
        let bundle = world.base.bundle();
        let call = world.untimed_call(m);
        let known = Known {
            tool: &call.tool,
            catalog: &bundle.catalog,
            args: Some(&call.args),
            subject: Some(Principals::of(
                &call.agent,
                call.session.as_deref(),
                &call.chain,
            )),
        };
        bundle.policies.iter().any(|cp| {
            let p = &cp.policy;
            let stops = match p.action {
                Action::Deny => true,
                Action::RequireHitl => unguarded,
                Action::Allow => false,
            };
            if !stops || p.mode != Mode::Enforce {
                return false;
            }
            let usable = !facts.is_empty() && uniform(p.target);
            let assume = |pred: &Pred| {
                (usable && facts.iter().any(|f| f.implies(pred))).then_some(Truth::True)
            };
            eval(&p.condition, &known, &assume) == Truth::True
        })
    }

    /// Per progress value below goal `g`'s target: whether `moves` (those acting in one slot)
    /// can take it to the target.
    fn can_complete(
        &self,
        world: &World,
        g: usize,
        moves: &[Move],
        uniform: &dyn Fn(Target) -> bool,
        unguarded: bool,
    ) -> Vec<bool> {
        let goal = &world.goals[g];
        let effect = |m: &Move| world.variant_effects[m.tool][m.variant][g];
        match &goal.kind {
            GoalKind::Sequence { steps, .. } => {
                // Step k is matched at progress k, when every earlier step has been.
                let mut facts: Vec<Fact> = Vec::new();
                let mut possible = Vec::with_capacity(steps.len());
                for k in 0..steps.len() {
                    let matching: Vec<Move> = moves
                        .iter()
                        .filter(|m| effect(m).steps & (1u64 << k) != 0)
                        .copied()
                        .collect();
                    possible.push(
                        matching
                            .iter()
                            .any(|m| !self.stopped(*m, &facts, uniform, unguarded)),
                    );
                    facts.extend(common_facts(world, &matching));
                }
                (0..steps.len())
                    .map(|p| possible[p..].iter().all(|x| *x))
                    .collect()
            }
            GoalKind::DataFlow {
                source, read_mode, ..
            } => {
                let sources: Vec<Move> =
                    moves.iter().filter(|m| effect(m).source).copied().collect();
                let mut read = common_facts(world, &sources);
                read.push(Fact::Read {
                    source,
                    mode: read_mode,
                });
                let free = |m: &Move, facts: &[Fact]| !self.stopped(*m, facts, uniform, unguarded);
                let source_ok = moves.iter().any(|m| effect(m).source && free(m, &[]));
                let sink_ok = moves.iter().any(|m| effect(m).sink && free(m, &read));
                // A call that reads and writes out at once, before any read.
                let both_ok = moves
                    .iter()
                    .any(|m| effect(m).source && effect(m).sink && free(m, &[]));
                vec![(source_ok && sink_ok) || both_ok, sink_ok]
            }
        }
    }
}
