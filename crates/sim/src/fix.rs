//! Remediation (`truststack prove --fix`): the smallest change that makes every goal gated or
//! unreachable, then the alternatives a team might prefer, each written out and proved in the
//! same run.
//!
//! 1. **Policies first.** For every goal still unguarded when one orchestrator per human
//!    delegates to all of that human's top-level agents (context splitting), a policy in the
//!    goal's scope — `REQUIRE_HITL` on the call that would complete a tactic sequence once the
//!    earlier steps are in the trajectory, `DENY` on the write that would complete a data flow
//!    after the read (the seed's third policy). Goals are taken shortest first, and after each
//!    policy the next goal's recorded witness is replayed under the policies so far (the
//!    manifest is explored again only when it no longer replays), so a gate that covers several
//!    goals is added once. The last exploration is the fix's proof when nothing else changes the
//!    manifest under attack.
//!    Bulk tools no policy limits get `DENY ... Tool_Call('X').Count > N requests/W` at the
//!    delegation root (`settings.fix_rate_limit`).
//! 2. **The identity split** (alternative): an agent that alone holds a toxic combination is
//!    split into the fewest identities such that none holds any of its minimal toxic sets (a
//!    hypergraph colouring: tools are vertices, toxic sets are edges, no edge may be
//!    monochromatic), tools grouped in campaign order — the GTG-1002 ReconAgent / PatchAgent
//!    split — keeping the policies of step 1, since a shared orchestrator defeats a split alone.
//! 3. **A human gate instead of a deny** on data flows (alternative).
//!
//! A gate names an approver group with a member outside the chain of command of every agent it
//! can hold; when none has one, a deny is proposed and the report says so, because a gate nobody
//! may grant is a silent deny. Policies are built as syntax trees and printed with the policy
//! crate's printer, so they are exactly what the parser reads back.

use crate::analysis::{analyse_explored, goal_search, statuses, Analysis, Options, Status};
use crate::explore::{explore, replays_unguarded, Explored, Search};
use crate::goal::{GoalKind, GoalScope};
use crate::manifest::{Agent, Manifest, ManifestError, PolicyOrigin};
use crate::quant::limits_for;
use crate::taxonomy::Tactic;
use crate::toxic::HolderKind;
use crate::world::World;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use truststack_policy::ast::{CallField, CmpOp, ContextField, Expr, Literal, Pred, Test};
use truststack_policy::duration::format_duration;
use truststack_policy::{Action, Catalog, Mode, Policy, Source, Span, Target};

#[derive(Debug, thiserror::Error)]
pub enum FixError {
    #[error("{path}: cannot write: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("the fixed manifest does not load: {0}")]
    Manifest(#[from] ManifestError),
}

/// One identity of a split.
#[derive(Debug, Clone, Serialize)]
pub struct SplitPart {
    pub name: String,
    pub identity: String,
    pub tools: Vec<String>,
}

/// One proposed change.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    SplitIdentity {
        agent: String,
        identity: String,
        parts: Vec<SplitPart>,
        /// The toxic tool sets the split separates.
        separates: Vec<Vec<String>>,
    },
    AddPolicy {
        id: String,
        action: Action,
        target: Target,
        goal: String,
        text: String,
    },
    AddRateLimit {
        id: String,
        pattern: String,
        max_calls: u64,
        window_ms: i64,
        text: String,
    },
}

/// The fixed manifest proved against one orchestrator per human over all of that human's
/// top-level agents.
#[derive(Debug, Clone, Serialize)]
pub struct OrchestratorCheck {
    pub orchestrators: Vec<String>,
    pub statuses: BTreeMap<String, Status>,
    pub safe: bool,
}

/// What `--fix` proposes and the proof of it.
#[derive(Debug, Clone, Serialize)]
pub struct FixReport {
    pub changes: Vec<Change>,
    /// The policies added (`remediation.tsp`).
    pub policy_text: String,
    /// The fixed manifest.
    pub manifest_text: String,
    /// Files written (with `--out`).
    pub written: Vec<String>,
    /// Goals the fix could not make safe, and why.
    pub unresolved: Vec<String>,
    /// The analysis of the fixed manifest.
    pub proof: Box<Analysis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_orchestrator: Option<OrchestratorCheck>,
    /// The fixed manifest is safe, also under a shared orchestrator.
    pub safe: bool,
    /// Other fixes a team might prefer, each proved in the same run.
    pub alternatives: Vec<Alternative>,
}

/// Another fix, proved like the first.
#[derive(Debug, Clone, Serialize)]
pub struct Alternative {
    /// `split` or `gate`; the files written end in `.<id>.fixed.toml`.
    pub id: String,
    pub title: String,
    pub changes: Vec<Change>,
    pub unresolved: Vec<String>,
    pub policy_text: String,
    pub manifest_text: String,
    pub written: Vec<String>,
    /// Per goal, the fixed manifest's status.
    pub statuses: BTreeMap<String, Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_orchestrator: Option<OrchestratorCheck>,
    pub safe: bool,
}

impl FixReport {
    /// Not proved safe, yet nothing is reachable unguarded: a bound stopped the proof.
    pub fn unknown(&self) -> bool {
        !self.safe
            && self.proof.count(Status::Unguarded) == 0
            && self.proof.count(Status::Unknown) > 0
            && self
                .shared_orchestrator
                .as_ref()
                .is_none_or(|c| c.safe || !c.statuses.values().any(|s| *s == Status::Unguarded))
    }
}

impl Alternative {
    fn new(
        id: &str,
        title: &str,
        changes: Vec<Change>,
        unresolved: Vec<String>,
        p: Proved,
    ) -> Alternative {
        let safe = p.proof.safe && p.shared_orchestrator.as_ref().is_none_or(|c| c.safe);
        let mut unresolved = unresolved;
        unresolved.extend(p.proof.goals.iter().filter_map(|g| {
            g.unknown_reason
                .as_ref()
                .map(|why| format!("goal `{}` is unknown: {why}", g.id))
        }));
        Alternative {
            id: id.into(),
            title: title.into(),
            changes,
            unresolved,
            policy_text: p.policy_text,
            manifest_text: p.manifest_text,
            written: p.written,
            statuses: statuses(&p.proof),
            shared_orchestrator: p.shared_orchestrator,
            safe,
        }
    }
}

