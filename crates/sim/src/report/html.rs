//! The safety case as one self-contained HTML file: inline CSS, the delegation graph and every
//! trajectory drawn as inline SVG, no scripts, no external assets.

use super::svg::{self, esc};
use super::{
    change_line, exploration_line, grouped, joined_or_none, pct, status_word, time_cell,
    trajectory_cell, trajectory_file, verdict_line, METHOD,
};
use crate::analysis::{Analysis, Status};
use crate::quant::human_duration;
use crate::toxic::HolderKind;
use std::fmt::Write as _;

const CSS: &str = r#"
:root{--bad:#dc2626;--gate:#d97706;--ok:#16a34a;--unk:#7c3aed;--ink:#0f172a;--mute:#64748b;--line:#e2e8f0}
*{box-sizing:border-box}body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--ink);margin:0;background:#fff}
main{max-width:1180px;margin:0 auto;padding:28px 24px 64px}
h1{font-size:26px;margin:0 0 6px}h2{font-size:20px;margin:36px 0 10px;padding-bottom:6px;border-bottom:1px solid var(--line)}
h3{font-size:16px;margin:26px 0 8px}
.verdict{padding:14px 18px;border-radius:10px;font-weight:600;margin:14px 0 22px}
.verdict.bad{background:#fef2f2;border:1px solid #fecaca;color:#991b1b}.verdict.ok{background:#f0fdf4;border:1px solid #bbf7d0;color:#166534}
table{border-collapse:collapse;width:100%;margin:8px 0 14px;font-size:14px}
th,td{border-bottom:1px solid var(--line);padding:6px 8px;text-align:left;vertical-align:top}th{color:var(--mute);font-weight:600}
code,pre{font:13px/1.45 ui-monospace,SFMono-Regular,Menlo,monospace}pre{background:#f8fafc;border:1px solid var(--line);border-radius:8px;padding:10px;overflow:auto}
.badge{display:inline-block;padding:1px 8px;border-radius:999px;font-size:12px;font-weight:700;color:#fff}
.unguarded{background:var(--bad)}.gated{background:var(--gate)}.unreachable{background:var(--ok)}.unknown{background:var(--unk)}
.graph{max-width:100%;height:auto;border:1px solid var(--line);border-radius:8px;margin:8px 0}
.graph .t1{font:600 13px system-ui,sans-serif;fill:#0f172a}.graph .t2{font:11px system-ui,sans-serif;fill:#475569}
.scroll{overflow-x:auto}.mute{color:var(--mute)}details{margin:6px 0}summary{cursor:pointer;color:var(--mute)}
.legend span{margin-right:14px}.sw{display:inline-block;width:12px;height:12px;border-radius:3px;vertical-align:-1px;margin-right:4px}
"#;

fn badge(s: Status) -> String {
    format!(
        r#"<span class="badge {}">{}</span>"#,
        s.as_str(),
        status_word(s)
    )
}

fn body(o: &mut String, a: &Analysis, trajectories: Option<&str>, h: u8) {
    let h2 = format!("h{h}");
    let h3 = format!("h{}", h + 1);
    let _ = write!(o, "<table><tbody>");
    let _ = write!(
        o,
        "<tr><th>Manifest</th><td><code>{}</code></td></tr>",
        esc(&a.manifest)
    );
    if let Some(d) = &a.description {
        let _ = write!(o, "<tr><th>Description</th><td>{}</td></tr>", esc(d));
    }
    let pols: Vec<String> = a
        .policies
        .iter()
        .map(|p| {
            format!(
                "<code>{}</code> ({}, {})",
                esc(&p.id),
                p.action.as_str(),
                p.target.as_str()
            )
        })
        .collect();
    let _ = write!(
        o,
        "<tr><th>Policies</th><td>{}</td></tr>",
        joined_or_none(&pols, ", ")
    );
    let _ = write!(
        o,
        "<tr><th>Approvers</th><td>{}</td></tr>",
        esc(&a.approvers.join(", "))
    );
    let _ = write!(
        o,
        "<tr><th>Exploration</th><td>{}</td></tr>",
        esc(&exploration_line(a))
    );
    let _ = write!(o, "</tbody></table>");

    let _ = write!(
        o,
        "<{h2}>Agents and delegation</{h2}><div class=\"scroll\">{}</div>",
        svg::delegation(a)
    );
    let _ = write!(o, "<p class=\"mute\">Solid arrows: may delegate to or invoke. Dashed: launched by a human. {} delegation chain(s) explored.</p>", a.actors.len());

    let _ = write!(o, "<{h2}>Risk goals</{h2}><table><thead><tr><th>goal</th><th>what</th><th>scope</th><th>status</th><th>shortest trajectory</th><th>time to goal</th></tr></thead><tbody>");
    for g in &a.goals {
        let traj = esc(&trajectory_cell(g));
        let tactics: Vec<String> = g
            .tactics
            .iter()
            .map(|t| format!("{} {}", t.name, t.attack_id))
            .collect();
        let _ = write!(o, "<tr><td><code>{}</code></td><td>{}<br><span class=\"mute\">{}</span></td><td>{}</td><td>{}</td><td>{traj}</td><td>{}</td></tr>",
            esc(&g.id), esc(&g.summary), esc(&tactics.join(", ")), g.scope.as_str(), badge(g.status), esc(&time_cell(g)));
    }
    let _ = write!(o, "</tbody></table>");

    let evidence: Vec<_> = a.goals.iter().filter(|g| g.trajectory.is_some()).collect();
    if !evidence.is_empty() {
        let _ = write!(o, "<{h2}>Evidence</{h2}><p class=\"legend mute\"><span><i class=\"sw\" style=\"background:#dcfce7;border:1px solid #16a34a\"></i>allowed</span><span><i class=\"sw\" style=\"background:#fef3c7;border:1px solid #d97706\"></i>held, granted by a human</span><span><i class=\"sw\" style=\"background:#fee2e2;border:1px solid #dc2626\"></i>denied or refused</span></p>");
        for g in evidence {
            let Some(t) = &g.trajectory else { continue };
            let _ = write!(
                o,
                "<{h3}><code>{}</code> {}</{h3}>",
                esc(&g.id),
                badge(g.status)
            );
            let _ = write!(
                o,
                "<p>{} — {}. {} call(s) over {} of simulated time{}.</p>",
                esc(&g.title),
                esc(&g.summary),
                t.calls(),
                human_duration(t.duration_ms as f64),
                if t.gates.is_empty() {
                    ", no human gate on the way".to_string()
                } else {
                    format!(", through the gate of {}", esc(&t.gates.join(", ")))
                }
            );
            let _ = write!(
                o,
                "<div class=\"scroll\">{}</div>",
                svg::trajectory(t, g.status)
            );
            let _ = write!(o, "<table><thead><tr><th>#</th><th>time</th><th>agent (delegation)</th><th>tool</th><th>tactics</th><th>decision</th><th>reason</th></tr></thead><tbody>");
            for s in &t.steps {
                let tactics: Vec<String> = s
                    .tactics
                    .iter()
                    .map(|t| format!("{} ({})", t.name(), t.attack_id()))
                    .collect();
                let _ = write!(o, "<tr><td>{}</td><td>{}{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&s.call_id), esc(&s.time), s.waited_ms.map(|w| format!("<br><span class=\"mute\">after waiting {}</span>", human_duration(w as f64))).unwrap_or_default(),
                    esc(&s.actor), esc(&s.call_label()), esc(&tactics.join(", ")), esc(&super::decision_word(s)), esc(&s.reason));
            }
            let _ = write!(o, "</tbody></table>");
            let trace = match trajectories {
                Some(d) => format!("{d}/{}", trajectory_file(&g.id)),
                None => trajectory_file(&g.id),
            };
            let _ = write!(o, "<details><summary>Trace ({}) and replay command</summary><pre>{}</pre><pre>{}</pre></details>", esc(&trace), esc(&a.replay.command(&trace)), esc(&t.jsonl()));
        }
    }

    if !a.toxic.is_empty() {
        let _ = write!(o, "<{h2}>Toxic combinations</{h2}><p>Minimal sets of tools that let one holder reach a goal without a human gate.</p><table><thead><tr><th>holder</th><th>classes</th><th>tool sets</th><th>goal</th></tr></thead><tbody>");
        for t in &a.toxic {
            let holder = match t.holder {
                HolderKind::AgentIdentity => format!("agent <code>{}</code>", esc(&t.holder_name)),
                HolderKind::DelegationRoot => format!("delegation root <code>{}</code><br><span class=\"mute\">split across {}</span>", esc(&t.holder_name), esc(&t.held_by.join(", "))),
            };
            let sets: Vec<String> = t
                .tool_sets
                .iter()
                .map(|s| format!("{{{}}}", s.join(", ")))
                .collect();
            let _ = write!(o, "<tr><td>{holder}</td><td><b>{{{}}}</b></td><td>{}</td><td><code>{}</code></td></tr>", esc(&t.classes.join(", ")), esc(&sets.join(" or ")), esc(&t.goal));
        }
        let _ = write!(o, "</tbody></table>");
    }

    let timed = a.times_to_goal();
    if !timed.is_empty() || !a.sweeps.is_empty() {
        let _ = write!(o, "<{h2}>Time to goal</{h2}><p>One call at a time at {} calls per second, with the manifest's workload, delayed by every rate limit the policies certainly apply.</p><table><thead><tr><th>goal</th><th>calls</th><th>unlimited</th><th>under the policies</th><th>limits</th></tr></thead><tbody>", a.calls_per_second);
        for (g, t) in timed {
            let limits: Vec<String> = t
                .limits
                .iter()
                .map(|l| {
                    format!(
                        "{}: {} per {} at {} ({} delayed)",
                        l.limit.policy,
                        l.limit.max_calls,
                        truststack_policy::duration::format_duration(l.limit.window_ms),
                        l.limit.target.as_str(),
                        grouped(l.throttled_calls)
                    )
                })
                .collect();
            let _ = write!(
                o,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&g.id),
                grouped(t.calls),
                human_duration(t.unlimited_ms),
                t.limited_ms.map_or("never".into(), human_duration),
                esc(&joined_or_none(&limits, "; "))
            );
        }
        let _ = write!(o, "</tbody></table>");
        for s in &a.sweeps {
            let _ = write!(o, "<p>A sweep of <code>{}</code> × {} by {} takes <b>{}</b> unlimited and <b>{}</b> under the policies.</p>", esc(&s.tool), grouped(s.calls), esc(&s.actor), human_duration(s.unlimited_ms), s.limited_ms.map_or("never".into(), human_duration));
        }
    }

    if let Some(mc) = &a.montecarlo {
        let _ = write!(o, "<{h2}>Monte Carlo</{h2}><p>{} runs, seed {}, at most {} steps, grant probability {}, {} model. 95% Wilson intervals.</p><table><thead><tr><th>goal</th><th>reached</th><th>95% CI</th><th>unguarded</th><th>median calls</th><th>median time</th></tr></thead><tbody>",
            mc.runs, mc.seed, mc.max_steps, mc.grant_probability, if mc.model.builtin { "built-in campaign" } else { "manifest's" });
        for g in &mc.goals {
            let (ms, mt) = match (&g.steps, &g.time_ms) {
                (Some(s), Some(t)) => (format!("{}", s.median), human_duration(t.median)),
                _ => ("—".into(), "—".into()),
            };
            let _ = write!(o, "<tr><td><code>{}</code></td><td>{}</td><td>{} – {}</td><td>{}</td><td>{ms}</td><td>{mt}</td></tr>", esc(&g.goal), pct(g.rate), pct(g.rate_ci.0), pct(g.rate_ci.1), pct(g.unguarded_rate));
        }
        let _ = write!(
            o,
            "</tbody></table><p class=\"mute\">{} simulated decisions in {:.0} ms ({:.2}M/s).</p>",
            grouped(mc.decisions),
            mc.elapsed_ms,
            mc.decisions_per_second / 1e6
        );
    }

    if let Some(fix) = &a.fix {
        let _ = write!(o, "<{h2}>Remediation</{h2}><ul>");
        for c in &fix.changes {
            let _ = write!(o, "<li>{}</li>", esc(&change_line(c)));
        }
        for u in &fix.unresolved {
            let _ = write!(o, "<li><b>unresolved:</b> {}</li>", esc(u));
        }
        let _ = write!(o, "</ul>");
        if !fix.policy_text.is_empty() {
            let _ = write!(o, "<pre>{}</pre>", esc(&fix.policy_text));
        }
        let _ = write!(
            o,
            "<div class=\"verdict {}\">The fixed manifest is {}.{}</div>",
            if fix.safe { "ok" } else { "bad" },
            if fix.safe { "proved safe" } else { "NOT safe" },
            fix.shared_orchestrator
                .as_ref()
                .map(|c| format!(
                    " Also proved with {} over the split identities: {}.",
                    esc(&c.orchestrators.join(", ")),
                    if c.safe { "safe" } else { "NOT safe" }
                ))
                .unwrap_or_default()
        );
        for alt in &fix.alternatives {
            let _ = write!(
                o,
                "<details><summary>Alternative <code>{}</code>: {} — {}</summary><ul>",
                esc(&alt.id),
                esc(&alt.title),
                if alt.safe { "proved safe" } else { "NOT safe" }
            );
            for c in &alt.changes {
                let _ = write!(o, "<li>{}</li>", esc(&change_line(c)));
            }
            for u in &alt.unresolved {
                let _ = write!(o, "<li><strong>unresolved:</strong> {}</li>", esc(u));
            }
            let _ = write!(o, "</ul>");
            if !alt.policy_text.is_empty() {
                let _ = write!(o, "<pre>{}</pre>", esc(&alt.policy_text));
            }
            let _ = write!(o, "</details>");
        }
        let _ = write!(o, "<details><summary>Proof of the fixed manifest</summary>");
        body(o, &fix.proof, None, h + 1);
        let _ = write!(o, "</details>");
    }

    if !a.warnings.is_empty() {
        let _ = write!(o, "<{h2}>Warnings</{h2}><ul>");
        for w in &a.warnings {
            let _ = write!(o, "<li><pre>{}</pre></li>", esc(w));
        }
        let _ = write!(o, "</ul>");
    }
}

/// The HTML safety case. `trajectories`: where the trajectory files were written.
pub fn render(a: &Analysis, trajectories: Option<&str>) -> String {
    let mut o = String::new();
    let _ = write!(o, "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>Safety case: {}</title><style>{CSS}</style></head><body><main>", esc(&a.name));
    let _ = write!(o, "<h1>Safety case: {}</h1><p class=\"mute\">TrustStack proving ground · <code>truststack prove</code> exits {}</p>", esc(&a.name), if a.safe { 0 } else { 1 });
    let _ = write!(
        o,
        "<div class=\"verdict {}\">{}</div>",
        if a.safe { "ok" } else { "bad" },
        esc(&verdict_line(a))
    );
    body(&mut o, a, trajectories, 2);
    let _ = write!(o, "<h2>Method and limits</h2><ul>");
    for m in METHOD {
        let _ = write!(o, "<li>{}</li>", esc(m));
    }
    let _ = writeln!(o, "</ul></main></body></html>");
    o
}
