//! Generated manifests for benchmarks and property tests: `tools` tools spread over the campaign
//! tactics, `agents` agents (one orchestrator delegating to the others, plus one more top-level
//! agent), and a policy set that gates some goals, limits scans and guards one data source.

use crate::rng::Rng;
use std::fmt::Write as _;

const TACTICS: [&str; 10] = [
    "reconnaissance",
    "discovery",
    "vulnerability_discovery",
    "initial_access",
    "execution",
    "credential_access",
    "lateral_movement",
    "collection",
    "exfiltration",
    "",
];

/// A manifest (TOML text, with its catalog and policies inline), with time windows and a depth
/// bound of 10.
pub fn manifest(tools: usize, agents: usize, seed: u64) -> String {
    generate(&Shape {
        tools,
        agents,
        seed,
        windows: true,
        max_depth: Some(10),
        per_identity: false,
    })
}

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub tools: usize,
    pub agents: usize,
    pub seed: u64,
    /// Policies that read time windows (a rate limit, a taint that expires, a recent-call
    /// condition), so the search also waits; without, the same policies with no window.
    pub windows: bool,
    /// `settings.max_depth` (`None`: the default, 16).
    pub max_depth: Option<usize>,
    /// Goals per agent identity instead of per delegation root.
    pub per_identity: bool,
}

/// A manifest of the given shape.
pub fn generate(shape: &Shape) -> String {
    let Shape {
        tools,
        agents,
        seed,
        windows,
        max_depth,
        per_identity,
    } = *shape;
    let mut rng = Rng::for_run(seed, 0);
    let tools = tools.max(2);
    let agents = agents.max(2);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "name = \"synthetic {tools} tools, {agents} agents (seed {seed}{})\"",
        if windows { ", windows" } else { "" }
    );
    let policies = if windows {
        "POLICY scan-limit: ACTION: DENY TARGET: delegation_root IF Tool_Call('Recon').Count > 50 requests/5min
POLICY escalation: ACTION: REQUIRE_HITL TARGET: delegation_root IF Tool_Call('Exploit') AND Trajectory_Contains('Recon') AND Trajectory_Contains('Analysis')
POLICY db-a-egress: ACTION: DENY TARGET: agent_identity IF DataSource('DB_A') == 'read' WITHIN 1h AND Tool_Call('Egress')
POLICY lateral-after-creds: ACTION: REQUIRE_HITL TARGET: delegation_root IF Tool_Call('Lateral') AND Trajectory_Contains('Creds') WITHIN 10min"
    } else {
        "POLICY escalation: ACTION: REQUIRE_HITL TARGET: delegation_root IF Tool_Call('Exploit') AND Trajectory_Contains('Recon') AND Trajectory_Contains('Analysis')
POLICY db-a-egress: ACTION: DENY TARGET: agent_identity IF DataSource('DB_A') == 'read' AND Tool_Call('Egress')
POLICY lateral-after-creds: ACTION: REQUIRE_HITL TARGET: delegation_root IF Tool_Call('Lateral') AND Trajectory_Contains('Creds')"
    };
    let _ = writeln!(
        o,
        "policies = [{{ name = \"synthetic\", text = '''\n{policies}\n''' }}]"
    );
    let _ = writeln!(o, "[settings]");
    if let Some(d) = max_depth {
        let _ = writeln!(o, "max_depth = {d}");
    }
    let _ = writeln!(o, "operator = \"user:op@synthetic.example\"");
    if per_identity {
        let _ = writeln!(o, "[goals]\nscope = \"agent_identity\"");
    }
    let _ = writeln!(
        o,
        "[approvers]\noncall = [\"user:oncall@synthetic.example\"]"
    );
    let _ = writeln!(
        o,
        "[montecarlo]\nruns = 200\nmax_steps = 40\ngrant_probability = 0.2"
    );
    // Agents: agent-0 orchestrates 1..agents-1; agent-{last} is also launched directly.
    let mut held: Vec<Vec<String>> = vec![Vec::new(); agents];
    for t in 0..tools {
        let a = 1 + rng.below(agents - 1);
        held[a].push(format!("tool_{t:02}"));
        if rng.unit() < 0.3 {
            let b = 1 + rng.below(agents - 1);
            if b != a {
                held[b].push(format!("tool_{t:02}"));
            }
        }
    }
    for (a, tools) in held.iter().enumerate() {
        let _ = writeln!(o, "[agents.agent-{a}]");
        let list: Vec<String> = tools.iter().map(|t| format!("\"{t}\"")).collect();
        let _ = writeln!(o, "tools = [{}]", list.join(", "));
        if a == 0 {
            let d: Vec<String> = (1..agents).map(|i| format!("\"agent-{i}\"")).collect();
            let _ = writeln!(o, "delegates_to = [{}]", d.join(", "));
            let _ = writeln!(o, "launched_by = \"user:op@synthetic.example\"");
        }
        if a == agents - 1 {
            let _ = writeln!(o, "launched_by = \"user:other@synthetic.example\"");
        }
    }
    for t in 0..tools {
        let tactic = TACTICS[t % TACTICS.len()];
        let _ = writeln!(o, "[catalog.tools.tool_{t:02}]");
        let class = match tactic {
            "reconnaissance" | "discovery" => "Recon",
            "vulnerability_discovery" => "Analysis",
            "initial_access" | "execution" => "Exploit",
            "credential_access" => "Creds",
            "lateral_movement" => "Lateral",
            "collection" => "Collect",
            "exfiltration" => "Egress",
            _ => "Benign",
        };
        let _ = writeln!(o, "classes = [\"{class}\"]");
        if !tactic.is_empty() {
            let _ = writeln!(o, "tactics = [\"{tactic}\"]");
        }
        if tactic == "collection" {
            let db = if t % 2 == 0 { "DB_A" } else { "DB_B" };
            let _ = writeln!(o, "data_source = {{ name = \"{db}\", mode = \"read\" }}");
        }
        if tactic == "exfiltration" {
            let _ = writeln!(o, "mode = \"write_external\"");
        }
    }
    o
}
