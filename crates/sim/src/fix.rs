//! Remediation (`truststack prove --fix`): the smallest changes that make every goal gated or
//! unreachable, written out and proved in the same run.
//!
//! 1. **Split identities.** An agent that alone holds a toxic combination is split into the
//!    fewest identities such that none holds any of its minimal toxic sets (a hypergraph
//!    colouring: tools are vertices, toxic sets are edges, no edge may be monochromatic), tools
//!    grouped in campaign order — the GTG-1002 ReconAgent / PatchAgent split.
//! 2. **Gate between tactics at the delegation root.** Splitting alone is defeated by a shared
//!    orchestrator that delegates to every part (context splitting), so the fix is proved against
//!    that orchestrator too: for every goal still unguarded when one orchestrator per human
//!    delegates to all of that human's top-level agents, a policy is added in the goal's scope —
//!    `REQUIRE_HITL` on the call that would complete a tactic sequence once the earlier steps are
//!    in the trajectory, `DENY` on the write that would complete a data flow after the read (the
//!    seed's third policy). Goals are taken shortest first and the exploration is re-run after
//!    each policy, so a gate that covers several goals is added once.
//! 3. **Rate limits.** Every tool the workload calls in bulk and no policy limits gets
//!    `DENY ... Tool_Call('X').Count > N requests/W` at the delegation root (`settings.fix_rate_limit`).
//!
//! Policies are built as syntax trees and printed with the policy crate's printer, so they are
//! exactly what the parser reads back.

use crate::analysis::{analyse, statuses, Analysis, Options, Status};
use crate::explore::{explore, Search, Stop};
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
use truststack_policy::ast::{CmpOp, Expr, Pred};
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

