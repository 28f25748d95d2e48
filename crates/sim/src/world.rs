//! A manifest compiled for simulation: the policy bundle and a fresh engine to fork, the actors
//! (every agent reachable through every permitted delegation chain), the tools with their
//! tactics and argument variants, and the goal automata.

use crate::abstraction::Abstraction;
use crate::goal::{Effect, Goal};
use crate::manifest::{Manifest, ManifestError};
use crate::taxonomy::Tactic;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use truststack_engine::{ApprovalAnswer, ApprovalOutcome, Engine, Settings, ToolCall};
use truststack_policy::load::{load_sources, LoadError};
use truststack_policy::{Action as PolicyAction, Catalog, Target};

/// Per tool, the first tool interchangeable with it (see [`World::representatives`]).
fn twins(bundle: &truststack_policy::Bundle, catalog: &Catalog, tools: &[ToolEntry]) -> Vec<usize> {
    use truststack_policy::ast::{ContextField, Expr, Pred, ValueTest};
    fn walk(e: &Expr, f: &mut impl FnMut(&Pred)) {
        match e {
            Expr::And(items) | Expr::Or(items) => items.iter().for_each(|i| walk(i, f)),
            Expr::Not(inner) => walk(inner, f),
            Expr::Pred(p, _) => f(p),
        }
    }
    let mut named: BTreeSet<String> = BTreeSet::new();
    let mut tool_tested = false;
    for cp in &bundle.policies {
        walk(&cp.policy.condition, &mut |p| match p {
            Pred::Call { pattern }
            | Pred::Count { pattern, .. }
            | Pred::Distinct { pattern, .. }
            | Pred::Field { pattern, .. }
            | Pred::Contains { pattern, .. } => {
                named.insert(pattern.clone());
            }
            Pred::Sequence { steps, .. } => named.extend(steps.iter().cloned()),
            Pred::Value {
                test: ValueTest::InResults(names),
                ..
            } => named.extend(names.iter().cloned()),
            Pred::Context {
                field: ContextField::Tool,
                ..
            } => tool_tested = true,
            _ => {}
        });
    }
    let signature = |t: &ToolEntry| {
        (
            catalog
                .tool(&t.name)
                .and_then(|s| serde_json::to_string(s).ok()),
            t.known,
            // Time-to-goal reads a trajectory's workloads: twins must not differ there either.
            t.volume,
            t.tactics.clone(),
            serde_json::to_string(&t.variants).ok(),
        )
    };
    let signatures: Vec<_> = tools.iter().map(signature).collect();
    (0..tools.len())
        .map(|i| {
            if tool_tested || named.contains(&tools[i].name) {
                return i;
            }
            (0..i)
                .find(|&j| !named.contains(&tools[j].name) && signatures[j] == signatures[i])
                .unwrap_or(i)
        })
        .collect()
}

/// The approver assumed when the manifest lists none: any human outside the call's chain.
pub const DEFAULT_APPROVER: &str = "user:approver@truststack.sim";

/// A tool some agent holds.
#[derive(Debug, Clone)]
pub struct ToolEntry {
    pub name: String,
    pub classes: Vec<String>,
    pub tactics: Vec<Tactic>,
    /// Whether the catalog lists it.
    pub known: bool,
    /// The argument variants the adversary tries (at least one; `{}` by default).
    pub variants: Vec<Value>,
    /// How many calls a real campaign makes of it (the manifest's `workload`, else 1).
    pub volume: u64,
}

/// An agent as it can act: its identity and the delegation chain it was reached through.
#[derive(Debug, Clone)]
pub struct Actor {
    /// Index into the manifest's agents.
    pub agent: usize,
    pub identity: String,
    /// Root first: the human, then every delegating agent.
    pub chain: Vec<String>,
    /// Index of the top-level agent (the delegation root).
    pub root: usize,
    pub user: String,
    pub session: String,
    /// Indices into the world's tools.
    pub tools: Vec<usize>,
    /// `orchestrator → recon`, for reports.
    pub label: String,
    /// Per goal scope (root, user, agent): the slot of this actor's progress.
    pub(crate) slots: [usize; 3],
}

