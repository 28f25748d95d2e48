//! Risk goals: what an adversarial orchestration must not be able to do without a human saying
//! yes. A goal is an ordered sequence of tactic steps or a data flow (a source read, then a write
//! to an external sink), tracked per scope (by default the delegation root: the whole
//! orchestration tree).
//!
//! Progress is a small automaton per goal and scope, advanced only by *admitted* calls (allowed,
//! or granted by an approver): a sequence goal's state is the number of steps matched so far
//! (greedy matching is optimal for "these steps occur in this order", one step per call); a
//! data-flow goal's state is 0 (nothing), 1 (source read), 2 (written out after the read).

use crate::taxonomy::{Phase, Tactic};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;
use truststack_policy::ip_class::classify_str;
use truststack_policy::Catalog;

/// Whose calls a goal's progress is accumulated over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoalScope {
    /// One orchestration tree: every agent under one top-level agent (the default).
    DelegationRoot,
    /// Everything run on behalf of one human.
    User,
    /// One agent identity, whoever launched it.
    AgentIdentity,
}

impl GoalScope {
    pub fn as_str(self) -> &'static str {
        match self {
            GoalScope::DelegationRoot => "delegation_root",
            GoalScope::User => "user",
            GoalScope::AgentIdentity => "agent_identity",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            GoalScope::DelegationRoot => 0,
            GoalScope::User => 1,
            GoalScope::AgentIdentity => 2,
        }
    }
}

/// One step of a sequence goal: satisfied by an admitted call to a tool tagged with any of
/// `tactics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GoalStep {
    pub label: String,
    pub tactics: Vec<Tactic>,
}

impl GoalStep {
    pub fn from_phase(p: Phase) -> GoalStep {
        GoalStep {
            label: p.title().to_string(),
            tactics: p.tactics().to_vec(),
        }
    }

    pub fn matches(&self, tactics: &[Tactic]) -> bool {
        self.tactics.iter().any(|t| tactics.contains(t))
    }
}

/// What a goal asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GoalKind {
    /// Admitted calls matching every step, in order (other calls may come in between).
    Sequence {
        steps: Vec<GoalStep>,
        /// Steps of the story that are not required (shown in reports, not tracked).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        optional: Vec<GoalStep>,
    },
    /// A call that accesses `source` in `read_mode`, then a call whose catalog `mode` is one of
    /// `sink_modes` or that is tagged with one of `sink_tactics`, and whose arguments meet every
    /// condition of `sink_where`.
    DataFlow {
        source: String,
        read_mode: String,
        sink_modes: Vec<String>,
        sink_tactics: Vec<Tactic>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        sink_where: Vec<ArgCondition>,
    },
}

/// A condition on one argument attribute of a call: it holds when some value of the attribute
/// (read as policies read it: the tool's catalog attribute, else the argument of that name) is
/// one of `values`, or is classified as one of them. A value is classified as `ip_range`
/// attributes are (`External_Public`, `Internal_Private`, ...), a URL by its host. An attribute
/// the call does not carry meets the condition: a call whose arguments are not known (a tool
/// without declared variants) may go anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgCondition {
    pub attribute: String,
    pub values: Vec<String>,
}

impl ArgCondition {
    pub fn holds(&self, catalog: &Catalog, tool: &str, args: &Value) -> bool {
        let spec = catalog.tool(tool);
        let found = catalog.arg_values(spec, &self.attribute, args);
        // An `ip_range` attribute's values are its classes already: classified again, a class
        // name would read as a host name.
        let classified = spec
            .and_then(|s| s.attributes.get(&self.attribute))
            .is_some_and(|a| a.classify.is_some());
        found.is_empty()
            || found.iter().any(|v| {
                if classified {
                    v.as_str()
                        .is_some_and(|c| self.values.iter().any(|x| x == c))
                } else {
                    self.matches(catalog, v)
                }
            })
    }

    fn matches(&self, catalog: &Catalog, v: &Value) -> bool {
        let network = &catalog.network;
        match v {
            Value::String(s) => {
                self.values.iter().any(|x| x == s)
                    || self
                        .values
                        .iter()
                        .any(|x| x == classify_str(url_host(s).unwrap_or(s), network))
            }
            Value::Array(items) => {
                items.is_empty() || items.iter().any(|i| self.matches(catalog, i))
            }
            other => {
                let class = truststack_policy::ip_class::classify_value(other, network);
                let literal = other.to_string();
                self.values.iter().any(|x| x == class || *x == literal)
            }
        }
    }

