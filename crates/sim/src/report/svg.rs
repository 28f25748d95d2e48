//! Inline SVG drawings for the HTML report: the delegation graph, and each goal's trajectory as
//! a swim-lane graph (one lane per acting agent, one node per call, arrows in time order).

use crate::analysis::{Analysis, Status};
use crate::trajectory::Trajectory;
use std::fmt::Write as _;
use truststack_engine::Verdict;

/// Escapes text for XML/HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let t: String = s.chars().take(n.saturating_sub(1)).collect();
        format!("{t}…")
    }
}

/// The humans, agents and delegations of the manifest, with the tools each agent holds.
pub fn delegation(a: &Analysis) -> String {
    // Layers: humans, then agents by delegation depth from a top-level agent.
    let mut depth: Vec<Option<usize>> = vec![None; a.agents.len()];
    let index = |name: &str| a.agents.iter().position(|x| x.name == name);
    let mut queue: Vec<usize> = Vec::new();
    for (i, ag) in a.agents.iter().enumerate() {
        if ag.top_level {
            depth[i] = Some(0);
            queue.push(i);
        }
    }
    while let Some(i) = queue.pop() {
        let d = depth[i].unwrap_or(0);
        for t in &a.agents[i].delegates_to {
            if let Some(j) = index(t) {
                if depth[j].is_none_or(|x| x > d + 1) && d < 8 {
                    depth[j] = Some(d + 1);
                    queue.push(j);
                }
            }
        }
    }
    let humans: Vec<String> = {
        let mut h: Vec<String> = a
            .agents
            .iter()
            .filter(|x| x.top_level)
            .map(|x| {
                x.launched_by.clone().unwrap_or_else(|| {
                    a.actors
                        .iter()
                        .find(|c| c.identity == x.identity)
                        .and_then(|c| c.chain.first().cloned())
                        .unwrap_or_else(|| "user:operator".into())
                })
            })
            .collect();
        h.sort();
        h.dedup();
        h
    };
    let layers = depth.iter().flatten().max().copied().unwrap_or(0) + 2;
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); layers];
    for (i, d) in depth.iter().enumerate() {
        rows[d.map_or(layers - 1, |d| d + 1)].push(i);
    }
    let (bw, bh, gapx, gapy) = (230.0, 64.0, 30.0, 56.0);
    let widest = rows
        .iter()
        .map(Vec::len)
        .max()
        .unwrap_or(1)
        .max(humans.len())
        .max(1);
    let width = widest as f64 * (bw + gapx) + gapx;
    let height = layers as f64 * (bh + gapy) + gapy;
    let pos = |row: usize, k: usize, n: usize| {
        let total = n as f64 * (bw + gapx) - gapx;
        let x0 = (width - total) / 2.0;
        (
            x0 + k as f64 * (bw + gapx),
            gapy / 2.0 + row as f64 * (bh + gapy),
        )
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg class="graph" viewBox="0 0 {width:.0} {height:.0}" width="{width:.0}" height="{height:.0}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="delegation graph"><defs><marker id="arr" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#64748b"/></marker></defs>"##
    );
    let mut agent_pos = vec![(0.0, 0.0); a.agents.len()];
    for (row, members) in rows.iter().enumerate().skip(1) {
        for (k, i) in members.iter().enumerate() {
            agent_pos[*i] = pos(row, k, members.len());
        }
    }
    // Edges first.
    for (hk, h) in humans.iter().enumerate() {
        let (hx, hy) = pos(0, hk, humans.len());
        for (i, ag) in a.agents.iter().enumerate().filter(|(_, x)| x.top_level) {
            let launcher = ag.launched_by.clone().unwrap_or_else(|| {
                a.actors
                    .iter()
                    .find(|c| c.identity == ag.identity)
                    .and_then(|c| c.chain.first().cloned())
                    .unwrap_or_default()
            });
            if &launcher == h {
                let (ax, ay) = agent_pos[i];
                let _ = write!(
                    s,
                    r##"<line x1="{:.0}" y1="{:.0}" x2="{:.0}" y2="{:.0}" stroke="#64748b" stroke-width="1.5" stroke-dasharray="4 3" marker-end="url(#arr)"/>"##,
                    hx + bw / 2.0,
                    hy + bh,
                    ax + bw / 2.0,
                    ay
                );
            }
        }
    }
    for (i, ag) in a.agents.iter().enumerate() {
        for t in &ag.delegates_to {
            if let Some(j) = index(t) {
                let (x1, y1) = agent_pos[i];
                let (x2, y2) = agent_pos[j];
                let _ = write!(
                    s,
                    r##"<line x1="{:.0}" y1="{:.0}" x2="{:.0}" y2="{:.0}" stroke="#64748b" stroke-width="1.5" marker-end="url(#arr)"/>"##,
                    x1 + bw / 2.0,
                    y1 + bh,
                    x2 + bw / 2.0,
                    y2
                );
            }
        }
    }
    for (hk, h) in humans.iter().enumerate() {
        let (x, y) = pos(0, hk, humans.len());
        let _ = write!(
            s,
            r##"<rect x="{x:.0}" y="{y:.0}" width="{bw}" height="{bh}" rx="32" fill="#f1f5f9" stroke="#94a3b8"/><text x="{:.0}" y="{:.0}" text-anchor="middle" class="t1">👤 {}</text><text x="{:.0}" y="{:.0}" text-anchor="middle" class="t2">human principal</text>"##,
            x + bw / 2.0,
            y + 28.0,
            esc(&short(h, 30)),
            x + bw / 2.0,
            y + 46.0
        );
    }
    for (i, ag) in a.agents.iter().enumerate() {
        let (x, y) = agent_pos[i];
        let tools = if ag.tools.is_empty() {
            "no tools".to_string()
        } else {
            ag.tools.join(", ")
        };
        let _ = write!(
            s,
            r##"<rect x="{x:.0}" y="{y:.0}" width="{bw}" height="{bh}" rx="8" fill="#eef2ff" stroke="#6366f1"/><text x="{:.0}" y="{:.0}" text-anchor="middle" class="t1">{}</text><text x="{:.0}" y="{:.0}" text-anchor="middle" class="t2">{}</text><title>{}</title>"##,
            x + bw / 2.0,
            y + 26.0,
            esc(&short(&ag.name, 28)),
            x + bw / 2.0,
            y + 46.0,
            esc(&short(&tools, 38)),
            esc(&format!("{}\ntools: {tools}", ag.identity))
        );
    }
    s.push_str("</svg>");
    s
}

