//! The terminal summary `truststack prove` prints.

use super::{
    change_line, decision_word, exploration_line, grouped, joined_or_none, pct, status_word,
    time_cell, trajectory_file, verdict_line,
};
use crate::analysis::{Analysis, Status};
use crate::quant::human_duration;
use crate::toxic::HolderKind;
use std::fmt::Write as _;

struct Paint {
    color: bool,
}

impl Paint {
    fn code(&self, code: &str, t: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{t}\x1b[0m")
        } else {
            t.to_string()
        }
    }
    fn bold(&self, t: &str) -> String {
        self.code("1", t)
    }
    fn dim(&self, t: &str) -> String {
        self.code("2", t)
    }
    fn status(&self, s: Status) -> String {
        let w = format!("{:<11}", status_word(s));
        match s {
            Status::Unguarded => self.code("1;31", &w),
            Status::Gated => self.code("33", &w),
            Status::Unreachable => self.code("32", &w),
            Status::Unknown => self.code("35", &w),
        }
    }
}

fn mark(s: Status) -> &'static str {
    match s {
        Status::Unguarded => "✗",
        Status::Gated => "⏸",
        Status::Unreachable => "✓",
        Status::Unknown => "?",
    }
}

/// Renders the summary; `trajectories` is where trajectory files were written (if they were),
/// for the replay commands.
pub fn render(a: &Analysis, color: bool, trajectories: Option<&str>) -> String {
    let p = Paint { color };
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}",
        p.bold(&format!("TrustStack proving ground — {}", a.name))
    );
    let _ = writeln!(o, "  manifest    {}", a.manifest);
    let tools: std::collections::BTreeSet<&str> = a
        .agents
        .iter()
        .flat_map(|x| x.tools.iter().map(String::as_str))
        .collect();
    let _ = writeln!(
        o,
        "  agents      {} ({} delegation chain(s), {} tools, {} moves)",
        a.agents.len(),
        a.exploration.actors,
        tools.len(),
        a.exploration.moves
    );
    let pol: Vec<&str> = a.policies.iter().map(|x| x.id.as_str()).collect();
    let _ = writeln!(o, "  policies    {}", joined_or_none(&pol, ", "));
    let _ = writeln!(o, "  approvers   {}", a.approvers.join(", "));
    let _ = writeln!(o, "  explored    {}", exploration_line(a));

    let _ = writeln!(o, "\n{}", p.bold("Goals"));
    let width = a.goals.iter().map(|g| g.id.len()).max().unwrap_or(0);
    for g in &a.goals {
        let calls = g
            .trajectory
            .as_ref()
            .map(|t| format!("{} call(s)", t.calls()))
            .unwrap_or_default();
        let gates = g
            .trajectory
            .as_ref()
            .filter(|t| !t.gates.is_empty())
            .map(|t| format!(", gate: {}", t.gates.join(", ")))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "  {} {} {:<width$}  {}",
            mark(g.status),
            p.status(g.status),
            g.id,
            p.dim(&format!("{}{}", calls, gates)),
        );
        let _ = writeln!(o, "      {}", p.dim(&g.summary));
        if let Some(why) = &g.unknown_reason {
            let _ = writeln!(o, "      unknown: {why}");
        }
    }

    for g in a.goals.iter().filter(|g| g.trajectory.is_some()) {
        let Some(t) = &g.trajectory else { continue };
        let _ = writeln!(
            o,
            "\n{} {}",
            p.bold(&format!("Evidence — {}", g.id)),
            p.dim(&format!("(shortest trajectory, {})", g.status.as_str()))
        );
        let aw = t
            .steps
            .iter()
            .map(|s| s.actor.chars().count())
            .max()
            .unwrap_or(0);
        let tw = t
            .steps
            .iter()
            .map(|s| s.call_label().chars().count())
            .max()
            .unwrap_or(0);
        for s in &t.steps {
            let tactics: Vec<&str> = s.tactics.iter().map(|t| t.name()).collect();
            let wait = s
                .waited_ms
                .map(|w| format!(" (after waiting {})", human_duration(w as f64)))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "  {:<4} {:<aw$}  {:<tw$}  {:<28} {}{}",
                s.call_id,
                s.actor,
                s.call_label(),
                tactics.join(", "),
                decision_word(s),
                wait
            );
        }
        let trace = match trajectories {
            Some(dir) => format!("{dir}/{}", trajectory_file(&g.id)),
            None => trajectory_file(&g.id),
        };
        let _ = writeln!(
            o,
            "  {}",
            p.dim(&format!("replay: {}", a.replay.command(&trace)))
        );
    }

    if !a.toxic.is_empty() {
        let _ = writeln!(
            o,
            "\n{} {}",
            p.bold("Toxic combinations"),
            p.dim("(minimal tool sets that reach a goal unguarded)")
        );
        for t in &a.toxic {
            let who = match t.holder {
                HolderKind::AgentIdentity => format!("{} (agent identity)", t.holder_name),
                HolderKind::DelegationRoot => format!(
                    "{} (delegation root, split across {})",
                    t.holder_name,
                    t.held_by.join(", ")
                ),
            };
            let _ = writeln!(o, "  {who}: {{{}}} → {}", t.classes.join(", "), t.goal);
            let sets: Vec<String> = t.tool_sets.iter().map(|s| s.join(" + ")).collect();
            let _ = writeln!(
                o,
                "      {}",
                p.dim(&format!("tools: {}", sets.join("  |  ")))
            );
        }
    }

    let timed = a.times_to_goal();
    if !timed.is_empty() || !a.sweeps.is_empty() {
        let _ = writeln!(
            o,
            "\n{} {}",
            p.bold("Time to goal"),
            p.dim(&format!(
                "(one call at a time, {} calls/s, with the manifest's workload)",
                a.calls_per_second
            ))
        );
        for (g, t) in timed {
            let _ = writeln!(
                o,
                "  {:<width$}  {:>10} calls  {}",
                g.id,
                grouped(t.calls),
                time_cell(g)
            );
            for l in &t.limits {
                let _ = writeln!(
                    o,
                    "      {}",
                    p.dim(&format!(
                        "limited by {}: {} {} per {} at {} ({} calls delayed)",
                        l.limit.policy,
                        l.limit.max_calls,
                        l.limit.pattern,
                        truststack_policy::duration::format_duration(l.limit.window_ms),
                        l.limit.target.as_str(),
                        grouped(l.throttled_calls)
                    ))
                );
            }
        }
        for s in &a.sweeps {
            let _ = writeln!(
                o,
                "  sweep: {} × {} by {}: unlimited {}, under the policies {}",
                s.tool,
                grouped(s.calls),
                s.actor,
                human_duration(s.unlimited_ms),
                s.limited_ms.map_or("never".into(), human_duration)
            );
        }
    }

    if let Some(mc) = &a.montecarlo {
        let _ = writeln!(
            o,
            "\n{} {}",
            p.bold("Monte Carlo"),
            p.dim(&format!(
                "({} runs, seed {}, ≤{} steps, grant probability {}, {} model, {} thread(s))",
                mc.runs,
                mc.seed,
                mc.max_steps,
                mc.grant_probability,
                if mc.model.builtin {
                    "built-in campaign"
                } else {
                    "manifest's"
                },
                mc.threads
            ))
        );
        for g in &mc.goals {
            let speed = match (&g.steps, &g.time_ms) {
                (Some(s), Some(t)) => {
                    format!("median {} calls / {}", s.median, human_duration(t.median))
                }
                _ => "never reached".into(),
            };
            let _ = writeln!(
                o,
                "  {:<width$}  reached {:>6} [{}, {}]  unguarded {:>6}  {}",
                g.goal,
                pct(g.rate),
                pct(g.rate_ci.0),
                pct(g.rate_ci.1),
                pct(g.unguarded_rate),
                speed
            );
            if let Some(note) = &g.note {
                let _ = writeln!(o, "      {}", p.dim(note));
            }
        }
        let _ = writeln!(
            o,
            "  {}",
            p.dim(&format!(
                "{} simulated decisions in {:.0} ms ({:.2}M decisions/s)",
                grouped(mc.decisions),
                mc.elapsed_ms,
                mc.decisions_per_second / 1e6
            ))
        );
    }

    if let Some(fix) = &a.fix {
        let _ = writeln!(o, "\n{}", p.bold("Fix (proved in this run)"));
        if fix.changes.is_empty() {
            let _ = writeln!(o, "  nothing to change");
        }
        for c in &fix.changes {
            let _ = writeln!(o, "  • {}", change_line(c));
        }
        for u in &fix.unresolved {
            let _ = writeln!(o, "  ! {u}");
        }
        for w in &fix.written {
            let _ = writeln!(o, "  wrote {w}");
        }
        let proof = &fix.proof;
        let summary: Vec<String> = proof
            .goals
            .iter()
            .map(|g| format!("{} {}", g.id, g.status.as_str()))
            .collect();
        let _ = writeln!(o, "  proof: {}", summary.join(", "));
        if let Some(c) = &fix.shared_orchestrator {
            let _ = writeln!(
                o,
                "  with a shared orchestrator over the split identities ({}): {}",
                c.orchestrators.join(", "),
                if c.safe { "safe" } else { "NOT SAFE" }
            );
        }
        let _ = writeln!(
            o,
            "  fixed manifest: {}",
            if fix.safe {
                p.code("1;32", "SAFE")
            } else if fix.unknown() {
                p.code("1;33", "UNKNOWN (see the lines marked ! above)")
            } else {
                p.code("1;31", "NOT SAFE")
            }
        );
        for alt in &fix.alternatives {
            let _ = writeln!(
                o,
                "\n  {} {}",
                p.bold(&format!("Alternative `{}`:", alt.id)),
                alt.title
            );
            for c in &alt.changes {
                let _ = writeln!(o, "    • {}", change_line(c));
            }
            for u in &alt.unresolved {
                let _ = writeln!(o, "    ! {u}");
            }
            for w in &alt.written {
                let _ = writeln!(o, "    wrote {w}");
            }
            let summary: Vec<String> = alt
                .statuses
                .iter()
                .map(|(g, s)| format!("{g} {}", s.as_str()))
                .collect();
            let _ = writeln!(o, "    proof: {}", summary.join(", "));
            let _ = writeln!(
                o,
                "    {}",
                if alt.safe {
                    p.code("1;32", "SAFE")
                } else {
                    p.code("1;31", "NOT SAFE")
                }
            );
        }
    }

    for w in &a.warnings {
        let _ = writeln!(o, "\nwarning: {w}");
    }
    let verdict = verdict_line(a);
    let _ = writeln!(
        o,
        "\n{} {}",
        p.bold("Verdict"),
        if a.safe {
            p.code("1;32", &verdict)
        } else {
            p.code("1;31", &verdict)
        }
    );
    o
}