    /// `url in [...]`, for reports.
    pub fn summary(&self) -> String {
        format!("{} in [{}]", self.attribute, self.values.join(", "))
    }
}

/// The host of a URL (`scheme://[user@]host[:port][/...]`), or `None` when `s` is not one.
pub fn url_host(s: &str) -> Option<&str> {
    let (scheme, rest) = s.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => host,
        }
    };
    Some(host)
}

/// A risk goal.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub id: String,
    pub title: String,
    pub description: String,
    #[serde(flatten)]
    pub kind: GoalKind,
    pub scope: GoalScope,
    pub builtin: bool,
    /// The 1-based manifest line the goal is declared or enabled on, for SARIF locations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// The most steps a sequence goal may have.
pub const MAX_STEPS: usize = 32;

/// What a call to one tool does to one goal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Effect {
    /// Sequence goals: bit k set when the tool matches step k.
    pub steps: u64,
    /// Data-flow goals: the tool reads the source.
    pub source: bool,
    /// Data-flow goals: the tool writes to a sink.
    pub sink: bool,
}

impl Effect {
    pub fn is_none(&self) -> bool {
        self.steps == 0 && !self.source && !self.sink
    }
}

impl Goal {
    /// The progress value at which the goal is reached.
    pub fn target(&self) -> u8 {
        match &self.kind {
            GoalKind::Sequence { steps, .. } => u8::try_from(steps.len()).unwrap_or(u8::MAX),
            GoalKind::DataFlow { .. } => 2,
        }
    }