/// One thing the adversary can do: an actor calls a tool with an argument variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Move {
    pub actor: usize,
    pub tool: usize,
    pub variant: usize,
}

/// An approver's lease, tracked beside the engine (which does not expose its leases).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub policy: String,
    pub target: Target,
    pub scope: String,
    pub until: i64,
}

/// A compiled manifest.
pub struct World {
    pub manifest: Manifest,
    /// A fresh engine over the manifest's bundle; every simulation forks it.
    pub base: Engine,
    pub tools: Vec<ToolEntry>,
    pub actors: Vec<Actor>,
    pub goals: Vec<Goal>,
    /// `effects[tool][goal]`: what a call to the tool may do, with any of its variants.
    pub effects: Vec<Vec<Effect>>,
    /// `variant_effects[tool][variant][goal]`: what a call with that variant does.
    pub variant_effects: Vec<Vec<Vec<Effect>>>,
    /// Per tool: the first tool interchangeable with it (itself when none is).
    pub(crate) twin_of: Vec<usize>,
    /// Per goal: where its slots start in a progress vector.
    pub(crate) offsets: Vec<usize>,
    pub progress_len: usize,
    /// Humans who may answer held calls, in the order they are tried.
    pub approvers: Vec<String>,
    pub abstraction: Abstraction,
    /// Every move, in a fixed order.
    pub moves: Vec<Move>,
    pub warnings: Vec<String>,
    /// Per goal: why "not reached" would prove nothing about it, because the manifest is wrong
    /// (a goal no catalog tool can complete, agents cut off by `max_delegation_depth`). Such a
    /// goal, unless reached unguarded, is reported unknown.
    pub unprovable: Vec<Option<String>>,
}

impl World {
    /// Compiles a manifest: its policies against its catalog, its delegation graph into actors.
    pub fn build(manifest: Manifest) -> Result<World, ManifestError> {
        let file = manifest.path.display().to_string();
        let loaded = load_sources(
            manifest.sources.clone(),
            manifest.catalog.clone(),
            &manifest.catalog_text,
        )
        .map_err(|e| match e {
            LoadError::Invalid { rendered, errors } => ManifestError::Policies {
                file: file.clone(),
                rendered,
                errors,
            },
            other => ManifestError::Invalid {
                file: file.clone(),
                message: other.to_string(),
            },
        })?;
        let mut warnings = manifest.warnings.clone();
        let rendered = loaded.render_warnings();
        if !rendered.is_empty() {
            warnings.push(format!("policy warnings:\n{rendered}"));
        }
        let mut bundle = loaded.bundle;
        // A manifest says nothing of what users will ask or tools return: provenance and
        // earlier results are unknown, and each policy reading them is taken at the attacker's
        // best (see `Bundle::provenance_unknown`).
        bundle.provenance_unknown = true;
        let abstraction = Abstraction::new(&bundle);
        if bundle.uses_target(Target::Session) {
            warnings.push(
                "policies with TARGET: session are evaluated with one session per agent per \
                 orchestration; an agent that opens a fresh session for every call evades them"
                    .into(),
            );
        }
        let s = &manifest.settings;
        let settings = Settings {
            default_decision: s.default_decision,
            unknown_tools: s.unknown_tools,
            approver_groups: manifest.approvers.clone(),
            ..Settings::replay()
        };

        // Tools.
        let names: BTreeSet<&str> = manifest
            .agents
            .iter()
            .flat_map(|a| a.tools.iter().map(String::as_str))
            .collect();
        let mut tools = Vec::new();
        for name in names {
            let spec = manifest.catalog.tool(name);
            let mut tactics = Vec::new();
            for t in spec.map(|s| s.tactics.as_slice()).unwrap_or(&[]) {
                match Tactic::parse(t) {
                    Some(t) => tactics.push(t),
                    None => warnings.push(format!(
                        "catalog: tool `{name}`: `{t}` is not a tactic of the taxonomy{}; it is \
                         ignored",
                        Tactic::suggest(t)
                            .map(|h| format!(" (did you mean `{h}`?)"))
                            .unwrap_or_default()
                    )),
                }
            }
            tactics.sort();
            tactics.dedup();
            let classes = spec.map(|s| s.classes.clone()).unwrap_or_default();
            let volume = manifest
                .workload
                .get(name)
                .or_else(|| classes.iter().find_map(|c| manifest.workload.get(c)))
                .copied()
                .unwrap_or(1);
            tools.push(ToolEntry {
                name: name.to_string(),
                classes,
                tactics,
                known: spec.is_some(),
                variants: manifest
                    .arguments
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| vec![Value::Object(Default::default())]),
                volume,
            });
        }
        let twin_of = twins(&bundle, &manifest.catalog, &tools);
        let tool_index: BTreeMap<&str, usize> = tools
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();

