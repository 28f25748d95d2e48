//! Toxic combinations: the minimal sets of tools that let one holder — one agent identity, or
//! one delegation root (an orchestration tree) — reach a goal without a human gate.
//!
//! Reachability only grows with the tools a holder has (an adversary can ignore a tool), so the
//! minimal sets form an antichain, found by increasing size: a candidate set is checked by an
//! exhaustive exploration in which the holder may call only those tools; supersets of a set
//! already found are skipped. Candidates are drawn first from the tools that advance the goal
//! (and must cover every step); only if none suffices (a policy that allows the goal only after
//! some "enabling" call) are other tools added. A holder that cannot reach the goal with all its
//! tools has no toxic combination for it.

use crate::explore::{explore, Search, Stop};
use crate::goal::GoalKind;
use crate::world::World;
use serde::Serialize;
use std::collections::BTreeSet;

/// Who holds a combination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HolderKind {
    AgentIdentity,
    DelegationRoot,
}

/// A minimal set of tools (and the equally minimal alternatives with the same classes) that
/// reaches a goal unguarded.
#[derive(Debug, Clone, Serialize)]
pub struct ToxicCombination {
    pub goal: String,
    pub holder: HolderKind,
    /// The agent's short name (the top-level agent's, for a delegation root).
    pub holder_name: String,
    pub holder_identity: String,
    /// One label per tool: its first catalog class, or its name.
    pub classes: Vec<String>,
    /// Every minimal tool set with these labels.
    pub tool_sets: Vec<Vec<String>>,
    /// For a delegation root: which agents of the tree hold the tools (context splitting).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held_by: Vec<String>,
}

/// Class labels, the tool sets with those labels, the agents holding them.
type Group = (Vec<String>, Vec<Vec<String>>, BTreeSet<String>);

/// The most candidate sets checked per holder and goal.
const BUDGET: usize = 2048;

fn label(world: &World, tool: usize) -> String {
    let t = &world.tools[tool];
    t.classes.first().cloned().unwrap_or_else(|| t.name.clone())
}

fn campaign_rank(world: &World, tool: usize) -> u8 {
    world.tools[tool]
        .tactics
        .iter()
        .map(|t| t.campaign_rank())
        .min()
        .unwrap_or(99)
}

fn covers(world: &World, goal: usize, set: &[usize]) -> bool {
    let g = &world.goals[goal];
    match &g.kind {
        GoalKind::Sequence { steps, .. } => {
            let mask = set
                .iter()
                .fold(0u64, |m, t| m | world.effects[*t][goal].steps);
            let all = if steps.len() >= 64 {
                u64::MAX
            } else {
                (1u64 << steps.len()) - 1
            };
            mask & all == all
        }
        GoalKind::DataFlow { .. } => {
            set.iter().any(|t| world.effects[*t][goal].source)
                && set.iter().any(|t| world.effects[*t][goal].sink)
        }
    }
}

/// All k-subsets of `items`, in lexicographic order, visited until `f` returns false.
fn subsets(items: &[usize], k: usize, f: &mut impl FnMut(&[usize]) -> bool) {
    fn go(
        items: &[usize],
        k: usize,
        start: usize,
        cur: &mut Vec<usize>,
        f: &mut impl FnMut(&[usize]) -> bool,
    ) -> bool {
        if cur.len() == k {
            return f(cur);
        }
        for i in start..items.len() {
            if items.len() - i < k - cur.len() {
                break;
            }
            cur.push(items[i]);
            if !go(items, k, i + 1, cur, f) {
                return false;
            }
            cur.pop();
        }
        true
    }
    go(items, k, 0, &mut Vec::new(), f);
}

struct Holder {
    kind: HolderKind,
    name: String,
    identity: String,
    actors: Vec<usize>,
}

fn reaches(world: &World, goal: usize, actors: &[usize], tools: &[usize]) -> bool {
    let moves = world
        .moves
        .iter()
        .filter(|m| actors.contains(&m.actor) && tools.contains(&m.tool))
        .copied()
        .collect();
    let search = Search {
        moves,
        goals: vec![goal],
        stop: Stop::AllUnguarded,
        max_depth: world.manifest.settings.max_depth,
        max_states: world.manifest.settings.max_states,
        reduce: Some(crate::explore::PLAIN_BUDGET),
    };
    explore(world, &search).witnesses[0].unguarded.is_some()
}