fn color(step: &crate::trajectory::TrajectoryStep) -> (&'static str, &'static str) {
    match (step.decision, step.admitted) {
        (Verdict::Allow, _) => ("#dcfce7", "#16a34a"),
        (Verdict::RequireApproval, true) => ("#fef3c7", "#d97706"),
        _ => ("#fee2e2", "#dc2626"),
    }
}

/// One goal's trajectory: lanes per acting agent, a node per call, arrows in time order.
pub fn trajectory(t: &Trajectory, status: Status) -> String {
    let mut lanes: Vec<&str> = Vec::new();
    for s in &t.steps {
        if !lanes.contains(&s.actor.as_str()) {
            lanes.push(&s.actor);
        }
    }
    let (lane_w, nw, nh, gx, lh) = (170.0, 150.0, 58.0, 36.0, 84.0);
    let width = lane_w + t.steps.len() as f64 * (nw + gx) + gx;
    let height = lanes.len() as f64 * lh + 30.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg class="graph" viewBox="0 0 {width:.0} {height:.0}" width="{width:.0}" height="{height:.0}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="trajectory"><defs><marker id="a{}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{}"/></marker></defs>"##,
        status.as_str(),
        if status == Status::Unguarded {
            "#dc2626"
        } else {
            "#d97706"
        }
    );
    for (i, lane) in lanes.iter().enumerate() {
        let y = i as f64 * lh;
        let _ = write!(
            s,
            r##"<rect x="0" y="{y:.0}" width="{width:.0}" height="{lh:.0}" fill="{}"/><text x="10" y="{:.0}" class="t1">{}</text>"##,
            if i % 2 == 0 { "#f8fafc" } else { "#ffffff" },
            y + lh / 2.0 + 5.0,
            esc(&short(lane, 22))
        );
    }
    let center = |k: usize, lane: usize| {
        (
            lane_w + gx + k as f64 * (nw + gx),
            lane as f64 * lh + (lh - nh) / 2.0,
        )
    };
    let lane_of = |actor: &str| lanes.iter().position(|l| *l == actor).unwrap_or(0);
    for k in 1..t.steps.len() {
        let (x1, y1) = center(k - 1, lane_of(&t.steps[k - 1].actor));
        let (x2, y2) = center(k, lane_of(&t.steps[k].actor));
        let _ = write!(
            s,
            r##"<line x1="{:.0}" y1="{:.0}" x2="{:.0}" y2="{:.0}" stroke="{}" stroke-width="2" marker-end="url(#a{})"/>"##,
            x1 + nw,
            y1 + nh / 2.0,
            x2,
            y2 + nh / 2.0,
            if status == Status::Unguarded {
                "#dc2626"
            } else {
                "#d97706"
            },
            status.as_str()
        );
    }
    for (k, st) in t.steps.iter().enumerate() {
        let (x, y) = center(k, lane_of(&st.actor));
        let (fill, stroke) = color(st);
        let tactics: Vec<&str> = st.tactics.iter().map(|t| t.attack_id()).collect();
        let label = match (&st.decision, &st.approval) {
            (Verdict::RequireApproval, Some(ap)) => {
                format!("⏸ granted by {}", ap.approver.trim_start_matches("user:"))
            }
            (d, _) => d.as_str().to_string(),
        };
        let _ = write!(
            s,
            r##"<g><title>{}</title><rect x="{x:.0}" y="{y:.0}" width="{nw}" height="{nh}" rx="8" fill="{fill}" stroke="{stroke}" stroke-width="1.5"/><text x="{:.0}" y="{:.0}" text-anchor="middle" class="t1">{} {}</text><text x="{:.0}" y="{:.0}" text-anchor="middle" class="t2">{}</text><text x="{:.0}" y="{:.0}" text-anchor="middle" class="t2">{}</text></g>"##,
            esc(&format!(
                "{} {} — {}\n{}",
                st.call_id,
                st.tool,
                st.decision.as_str(),
                st.reason
            )),
            x + nw / 2.0,
            y + 18.0,
            esc(&st.call_id),
            esc(&short(&st.tool, 16)),
            x + nw / 2.0,
            y + 35.0,
            esc(&short(&tactics.join(" "), 24)),
            x + nw / 2.0,
            y + 50.0,
            esc(&short(&label, 24))
        );
    }
    s.push_str("</svg>");
    s
}
