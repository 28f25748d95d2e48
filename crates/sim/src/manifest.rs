//! The proving-ground manifest (TOML): the agents, the tools each holds, who may delegate to
//! whom, the catalog, the policies, the approvers, the settings and the risk goals.
//! `docs/proving-ground.md` documents every field with a complete example.
//!
//! ```toml
//! name = "GTG-1002, one agent"
//! catalog = "catalog.toml"                 # a path (relative to this file) or an inline table
//! policies = ["policies/seed.tsp"]         # paths, or { name = "...", text = "..." }
//!
//! [agents.operator]
//! identity = "spiffe://acme.example/agent/operator"
//! launched_by = "user:operator@acme.example"
//! tools = ["nmap_scan", "code_review", "exploit_runner"]
//! delegates_to = []
//!
//! [approvers]
//! security-oncall = ["user:oncall@acme.example"]
//! ```

use crate::goal::{self, ArgCondition, Goal, GoalKind, GoalScope, GoalStep};
use crate::taxonomy::{Phase, Tactic};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use toml::Spanned;
use truststack_engine::identity::id::names_a_human;
use truststack_engine::identity::UserId;
use truststack_engine::DefaultDecision;
use truststack_policy::diagnostic::closest;
use truststack_policy::duration::{format_duration, parse_duration};
use truststack_policy::{Catalog, CatalogError, Source};

/// Why a manifest could not be loaded. Every message names the file and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: cannot read: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{file}: not a valid manifest: {message}")]
    Toml { file: String, message: String },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{file}: the policies do not compile ({errors} error(s)):\n{rendered}")]
    Policies {
        file: String,
        rendered: String,
        errors: usize,
    },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

/// Where the catalog came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogOrigin {
    File(PathBuf),
    Inline,
}

/// Where a policy source came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyOrigin {
    File(PathBuf),
    /// Inline text with this name (its policies without ids are `<name>#<n>`).
    Inline(String),
}

/// One agent of the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    /// The short name the manifest uses (`[agents.recon]`).
    pub name: String,
    /// The agent identity (a SPIFFE URI).
    pub identity: String,
    pub description: Option<String>,
    /// The tools it holds (catalog tool names; classes are expanded when loading).
    pub tools: Vec<String>,
    /// Agents it may delegate to or invoke (short names).
    pub delegates_to: Vec<String>,
    /// The human who launches it as a top-level agent, if one does.
    pub launched_by: Option<String>,
}

/// Settings of the analysis (`[settings]`).
#[derive(Debug, Clone, PartialEq)]
pub struct SimSettings {
    /// The decision for calls no policy fires on.
    pub default_decision: DefaultDecision,
    /// Whether tools missing from the catalog may be called.
    pub unknown_tools: DefaultDecision,
    /// The human who launches top-level agents that name no `launched_by`.
    pub operator: String,
    /// The trust domain of identities the manifest does not spell out.
    pub trust_domain: String,
    /// The simulated clock's start (epoch ms).
    pub start_ms: i64,
    /// Time between two calls of the adversary on the simulated clock.
    pub step_ms: i64,
    /// The most calls (and waits) on one explored trajectory.
    pub max_depth: usize,
    /// The most distinct states the exploration keeps.
    pub max_states: usize,
    /// The longest delegation chain explored (agents below the top-level one).
    pub max_delegation_depth: usize,
    /// Whether the adversary may wait for windows to expire.
    pub waits: bool,
    /// The adversary's speed for time-to-goal and Monte Carlo.
    pub calls_per_second: f64,
    /// When set, approvers grant a lease of this length (else one call per approval).
    pub approval_lease_ms: Option<i64>,
    /// The rate limit `--fix` proposes for mass-volume tools: (calls, window ms).
    pub fix_rate_limit: (u64, i64),
}

impl Default for SimSettings {
    fn default() -> Self {
        SimSettings {
            default_decision: DefaultDecision::Allow,
            unknown_tools: DefaultDecision::Deny,
            operator: "user:operator@example.org".into(),
            trust_domain: "truststack.sim".into(),
            start_ms: 1_794_556_800_000, // 2026-11-13T09:00:00Z
            step_ms: 250,
            max_depth: 16,
            max_states: 500_000,
            max_delegation_depth: 4,
            waits: true,
            calls_per_second: 4.0,
            approval_lease_ms: None,
            fix_rate_limit: (100, 300_000),
        }
    }
}

/// A Markov model over tactics for Monte Carlo agents.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MarkovSpec {
    /// The initial distribution (weights, normalised when used).
    pub start: Vec<(Tactic, f64)>,
    /// From each tactic, the weights of the next one.
    pub transitions: Vec<(Tactic, Vec<(Tactic, f64)>)>,
}

/// Monte Carlo settings (`[montecarlo]`).
#[derive(Debug, Clone, PartialEq)]
pub struct MonteCarloSpec {
    pub runs: u64,
    pub max_steps: u32,
    pub seed: u64,
    /// Probability that a human grants a held call.
    pub grant_probability: f64,
    /// `None`: the built-in GTG-1002 campaign model over the tactics the agents hold.
    pub model: Option<MarkovSpec>,
}

impl Default for MonteCarloSpec {
    fn default() -> Self {
        MonteCarloSpec {
            runs: 1000,
            max_steps: 60,
            seed: 1,
            grant_probability: 0.0,
            model: None,
        }
    }
}