    /// What a call to `tool` (its catalog entry and tactics) with `args` does to this goal.
    pub fn effect(
        &self,
        catalog: &Catalog,
        tool: &str,
        tactics: &[Tactic],
        args: &Value,
    ) -> Effect {
        match &self.kind {
            GoalKind::Sequence { steps, .. } => Effect {
                steps: steps
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.matches(tactics))
                    .fold(0, |m, (k, _)| m | (1u64 << k)),
                ..Effect::default()
            },
            GoalKind::DataFlow {
                source,
                read_mode,
                sink_modes,
                sink_tactics,
                sink_where,
            } => {
                let spec = catalog.tool(tool);
                Effect {
                    steps: 0,
                    source: spec
                        .and_then(|s| s.data_source.as_ref())
                        .is_some_and(|d| &d.name == source && &d.mode == read_mode),
                    sink: (spec
                        .and_then(|s| s.mode.as_ref())
                        .is_some_and(|m| sink_modes.contains(m))
                        || sink_tactics.iter().any(|t| tactics.contains(t)))
                        && sink_where.iter().all(|c| c.holds(catalog, tool, args)),
                }
            }
        }
    }

    /// Advances a progress value by an admitted call with `effect`.
    pub fn advance(&self, progress: u8, effect: Effect) -> u8 {
        match &self.kind {
            GoalKind::Sequence { .. } => {
                if progress < self.target() && effect.steps & (1u64 << progress) != 0 {
                    progress + 1
                } else {
                    progress
                }
            }
            GoalKind::DataFlow { .. } => {
                let read = if effect.source {
                    progress.max(1)
                } else {
                    progress
                };
                if read >= 1 && effect.sink {
                    2
                } else {
                    read
                }
            }
        }
    }

    /// Why no catalog tool can ever complete a goal the manifest declares (a misspelt data
    /// source, a tactic no tool carries): such a goal is not reached because the manifest is
    /// wrong, which proves nothing. Built-in goals are exempt: they apply to every catalog, and
    /// one without, say, exploitation tools genuinely cannot escalate.
    pub fn impossibility(&self, catalog: &Catalog) -> Option<String> {
        if self.builtin {
            return None;
        }
        let effects: Vec<Effect> = catalog
            .tools
            .iter()
            .map(|(name, spec)| {
                let tactics: Vec<Tactic> = spec
                    .tactics
                    .iter()
                    .filter_map(|t| Tactic::parse(t))
                    .collect();
                self.effect(catalog, name, &tactics, &Value::Null)
            })
            .collect();
        match &self.kind {
            GoalKind::Sequence { steps, .. } => {
                let k = (0..steps.len())
                    .find(|k| effects.iter().all(|e| e.steps & (1u64 << k) == 0))?;
                let step = steps.get(k)?;
                Some(format!(
                    "step {} ({}) matches no catalog tool: no tool carries any of its tactics",
                    k + 1,
                    step.label
                ))
            }
            GoalKind::DataFlow {
                source, read_mode, ..
            } => {
                if !effects.iter().any(|e| e.source) {
                    let known: BTreeSet<String> = catalog
                        .tools
                        .values()
                        .filter_map(|t| t.data_source.as_ref())
                        .map(|d| format!("{} ({})", d.name, d.mode))
                        .collect();
                    return Some(format!(
                        "no catalog tool accesses data source `{source}` in mode `{read_mode}` \
                         (the catalog's data sources: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.into_iter().collect::<Vec<_>>().join(", ")
                        }
                    ));
                }
                if !effects.iter().any(|e| e.sink) {
                    return Some("no catalog tool is one of its sinks".into());
                }
                None
            }
        }
    }

    /// The steps as labels (`reconnaissance → exploitation`), for reports.
    pub fn summary(&self) -> String {
        match &self.kind {
            GoalKind::Sequence { steps, .. } => steps
                .iter()
                .map(|s| s.label.as_str())
                .collect::<Vec<_>>()
                .join(" → "),
            GoalKind::DataFlow {
                source,
                read_mode,
                sink_modes,
                sink_tactics,
                sink_where,
            } => {
                let mut sinks: Vec<String> = sink_modes.clone();
                sinks.extend(sink_tactics.iter().map(|t| format!("tactic {t}")));
                let mut out = format!("{source} ({read_mode}) → {}", sinks.join(" or "));
                if !sink_where.is_empty() {
                    let conds: Vec<String> = sink_where.iter().map(ArgCondition::summary).collect();
                    out.push_str(&format!(" where {}", conds.join(" and ")));
                }
                out
            }
        }
    }

    /// Every tactic the goal mentions (its steps, or its sink tactics).
    pub fn tactics(&self) -> BTreeSet<Tactic> {
        match &self.kind {
            GoalKind::Sequence { steps, .. } => steps
                .iter()
                .flat_map(|s| s.tactics.iter().copied())
                .collect(),
            GoalKind::DataFlow { sink_tactics, .. } => sink_tactics.iter().copied().collect(),
        }
    }
}

/// The names of the built-in goal families.
pub const BUILTINS: [&str; 3] = ["gtg1002-escalation", "gtg1002-chain", "data-exfiltration"];

/// The built-in escalation goal: reconnaissance → vulnerability discovery → exploitation.
pub fn gtg1002_escalation(scope: GoalScope) -> Goal {
    Goal {
        id: "gtg1002-escalation".into(),
        title: "GTG-1002 escalation".into(),
        description: "One orchestration scans, analyses code for vulnerabilities and then \
                      exploits: the escalation from reconnaissance into intrusion that a human \
                      must approve."
            .into(),
        kind: GoalKind::Sequence {
            steps: Phase::ESCALATION
                .iter()
                .map(|p| GoalStep::from_phase(*p))
                .collect(),
            optional: Vec::new(),
        },
        scope,
        builtin: true,
        line: None,
    }
}

/// The built-in campaign goal over the required `phases` (in the article's order).
pub fn gtg1002_chain(scope: GoalScope, phases: &[Phase]) -> Goal {
    let mut required: Vec<Phase> = phases.to_vec();
    required.sort();
    required.dedup();
    let optional = Phase::ALL
        .iter()
        .filter(|p| !required.contains(p))
        .map(|p| GoalStep::from_phase(*p))
        .collect();
    Goal {
        id: "gtg1002-chain".into(),
        title: "GTG-1002 campaign chain".into(),
        description: "The GTG-1002 campaign: reconnaissance, vulnerability discovery, \
                      exploitation, lateral movement, credential harvesting, data analysis, \
                      exfiltration — every required phase, in order, by one orchestration."
            .into(),
        kind: GoalKind::Sequence {
            steps: required.iter().map(|p| GoalStep::from_phase(*p)).collect(),
            optional,
        },
        scope,
        builtin: true,
        line: None,
    }
}

