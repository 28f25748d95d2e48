//! The safety case as Markdown: what was analysed, what an adversary can reach, the evidence,
//! the toxic combinations, how long it takes, how often stochastic agents get there, and the fix.

use super::{
    change_line, decision_word, exploration_line, grouped, joined_or_none, pct, status_word,
    time_cell, trajectory_cell, trajectory_file, verdict_line, METHOD,
};
use crate::analysis::{Analysis, GoalReport};
use crate::quant::human_duration;
use crate::toxic::HolderKind;
use std::fmt::Write as _;
use truststack_policy::duration::format_duration;

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn evidence(o: &mut String, a: &Analysis, g: &GoalReport, trajectories: Option<&str>, level: &str) {
    let Some(t) = &g.trajectory else { return };
    let _ = writeln!(o, "{level} `{}` — {}\n", g.id, status_word(g.status));
    let _ = writeln!(
        o,
        "{} ({}). Shortest trajectory: {} call(s) over {} of simulated time{}.\n",
        g.title,
        g.summary,
        t.calls(),
        human_duration(t.duration_ms as f64),
        if t.gates.is_empty() {
            ", no human gate on the way".to_string()
        } else {
            format!(", through the gate of {}", t.gates.join(", "))
        }
    );
    let _ = writeln!(
        o,
        "| # | time | acting agent (delegation) | tool | tactics | decision | policies |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|");
    for s in &t.steps {
        let tactics: Vec<String> = s
            .tactics
            .iter()
            .map(|t| format!("{} ({})", t.name(), t.attack_id()))
            .collect();
        let wait = s
            .waited_ms
            .map(|w| format!(" (after waiting {})", human_duration(w as f64)))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "| {} | {}{} | {} | `{}` | {} | {} | {} |",
            s.call_id,
            s.time,
            wait,
            cell(&s.actor),
            s.call_label().replace('|', "\\|"),
            tactics.join(", "),
            cell(&decision_word(s)),
            cell(&s.policies.join(", "))
        );
    }
    let trace = match trajectories {
        Some(dir) => format!("{dir}/{}", trajectory_file(&g.id)),
        None => trajectory_file(&g.id),
    };
    let _ = writeln!(
        o,
        "\nReplay it (the trace below is `{trace}`):\n\n```sh\n{}\n```\n",
        a.replay.command(&trace)
    );
    let _ = writeln!(o, "```jsonl\n{}```\n", t.jsonl());
    if !t.replay_consistent {
        let _ = writeln!(
            o,
            "> **Warning:** the replay did not reproduce the explored decisions.\n"
        );
    }
}