fn target_of(scope: GoalScope) -> Target {
    match scope {
        GoalScope::DelegationRoot => Target::DelegationRoot,
        GoalScope::User => Target::User,
        GoalScope::AgentIdentity => Target::AgentIdentity,
    }
}

fn pred(p: Pred) -> Expr {
    Expr::Pred(p, Span::default())
}

fn any(items: Vec<Expr>) -> Expr {
    if items.len() == 1 {
        items.into_iter().next().unwrap_or(Expr::Or(Vec::new()))
    } else {
        Expr::Or(items)
    }
}

fn all(items: Vec<Expr>) -> Expr {
    if items.len() == 1 {
        items.into_iter().next().unwrap_or(Expr::And(Vec::new()))
    } else {
        Expr::And(items)
    }
}

fn tactics_of(catalog: &Catalog, tool: &str) -> Vec<Tactic> {
    catalog
        .tool(tool)
        .map(|s| s.tactics.iter().filter_map(|t| Tactic::parse(t)).collect())
        .unwrap_or_default()
}

/// The fewest policy names (classes that cover only these tools, then tool names) that match
/// exactly `tools` among the catalog's tools.
fn names_for(catalog: &Catalog, tools: &BTreeSet<String>) -> Vec<String> {
    let mut classes: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, spec) in &catalog.tools {
        for c in &spec.classes {
            classes.entry(c.as_str()).or_default().insert(name.as_str());
        }
    }
    let mut left: BTreeSet<&str> = tools.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    loop {
        let best = classes
            .iter()
            .filter(|(_, members)| members.iter().all(|m| tools.contains(*m)))
            .map(|(c, members)| (members.iter().filter(|m| left.contains(*m)).count(), *c))
            .filter(|(n, _)| *n > 0)
            .max_by_key(|(n, c)| (*n, std::cmp::Reverse(*c)));
        let Some((_, class)) = best else { break };
        if let Some(members) = classes.get(class) {
            for m in members {
                left.remove(m);
            }
        }
        out.push(class.to_string());
    }
    out.extend(left.into_iter().map(String::from));
    out.sort();
    out
}

fn policy(id: String, action: Action, target: Target, condition: Expr, reason: String) -> Policy {
    Policy {
        id,
        action,
        target,
        condition,
        reason: Some(reason),
        approvers: None,
        mode: Mode::Enforce,
        deadline_ms: None,
        source: Arc::from("remediation.tsp"),
        span: Span::default(),
        text: String::new(),
    }
}

fn policy_id(prefix: &str, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{prefix}-{clean}")
}