/// The gate for one goal, or `None` when no catalog tool can complete it.
fn gate_for(m: &Manifest, goal: usize, approvers: Option<&str>) -> Option<Policy> {
    let g = m.goals.get(goal)?;
    let catalog = &m.catalog;
    let target = target_of(g.scope);
    match &g.kind {
        GoalKind::Sequence { steps, .. } => {
            let step_names: Vec<Vec<String>> = steps
                .iter()
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
            let (last, earlier) = step_names.split_last()?;
            if last.is_empty() || earlier.iter().any(Vec::is_empty) {
                return None;
            }
            let mut parts = vec![any(last
                .iter()
                .map(|n| pred(Pred::Call { pattern: n.clone() }))
                .collect())];
            for names in earlier {
                parts.push(any(names
                    .iter()
                    .map(|n| {
                        pred(Pred::Contains {
                            pattern: n.clone(),
                            window_ms: None,
                        })
                    })
                    .collect()));
            }
            let labels: Vec<&str> = steps.iter().map(|s| s.label.as_str()).collect();
            let mut p = policy(
                policy_id("gate", &g.id),
                Action::RequireHitl,
                target,
                all(parts),
                format!(
                    "{}: {} in one {} needs a human before the last step",
                    g.title,
                    labels.join(" → "),
                    match g.scope {
                        GoalScope::DelegationRoot => "orchestration",
                        GoalScope::User => "user's agents",
                        GoalScope::AgentIdentity => "identity",
                    }
                ),
            );
            p.approvers = approvers.map(String::from);
            p.deadline_ms = Some(15 * 60 * 1000);
            Some(p)
        }
        GoalKind::DataFlow {
            source,
            read_mode,
            sink_modes,
            sink_tactics,
        } => {
            let sinks: BTreeSet<String> = catalog
                .tools
                .iter()
                .filter(|(name, spec)| {
                    spec.mode.as_ref().is_some_and(|md| sink_modes.contains(md))
                        || tactics_of(catalog, name)
                            .iter()
                            .any(|t| sink_tactics.contains(t))
                })
                .map(|(n, _)| n.clone())
                .collect();
            if sinks.is_empty() {
                return None;
            }
            let cond = all(vec![
                pred(Pred::DataSource {
                    source: source.clone(),
                    mode: Some(read_mode.clone()),
                    window_ms: None,
                }),
                any(names_for(catalog, &sinks)
                    .into_iter()
                    .map(|n| pred(Pred::Call { pattern: n }))
                    .collect()),
            ]);
            Some(policy(
                policy_id("no-flow", &g.id),
                Action::Deny,
                target,
                cond,
                format!(
                    "{}: {source} may not be written out after it was read",
                    g.title
                ),
            ))
        }
    }
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

fn unguarded_goals(m: &Manifest) -> Result<Vec<usize>, ManifestError> {
    let world = World::build(m.clone())?;
    let mut search = Search::full(&world);
    search.stop = Stop::Never;
    let explored = explore(&world, &search);
    Ok((0..world.goals.len())
        .filter(|g| {
            let w = &explored.witnesses[*g];
            w.unguarded.is_some() || (w.gated.is_none() && !explored.exhaustive)
        })
        .collect())
}

/// Proposes, writes (when `out` is given) and proves the fix for an analysed manifest.
pub fn remediate(
    world: &World,
    analysis: &Analysis,
    out: Option<&Path>,
) -> Result<FixReport, FixError> {
    let original = &world.manifest;
    let catalog = &original.catalog;
    let mut fixed = original.clone();
    let mut changes = Vec::new();
    let mut unresolved = Vec::new();

    // 1. Split identities holding toxic combinations.
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

    // 2. Gates, proved against a shared orchestrator over the split identities.
    let bundle = world.base.bundle();
    let group = bundle
        .policies
        .iter()
        .filter_map(|p| p.policy.approvers.clone())
        .find(|g| original.approvers.contains_key(g))
        .or_else(|| original.approvers.keys().next().cloned());
    let mut added: Vec<Policy> = Vec::new();
    let mut gated_goals = BTreeSet::new();
    let with_policies = |m: &Manifest, policies: &[Policy]| {
        let mut m = m.clone();
        if !policies.is_empty() {
            let text: String = policies.iter().map(|p| format!("{p}\n")).collect();
            m.sources.push(Source::new("remediation.tsp", text));
            m.policy_origins
                .push(PolicyOrigin::Inline("remediation".into()));
        }
        m
    };
    for _ in 0..fixed.goals.len() + 1 {
        let attacked = shared_orchestrator(&fixed).map_or_else(|| fixed.clone(), |(m, _)| m);
        let open = unguarded_goals(&with_policies(&attacked, &added))?;
        let Some(&goal) = open
            .iter()
            .filter(|g| !gated_goals.contains(*g))
            .min_by_key(|g| (fixed.goals[**g].target(), **g))
        else {
            for g in open {
                unresolved.push(format!(
                    "goal `{}` is still reachable unguarded after its gate",
                    fixed.goals[g].id
                ));
            }
            break;
        };
        gated_goals.insert(goal);
        match gate_for(&fixed, goal, group.as_deref()) {
            Some(p) => {
                changes.push(Change::AddPolicy {
                    id: p.id.clone(),
                    action: p.action,
                    target: p.target,
                    goal: fixed.goals[goal].id.clone(),
                    text: p.to_string(),
                });
                added.push(p);
            }
            None => unresolved.push(format!(
                "goal `{}`: no catalog tool completes it, so no gate can be written",
                fixed.goals[goal].id
            )),
        }
    }

    // 3. Rate limits for bulk tools no policy limits.
    let (n, w) = original.settings.fix_rate_limit;
    let mut limited = BTreeSet::new();
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
        let p = policy(
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
        );
        changes.push(Change::AddRateLimit {
            id: p.id.clone(),
            pattern,
            max_calls: n,
            window_ms: w,
            text: p.to_string(),
        });
        added.push(p);
    }

    // Assemble, write, prove.
    let policy_text: String = if added.is_empty() {
        String::new()
    } else {
        let mut t = String::from(
            "# Added by `truststack prove --fix`: gates between tactics and rate limits.\n\n",
        );
        for p in &added {
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
                let p = dir.join("policies").join("remediation.tsp");
                write(&p, &policy_text)?;
                fixed
                    .sources
                    .push(Source::new(p.display().to_string(), policy_text.clone()));
                fixed.policy_origins.push(PolicyOrigin::File(p.clone()));
                written.push(p.display().to_string());
            }
            let path = dir.join(format!("{stem}.fixed.toml"));
            std::fs::create_dir_all(dir).map_err(|cause| FixError::Io {
                path: dir.to_path_buf(),
                cause,
            })?;
            let text = fixed.to_toml(dir);
            write(&path, &text)?;
            written.push(path.display().to_string());
            (Manifest::load(&path)?, text)
        }
        None => {
            let mut m = with_policies(&fixed, &added);
            m.path = original.path.with_file_name(format!("{stem}.fixed.toml"));
            let base = original.path.parent().unwrap_or(Path::new("."));
            let text = m.to_toml(base);
            (m, text)
        }
    };
    let orchestrator = shared_orchestrator(&fixed);
    let fixed_world = World::build(fixed)?;
    let proof = analyse(&fixed_world, &Options::default());
    let shared_orchestrator = match orchestrator {
        Some((m, names)) => {
            let w = World::build(m)?;
            let a = analyse(
                &w,
                &Options {
                    toxic: false,
                    ..Options::default()
                },
            );
            Some(OrchestratorCheck {
                orchestrators: names,
                statuses: statuses(&a),
                safe: a.safe,
            })
        }
        None => None,
    };
    let safe = proof.safe && shared_orchestrator.as_ref().is_none_or(|c| c.safe);
    Ok(FixReport {
        changes,
        policy_text,
        manifest_text,
        written,
        unresolved,
        proof: Box::new(proof),
        shared_orchestrator,
        safe,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
