//! SARIF 2.1.0, so findings show up in code-scanning UIs.
//!
//! One rule per goal (`ruleId` = the goal id) plus `toxic-combination`. Results:
//!
//! | goal status | level | kind |
//! |---|---|---|
//! | unguarded | `error` | `fail` |
//! | unknown (bounded search) | `warning` | `fail` |
//! | gated | `note` | `fail` (informational: a human must say yes) |
//! | unreachable | `none` | `pass` |
//!
//! Toxic combinations are `error` results located at the holder's `[agents.<name>]` table.
//! Every location points into the manifest file (line of the goal's declaration when known).

use crate::analysis::{Analysis, Status};
use crate::toxic::HolderKind;
use serde_json::{json, Value};

fn uri(path: &str) -> String {
    let p = path.replace('\\', "/");
    let p = p.strip_prefix("./").unwrap_or(&p).to_string();
    if p.starts_with('/') {
        format!("file://{p}")
    } else {
        p
    }
}

fn location(a: &Analysis, line: Option<usize>) -> Value {
    let mut phys = json!({"artifactLocation": {"uri": uri(&a.manifest), "index": 0}});
    if let Some(l) = line {
        phys["region"] = json!({"startLine": l});
    }
    json!({"physicalLocation": phys})
}

/// The SARIF log. `agent_lines` gives the line of each agent's table in the manifest.
pub fn render(a: &Analysis, agent_lines: &dyn Fn(&str) -> Option<usize>) -> String {
    let mut rules: Vec<Value> = a
        .goals
        .iter()
        .map(|g| {
            let tags: Vec<String> = g
                .tactics
                .iter()
                .map(|t| format!("{} {}", t.attack_id, t.title))
                .collect();
            json!({
                "id": g.id,
                "name": g.title,
                "shortDescription": {"text": format!("{}: {}", g.title, g.summary)},
                "fullDescription": {"text": g.description},
                "defaultConfiguration": {"level": "error"},
                "help": {"text": "An adversarial orchestration can reach this risk goal. Split the identity that holds the toxic combination, add a REQUIRE_HITL policy between the tactics at the delegation root, or run `truststack prove --fix`."},
                "properties": {"tags": tags, "scope": g.scope.as_str()},
            })
        })
        .collect();
    rules.push(json!({
        "id": "toxic-combination",
        "name": "Toxic tool combination",
        "shortDescription": {"text": "One identity or orchestration holds a minimal set of tools that reaches a risk goal unguarded"},
        "fullDescription": {"text": "The holder can reach the goal without any human gate using only these tools. Split the identity so no part holds the combination, and gate the orchestration."},
        "defaultConfiguration": {"level": "error"},
    }));
    let mut results = Vec::new();
    for (i, g) in a.goals.iter().enumerate() {
        let (level, kind) = match g.status {
            Status::Unguarded => ("error", "fail"),
            Status::Unknown => ("warning", "fail"),
            Status::Gated => ("note", "fail"),
            Status::Unreachable => ("none", "pass"),
        };
        let message = match (&g.status, &g.trajectory) {
            (Status::Unguarded, Some(t)) => format!(
                "Goal `{}` ({}) is reachable without a human gate: {} call(s): {}.",
                g.id,
                g.summary,
                t.calls(),
                t.steps
                    .iter()
                    .map(|s| format!("{} {}", s.actor, s.tool))
                    .collect::<Vec<_>>()
                    .join(" → ")
            ),
            (Status::Gated, Some(t)) => format!(
                "Goal `{}` is reachable only through a human gate ({}).",
                g.id,
                t.gates.join(", ")
            ),
            (Status::Unreachable, _) => {
                format!("Goal `{}` is unreachable under the policies.", g.id)
            }
            _ => format!(
                "Goal `{}` was not reached, but the exploration hit a bound: {}.",
                g.id,
                a.exploration.bound.clone().unwrap_or_default()
            ),
        };
        let mut r = json!({
            "ruleId": g.id,
            "ruleIndex": i,
            "level": level,
            "kind": kind,
            "message": {"text": message},
            "locations": [location(a, g.line)],
            "properties": {"status": g.status.as_str()},
        });
        if let Some(t) = &g.trajectory {
            r["properties"]["trajectory"] = json!(t.events);
            r["properties"]["gates"] = json!(t.gates);
        }
        results.push(r);
    }
    let toxic_index = a.goals.len();
    for t in &a.toxic {
        let holder = match t.holder {
            HolderKind::AgentIdentity => format!("Agent `{}`", t.holder_name),
            HolderKind::DelegationRoot => format!(
                "The orchestration under `{}` (split across {})",
                t.holder_name,
                t.held_by.join(", ")
            ),
        };
        results.push(json!({
            "ruleId": "toxic-combination",
            "ruleIndex": toxic_index,
            "level": "error",
            "kind": "fail",
            "message": {"text": format!(
                "{holder} holds the toxic combination {{{}}} ({}), which reaches goal `{}` unguarded.",
                t.classes.join(", "),
                t.tool_sets.iter().map(|s| s.join(" + ")).collect::<Vec<_>>().join(" or "),
                t.goal
            )},
            "locations": [location(a, agent_lines(&t.holder_name))],
            "properties": {"goal": t.goal, "classes": t.classes, "tool_sets": t.tool_sets},
        }));
    }
    let log = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "truststack-prove",
                "fullName": "TrustStack proving ground",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "artifacts": [{"location": {"uri": uri(&a.manifest)}}],
            "results": results,
        }],
    });
    serde_json::to_string_pretty(&log).unwrap_or_default()
}