/// A loaded, validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The manifest file as named by the caller.
    pub path: PathBuf,
    /// Its text (for SARIF line numbers).
    pub text: String,
    pub name: String,
    pub description: Option<String>,
    pub catalog: Catalog,
    pub catalog_text: String,
    pub catalog_origin: CatalogOrigin,
    pub sources: Vec<Source>,
    pub policy_origins: Vec<PolicyOrigin>,
    pub agents: Vec<Agent>,
    /// Approver group → humans who may answer held calls.
    pub approvers: BTreeMap<String, Vec<String>>,
    pub settings: SimSettings,
    /// The built-in goal families enabled.
    pub builtin_goals: Vec<String>,
    /// The phases the built-in `gtg1002-chain` goal requires.
    pub chain_phases: Vec<Phase>,
    /// The default scope of goals.
    pub goal_scope: GoalScope,
    /// Every goal: the enabled built-ins, then the manifest's own.
    pub goals: Vec<Goal>,
    /// Tool → argument variants the adversary tries (JSON objects).
    pub arguments: BTreeMap<String, Vec<Value>>,
    /// `[goals] sink_where`: the sink conditions of the built-in data-flow goals, and of the
    /// manifest's own that give none.
    pub sink_where: Vec<ArgCondition>,
    /// Tool or class → calls a real campaign makes of it (for time-to-goal).
    pub workload: BTreeMap<String, u64>,
    pub montecarlo: MonteCarloSpec,
    /// Problems that do not stop the analysis (unknown tools, unreachable agents, ...).
    pub warnings: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// The file format.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    catalog: Option<RawCatalog>,
    #[serde(default)]
    policies: Vec<RawPolicy>,
    #[serde(default)]
    agents: BTreeMap<String, RawAgent>,
    #[serde(default)]
    approvers: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    settings: RawSettings,
    #[serde(default)]
    goals: RawGoals,
    #[serde(default)]
    arguments: BTreeMap<String, Spanned<Vec<Value>>>,
    #[serde(default)]
    workload: BTreeMap<String, u64>,
    #[serde(default)]
    montecarlo: RawMonteCarlo,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCatalog {
    Path(String),
    Inline(toml::Table),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPolicy {
    Path(String),
    Inline(RawInlinePolicy),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInlinePolicy {
    name: String,
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    #[serde(default)]
    identity: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tools: Vec<String>,
    #[serde(default)]
    delegates_to: Vec<String>,
    #[serde(default)]
    launched_by: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    default_decision: Option<DefaultDecision>,
    unknown_tools: Option<DefaultDecision>,
    operator: Option<String>,
    trust_domain: Option<String>,
    start: Option<String>,
    step: Option<String>,
    max_depth: Option<usize>,
    max_states: Option<usize>,
    max_delegation_depth: Option<usize>,
    waits: Option<bool>,
    calls_per_second: Option<f64>,
    approval_lease: Option<String>,
    fix_rate_limit: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGoals {
    builtin: Option<Vec<String>>,
    gtg1002_phases: Option<Vec<String>>,
    scope: Option<GoalScope>,
    #[serde(default)]
    sink_where: Option<RawWhere>,
    #[serde(default)]
    sequence: Vec<RawSequence>,
    #[serde(default)]
    data_flow: Vec<RawFlow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSequence {
    id: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    description: Option<String>,
    steps: Vec<RawStep>,
    #[serde(default)]
    scope: Option<GoalScope>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawStep {
    One(String),
    Any(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlow {
    id: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    description: Option<String>,
    source: String,
    #[serde(default)]
    read_mode: Option<String>,
    #[serde(default)]
    sink_modes: Option<Vec<String>>,
    #[serde(default)]
    sink_tactics: Option<Vec<String>>,
    #[serde(default)]
    sink_where: Option<RawWhere>,
    #[serde(default)]
    scope: Option<GoalScope>,
}

/// `sink_where = { <attribute> = ["<value or class>", ...], ... }`.
type RawWhere = Spanned<BTreeMap<Spanned<String>, Spanned<Vec<Spanned<String>>>>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMonteCarlo {
    runs: Option<u64>,
    max_steps: Option<u32>,
    seed: Option<u64>,
    grant_probability: Option<f64>,
    start: Option<BTreeMap<String, f64>>,
    transitions: Option<BTreeMap<String, BTreeMap<String, f64>>>,
}

/// The 1-based line of the first line of `text` that `pred` accepts.
pub fn find_line(text: &str, pred: impl Fn(&str) -> bool) -> Option<usize> {
    text.lines().position(|l| pred(l.trim())).map(|i| i + 1)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn invalid(&self, message: impl Into<String>) -> ManifestError {
        ManifestError::Invalid {
            file: self.file.to_string(),
            message: message.into(),
        }
    }

    /// An error at a position of the manifest text: `line L, column C: message`.
    fn invalid_at(&self, span: std::ops::Range<usize>, message: impl AsRef<str>) -> ManifestError {
        let before = self.text.get(..span.start).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        self.invalid(format!("line {line}, column {col}: {}", message.as_ref()))
    }

    /// Sink conditions, each attribute one the catalog or the declared arguments know.
    fn sink_where(
        &self,
        context: &str,
        raw: RawWhere,
        known: &BTreeSet<String>,
    ) -> Result<Vec<ArgCondition>, ManifestError> {
        let span = raw.span();
        let map = raw.into_inner();
        if map.is_empty() {
            return Err(self.invalid_at(
                span,
                format!(
                    "{context}.sink_where: expected at least one attribute, e.g. \
                     {{ url = [\"External_Public\", \"Unknown\"] }}"
                ),
            ));
        }
        let mut out = Vec::new();
        for (attr, values) in map {
            let (attr_span, attribute) = (attr.span(), attr.into_inner());
            if !attribute.starts_with('/') && !known.contains(&attribute) {
                let hint = closest(&attribute, known.iter().map(String::as_str))
                    .map(|h| format!(" (did you mean `{h}`?)"))
                    .unwrap_or_default();
                return Err(self.invalid_at(
                    attr_span,
                    format!(
                        "{context}.sink_where: `{attribute}` is no catalog attribute and no \
                         argument of `[arguments]`{hint}; expected an attribute name or a JSON \
                         pointer (`/url`)"
                    ),
                ));
            }
            let values_span = values.span();
            let values: Vec<String> = values
                .into_inner()
                .into_iter()
                .map(Spanned::into_inner)
                .collect();
            if values.is_empty() {
                return Err(self.invalid_at(
                    values_span,
                    format!(
                        "{context}.sink_where.{attribute}: expected at least one value or class \
                         (External_Public, Internal_Private, Loopback, Link_Local, Unknown, a \
                         named range, or a literal value)"
                    ),
                ));
            }
            out.push(ArgCondition { attribute, values });
        }
        Ok(out)
    }

    fn duration(&self, field: &str, text: &str) -> Result<i64, ManifestError> {
        parse_duration(text).map_err(|e| self.invalid(format!("`{field}`: {e}")))
    }

    fn tactic(&self, context: &str, name: &str) -> Result<Tactic, ManifestError> {
        Tactic::parse(name).ok_or_else(|| {
            let hint = Tactic::suggest(name)
                .map(|h| format!(" (did you mean `{h}`?)"))
                .unwrap_or_default();
            self.invalid(format!(
                "{context}: `{name}` is not a tactic{hint}; expected an ATT&CK tactic name or id \
                 (reconnaissance, discovery, initial_access, ... TA0043) or \
                 vulnerability_discovery"
            ))
        })
    }

    /// A step name: a tactic, or a GTG-1002 phase (all of its tactics).
    fn step(&self, context: &str, names: &[String]) -> Result<GoalStep, ManifestError> {
        let mut tactics = Vec::new();
        for n in names {
            match Phase::parse(n) {
                Some(p) if Tactic::parse(n).is_none() => tactics.extend(p.tactics()),
                _ => tactics.push(self.tactic(context, n)?),
            }
        }
        tactics.sort();
        tactics.dedup();
        if tactics.is_empty() {
            return Err(self.invalid(format!("{context}: a step needs at least one tactic")));
        }
        Ok(GoalStep {
            label: names.join(" | ").replace('_', " "),
            tactics,
        })
    }
}

fn parse_rate(text: &str) -> Option<(u64, i64)> {
    let (n, w) = text.split_once('/')?;
    let n: u64 = n.trim().parse().ok()?;
    let w = parse_duration(w.trim()).ok()?;
    (n > 0).then_some((n, w))
}

impl Manifest {
    /// Reads and validates a manifest file; relative paths in it are resolved against its
    /// directory.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ManifestError::Io {
            path: path.to_path_buf(),
            cause,
        })?;
        Manifest::parse(path, &text)
    }

    /// Parses manifest text; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
        let file = path.display().to_string();
        let ctx = Ctx { file: &file, text };
        let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Toml {
            file: file.clone(),
            message: truststack_policy::catalog::toml_message(text, &e),
        })?;
        let mut warnings = Vec::new();

        // Catalog.
        let (catalog, catalog_text, catalog_origin) =
            match raw.catalog {
                Some(RawCatalog::Path(p)) => {
                    let full = dir.join(&p);
                    let t = std::fs::read_to_string(&full).map_err(|cause| ManifestError::Io {
                        path: full.clone(),
                        cause,
                    })?;
                    let c = Catalog::from_toml(&full.display().to_string(), &t)?;
                    (c, t, CatalogOrigin::File(full))
                }
                Some(RawCatalog::Inline(table)) => {
                    let t = toml::to_string(&table).map_err(|e| {
                        ctx.invalid(format!("the inline catalog cannot be re-serialised: {e}"))
                    })?;
                    let c = Catalog::from_toml(&format!("{file} [catalog]"), &t)?;
                    (c, t, CatalogOrigin::Inline)
                }
                None => return Err(ctx.invalid(
                    "no `catalog`: expected `catalog = \"catalog.toml\"` (a path relative to the \
                     manifest) or an inline `[catalog.tools.<name>]` table",
                )),
            };

        // Policies.
        let mut sources = Vec::new();
        let mut policy_origins = Vec::new();
        for p in raw.policies {
            match p {
                RawPolicy::Path(p) => {
                    let full = dir.join(&p);
                    let t = std::fs::read_to_string(&full).map_err(|cause| ManifestError::Io {
                        path: full.clone(),
                        cause,
                    })?;
                    sources.push(Source::new(full.display().to_string(), t));
                    policy_origins.push(PolicyOrigin::File(full));
                }
                RawPolicy::Inline(RawInlinePolicy { name, text }) => {
                    if !valid_name(&name) {
                        return Err(ctx.invalid(format!(
                            "inline policy name `{name}`: expected letters, digits, `-`, `_` or `.`"
                        )));
                    }
                    sources.push(Source::new(format!("{name}.tsp"), text));
                    policy_origins.push(PolicyOrigin::Inline(name));
                }
            }
        }

        // Settings.
        let mut settings = SimSettings::default();
        let rs = raw.settings;
        if let Some(v) = rs.default_decision {
            settings.default_decision = v;
        }
        if let Some(v) = rs.unknown_tools {
            settings.unknown_tools = v;
        }
        if let Some(v) = rs.operator {
            if UserId::parse(&v).is_err() {
                return Err(ctx.invalid(format!(
                    "settings.operator: `{v}` is not a human principal (expected `user:...`)"
                )));
            }
            settings.operator = v;
        }
        if let Some(v) = rs.trust_domain {
            if v.is_empty() || v.contains('/') {
                return Err(ctx.invalid(format!(
                    "settings.trust_domain: `{v}` is not a trust domain (expected e.g. `acme.example`)"
                )));
            }
            settings.trust_domain = v;
        }
        if let Some(v) = rs.start {
            settings.start_ms = truststack_engine::event::parse_time(&v)
                .map_err(|e| ctx.invalid(format!("settings.start: {e}")))?;
        }
        if let Some(v) = rs.step {
            settings.step_ms = ctx.duration("settings.step", &v)?;
        }
        if let Some(v) = rs.max_depth {
            if v == 0 || v > 64 {
                return Err(ctx.invalid(format!(
                    "settings.max_depth: {v} is out of range (expected 1 to 64 calls)"
                )));
            }
            settings.max_depth = v;
        }
        if let Some(v) = rs.max_states {
            if v == 0 {
                return Err(ctx.invalid("settings.max_states: expected at least 1"));
            }
            settings.max_states = v;
        }
        if let Some(v) = rs.max_delegation_depth {
            settings.max_delegation_depth = v.min(16);
        }
        if let Some(v) = rs.waits {
            settings.waits = v;
        }
        if let Some(v) = rs.calls_per_second {
            if !(v.is_finite() && v > 0.0) {
                return Err(ctx.invalid(format!(
                    "settings.calls_per_second: {v} (expected a positive number)"
                )));
            }
            settings.calls_per_second = v;
        }
        if let Some(v) = rs.approval_lease {
            settings.approval_lease_ms = Some(ctx.duration("settings.approval_lease", &v)?);
        }
        if let Some(v) = rs.fix_rate_limit {
            settings.fix_rate_limit = parse_rate(&v).ok_or_else(|| {
                ctx.invalid(format!(
                    "settings.fix_rate_limit: `{v}` (expected `<calls>/<window>`, e.g. `100/5min`)"
                ))
            })?;
        }

        // Agents.
        if raw.agents.is_empty() {
            return Err(ctx.invalid(
                "no agents: expected at least one `[agents.<name>]` table with `tools = [...]`",
            ));
        }
        let names: Vec<String> = raw.agents.keys().cloned().collect();
        let mut agents = Vec::new();
        for (name, a) in raw.agents {
            if !valid_name(&name) {
                return Err(ctx.invalid(format!(
                    "agent name `{name}`: expected letters, digits, `-`, `_` or `.`"
                )));
            }
            let identity = a
                .identity
                .unwrap_or_else(|| format!("spiffe://{}/agent/{name}", settings.trust_domain));
            if names_a_human(&identity) || identity.is_empty() {
                return Err(ctx.invalid(format!(
                    "agents.{name}.identity: `{identity}` is a human principal; an agent identity \
                     is a SPIFFE URI such as `spiffe://acme.example/agent/{name}`"
                )));
            }
            if let Some(l) = &a.launched_by {
                if UserId::parse(l).is_err() {
                    return Err(ctx.invalid(format!(
                        "agents.{name}.launched_by: `{l}` is not a human principal (expected \
                         `user:...`)"
                    )));
                }
            }
            for d in &a.delegates_to {
                if !names.contains(d) {
                    let hint = closest(d, names.iter().map(String::as_str))
                        .map(|h| format!(" (did you mean `{h}`?)"))
                        .unwrap_or_default();
                    return Err(
                        ctx.invalid(format!("agents.{name}.delegates_to: no agent `{d}`{hint}"))
                    );
                }
                if d == &name {
                    return Err(ctx.invalid(format!(
                        "agents.{name}.delegates_to: an agent cannot delegate to itself"
                    )));
                }
            }
            let mut tools = Vec::new();
            for t in &a.tools {
                let expanded = expand_tool(&catalog, t);
                if expanded.is_empty() {
                    let hint = closest(t, catalog.names())
                        .map(|h| format!(" (did you mean `{h}`?)"))
                        .unwrap_or_default();
                    warnings.push(format!(
                        "agents.{name}: tool `{t}` is not in the catalog{hint}; unknown tools are \
                         {} by the settings",
                        match settings.unknown_tools {
                            DefaultDecision::Allow => "allowed",
                            DefaultDecision::Deny => "denied",
                        }
                    ));
                    tools.push(t.clone());
                } else {
                    tools.extend(expanded);
                }
            }
            let mut seen = BTreeSet::new();
            tools.retain(|t| seen.insert(t.clone()));
            let mut identities = agents.iter().map(|x: &Agent| x.identity.as_str());
            if identities.any(|i| i == identity) {
                return Err(ctx.invalid(format!(
                    "agents.{name}.identity: `{identity}` is used by another agent"
                )));
            }
            agents.push(Agent {
                name,
                identity,
                description: a.description,
                tools,
                delegates_to: a.delegates_to,
                launched_by: a.launched_by,
            });
        }
        let delegated: BTreeSet<&str> = agents
            .iter()
            .flat_map(|a| a.delegates_to.iter().map(String::as_str))
            .collect();
        if agents
            .iter()
            .all(|a| delegated.contains(a.name.as_str()) && a.launched_by.is_none())
        {
            return Err(ctx.invalid(
                "no top-level agent: every agent is delegated to and none has `launched_by`; \
                 give the orchestrator `launched_by = \"user:...\"`",
            ));
        }

        // Approvers.
        for (group, members) in &raw.approvers {
            for m in members {
                if UserId::parse(m).is_err() {
                    return Err(ctx.invalid(format!(
                        "approvers.{group}: `{m}` is not a human principal (expected `user:...`); \
                         agents cannot approve"
                    )));
                }
            }
        }

        // Arguments and workload.
        let mut arguments = BTreeMap::new();
        for (tool, variants) in raw.arguments {
            let span = variants.span();
            let variants = variants.into_inner();
            let targets = expand_tool(&catalog, &tool);
            if targets.is_empty() && !agents.iter().any(|a| a.tools.contains(&tool)) {
                let hint = closest(&tool, catalog.names())
                    .map(|h| format!(" (did you mean `{h}`?)"))
                    .unwrap_or_default();
                return Err(ctx.invalid_at(
                    span,
                    format!("arguments.{tool}: no tool or class `{tool}` in the catalog{hint}"),
                ));
            }
            if variants.is_empty() || variants.iter().any(|v| !v.is_object()) {
                return Err(ctx.invalid_at(
                    span,
                    format!(
                        "arguments.{tool}: expected a non-empty list of argument tables, e.g. \
                         [{{ target = \"10.0.0.0/16\" }}]"
                    ),
                ));
            }
            let targets = if targets.is_empty() {
                vec![tool.clone()]
            } else {
                targets
            };
            for t in targets {
                arguments.insert(t, variants.clone());
            }
        }
        for (tool, n) in &raw.workload {
            if expand_tool(&catalog, tool).is_empty() {
                return Err(ctx.invalid(format!(
                    "workload.{tool}: no tool or class `{tool}` in the catalog"
                )));
            }
            if *n == 0 {
                return Err(ctx.invalid(format!("workload.{tool}: expected at least 1 call")));
            }
        }

        // Goals.
        let rg = raw.goals;
        let goal_scope = rg.scope.unwrap_or(GoalScope::DelegationRoot);
        // The attributes a sink condition may name: the catalog's, and the declared arguments'.
        let known_attributes: BTreeSet<String> = catalog
            .tools
            .values()
            .flat_map(|t| t.attributes.keys().cloned())
            .chain(
                arguments
                    .values()
                    .flatten()
                    .filter_map(Value::as_object)
                    .flat_map(|o| o.keys().cloned()),
            )
            .collect();
        let sink_where = match rg.sink_where {
            Some(w) => ctx.sink_where("goals", w, &known_attributes)?,
            None => Vec::new(),
        };
        let builtin_goals = rg
            .builtin
            .unwrap_or_else(|| goal::BUILTINS.iter().map(|s| s.to_string()).collect());
        for b in &builtin_goals {
            if !goal::BUILTINS.contains(&b.as_str()) {
                let hint = closest(b, goal::BUILTINS)
                    .map(|h| format!(" (did you mean `{h}`?)"))
                    .unwrap_or_default();
                return Err(ctx.invalid(format!(
                    "goals.builtin: no built-in goal `{b}`{hint}; expected {}",
                    goal::BUILTINS.join(", ")
                )));
            }
        }
        let chain_phases = match rg.gtg1002_phases {
            Some(list) => {
                let mut phases = Vec::new();
                for p in &list {
                    phases.push(Phase::parse(p).ok_or_else(|| {
                        ctx.invalid(format!(
                            "goals.gtg1002_phases: `{p}` is not a GTG-1002 phase; expected {}",
                            Phase::ALL.map(|p| p.name()).join(", ")
                        ))
                    })?);
                }
                if phases.is_empty() {
                    return Err(ctx.invalid("goals.gtg1002_phases: expected at least one phase"));
                }
                phases
            }
            None => Phase::CHAIN_DEFAULT.to_vec(),
        };
        let builtin_line = find_line(text, |l| l.starts_with("builtin"))
            .or_else(|| find_line(text, |l| l == "[goals]"));
        let mut goals = Vec::new();
        for b in &builtin_goals {
            let mut add: Vec<Goal> = match b.as_str() {
                "gtg1002-escalation" => vec![goal::gtg1002_escalation(goal_scope)],
                "gtg1002-chain" => vec![goal::gtg1002_chain(goal_scope, &chain_phases)],
                _ => goal::data_exfiltration(&catalog, goal_scope, &sink_where),
            };
            for g in &mut add {
                g.line = builtin_line;
            }
            goals.extend(add);
        }
        for s in rg.sequence {
            let context = format!("goals.sequence `{}`", s.id);
            if s.steps.is_empty() || s.steps.len() > goal::MAX_STEPS {
                return Err(ctx.invalid(format!(
                    "{context}: expected 1 to {} steps",
                    goal::MAX_STEPS
                )));
            }
            let mut steps = Vec::new();
            for st in &s.steps {
                let names = match st {
                    RawStep::One(n) => vec![n.clone()],
                    RawStep::Any(v) => v.clone(),
                };
                steps.push(ctx.step(&context, &names)?);
            }
            let line = find_line(text, |l| {
                l.starts_with("id") && l.contains(&format!("\"{}\"", s.id))
            });
            goals.push(Goal {
                title: s.title.unwrap_or_else(|| s.id.clone()),
                description: s.description.unwrap_or_default(),
                id: s.id,
                kind: GoalKind::Sequence {
                    steps,
                    optional: Vec::new(),
                },
                scope: s.scope.unwrap_or(goal_scope),
                builtin: false,
                line,
            });
        }
        for f in rg.data_flow {
            let context = format!("goals.data_flow `{}`", f.id);
            if !catalog.data_sources().any(|d| d == f.source) {
                warnings.push(format!(
                    "{context}: no catalog tool reads data source `{}`; the goal is unreachable",
                    f.source
                ));
            }
            let mut sink_tactics = Vec::new();
            for t in f
                .sink_tactics
                .unwrap_or_else(|| vec!["exfiltration".into()])
            {
                sink_tactics.push(ctx.tactic(&context, &t)?);
            }
            let line = find_line(text, |l| {
                l.starts_with("id") && l.contains(&format!("\"{}\"", f.id))
            });
            let flow_where = match f.sink_where {
                Some(w) => ctx.sink_where(&context, w, &known_attributes)?,
                None => sink_where.clone(),
            };
            goals.push(Goal {
                title: f.title.unwrap_or_else(|| f.id.clone()),
                description: f.description.unwrap_or_default(),
                id: f.id,
                kind: GoalKind::DataFlow {
                    source: f.source,
                    read_mode: f.read_mode.unwrap_or_else(|| "read".into()),
                    sink_modes: f
                        .sink_modes
                        .unwrap_or_else(|| vec!["write_external".into()]),
                    sink_tactics,
                    sink_where: flow_where,
                },
                scope: f.scope.unwrap_or(goal_scope),
                builtin: false,
                line,
            });
        }
        let mut ids = BTreeSet::new();
        for g in &goals {
            if !ids.insert(g.id.clone()) {
                return Err(ctx.invalid(format!("goal id `{}` is used twice", g.id)));
            }
        }
        if goals.is_empty() {
            warnings.push("no risk goals: nothing to prove".into());
        }

        // Monte Carlo.
        let rm = raw.montecarlo;
        let mut montecarlo = MonteCarloSpec::default();
        if let Some(v) = rm.runs {
            montecarlo.runs = v;
        }
        if let Some(v) = rm.max_steps {
            montecarlo.max_steps = v.max(1);
        }
        if let Some(v) = rm.seed {
            montecarlo.seed = v;
        }
        if let Some(p) = rm.grant_probability {
            if !(0.0..=1.0).contains(&p) {
                return Err(ctx.invalid(format!(
                    "montecarlo.grant_probability: {p} (expected a probability from 0 to 1)"
                )));
            }
            montecarlo.grant_probability = p;
        }
        match (rm.start, rm.transitions) {
            (None, None) => {}
            (start, transitions) => {
                let weights = |context: &str, m: BTreeMap<String, f64>| {
                    let mut out = Vec::new();
                    for (k, w) in m {
                        if !(w.is_finite() && w >= 0.0) {
                            return Err(ctx.invalid(format!(
                                "{context}.{k}: weight {w} (expected a non-negative number)"
                            )));
                        }
                        out.push((ctx.tactic(context, &k)?, w));
                    }
                    Ok(out)
                };
                let start = weights("montecarlo.start", start.unwrap_or_default())?;
                let mut trans = Vec::new();
                for (from, to) in transitions.unwrap_or_default() {
                    let from_t = ctx.tactic("montecarlo.transitions", &from)?;
                    trans.push((
                        from_t,
                        weights(&format!("montecarlo.transitions.{from}"), to)?,
                    ));
                }
                if start.iter().all(|(_, w)| *w == 0.0) {
                    return Err(ctx.invalid(
                        "montecarlo.start: expected at least one tactic with a positive weight",
                    ));
                }
                montecarlo.model = Some(MarkovSpec {
                    start,
                    transitions: trans,
                });
            }
        }

        Ok(Manifest {
            path: path.to_path_buf(),
            text: text.to_string(),
            name: raw.name.unwrap_or_else(|| {
                path.file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("manifest")
                    .to_string()
            }),
            description: raw.description,
            catalog,
            catalog_text,
            catalog_origin,
            sources,
            policy_origins,
            agents,
            approvers: raw.approvers,
            settings,
            builtin_goals,
            chain_phases,
            goal_scope,
            goals,
            arguments,
            sink_where,
            workload: raw.workload,
            montecarlo,
            warnings,
        })
    }

    /// The agent with this short name.
    pub fn agent(&self, name: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.name == name)
    }

    /// The 1-based line where `[agents.<name>]` starts, for SARIF.
    pub fn agent_line(&self, name: &str) -> Option<usize> {
        find_line(&self.text, |l| {
            l == format!("[agents.{name}]") || l == format!("[agents.\"{name}\"]")
        })
    }

    /// The manifest written back as TOML, with file paths relative to `base` (the directory the
    /// text will be written to) where possible. Goals are written as the manifest declares them:
    /// the built-in families enabled, then the custom ones.
    pub fn to_toml(&self, base: &Path) -> String {
        let mut out = String::new();
        let q = |s: &str| toml_string(s);
        let _ = writeln!(out, "name = {}", q(&self.name));
        if let Some(d) = &self.description {
            let _ = writeln!(out, "description = {}", q(d));
        }
        match &self.catalog_origin {
            CatalogOrigin::File(p) => {
                let _ = writeln!(out, "catalog = {}", q(&relative(base, p)));
            }
            CatalogOrigin::Inline => {}
        }
        let policies: Vec<String> = self
            .policy_origins
            .iter()
            .zip(&self.sources)
            .map(|(o, s)| match o {
                PolicyOrigin::File(p) => q(&relative(base, p)),
                PolicyOrigin::Inline(name) => {
                    format!(
                        "{{ name = {}, text = {} }}",
                        q(name),
                        toml_multiline(&s.text)
                    )
                }
            })
            .collect();
        if policies.is_empty() {
            let _ = writeln!(out, "policies = []");
        } else {
            let _ = writeln!(out, "policies = [\n  {},\n]", policies.join(",\n  "));
        }
        let _ = writeln!(out);
        let s = &self.settings;
        let decision = |d: DefaultDecision| match d {
            DefaultDecision::Allow => "allow",
            DefaultDecision::Deny => "deny",
        };
        let _ = writeln!(out, "[settings]");
        let _ = writeln!(
            out,
            "default_decision = {}",
            q(decision(s.default_decision))
        );
        let _ = writeln!(out, "unknown_tools = {}", q(decision(s.unknown_tools)));
        let _ = writeln!(out, "operator = {}", q(&s.operator));
        let _ = writeln!(out, "trust_domain = {}", q(&s.trust_domain));
        let _ = writeln!(
            out,
            "start = {}",
            q(&truststack_engine::event::format_time(s.start_ms))
        );
        let _ = writeln!(out, "step = {}", q(&format_duration(s.step_ms)));
        let _ = writeln!(out, "max_depth = {}", s.max_depth);
        let _ = writeln!(out, "max_states = {}", s.max_states);
        let _ = writeln!(out, "max_delegation_depth = {}", s.max_delegation_depth);
        let _ = writeln!(out, "waits = {}", s.waits);
        let _ = writeln!(out, "calls_per_second = {:?}", s.calls_per_second);
        if let Some(l) = s.approval_lease_ms {
            let _ = writeln!(out, "approval_lease = {}", q(&format_duration(l)));
        }
        let _ = writeln!(
            out,
            "fix_rate_limit = {}",
            q(&format!(
                "{}/{}",
                s.fix_rate_limit.0,
                format_duration(s.fix_rate_limit.1)
            ))
        );
        for a in &self.agents {
            let _ = writeln!(out);
            let _ = writeln!(out, "[agents.{}]", toml_key(&a.name));
            let _ = writeln!(out, "identity = {}", q(&a.identity));
            if let Some(d) = &a.description {
                let _ = writeln!(out, "description = {}", q(d));
            }
            if let Some(l) = &a.launched_by {
                let _ = writeln!(out, "launched_by = {}", q(l));
            }
            let _ = writeln!(out, "tools = {}", toml_list(&a.tools));
            let _ = writeln!(out, "delegates_to = {}", toml_list(&a.delegates_to));
        }
        if !self.approvers.is_empty() {
            let _ = writeln!(out, "\n[approvers]");
            for (g, members) in &self.approvers {
                let _ = writeln!(out, "{} = {}", toml_key(g), toml_list(members));
            }
        }
        if !self.arguments.is_empty() {
            let _ = writeln!(out, "\n[arguments]");
            for (tool, variants) in &self.arguments {
                let vs: Vec<String> = variants.iter().map(json_to_toml_inline).collect();
                let _ = writeln!(out, "{} = [{}]", toml_key(tool), vs.join(", "));
            }
        }
        if !self.workload.is_empty() {
            let _ = writeln!(out, "\n[workload]");
            for (tool, n) in &self.workload {
                let _ = writeln!(out, "{} = {n}", toml_key(tool));
            }
        }
        let _ = writeln!(out, "\n[goals]");
        let _ = writeln!(out, "builtin = {}", toml_list(&self.builtin_goals));
        let phases: Vec<String> = self
            .chain_phases
            .iter()
            .map(|p| p.name().to_string())
            .collect();
        let _ = writeln!(out, "gtg1002_phases = {}", toml_list(&phases));
        let _ = writeln!(out, "scope = {}", q(self.goal_scope.as_str()));
        if !self.sink_where.is_empty() {
            let _ = writeln!(out, "sink_where = {}", where_toml(&self.sink_where));
        }
        for g in self.goals.iter().filter(|g| !g.builtin) {
            let _ = writeln!(out);
            match &g.kind {
                GoalKind::Sequence { steps, .. } => {
                    let _ = writeln!(out, "[[goals.sequence]]");
                    let _ = writeln!(out, "id = {}", q(&g.id));
                    let _ = writeln!(out, "title = {}", q(&g.title));
                    if !g.description.is_empty() {
                        let _ = writeln!(out, "description = {}", q(&g.description));
                    }
                    let steps: Vec<String> = steps
                        .iter()
                        .map(|s| {
                            let names: Vec<String> =
                                s.tactics.iter().map(|t| t.name().to_string()).collect();
                            toml_list(&names)
                        })
                        .collect();
                    let _ = writeln!(out, "steps = [{}]", steps.join(", "));
                }
                GoalKind::DataFlow {
                    source,
                    read_mode,
                    sink_modes,
                    sink_tactics,
                    sink_where,
                } => {
                    let _ = writeln!(out, "[[goals.data_flow]]");
                    let _ = writeln!(out, "id = {}", q(&g.id));
                    let _ = writeln!(out, "title = {}", q(&g.title));
                    if !g.description.is_empty() {
                        let _ = writeln!(out, "description = {}", q(&g.description));
                    }
                    let _ = writeln!(out, "source = {}", q(source));
                    let _ = writeln!(out, "read_mode = {}", q(read_mode));
                    let _ = writeln!(out, "sink_modes = {}", toml_list(sink_modes));
                    let tactics: Vec<String> =
                        sink_tactics.iter().map(|t| t.name().to_string()).collect();
                    let _ = writeln!(out, "sink_tactics = {}", toml_list(&tactics));
                    if !sink_where.is_empty() {
                        let _ = writeln!(out, "sink_where = {}", where_toml(sink_where));
                    }
                }
            }
            let _ = writeln!(out, "scope = {}", q(g.scope.as_str()));
        }
        let m = &self.montecarlo;
        let _ = writeln!(out, "\n[montecarlo]");
        let _ = writeln!(out, "runs = {}", m.runs);
        let _ = writeln!(out, "max_steps = {}", m.max_steps);
        let _ = writeln!(out, "seed = {}", m.seed);
        let _ = writeln!(out, "grant_probability = {:?}", m.grant_probability);
        if let Some(model) = &m.model {
            let w = |ws: &[(Tactic, f64)]| {
                let parts: Vec<String> = ws
                    .iter()
                    .map(|(t, w)| format!("{} = {w:?}", t.name()))
                    .collect();
                format!("{{ {} }}", parts.join(", "))
            };
            let _ = writeln!(out, "start = {}", w(&model.start));
            let _ = writeln!(out, "\n[montecarlo.transitions]");
            for (from, to) in &model.transitions {
                let _ = writeln!(out, "{} = {}", from.name(), w(to));
            }
        }
        if self.catalog_origin == CatalogOrigin::Inline {
            let _ = writeln!(out, "\n# The catalog, inline.");
            for line in self.catalog_text.lines() {
                // Re-root every table of the catalog file under `catalog.`.
                let t = line.trim_start();
                if let Some(rest) = t.strip_prefix("[[") {
                    let _ = writeln!(out, "[[catalog.{rest}");
                } else if let Some(rest) = t.strip_prefix('[') {
                    let _ = writeln!(out, "[catalog.{rest}");
                } else {
                    let _ = writeln!(out, "{line}");
                }
            }
        }
        out
    }
}

/// Catalog tools named `name`, or carrying it as a class (sorted); empty when none.
pub fn expand_tool(catalog: &Catalog, name: &str) -> Vec<String> {
    if catalog.tools.contains_key(name) {
        return vec![name.to_string()];
    }
    catalog
        .tools
        .iter()
        .filter(|(_, spec)| spec.classes.iter().any(|c| c == name))
        .map(|(n, _)| n.clone())
        .collect()
}

/// A TOML basic string (JSON string escapes are valid TOML).
pub fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn toml_multiline(s: &str) -> String {
    if !s.contains("'''") && !s.ends_with('\'') {
        format!("'''\n{s}'''")
    } else {
        toml_string(s)
    }
}

fn toml_key(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !s.is_empty()
    {
        s.to_string()
    } else {
        toml_string(s)
    }
}

fn toml_list(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| toml_string(s)).collect();
    format!("[{}]", parts.join(", "))
}