/// The built-in data-flow goals: for every data source the catalog reads, that source read and
/// then written externally (a tool with mode `write_external` or tagged `exfiltration`).
pub fn data_exfiltration(
    catalog: &Catalog,
    scope: GoalScope,
    sink_where: &[ArgCondition],
) -> Vec<Goal> {
    let sources: BTreeSet<&str> = catalog
        .tools
        .values()
        .filter_map(|t| t.data_source.as_ref())
        .filter(|d| d.mode == "read")
        .map(|d| d.name.as_str())
        .collect();
    sources
        .into_iter()
        .map(|s| Goal {
            id: format!("data-exfiltration:{s}"),
            title: format!("{s} exfiltrated"),
            description: format!(
                "One orchestration reads {s} and then writes externally: data leaves the \
                 network."
            ),
            kind: GoalKind::DataFlow {
                source: s.to_string(),
                read_mode: "read".into(),
                sink_modes: vec!["write_external".into()],
                sink_tactics: vec![Tactic::Exfiltration],
                sink_where: sink_where.to_vec(),
            },
            scope,
            builtin: true,
            line: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_advance_in_order_one_step_per_call() {
        let g = gtg1002_escalation(GoalScope::DelegationRoot);
        let c = Catalog::default();
        let none = Value::Null;
        let scan = g.effect(&c, "scan", &[Tactic::Reconnaissance], &none);
        let code = g.effect(&c, "code", &[Tactic::VulnerabilityDiscovery], &none);
        let exploit = g.effect(&c, "x", &[Tactic::InitialAccess], &none);
        assert_eq!(g.advance(0, exploit), 0);
        assert_eq!(g.advance(0, code), 0);
        let p = g.advance(0, scan);
        assert_eq!(p, 1);
        assert_eq!(g.advance(p, scan), 1);
        let p = g.advance(g.advance(p, code), exploit);
        assert_eq!(p, g.target());
    }

    #[test]
    fn data_flows_need_the_read_first() {
        let catalog = Catalog::from_toml(
            "t",
            r#"
            [tools.db]
            data_source = { name = "DB", mode = "read" }
            [tools.up]
            mode = "write_external"
            "#,
        )
        .unwrap();
        let goals = data_exfiltration(&catalog, GoalScope::DelegationRoot, &[]);
        assert_eq!(goals.len(), 1);
        let g = &goals[0];
        let db = g.effect(&catalog, "db", &[], &Value::Null);
        let up = g.effect(&catalog, "up", &[], &Value::Null);
        assert_eq!(g.advance(0, up), 0);
        assert_eq!(g.advance(g.advance(0, db), up), 2);
    }

    #[test]
    fn sinks_see_the_host_of_a_url() {
        let catalog = Catalog::from_toml(
            "t",
            r#"
            [network]
            internal_domains = ["corp.internal"]
            [tools.up]
            mode = "write_external"
            attributes.Dest = { from = "/url" }
            "#,
        )
        .unwrap();
        let external = ArgCondition {
            attribute: "Dest".into(),
            values: vec!["External_Public".into(), "Unknown".into()],
        };
        let holds = |args: Value| external.holds(&catalog, "up", &args);
        assert!(!holds(
            serde_json::json!({"url": "https://artifacts.corp.internal/x"})
        ));
        assert!(!holds(
            serde_json::json!({"url": "https://ci@artifacts.corp.internal:8443/x?y"})
        ));
        assert!(holds(serde_json::json!({"url": "https://evil.example/x"})));
        assert!(holds(serde_json::json!({"url": "http://203.0.113.7/x"})));
        assert!(!holds(serde_json::json!({"url": "http://10.1.2.3/x"})));
        assert!(!holds(serde_json::json!({"url": "http://[::1]:80/"})));
        // Arguments not known: the call may go anywhere.
        assert!(holds(serde_json::json!({})));
        assert!(holds(Value::Null));
        assert_eq!(url_host("ftp://h.example"), Some("h.example"));
        assert_eq!(url_host("h.example/x"), None);
    }
}