/// The tools whose call a goal's gate holds: those that complete its last step (a sequence), or
/// its sinks (a data flow).
fn last_step_tools(m: &Manifest, goal: usize) -> BTreeSet<String> {
    let catalog = &m.catalog;
    let Some(g) = m.goals.get(goal) else {
        return BTreeSet::new();
    };
    match &g.kind {
        GoalKind::Sequence { steps, .. } => steps
            .last()
            .map(|s| {
                catalog
                    .tools
                    .keys()
                    .filter(|t| s.matches(&tactics_of(catalog, t)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default(),
        GoalKind::DataFlow {
            sink_modes,
            sink_tactics,
            ..
        } => catalog
            .tools
            .iter()
            .filter(|(name, spec)| {
                spec.mode.as_ref().is_some_and(|md| sink_modes.contains(md))
                    || tactics_of(catalog, name)
                        .iter()
                        .any(|t| sink_tactics.contains(t))
            })
            .map(|(n, _)| n.clone())
            .collect(),
    }
}

/// The principals whose goal progress the engine cannot see whole: a goal in `scope` counts the
/// calls of one agent identity (or of one delegation root) whatever chain of command it acts
/// under, while the engine keeps a principal's monitors per place in the chain of command, so an
/// identity acting under two chains (delegated to, and launched directly) may take the earlier
/// steps under one and the last under the other. Their last step is held whatever came before.
/// Only those that can make a call in `last` matter. Returns the context field to test and the
/// identities.
fn unseen_history(
    world: &World,
    scope: GoalScope,
    last: &BTreeSet<String>,
) -> Option<(ContextField, Vec<String>)> {
    let (field, target) = match scope {
        GoalScope::AgentIdentity => (ContextField::Agent, Target::AgentIdentity),
        GoalScope::DelegationRoot => (ContextField::Root, Target::DelegationRoot),
        GoalScope::User => return None,
    };
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut completes = BTreeSet::new();
    for a in &world.actors {
        let p = truststack_engine::event::Principals::of(&a.identity, Some(&a.session), &a.chain);
        let who = match field {
            ContextField::Agent => p.agent,
            _ => p.root,
        };
        keys.entry(who.to_string())
            .or_default()
            .insert(p.scope_key(target).into_owned());
        if a.tools.iter().any(|t| last.contains(&world.tools[*t].name)) {
            completes.insert(who.to_string());
        }
    }
    let ids: Vec<String> = keys
        .into_iter()
        .filter(|(id, k)| k.len() > 1 && completes.contains(id))
        .map(|(id, _)| id)
        .collect();
    (!ids.is_empty()).then_some((field, ids))
}

/// `history` (every part must hold), or else the principal is one whose history the engine
/// cannot see whole (see [`unseen_history`]).
fn or_unseen(history: Vec<Expr>, unseen: &Option<(ContextField, Vec<String>)>) -> Vec<Expr> {
    match unseen {
        None => history,
        Some((field, ids)) => vec![Expr::Or(vec![
            all(history),
            pred(Pred::Context {
                field: *field,
                test: Test::In(ids.iter().map(|i| Literal::Str(i.clone())).collect()),
            }),
        ])],
    }
}

/// The sink calls a data-flow goal with argument conditions counts, as a policy condition: a call
/// to one of its sinks, except (per tool) when an argument attribute the goal's `sink_where`
/// reads has a value that fails its condition. The values exempted are those of the argument
/// variants the manifest declares (an upload to an internal host; with an `ip_range` attribute,
/// its class), compared exactly: any other value, and a call without the attribute, is still a
/// sink — fail closed. `None` when no tool is a sink.
fn sink_calls(
    m: &Manifest,
    world: &World,
    goal: usize,
    sink_where: &[crate::goal::ArgCondition],
) -> Option<Expr> {
    let catalog = &m.catalog;
    let mut plain = BTreeSet::new();
    let mut narrowed = Vec::new();
    for name in last_step_tools(m, goal) {
        let spec = catalog.tool(&name);
        let variants = world
            .tools
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.variants.as_slice())
            .unwrap_or_default();
        let mut exempt = Vec::new();
        for c in sink_where {
            // A wildcard pointer reads many values: the condition is on all of them together.
            if spec
                .and_then(|s| s.attributes.get(&c.attribute))
                .is_some_and(|a| a.from.contains('*'))
            {
                continue;
            }
            let mut values: Vec<Literal> = Vec::new();
            for args in variants {
                if c.holds(catalog, &name, args) {
                    continue;
                }
                let literal = match catalog.attribute(spec, &c.attribute, args) {
                    Some(serde_json::Value::String(v)) if !v.contains(['\'', '\\']) => {
                        Literal::Str(v)
                    }
                    Some(serde_json::Value::Number(n)) => match n.as_f64() {
                        Some(x) => Literal::Num(x),
                        None => continue,
                    },
                    _ => continue,
                };
                if !values.contains(&literal) {
                    values.push(literal);
                }
            }
            if !values.is_empty() {
                exempt.push(pred(Pred::Field {
                    pattern: name.clone(),
                    field: CallField::Attr(c.attribute.clone()),
                    test: Test::In(values),
                }));
            }
        }
        if exempt.is_empty() {
            plain.insert(name);
        } else {
            narrowed.push(all(vec![
                pred(Pred::Call {
                    pattern: name.clone(),
                }),
                Expr::Not(Box::new(any(exempt))),
            ]));
        }
    }
    let mut calls: Vec<Expr> = names_for(catalog, &plain)
        .into_iter()
        .map(|n| pred(Pred::Call { pattern: n }))
        .collect();
    calls.extend(narrowed);
    (!calls.is_empty()).then(|| any(calls))
}

/// How a goal's policy stops it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stopper {
    /// `REQUIRE_HITL`, answered by this approver group (`None`: any approver).
    Gate(Option<String>),
    /// `DENY`.
    Deny,
}

/// The policy for one goal, or `None` when no catalog tool can complete it: on the call that
/// completes a sequence once its earlier steps are in the trajectory, or on a sink call after
/// the source was read (the seed's third policy).
fn gate_for(m: &Manifest, world: &World, goal: usize, stopper: &Stopper) -> Option<Policy> {
    let g = m.goals.get(goal)?;
    let unseen = unseen_history(world, g.scope, &last_step_tools(m, goal));
    let catalog = &m.catalog;
    let target = target_of(g.scope);
    let (action, approvers) = match stopper {
        Stopper::Gate(group) => (Action::RequireHitl, group.clone()),
        Stopper::Deny => (Action::Deny, None),
    };
    let last = names_for(catalog, &last_step_tools(m, goal));
    if last.is_empty() {
        return None;
    }
    let last_call = any(last
        .iter()
        .map(|n| pred(Pred::Call { pattern: n.clone() }))
        .collect());
    let mut p = match &g.kind {
        GoalKind::Sequence { steps, .. } => {
            let earlier: Vec<Vec<String>> = steps
                .iter()
                .take(steps.len().saturating_sub(1))
                .map(|s| {
                    let tools: BTreeSet<String> = catalog
                        .tools
                        .keys()
                        .filter(|t| s.matches(&tactics_of(catalog, t)))
                        .cloned()
                        .collect();
                    names_for(catalog, &tools)
                })
                .collect();
            if earlier.iter().any(Vec::is_empty) {
                return None;
            }
            let mut history = Vec::new();
            for names in earlier {
                history.push(any(names
                    .iter()
                    .map(|n| {
                        pred(Pred::Contains {
                            pattern: n.clone(),
                            window_ms: None,
                        })
                    })
                    .collect()));
            }
            let mut parts = vec![last_call];
            parts.extend(or_unseen(history, &unseen));
            let labels: Vec<&str> = steps.iter().map(|s| s.label.as_str()).collect();
            policy(
                policy_id(
                    if action == Action::Deny {
                        "stop"
                    } else {
                        "gate"
                    },
                    &g.id,
                ),
                action,
                target,
                all(parts),
                format!(
                    "{}: {} in one {} {} before the last step",
                    g.title,
                    labels.join(" → "),
                    match g.scope {
                        GoalScope::DelegationRoot => "orchestration",
                        GoalScope::User => "user's agents",
                        GoalScope::AgentIdentity => "identity",
                    },
                    if action == Action::Deny {
                        "is stopped"
                    } else {
                        "needs a human"
                    }
                ),
            )
        }
        GoalKind::DataFlow {
            source,
            read_mode,
            sink_where,
            ..
        } => {
            let last_call = if sink_where.is_empty() {
                last_call
            } else {
                sink_calls(m, world, goal, sink_where)?
            };
            let mut parts = or_unseen(
                vec![pred(Pred::DataSource {
                    source: source.clone(),
                    mode: Some(read_mode.clone()),
                    window_ms: None,
                })],
                &unseen,
            );
            parts.push(last_call);
            let cond = all(parts);
            policy(
                policy_id(
                    if action == Action::Deny {
                        "no-flow"
                    } else {
                        "gate-flow"
                    },
                    &g.id,
                ),
                action,
                target,
                cond,
                if action == Action::Deny {
                    format!(
                        "{}: {source} may not be written out after it was read",
                        g.title
                    )
                } else {
                    format!(
                        "{}: writing out after {source} was read needs a human",
                        g.title
                    )
                },
            )
        }
    };
    if action == Action::RequireHitl {
        p.approvers = approvers;
        p.deadline_ms = Some(15 * 60 * 1000);
    }
    Some(p)
}

/// Who may answer a gate on `holds` in `world` (the manifest under attack): the first approver
/// group — `preferred` first — with, for every actor holding one of those tools, a human member
/// outside that actor's chain of command. With no `[approvers]` table the default approver
/// answers. `Err` says why nobody could: then the gate would be a silent deny.
fn gate_approvers(
    world: &World,
    holds: &BTreeSet<String>,
    preferred: &[String],
) -> Result<Option<String>, String> {
    let held: Vec<&crate::world::Actor> = world
        .actors
        .iter()
        .filter(|a| {
            a.tools
                .iter()
                .any(|t| holds.contains(&world.tools[*t].name))
        })
        .collect();
    let eligible = |members: &[String]| {
        held.iter().all(|a| {
            members.iter().any(|m| {
                truststack_engine::identity::UserId::parse(m).is_ok()
                    && *m != a.identity
                    && !a.chain.contains(m)
            })
        })
    };
    let groups = &world.manifest.approvers;
    if groups.is_empty() {
        return if eligible(&[crate::world::DEFAULT_APPROVER.to_string()]) {
            Ok(None)
        } else {
            Err(format!(
                "the default approver {} is in the chain of command of an agent the gate holds",
                crate::world::DEFAULT_APPROVER
            ))
        };
    }
    let order = preferred
        .iter()
        .filter(|g| groups.contains_key(*g))
        .chain(groups.keys().filter(|g| !preferred.contains(g)));
    for g in order {
        if groups.get(g).is_some_and(|m| eligible(m)) {
            return Ok(Some(g.clone()));
        }
    }
    let who: Vec<String> = held
        .iter()
        .map(|a| format!("{} (chain {})", a.label, a.chain.join(" → ")))
        .collect();
    Err(format!(
        "no approver group has a member outside the chain of command of every agent the gate \
         would hold ({}; groups: {})",
        who.join(", "),
        groups
            .iter()
            .map(|(g, m)| format!("`{g}` = {}", m.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    ))
}

/// One orchestrator per human over all of that human's top-level agents (when a human has
/// more than one): the context-splitting attack on a split.
pub fn shared_orchestrator(m: &Manifest) -> Option<(Manifest, Vec<String>)> {
    let delegated: BTreeSet<&str> = m
        .agents
        .iter()
        .flat_map(|a| a.delegates_to.iter().map(String::as_str))
        .collect();
    let mut by_human: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in &m.agents {
        if a.launched_by.is_some() || !delegated.contains(a.name.as_str()) {
            let human = a
                .launched_by
                .clone()
                .unwrap_or_else(|| m.settings.operator.clone());
            by_human.entry(human).or_default().push(a.name.clone());
        }
    }
    let mut out = m.clone();
    let mut added = Vec::new();
    for (human, tops) in by_human {
        if tops.len() < 2 {
            continue;
        }
        let mut name = "shared-orchestrator".to_string();
        let mut k = 1;
        while out.agent(&name).is_some() {
            k += 1;
            name = format!("shared-orchestrator-{k}");
        }
        out.agents.push(Agent {
            identity: format!("spiffe://{}/agent/{name}", m.settings.trust_domain),
            name: name.clone(),
            description: Some("added by the proving ground: one orchestrator over every top-level agent of one human".into()),
            tools: Vec::new(),
            delegates_to: tops,
            launched_by: Some(human),
        });
        added.push(name);
    }
    (!added.is_empty()).then_some((out, added))
}

fn rank(catalog: &Catalog, tool: &str) -> (u8, String) {
    let r = tactics_of(catalog, tool)
        .iter()
        .map(|t| t.campaign_rank())
        .min()
        .unwrap_or(99);
    (r, tool.to_string())
}

/// The fewest parts of `tools` such that no edge lies inside one part; tools in campaign order,
/// each in the first part that can take it.
pub fn partition(tools: &[String], edges: &[BTreeSet<String>]) -> Vec<Vec<String>> {
    fn fits(
        i: usize,
        part: usize,
        tools: &[String],
        assign: &[usize],
        edges: &[BTreeSet<String>],
    ) -> bool {
        let me = &tools[i];
        edges.iter().filter(|e| e.contains(me)).all(|e| {
            !e.iter().filter(|t| *t != me).all(|t| {
                tools
                    .iter()
                    .position(|x| x == t)
                    .is_some_and(|j| assign[j] == part)
            })
        })
    }
    fn go(
        i: usize,
        k: usize,
        used: usize,
        tools: &[String],
        assign: &mut Vec<usize>,
        edges: &[BTreeSet<String>],
    ) -> bool {
        if i == tools.len() {
            return true;
        }
        for p in 0..k.min(used + 1) {
            if fits(i, p, tools, assign, edges) {
                assign[i] = p;
                if go(i + 1, k, used.max(p + 1), tools, assign, edges) {
                    return true;
                }
                assign[i] = usize::MAX;
            }
        }
        false
    }
    let edges: Vec<BTreeSet<String>> = edges
        .iter()
        .filter(|e| e.len() >= 2 && e.iter().all(|t| tools.contains(t)))
        .cloned()
        .collect();
    for k in 1..=tools.len().max(1) {
        let mut assign = vec![usize::MAX; tools.len()];
        if go(0, k, 0, tools, &mut assign, &edges) {
            let mut parts = vec![Vec::new(); k];
            for (t, p) in tools.iter().zip(&assign) {
                if let Some(part) = parts.get_mut(*p) {
                    part.push(t.clone());
                }
            }
            parts.retain(|p| !p.is_empty());
            return parts;
        }
    }
    vec![tools.to_vec()]
}

/// The goals still open in a manifest: reachable unguarded (with the shortest witness), or
/// unknown because the exploration hit a bound (and which).
struct Open {
    unguarded: Vec<usize>,
    unknown: Vec<usize>,
    bound: Option<crate::explore::BoundKind>,
    witnesses: Vec<Option<Vec<crate::explore::PathStep>>>,
}

impl Open {
    fn of(explored: &Explored) -> Open {
        let mut open = Open {
            unguarded: Vec::new(),
            unknown: Vec::new(),
            bound: explored.bound_kind,
            witnesses: explored
                .witnesses
                .iter()
                .map(|w| w.unguarded.clone())
                .collect(),
        };
        for (g, w) in explored.witnesses.iter().enumerate() {
            if w.unguarded.is_some() {
                open.unguarded.push(g);
            } else if w.gated.is_none() && !explored.settled[g] && !explored.early {
                open.unknown.push(g);
            }
        }
        open
    }
}

/// How `--fix` explores a manifest: as `prove` does (which goals are open is all that matters,
/// so it stops once every one is), with the reductions from the start when `reduced` — when the
/// plain search of the manifest under attack already stopped at its bound, that of a fixed
/// manifest (more states: gates branch, goals it closes stay alive to the fixpoint) would too.
fn fix_search(world: &World, reduced: bool) -> Search {
    let mut search = goal_search(world);
    if reduced {
        search.reduce = Some(0);
    }
    search
}

fn with_policies(m: &Manifest, policies: &[Policy], file: &str) -> Manifest {
    let mut m = m.clone();
    if !policies.is_empty() {
        let text: String = policies.iter().map(|p| format!("{p}\n")).collect();
        m.sources.push(Source::new(format!("{file}.tsp"), text));
        m.policy_origins.push(PolicyOrigin::Inline(file.into()));
    }
    m
}

/// The policies one fix adds, the changes they are, and what they leave open.
#[derive(Default)]
struct Plan {
    changes: Vec<Change>,
    added: Vec<Policy>,
    unresolved: Vec<String>,
}

/// Adds, goal by goal (shortest first), the policy that stops each goal still unguarded when one
/// orchestrator per human delegates to all of that human's top-level agents. Sequences get a
/// gate; data flows a deny. A gate names an approver group with a member outside the chain of
/// command of every agent it can hold; when no group has one, a deny is proposed instead and the
/// plan says so: such a gate would be a silent deny, never a gate.
///
/// After each policy the next goal is the shortest still unguarded. Its recorded witness,
/// replayed through the engine under the policies added so far, shows that it still is without
/// exploring again; only when a witness no longer replays is the manifest explored again (the
/// goal may still be open another way). `first` is the exploration of `base` itself when it is
/// the manifest under attack (no shared orchestrator). Returns the plan and the last
/// exploration: that of the manifest under attack with every policy of the plan.
fn plan_policies(
    base: &Manifest,
    preferred: &[String],
    first: Option<Arc<Explored>>,
    reduced: bool,
) -> Result<(Plan, Arc<Explored>), ManifestError> {
    let mut plan = Plan::default();
    let mut done = BTreeSet::new();
    let attacked = shared_orchestrator(base).map_or_else(|| base.clone(), |(m, _)| m);
    let mut first = first;
    for _ in 0..base.goals.len() + 1 {
        let world = World::build(with_policies(&attacked, &plan.added, "remediation"))?;
        let explored = match first.take() {
            Some(e) => e,
            None => Arc::new(explore(&world, &fix_search(&world, reduced))),
        };
        let open = Open::of(&explored);
        let mut candidates: Vec<usize> = open
            .unguarded
            .iter()
            .copied()
            .filter(|g| !done.contains(g))
            .collect();
        candidates.sort_by_key(|g| (base.goals[*g].target(), *g));
        if candidates.is_empty() {
            for g in &open.unguarded {
                plan.unresolved.push(format!(
                    "goal `{}` is still reachable unguarded after its policy",
                    base.goals[*g].id
                ));
            }
            for g in &open.unknown {
                plan.unresolved.push(format!(
                    "goal `{}` is unknown: the exploration of the fixed manifest stopped at a \
                     bound before its fixpoint; {}",
                    base.goals[*g].id,
                    open.bound
                        .map_or_else(|| "raise settings.max_depth".to_string(), |b| b.advice())
                ));
            }
            return Ok((plan, explored));
        }
        for (k, goal) in candidates.into_iter().enumerate() {
            if k > 0 {
                let now = World::build(with_policies(&attacked, &plan.added, "remediation"))?;
                let still = open.witnesses[goal]
                    .as_ref()
                    .is_some_and(|path| replays_unguarded(&now, path));
                if !still {
                    break;
                }
            }
            done.insert(goal);
            add_policy(base, &world, goal, preferred, &mut plan);
        }
    }
    // Every round added a policy for a goal of its own: the last one's exploration is to come.
    let world = World::build(with_policies(&attacked, &plan.added, "remediation"))?;
    let explored = Arc::new(explore(&world, &fix_search(&world, reduced)));
    let open = Open::of(&explored);
    for g in &open.unguarded {
        plan.unresolved.push(format!(
            "goal `{}` is still reachable unguarded after its policy",
            base.goals[*g].id
        ));
    }
    Ok((plan, explored))
}

/// Adds to `plan` the policy that stops `goal` (see [`plan_policies`]).
fn add_policy(base: &Manifest, world: &World, goal: usize, preferred: &[String], plan: &mut Plan) {
    let g = &base.goals[goal];
    let flow = matches!(g.kind, GoalKind::DataFlow { .. });
    let stopper = if flow {
        Stopper::Deny
    } else {
        match gate_approvers(world, &last_step_tools(base, goal), preferred) {
            Ok(group) => Stopper::Gate(group),
            Err(why) => {
                plan.unresolved.push(format!(
                    "goal `{}`: {why}; a gate nobody may grant is a deny, so a DENY is \
                     proposed — add an approver outside that chain of command to gate it",
                    g.id
                ));
                Stopper::Deny
            }
        }
    };
    match gate_for(base, world, goal, &stopper) {
        Some(p) => {
            plan.changes.push(Change::AddPolicy {
                id: p.id.clone(),
                action: p.action,
                target: p.target,
                goal: g.id.clone(),
                text: p.to_string(),
            });
            plan.added.push(p);
        }
        None => plan.unresolved.push(format!(
            "goal `{}`: no catalog tool completes it, so no policy can be written",
            g.id
        )),
    }
}

/// Splits every agent that alone holds a toxic combination (step 1 of the module docs).
fn split_identities(
    original: &Manifest,
    analysis: &Analysis,
) -> (Manifest, Vec<Change>, Vec<String>) {
    let catalog = &original.catalog;
    let mut fixed = original.clone();
    let mut changes = Vec::new();
    let mut unresolved = Vec::new();
    let mut edges_by_agent: BTreeMap<String, Vec<BTreeSet<String>>> = BTreeMap::new();
    for t in analysis
        .toxic
        .iter()
        .filter(|t| t.holder == HolderKind::AgentIdentity)
    {
        for set in &t.tool_sets {
            edges_by_agent
                .entry(t.holder_name.clone())
                .or_default()
                .push(set.iter().cloned().collect());
        }
    }
    for (agent_name, edges) in &edges_by_agent {
        let Some(agent) = original.agent(agent_name).cloned() else {
            continue;
        };
        let mut tools = agent.tools.clone();
        tools.sort_by_key(|t| rank(catalog, t));
        let parts = partition(&tools, edges);
        if parts.len() < 2 {
            for e in edges.iter().filter(|e| e.len() == 1) {
                unresolved.push(format!(
                    "agent `{agent_name}`: tool {} alone reaches a goal; splitting cannot help",
                    e.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            continue;
        }
        let mut split_parts: Vec<SplitPart> = Vec::new();
        for p in &parts {
            let short = p
                .iter()
                .flat_map(|t| tactics_of(catalog, t))
                .min_by_key(|t| t.campaign_rank())
                .map_or("tools", |t| t.short());
            let mut name = format!("{agent_name}-{short}");
            let mut k = 1;
            while split_parts.iter().any(|s| s.name == name)
                || (fixed.agent(&name).is_some() && name != *agent_name)
            {
                k += 1;
                name = format!("{agent_name}-{short}-{k}");
            }
            split_parts.push(SplitPart {
                identity: format!("{}-{}", agent.identity, &name[agent_name.len() + 1..]),
                name,
                tools: p.clone(),
            });
        }
        let names: Vec<String> = split_parts.iter().map(|p| p.name.clone()).collect();
        fixed.agents.retain(|a| a.name != *agent_name);
        for a in &mut fixed.agents {
            if a.delegates_to.iter().any(|d| d == agent_name) {
                a.delegates_to.retain(|d| d != agent_name);
                a.delegates_to.extend(names.iter().cloned());
            }
        }
        for p in &split_parts {
            fixed.agents.push(Agent {
                name: p.name.clone(),
                identity: p.identity.clone(),
                description: Some(format!(
                    "split from `{agent_name}` by truststack prove --fix"
                )),
                tools: p.tools.clone(),
                delegates_to: agent.delegates_to.clone(),
                launched_by: agent.launched_by.clone(),
            });
        }
        fixed.agents.sort_by(|a, b| a.name.cmp(&b.name));
        let mut separates: Vec<Vec<String>> =
            edges.iter().map(|e| e.iter().cloned().collect()).collect();
        separates.sort();
        separates.dedup();
        changes.push(Change::SplitIdentity {
            agent: agent_name.clone(),
            identity: agent.identity.clone(),
            parts: split_parts,
            separates,
        });
    }
    (fixed, changes, unresolved)
}

/// Rate limits for bulk tools no policy limits (step 3 of the module docs).
fn rate_limits(world: &World) -> Vec<Policy> {
    let (n, w) = world.manifest.settings.fix_rate_limit;
    let mut limited = BTreeSet::new();
    let mut out = Vec::new();
    for (t, tool) in world.tools.iter().enumerate() {
        if tool.volume <= 1 {
            continue;
        }
        let args = tool.variants.first().cloned().unwrap_or_default();
        if !limits_for(world, t, &args).0.is_empty() {
            continue;
        }
        let pattern = tool
            .classes
            .first()
            .cloned()
            .unwrap_or_else(|| tool.name.clone());
        if !limited.insert(pattern.clone()) {
            continue;
        }
        out.push(policy(
            policy_id("rate", &pattern),
            Action::Deny,
            Target::DelegationRoot,
            pred(Pred::Count {
                pattern: pattern.clone(),
                op: CmpOp::Gt,
                n,
                window_ms: w,
            }),
            format!(
                "{pattern} in bulk: at most {n} calls per {} per orchestration",
                format_duration(w)
            ),
        ));
    }
    out
}

fn rate_change(p: &Policy) -> Option<Change> {
    match &p.condition {
        Expr::Pred(
            Pred::Count {
                pattern,
                n,
                window_ms,
                ..
            },
            _,
        ) => Some(Change::AddRateLimit {
            id: p.id.clone(),
            pattern: pattern.clone(),
            max_calls: *n,
            window_ms: *window_ms,
            text: p.to_string(),
        }),
        _ => None,
    }
}

/// One fix, assembled: the manifest text, the files written, and its proof.
struct Proved {
    policy_text: String,
    manifest_text: String,
    written: Vec<String>,
    proof: Analysis,
    shared_orchestrator: Option<OrchestratorCheck>,
}

/// An exploration already made of one of the manifests a fix is proved on.
enum Reuse {
    None,
    /// Of the fixed manifest itself.
    Proof(Arc<Explored>),
    /// Of the fixed manifest under a shared orchestrator.
    Shared(Arc<Explored>),
}

/// Writes (under `out`, with file names ending in `suffix`) and proves one fix: the fixed
/// manifest is loaded back from disk when written, and proved again under a shared
/// orchestrator. `reduced`: see [`fix_search`].
#[allow(clippy::too_many_arguments)]
fn assemble(
    original: &Manifest,
    mut fixed: Manifest,
    added: &[Policy],
    out: Option<&Path>,
    suffix: &str,
    full: bool,
    reduced: bool,
    reuse: Reuse,
) -> Result<Proved, FixError> {
    let policy_text: String = if added.is_empty() {
        String::new()
    } else {
        let mut t = String::from(
            "# Added by `truststack prove --fix`: gates between tactics and rate limits.\n\n",
        );
        for p in added {
            t.push_str(&format!("{p}\n"));
        }
        t
    };
    fixed.name = format!("{} (fixed)", original.name);
    let stem = original
        .path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("manifest")
        .to_string();
    let file = format!("remediation{suffix}");
    let mut written = Vec::new();
    let write = |path: &Path, text: &str| -> Result<(), FixError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|cause| FixError::Io {
                path: dir.to_path_buf(),
                cause,
            })?;
        }
        std::fs::write(path, text).map_err(|cause| FixError::Io {
            path: path.to_path_buf(),
            cause,
        })
    };
    let (fixed, manifest_text) = match out {
        Some(dir) => {
            if !policy_text.is_empty() {
                let p = dir.join("policies").join(format!("{file}.tsp"));
                write(&p, &policy_text)?;
                fixed
                    .sources
                    .push(Source::new(p.display().to_string(), policy_text.clone()));
                fixed.policy_origins.push(PolicyOrigin::File(p.clone()));
                written.push(p.display().to_string());
            }
            let path = dir.join(format!("{stem}{suffix}.fixed.toml"));
            let text = fixed.to_toml(dir);
            write(&path, &text)?;
            written.push(path.display().to_string());
            (Manifest::load(&path)?, text)
        }
        None => {
            let mut m = with_policies(&fixed, added, &file);
            m.path = original
                .path
                .with_file_name(format!("{stem}{suffix}.fixed.toml"));
            let base = original.path.parent().unwrap_or(Path::new("."));
            let text = m.to_toml(base);
            (m, text)
        }
    };
    let orchestrator = shared_orchestrator(&fixed);
    let prove = |world: &World, toxic: bool, done: Option<Arc<Explored>>| {
        let started = std::time::Instant::now();
        let explored =
            done.unwrap_or_else(|| Arc::new(explore(world, &fix_search(world, reduced))));
        analyse_explored(
            world,
            &Options {
                toxic,
                ..Options::default()
            },
            explored,
            started,
        )
    };
    let (reuse_proof, reuse_shared) = match reuse {
        Reuse::None => (None, None),
        Reuse::Proof(e) => (Some(e), None),
        Reuse::Shared(e) => (None, Some(e)),
    };
    let fixed_world = World::build(fixed)?;
    let proof = prove(&fixed_world, full, reuse_proof);
    let shared_orchestrator = match orchestrator {
        Some((m, names)) => {
            let w = World::build(m)?;
            let a = prove(&w, false, reuse_shared);
            Some(OrchestratorCheck {
                orchestrators: names,
                statuses: statuses(&a),
                safe: a.safe,
            })
        }
        None => None,
    };
    Ok(Proved {
        policy_text,
        manifest_text,
        written,
        proof,
        shared_orchestrator,
    })
}

/// Proposes, writes (when `out` is given) and proves the fix for an analysed manifest: the
/// smallest change first (policies only), then the alternatives a team might prefer (the
/// identity split; a human gate instead of a deny on data flows), each proved in the same run.
pub fn remediate(
    world: &World,
    analysis: &Analysis,
    out: Option<&Path>,
) -> Result<FixReport, FixError> {
    let original = &world.manifest;
    let bundle = world.base.bundle();
    // Approver groups the manifest's own gates use come first.
    let mut preferred: Vec<String> = Vec::new();
    for g in bundle
        .policies
        .iter()
        .filter_map(|p| p.policy.approvers.clone())
    {
        if !preferred.contains(&g) {
            preferred.push(g);
        }
    }
    let limits = rate_limits(world);
    let finish = |mut plan: Plan| {
        plan.changes.extend(limits.iter().filter_map(rate_change));
        plan.added.extend(limits.iter().cloned());
        plan
    };

    // The smallest change: policies on the manifest as it is. The first round is the manifest's
    // own exploration when no shared orchestrator attacks it; the fixed manifests go straight to
    // the reduced search when the manifest's own plain search stopped at its bound.
    let own = analysis.explored.clone();
    let reduced = own.as_ref().is_some_and(|e| e.reduced);
    let attacked_by_shared = shared_orchestrator(original).is_some();
    let (plan, last) = plan_policies(
        original,
        &preferred,
        own.filter(|_| !attacked_by_shared),
        reduced,
    )?;
    let primary = finish(plan);
    // Without rate limits, the plan's last exploration is that of the fix (or of the fix under
    // a shared orchestrator): the same policies on the same agents.
    let reuse = match (limits.is_empty(), attacked_by_shared) {
        (false, _) => Reuse::None,
        (true, false) => Reuse::Proof(last),
        (true, true) => Reuse::Shared(last),
    };

    // The alternatives reuse the fix's policies rather than search again: each is still proved.
    // The identity split (least privilege), with the fix's policies: splitting alone is
    // defeated by a shared orchestrator.
    let (split, mut split_changes, split_unresolved) = split_identities(original, analysis);
    let has_split = !split_changes.is_empty();
    split_changes.extend(primary.changes.iter().cloned());
    // Data flows gated by a human rather than denied.
    let attacked = shared_orchestrator(original).map_or_else(|| original.clone(), |(m, _)| m);
    let attacked = World::build(with_policies(&attacked, &primary.added, "remediation"))?;
    let mut gated = primary.added.clone();
    let mut changes = primary.changes.clone();
    let mut unresolved = Vec::new();
    let mut any_gate = false;
    for (slot, change) in changes.iter_mut().enumerate() {
        let Change::AddPolicy {
            action: Action::Deny,
            goal,
            ..
        } = change
        else {
            continue;
        };
        let Some(g) = original
            .goals
            .iter()
            .position(|x| &x.id == goal && matches!(x.kind, GoalKind::DataFlow { .. }))
        else {
            continue;
        };
        let group = match gate_approvers(&attacked, &last_step_tools(original, g), &preferred) {
            Ok(group) => group,
            Err(why) => {
                unresolved.push(format!("goal `{goal}`: {why}; it stays denied"));
                continue;
            }
        };
        let (Some(p), Some(old)) = (
            gate_for(original, &attacked, g, &Stopper::Gate(group)),
            gated.get_mut(slot),
        ) else {
            continue;
        };
        *change = Change::AddPolicy {
            id: p.id.clone(),
            action: p.action,
            target: p.target,
            goal: goal.clone(),
            text: p.to_string(),
        };
        *old = p;
        any_gate = true;
    }

    // The fix and its alternatives are proved side by side: independent explorations, each
    // deterministic, so the reports do not depend on the threads.
    let (proved, split_proved, gate_proved) = std::thread::scope(|scope| {
        let split_job = has_split.then(|| {
            scope.spawn(|| {
                assemble(
                    original,
                    split,
                    &primary.added,
                    out,
                    ".split",
                    false,
                    reduced,
                    Reuse::None,
                )
            })
        });
        let gate_job = any_gate.then(|| {
            scope.spawn(|| {
                assemble(
                    original,
                    original.clone(),
                    &gated,
                    out,
                    ".gate",
                    false,
                    reduced,
                    Reuse::None,
                )
            })
        });
        let proved = assemble(
            original,
            original.clone(),
            &primary.added,
            out,
            "",
            true,
            reduced,
            reuse,
        );
        let join = |job: std::thread::ScopedJoinHandle<'_, Result<Proved, FixError>>| {
            job.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        };
        (proved, split_job.map(join), gate_job.map(join))
    });
    let proved = proved?;
    let safe = proved.proof.safe && proved.shared_orchestrator.as_ref().is_none_or(|c| c.safe);
    let mut alternatives = Vec::new();
    if let Some(p) = split_proved {
        alternatives.push(Alternative::new(
            "split",
            "split the identities that hold a toxic combination (least privilege), keeping the \
             fix's policies against a shared orchestrator",
            split_changes,
            split_unresolved,
            p?,
        ));
    }
    if let Some(p) = gate_proved {
        let p = p?;
        alternatives.push(Alternative::new(
            "gate",
            "a human approves writing out data after it was read, instead of a deny",
            changes,
            unresolved,
            p,
        ));
    }

    let mut unresolved = primary.unresolved;
    for g in &proved.proof.goals {
        if let Some(why) = &g.unknown_reason {
            let line = format!("goal `{}` is unknown in the fixed manifest: {why}", g.id);
            if !unresolved
                .iter()
                .any(|u| u.starts_with(&format!("goal `{}` is unknown", g.id)))
            {
                unresolved.push(line);
            }
        }
    }
    Ok(FixReport {
        changes: primary.changes,
        policy_text: proved.policy_text,
        manifest_text: proved.manifest_text,
        written: proved.written,
        unresolved,
        proof: Box::new(proved.proof),
        shared_orchestrator: proved.shared_orchestrator,
        safe,
        alternatives,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan as it was made before witnesses were replayed: explore after every policy, take
    /// the shortest goal still unguarded.
    fn plan_by_exploring(base: &Manifest) -> Vec<String> {
        let mut plan = Plan::default();
        let mut done = BTreeSet::new();
        let attacked = shared_orchestrator(base).map_or_else(|| base.clone(), |(m, _)| m);
        for _ in 0..base.goals.len() + 1 {
            let world = World::build(with_policies(&attacked, &plan.added, "remediation")).unwrap();
            let open = Open::of(&explore(&world, &fix_search(&world, false)));
            let Some(&goal) = open
                .unguarded
                .iter()
                .filter(|g| !done.contains(*g))
                .min_by_key(|g| (base.goals[**g].target(), **g))
            else {
                break;
            };
            done.insert(goal);
            add_policy(base, &world, goal, &[], &mut plan);
        }
        plan.added.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn replayed_witnesses_plan_the_same_policies_as_exploring_after_each() {
        for seed in 1..=4 {
            for per_identity in [false, true] {
                let text = crate::synth::generate(&crate::synth::Shape {
                    tools: 10,
                    agents: 3 + (seed as usize % 2),
                    seed,
                    windows: seed % 3 == 0,
                    max_depth: Some(8),
                    per_identity,
                });
                let m = Manifest::parse(Path::new("synthetic.toml"), &text).unwrap();
                let world = World::build(m.clone()).unwrap();
                let explored = explore(&world, &fix_search(&world, false));
                // Every unguarded witness replays in its own manifest.
                for w in &explored.witnesses {
                    if let Some(p) = &w.unguarded {
                        assert!(replays_unguarded(&world, p), "seed {seed}");
                    }
                }
                let first = shared_orchestrator(&m)
                    .is_none()
                    .then(|| Arc::new(explored));
                let (plan, _) = plan_policies(&m, &[], first, false).unwrap();
                let replayed: Vec<String> = plan.added.iter().map(|p| p.to_string()).collect();
                assert_eq!(replayed, plan_by_exploring(&m), "seed {seed}\n{text}");
                // The fix's proof reuses the plan's last search: the same verdicts as proving
                // the written manifest afresh.
                if seed <= 2 {
                    let analysis = crate::analyse(&world, &Options::default());
                    let dir = tempfile::tempdir().unwrap();
                    let fix = remediate(&world, &analysis, Some(dir.path())).unwrap();
                    let again = crate::prove(
                        &dir.path().join("synthetic.fixed.toml"),
                        &crate::ProveOptions {
                            runs: Some(0),
                            ..Default::default()
                        },
                    )
                    .unwrap();
                    assert_eq!(statuses(&fix.proof), statuses(&again), "seed {seed}");
                }
            }
        }
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn partitions_separate_every_edge_with_the_fewest_parts() {
        let tools: Vec<String> = ["scan", "probe", "code", "exploit", "db", "up"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let edges = vec![
            set(&["scan", "code", "exploit"]),
            set(&["probe", "code", "exploit"]),
            set(&["db", "up"]),
        ];
        let parts = partition(&tools, &edges);
        assert_eq!(parts.len(), 2);
        for e in &edges {
            assert!(parts.iter().all(|p| !e.iter().all(|t| p.contains(t))));
        }
        assert_eq!(parts[0], vec!["scan", "probe", "code", "db"]);
        // A triangle of pairs needs three parts.
        let tri = vec![set(&["a", "b"]), set(&["b", "c"]), set(&["a", "c"])];
        let abc: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(partition(&abc, &tri).len(), 3);
    }

    #[test]
    fn class_names_cover_whole_classes_only() {
        let catalog = Catalog::from_toml(
            "c",
            r#"
            [tools.a]
            classes = ["Scan"]
            [tools.b]
            classes = ["Scan"]
            [tools.c]
            classes = ["Scan", "Other"]
            "#,
        )
        .unwrap();
        assert_eq!(names_for(&catalog, &set(&["a", "b", "c"])), vec!["Scan"]);
        assert_eq!(names_for(&catalog, &set(&["a", "c"])), vec!["Other", "a"]);
    }
}