fn where_toml(conditions: &[ArgCondition]) -> String {
    let parts: Vec<String> = conditions
        .iter()
        .map(|c| format!("{} = {}", toml_key(&c.attribute), toml_list(&c.values)))
        .collect();
    format!("{{ {} }}", parts.join(", "))
}

fn json_to_toml_inline(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let parts: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{} = {}", toml_key(k), json_to_toml_inline(v)))
                .collect();
            format!("{{ {} }}", parts.join(", "))
        }
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(json_to_toml_inline).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::String(s) => toml_string(s),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => "\"\"".into(),
    }
}

/// `target` relative to directory `base` when both resolve on disk; else `target` absolute (or
/// as given).
pub fn relative(base: &Path, target: &Path) -> String {
    let (Ok(b), Ok(t)) = (base.canonicalize(), target.canonicalize()) else {
        return target.display().to_string();
    };
    let bc: Vec<_> = b.components().collect();
    let tc: Vec<_> = t.components().collect();
    let common = bc.iter().zip(&tc).take_while(|(x, y)| x == y).count();
    let mut rel = PathBuf::new();
    for _ in common..bc.len() {
        rel.push("..");
    }
    for c in tc.iter().skip(common) {
        rel.push(c.as_os_str());
    }
    rel.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(Path::new("m.toml"), text)
    }

    const CATALOG: &str = r#"