fn minimal_sets(world: &World, goal: usize, holder: &Holder) -> Vec<Vec<usize>> {
    let mut held: Vec<usize> = holder
        .actors
        .iter()
        .flat_map(|a| world.actors[*a].tools.iter().copied())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !covers(world, goal, &held) || !reaches(world, goal, &holder.actors, &held) {
        return Vec::new();
    }
    let relevant: Vec<usize> = held
        .iter()
        .copied()
        .filter(|t| !world.effects[*t][goal].is_none())
        .collect();
    let mut found: Vec<Vec<usize>> = Vec::new();
    let mut budget = BUDGET;
    for pool in [relevant, std::mem::take(&mut held)] {
        for k in 1..=pool.len() {
            subsets(&pool, k, &mut |set| {
                if budget == 0 {
                    return false;
                }
                if found.iter().any(|f| f.iter().all(|t| set.contains(t))) {
                    return true;
                }
                if !covers(world, goal, set) {
                    return true;
                }
                budget -= 1;
                if reaches(world, goal, &holder.actors, set) {
                    found.push(set.to_vec());
                }
                true
            });
        }
        if !found.is_empty() {
            break;
        }
    }
    found
}

/// The toxic combinations of every goal in `goals` (indices of goals found unguarded).
pub fn toxic_combinations(world: &World, goals: &[usize]) -> Vec<ToxicCombination> {
    let agents = &world.manifest.agents;
    let mut holders = Vec::new();
    for (i, a) in agents.iter().enumerate() {
        let actors: Vec<usize> = (0..world.actors.len())
            .filter(|x| world.actors[*x].agent == i)
            .collect();
        if !actors.is_empty() {
            holders.push(Holder {
                kind: HolderKind::AgentIdentity,
                name: a.name.clone(),
                identity: a.identity.clone(),
                actors,
            });
        }
    }
    for (i, a) in agents.iter().enumerate() {
        let actors: Vec<usize> = (0..world.actors.len())
            .filter(|x| world.actors[*x].root == i)
            .collect();
        let distinct: BTreeSet<usize> = actors.iter().map(|x| world.actors[*x].agent).collect();
        if distinct.len() >= 2 {
            holders.push(Holder {
                kind: HolderKind::DelegationRoot,
                name: a.name.clone(),
                identity: a.identity.clone(),
                actors,
            });
        }
    }
    let mut out = Vec::new();
    for &goal in goals {
        for holder in &holders {
            let sets = minimal_sets(world, goal, holder);
            // Group sets by their class labels.
            let mut groups: Vec<Group> = Vec::new();
            for mut set in sets {
                set.sort_by_key(|t| (campaign_rank(world, *t), world.tools[*t].name.clone()));
                // For a delegation root, keep only sets no single agent of the tree holds: the
                // rest are the identity's own combinations, already reported.
                let holders_of: Vec<BTreeSet<usize>> = set
                    .iter()
                    .map(|t| {
                        holder
                            .actors
                            .iter()
                            .filter(|a| world.actors[**a].tools.contains(t))
                            .map(|a| world.actors[*a].agent)
                            .collect()
                    })
                    .collect();
                if holder.kind == HolderKind::DelegationRoot {
                    let common = holders_of
                        .iter()
                        .skip(1)
                        .fold(holders_of.first().cloned().unwrap_or_default(), |acc, s| {
                            acc.intersection(s).copied().collect()
                        });
                    if !common.is_empty() {
                        continue;
                    }
                }
                let labels: Vec<String> = set.iter().map(|t| label(world, *t)).collect();
                let names: Vec<String> = set.iter().map(|t| world.tools[*t].name.clone()).collect();
                let by: BTreeSet<String> = holders_of
                    .iter()
                    .flatten()
                    .map(|a| world.agent_name(*a).to_string())
                    .collect();
                match groups.iter_mut().find(|(l, _, _)| *l == labels) {
                    Some((_, sets, agents)) => {
                        sets.push(names);
                        agents.extend(by);
                    }
                    None => groups.push((labels, vec![names], by)),
                }
            }
            for (classes, tool_sets, by) in groups {
                out.push(ToxicCombination {
                    goal: world.goals[goal].id.clone(),
                    holder: holder.kind.clone(),
                    holder_name: holder.name.clone(),
                    holder_identity: holder.identity.clone(),
                    classes,
                    tool_sets,
                    held_by: if holder.kind == HolderKind::DelegationRoot {
                        by.into_iter().collect()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
    }
    out
}