        // Actors: every simple delegation path from every top-level agent.
        let agents = &manifest.agents;
        let index: BTreeMap<&str, usize> = agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.name.as_str(), i))
            .collect();
        let delegated: BTreeSet<&str> = agents
            .iter()
            .flat_map(|a| a.delegates_to.iter().map(String::as_str))
            .collect();
        let mut actors = Vec::new();
        let mut reached = BTreeSet::new();
        // Agents some chain delegates to below the depth bound: their calls are not explored.
        let mut cut_off: BTreeSet<usize> = BTreeSet::new();
        const MAX_ACTORS: usize = 256;
        for (r, root) in agents.iter().enumerate() {
            let top = root.launched_by.is_some() || !delegated.contains(root.name.as_str());
            if !top {
                continue;
            }
            let user = root
                .launched_by
                .clone()
                .unwrap_or_else(|| s.operator.clone());
            // (agent, path of agent indices above it)
            let mut stack: Vec<(usize, Vec<usize>)> = vec![(r, Vec::new())];
            while let Some((a, above)) = stack.pop() {
                if actors.len() >= MAX_ACTORS {
                    return Err(ManifestError::Invalid {
                        file,
                        message: format!(
                            "the delegation graph yields more than {MAX_ACTORS} delegation chains; \
                             lower settings.max_delegation_depth"
                        ),
                    });
                }
                reached.insert(a);
                let agent = &agents[a];
                let mut chain = vec![user.clone()];
                chain.extend(above.iter().map(|i| agents[*i].identity.clone()));
                let mut label: Vec<&str> = above.iter().map(|i| agents[*i].name.as_str()).collect();
                label.push(&agent.name);
                actors.push(Actor {
                    agent: a,
                    identity: agent.identity.clone(),
                    chain,
                    root: r,
                    user: user.clone(),
                    session: format!("s-{}-{}", root.name, agent.name),
                    tools: agent
                        .tools
                        .iter()
                        .filter_map(|t| tool_index.get(t.as_str()).copied())
                        .collect(),
                    label: label.join(" → "),
                    slots: [0; 3],
                });
                let mut path = above.clone();
                path.push(a);
                for d in agent.delegates_to.iter().rev() {
                    if let Some(&di) = index.get(d.as_str()) {
                        if di != r && !path.contains(&di) {
                            if above.len() < s.max_delegation_depth {
                                stack.push((di, path.clone()));
                            } else {
                                cut_off.insert(di);
                            }
                        }
                    }
                }
            }
        }
        for (i, a) in agents.iter().enumerate() {
            if !reached.contains(&i) {
                warnings.push(format!(
                    "agent `{}` is never reached from a top-level agent within {} delegation(s)",
                    a.name, s.max_delegation_depth
                ));
            }
        }
        // An agent delegated to beyond the bound can still act in a real deployment (the bound
        // is the proving ground's, not the identity system's): goals not reached unguarded are
        // unknown, not safe.
        let cut_off: Vec<&str> = cut_off.iter().map(|i| agents[*i].name.as_str()).collect();
        let depth_reason = (!cut_off.is_empty()).then(|| {
            format!(
                "delegations to {} go deeper than settings.max_delegation_depth = {} and were not \
                 explored; raise settings.max_delegation_depth",
                cut_off
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                s.max_delegation_depth
            )
        });

        // Goal slots per scope kind.
        let mut slot_maps: [BTreeMap<String, usize>; 3] = Default::default();
        for actor in &mut actors {
            let keys = [
                agents[actor.root].name.clone(),
                actor.user.clone(),
                actor.identity.clone(),
            ];
            for (k, key) in keys.into_iter().enumerate() {
                let next = slot_maps[k].len();
                actor.slots[k] = *slot_maps[k].entry(key).or_insert(next);
            }
        }
        let goals = manifest.goals.clone();
        let mut offsets = Vec::new();
        let mut progress_len = 0;
        for g in &goals {
            offsets.push(progress_len);
            progress_len += slot_maps[g.scope.index()].len().max(1);
        }
        let unprovable = goals
            .iter()
            .map(|g| {
                g.impossibility(&manifest.catalog)
                    .map(|why| format!("the manifest is wrong: {why}"))
                    .or_else(|| depth_reason.clone())
            })
            .collect();
        let variant_effects: Vec<Vec<Vec<Effect>>> = tools
            .iter()
            .map(|t| {
                t.variants
                    .iter()
                    .map(|args| {
                        goals
                            .iter()
                            .map(|g| g.effect(&manifest.catalog, &t.name, &t.tactics, args))
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let effects = variant_effects
            .iter()
            .map(|per_variant| {
                (0..goals.len())
                    .map(|g| {
                        per_variant.iter().fold(Effect::default(), |acc, e| Effect {
                            steps: acc.steps | e[g].steps,
                            source: acc.source || e[g].source,
                            sink: acc.sink || e[g].sink,
                        })
                    })
                    .collect()
            })
            .collect();

        // Approvers.
        let mut approvers: Vec<String> = manifest
            .approvers
            .values()
            .flatten()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if approvers.is_empty() {
            approvers.push(DEFAULT_APPROVER.into());
        }
        for cp in &bundle.policies {
            if cp.policy.action != PolicyAction::RequireHitl {
                continue;
            }
            if let Some(group) = &cp.policy.approvers {
                if !manifest.approvers.is_empty() && !manifest.approvers.contains_key(group) {
                    warnings.push(format!(
                        "policy `{}` names approver group `{group}`, which the manifest's \
                         [approvers] does not list: its gate can never be granted",
                        cp.policy.id
                    ));
                }
            }
        }

        let moves = actors
            .iter()
            .enumerate()
            .flat_map(|(a, actor)| {
                let tools = &tools;
                actor.tools.iter().flat_map(move |&t| {
                    (0..tools[t].variants.len()).map(move |variant| Move {
                        actor: a,
                        tool: t,
                        variant,
                    })
                })
            })
            .collect();

        Ok(World {
            base: Engine::new(bundle, settings),
            manifest,
            tools,
            actors,
            goals,
            effects,
            variant_effects,
            twin_of,
            offsets,
            progress_len,
            approvers,
            abstraction,
            moves,
            warnings,
            unprovable,
        })
    }

    /// The progress slot of goal `g` for `actor`.
    pub fn slot(&self, g: usize, actor: usize) -> usize {
        let scope = self.goals[g].scope.index();
        self.offsets[g] + self.actors[actor].slots[scope]
    }

    /// `moves` without those that repeat an earlier one up to interchangeable tools: the same
    /// actor and variant, a tool with the same catalog entry but the name, that no policy names
    /// (by name, `Tool` test or `Results`), with the same argument variants and workload. The
    /// engine decides both alike in every state — it sees a call's classes, never the name — and
    /// both do the same to every goal, so exploring one finds every verdict the other would.
    pub fn representatives(&self, moves: &[Move]) -> Vec<Move> {
        let mut seen = BTreeSet::new();
        moves
            .iter()
            .filter(|m| {
                let twin = self.twin_of.get(m.tool).copied().unwrap_or(m.tool);
                seen.insert((m.actor, twin, m.variant))
            })
            .copied()
            .collect()
    }

    /// Whether what a call to `tool` does to some goal depends on its argument variant.
    pub fn variant_matters(&self, tool: usize) -> bool {
        self.variant_effects
            .get(tool)
            .is_some_and(|v| v.windows(2).any(|w| w[0] != w[1]))
    }

    /// Advances `progress` by an admitted move; returns the goals it completed.
    pub fn advance(&self, progress: &mut [u8], m: Move, out: &mut Vec<usize>) {
        let Some(effects) = self
            .variant_effects
            .get(m.tool)
            .and_then(|v| v.get(m.variant))
        else {
            return;
        };
        for (g, goal) in self.goals.iter().enumerate() {
            let effect = effects[g];
            if effect.is_none() {
                continue;
            }
            let i = self.slot(g, m.actor);
            if let Some(p) = progress.get_mut(i) {
                let target = goal.target();
                if *p < target {
                    *p = goal.advance(*p, effect);
                    if *p >= target {
                        out.push(g);
                    }
                }
            }
        }
    }

    /// The tool call for a move at `now`, with id `id`.
    pub fn call(&self, m: Move, now: i64, id: String) -> ToolCall {
        ToolCall {
            id,
            time: Some(crate::clock::rfc3339(now)),
            ..self.untimed_call(m)
        }
    }

    /// The tool call for a move, without time or id: the simulations decide it at a number
    /// ([`Engine::decide_brief`]) under ids they write in place.
    pub fn untimed_call(&self, m: Move) -> ToolCall {
        let actor = &self.actors[m.actor];
        let tool = &self.tools[m.tool];
        ToolCall {
            id: String::new(),
            time: None,
            agent: actor.identity.clone(),
            session: Some(actor.session.clone()),
            chain: actor.chain.clone(),
            tool: tool.name.clone(),
            args: tool.variants.get(m.variant).cloned().unwrap_or(Value::Null),
        }
    }

    /// Grants the held call `approval_id` at `now`, by the first of the manifest's approvers the
    /// engine accepts (one outside the call's chain of command): that approver and the outcome,
    /// or `None` when none may answer it.
    pub fn grant(
        &self,
        engine: &Engine,
        approval_id: &Option<String>,
        lease: Option<String>,
        now: i64,
    ) -> Option<(&str, ApprovalOutcome)> {
        self.approvers.iter().find_map(|approver| {
            let answer = ApprovalAnswer {
                approval_id: approval_id.clone(),
                call_id: None,
                approver: approver.clone(),
                groups: Vec::new(),
                grant: true,
                lease: lease.clone(),
                time: Some(crate::clock::rfc3339(now)),
            };
            engine
                .answer(&answer)
                .ok()
                .map(|outcome| (approver.as_str(), outcome))
        })
    }

    /// The engine settings `truststack policy eval` uses for this manifest (no approver groups:
    /// eval has none), for replaying trajectories exactly as eval does.
    pub fn eval_settings(&self) -> Settings {
        Settings {
            default_decision: self.manifest.settings.default_decision,
            unknown_tools: self.manifest.settings.unknown_tools,
            ..Settings::replay()
        }
    }

    /// The short name of an agent.
    pub fn agent_name(&self, agent: usize) -> &str {
        &self.manifest.agents[agent].name
    }
}