[catalog.tools.scan]
classes = ["ScanTool"]
tactics = ["reconnaissance"]
[catalog.tools.db]
data_source = { name = "DB", mode = "read" }
tactics = ["collection"]
[catalog.tools.up]
mode = "write_external"
tactics = ["exfiltration"]
"#;

    #[test]
    fn a_minimal_manifest_loads_with_defaults() {
        let m = parse(&format!(
            "[agents.a]\ntools = [\"ScanTool\", \"db\"]\n{CATALOG}"
        ))
        .unwrap();
        assert_eq!(m.agents[0].tools, vec!["scan", "db"]);
        assert_eq!(m.agents[0].identity, "spiffe://truststack.sim/agent/a");
        assert!(m.goals.iter().any(|g| g.id == "data-exfiltration:DB"));
        assert!(m.goals.iter().any(|g| g.id == "gtg1002-chain"));
    }

    #[test]
    fn errors_name_the_field_and_what_was_expected() {
        let e = parse(&format!(
            "[agents.a]\ntools = []\ndelegates_to = [\"bb\"]\n[agents.b]\n{CATALOG}"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("m.toml: agents.a.delegates_to: no agent `bb` (did you mean `b`?)"),
            "{e}"
        );
        let e = parse("[agents.a]\ntools = []\n").unwrap_err().to_string();
        assert!(e.contains("no `catalog`"), "{e}");
        let e = parse(&format!(
            "[agents.a]\ntools=[]\n[[goals.sequence]]\nid = \"x\"\nsteps = [\"reconaissance\"]\n{CATALOG}"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("did you mean `reconnaissance`"), "{e}");
        let e = parse("[agents.a]\ntools = 3\n").unwrap_err().to_string();
        assert!(e.starts_with("m.toml: not a valid manifest: line 2"), "{e}");
        let e = parse(&format!(
            "[approvers]\ng = [\"spiffe://x\"]\n[agents.a]\ntools=[]\n{CATALOG}"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("agents cannot approve"), "{e}");
    }

    #[test]
    fn written_manifests_load_back_equal() {
        let text = format!(
            "name = \"t\"\npolicies = [{{ name = \"p\", text = \"POLICY x: ACTION: DENY IF Tool_Call('up')\" }}]\n\
             [agents.a]\ntools = [\"scan\"]\ndelegates_to = [\"b\"]\nlaunched_by = \"user:o\"\n\
             [agents.b]\ntools = [\"up\"]\n[arguments]\nscan = [{{ target = \"10.0.0.0/8\" }}]\n\
             [workload]\nscan = 65536\n{CATALOG}"
        );
        let m = parse(&text).unwrap();
        let written = m.to_toml(Path::new("."));
        let back = parse(&written).unwrap_or_else(|e| panic!("{e}\n{written}"));
        assert_eq!(back.agents, m.agents);
        assert_eq!(back.settings, m.settings);
        assert_eq!(back.arguments, m.arguments);
        assert_eq!(back.workload, m.workload);
        assert_eq!(back.goals.len(), m.goals.len());
        assert_eq!(&*back.sources[0].text, &*m.sources[0].text);
        assert_eq!(back.catalog.tools.len(), 3);
    }
}