fn body(o: &mut String, a: &Analysis, trajectories: Option<&str>, h: &str) {
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| Manifest | `{}` |", a.manifest);
    if let Some(d) = &a.description {
        let _ = writeln!(o, "| Description | {} |", cell(d));
    }
    let agents: Vec<String> = a
        .agents
        .iter()
        .map(|x| {
            let mut s = format!(
                "`{}` holds {}",
                x.name,
                if x.tools.is_empty() {
                    "no tools".to_string()
                } else {
                    x.tools
                        .iter()
                        .map(|t| format!("`{t}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
            if !x.delegates_to.is_empty() {
                s.push_str(&format!(", delegates to {}", x.delegates_to.join(", ")));
            }
            if let Some(l) = &x.launched_by {
                s.push_str(&format!(", launched by `{l}`"));
            }
            s
        })
        .collect();
    let _ = writeln!(o, "| Agents | {} |", cell(&agents.join("; ")));
    let pols: Vec<String> = a
        .policies
        .iter()
        .map(|p| format!("`{}` ({}, {})", p.id, p.action.as_str(), p.target.as_str()))
        .collect();
    let _ = writeln!(o, "| Policies | {} |", joined_or_none(&pols, ", "));
    let _ = writeln!(o, "| Approvers | {} |", a.approvers.join(", "));
    let _ = writeln!(o, "| Exploration | {} |", cell(&exploration_line(a)));
    let _ = writeln!(o);

    let _ = writeln!(o, "{h} Risk goals\n");
    let _ = writeln!(
        o,
        "| goal | what | scope | status | shortest trajectory | time to goal |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    for g in &a.goals {
        let traj = trajectory_cell(g);
        let _ = writeln!(
            o,
            "| `{}` | {} | {} | **{}** | {} | {} |",
            g.id,
            cell(&g.summary),
            g.scope.as_str(),
            status_word(g.status),
            traj,
            time_cell(g)
        );
    }
    let _ = writeln!(o);
    for g in &a.goals {
        if let Some(why) = &g.unknown_reason {
            let _ = writeln!(o, "- `{}` is **unknown**: {}", g.id, why);
        }
    }
    if a.goals.iter().any(|g| g.unknown_reason.is_some()) {
        let _ = writeln!(o);
    }
    let tactics: std::collections::BTreeSet<String> = a
        .goals
        .iter()
        .flat_map(|g| g.tactics.iter())
        .map(|t| {
            if t.extension {
                format!(
                    "`{}` (TrustStack extension; closest ATT&CK: TA0043, T1595.002)",
                    t.name
                )
            } else {
                format!("`{}` {}", t.name, t.attack_id)
            }
        })
        .collect();
    let _ = writeln!(
        o,
        "Tactics in these goals (MITRE ATT&CK Enterprise): {}.\n",
        tactics.into_iter().collect::<Vec<_>>().join(", ")
    );

    let with_evidence: Vec<&GoalReport> =
        a.goals.iter().filter(|g| g.trajectory.is_some()).collect();
    if !with_evidence.is_empty() {
        let _ = writeln!(o, "{h} Evidence\n");
        let sub = format!("{h}#");
        for g in with_evidence {
            evidence(o, a, g, trajectories, &sub);
        }
    }

    if !a.toxic.is_empty() {
        let _ = writeln!(o, "{h} Toxic combinations\n");
        let _ = writeln!(
            o,
            "Minimal sets of tools that let one holder reach a goal without a human gate.\n"
        );
        let _ = writeln!(o, "| holder | classes | tool sets | goal |");
        let _ = writeln!(o, "|---|---|---|---|");
        for t in &a.toxic {
            let holder = match t.holder {
                HolderKind::AgentIdentity => format!("agent `{}`", t.holder_name),
                HolderKind::DelegationRoot => format!(
                    "delegation root `{}` (split across {})",
                    t.holder_name,
                    t.held_by.join(", ")
                ),
            };
            let sets: Vec<String> = t
                .tool_sets
                .iter()
                .map(|s| format!("{{{}}}", s.join(", ")))
                .collect();
            let _ = writeln!(
                o,
                "| {holder} | {{{}}} | {} | `{}` |",
                t.classes.join(", "),
                sets.join(" or "),
                t.goal
            );
        }
        let _ = writeln!(o);
    }

    let timed = a.times_to_goal();
    if !timed.is_empty() || !a.sweeps.is_empty() {
        let _ = writeln!(o, "{h} Time to goal\n");
        let _ = writeln!(
            o,
            "One call at a time at {} calls per second, each step of the shortest trajectory \
             repeated as often as the manifest's workload says, delayed by every rate limit the \
             policies certainly apply.\n",
            a.calls_per_second
        );
        let _ = writeln!(
            o,
            "| goal | calls | unlimited | under the policies | limits |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|");
        for (g, t) in timed {
            let limits: Vec<String> = t
                .limits
                .iter()
                .map(|l| {
                    format!(
                        "`{}`: {} per {} at {} ({} calls delayed)",
                        l.limit.policy,
                        l.limit.max_calls,
                        format_duration(l.limit.window_ms),
                        l.limit.target.as_str(),
                        grouped(l.throttled_calls)
                    )
                })
                .chain(t.conditional.iter().map(|c| format!("conditional: {c}")))
                .collect();
            let _ = writeln!(
                o,
                "| `{}` | {} | {} | {} | {} |",
                g.id,
                grouped(t.calls),
                human_duration(t.unlimited_ms),
                t.limited_ms.map_or("never".into(), human_duration),
                cell(&joined_or_none(&limits, "; "))
            );
        }
        for s in &a.sweeps {
            let _ = writeln!(
                o,
                "\nA sweep of `{}` × {} by {} takes {} unlimited and {} under the policies.",
                s.tool,
                grouped(s.calls),
                s.actor,
                human_duration(s.unlimited_ms),
                s.limited_ms.map_or("never".into(), human_duration)
            );
        }
        let _ = writeln!(o);
    }

    if let Some(mc) = &a.montecarlo {
        let _ = writeln!(o, "{h} Monte Carlo\n");
        let model: Vec<&str> = mc.model.tactics.iter().map(|t| t.name()).collect();
        let _ = writeln!(
            o,
            "{} runs of a stochastic agent (a Markov chain over {}; {} model), seed {}, at most {} \
             steps, a human grants a held call with probability {}. Rates with 95% Wilson \
             intervals; times on the simulated clock.\n",
            mc.runs,
            model.join(", "),
            if mc.model.builtin { "the built-in campaign" } else { "the manifest's" },
            mc.seed,
            mc.max_steps,
            mc.grant_probability
        );
        let _ = writeln!(
            o,
            "| goal | reached | 95% CI | unguarded | median calls | median time | p90 time |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|");
        for g in &mc.goals {
            let (ms, mt, pt) = match (&g.steps, &g.time_ms) {
                (Some(s), Some(t)) => (
                    format!("{}", s.median),
                    human_duration(t.median),
                    human_duration(t.p90),
                ),
                _ => ("—".into(), "—".into(), "—".into()),
            };
            let _ = writeln!(
                o,
                "| `{}` | {} | {} – {} | {} | {ms} | {mt} | {pt} |",
                g.goal,
                pct(g.rate),
                pct(g.rate_ci.0),
                pct(g.rate_ci.1),
                pct(g.unguarded_rate)
            );
        }
        let _ = writeln!(
            o,
            "{}\n{} simulated decisions in {:.0} ms on {} thread(s) ({:.2}M decisions/s).\n",
            mc.goals
                .iter()
                .filter_map(|g| g.note.as_ref().map(|n| format!("\n- `{}`: {n}", g.goal)))
                .collect::<String>(),
            grouped(mc.decisions),
            mc.elapsed_ms,
            mc.threads,
            mc.decisions_per_second / 1e6
        );
    }

    if let Some(fix) = &a.fix {
        let _ = writeln!(o, "{h} Remediation\n");
        if fix.changes.is_empty() {
            let _ = writeln!(o, "Nothing to change.\n");
        }
        for c in &fix.changes {
            let _ = writeln!(o, "- {}", change_line(c));
        }
        for u in &fix.unresolved {
            let _ = writeln!(o, "- **unresolved:** {u}");
        }
        if !fix.policy_text.is_empty() {
            let _ = writeln!(o, "\nPolicies added:\n\n```text\n{}```", fix.policy_text);
        }
        if !fix.written.is_empty() {
            let _ = writeln!(
                o,
                "\nWritten: {}.",
                fix.written
                    .iter()
                    .map(|w| format!("`{w}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let _ = writeln!(
            o,
            "\n**The fixed manifest is {}.**{}\n",
            if fix.safe { "proved safe" } else { "NOT safe" },
            match &fix.shared_orchestrator {
                Some(c) => format!(
                    " It was also proved with {} delegating to every top-level agent of one human \
                     (context splitting): {}.",
                    c.orchestrators.join(", "),
                    if c.safe { "safe" } else { "NOT safe" }
                ),
                None => String::new(),
            }
        );
        let sub = format!("{h}#");
        for alt in &fix.alternatives {
            let _ = writeln!(o, "{sub} Alternative `{}`: {}\n", alt.id, alt.title);
            for c in &alt.changes {
                let _ = writeln!(o, "- {}", change_line(c));
            }
            for u in &alt.unresolved {
                let _ = writeln!(o, "- **unresolved:** {u}");
            }
            if !alt.policy_text.is_empty() {
                let _ = writeln!(o, "\nPolicies added:\n\n```text\n{}```", alt.policy_text);
            }
            let statuses: Vec<String> = alt
                .statuses
                .iter()
                .map(|(g, s)| format!("`{g}` {}", s.as_str()))
                .collect();
            let _ = writeln!(
                o,
                "\nProved in this run: {} — **{}**.\n",
                statuses.join(", "),
                if alt.safe { "safe" } else { "NOT safe" }
            );
        }
        let _ = writeln!(o, "{sub} Proof of the fixed manifest\n");
        let deeper = format!("{sub}#");
        let _ = writeln!(o, "**{}**\n", verdict_line(&fix.proof));
        body(o, &fix.proof, None, &deeper);
    }

    if !a.warnings.is_empty() {
        let _ = writeln!(o, "{h} Warnings\n");
        for w in &a.warnings {
            let _ = writeln!(o, "- {}", w.replace('\n', "\n  "));
        }
        let _ = writeln!(o);
    }
}

/// The Markdown safety case. `trajectories`: where the trajectory files were written.
pub fn render(a: &Analysis, trajectories: Option<&str>) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Safety case: {}\n", a.name);
    let _ = writeln!(
        o,
        "**Verdict: {}.** `truststack prove` exits {}.\n",
        verdict_line(a),
        if a.safe { 0 } else { 1 }
    );
    body(&mut o, a, trajectories, "##");
    let _ = writeln!(o, "## Method and limits\n");
    for m in METHOD {
        let _ = writeln!(o, "- {m}");
    }
    o
}
