//! Reports: a terminal summary, a Markdown and a single-file HTML safety case, JSON for tools
//! and SARIF 2.1.0 for code-scanning UIs. Every renderer reads only the [`Analysis`].

pub mod html;
pub mod markdown;
pub mod sarif;
pub mod svg;
pub mod text;

use crate::analysis::{Analysis, GoalReport, Status};
use crate::fix::Change;
use crate::quant::human_duration;
use truststack_engine::Verdict;
use truststack_policy::duration::format_duration;

/// The analysis as pretty-printed JSON.
pub fn json(a: &Analysis) -> String {
    serde_json::to_string_pretty(a).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// A file name for a goal's trajectory (`data-exfiltration_Internal_Prod_DB.jsonl`).
pub fn trajectory_file(goal: &str) -> String {
    let clean: String = goal
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{clean}.jsonl")
}

pub(crate) fn verdict_line(a: &Analysis) -> String {
    let bad = a.goals.iter().filter(|g| !g.status.is_safe()).count();
    if a.safe {
        format!(
            "SAFE — every one of the {} goals is gated by a human or unreachable",
            a.goals.len()
        )
    } else {
        format!(
            "NOT SAFE — {bad} of {} goals reachable without a human gate{}",
            a.goals.len(),
            if a.count(Status::Unknown) > 0 {
                " or not decided within the bounds"
            } else {
                ""
            }
        )
    }
}

pub(crate) fn status_word(s: Status) -> &'static str {
    match s {
        Status::Unguarded => "UNGUARDED",
        Status::Gated => "GATED",
        Status::Unreachable => "UNREACHABLE",
        Status::Unknown => "UNKNOWN",
    }
}

pub(crate) fn decision_word(step: &crate::trajectory::TrajectoryStep) -> String {
    match (&step.decision, &step.approval) {
        (Verdict::RequireApproval, Some(a)) => format!(
            "held → {} by {}",
            match a.decision {
                Verdict::Allow => "granted",
                _ => "refused",
            },
            a.approver
        ),
        (d, _) => d.as_str().to_string(),
    }
}

pub(crate) fn exploration_line(a: &Analysis) -> String {
    let e = &a.exploration;
    let how = if e.early {
        "stopped once every goal was reached unguarded".to_string()
    } else if e.decided {
        format!(
            "decided at depth {} of {}: no state left to expand can still reach a goal \
             unguarded, nor one not reached at all through a gate",
            e.depth, e.max_depth
        )
    } else if e.exhaustive {
        format!(
            "exhaustive: every trajectory of up to {} calls, fixpoint at depth {}",
            e.max_depth, e.depth
        )
    } else {
        format!(
            "bounded: {}",
            e.bound.clone().unwrap_or_else(|| "bound reached".into())
        )
    };
    format!(
        "{} states, {} engine decisions, depth {} — {how} ({:.1} ms)",
        e.states, e.decisions, e.depth, e.elapsed_ms
    )
}

/// A goal's shortest trajectory in a table cell: `3 call(s), gate chain-of-command`, or `—`.
pub(crate) fn trajectory_cell(g: &GoalReport) -> String {
    g.trajectory.as_ref().map_or_else(
        || "—".into(),
        |t| {
            if t.gates.is_empty() {
                format!("{} call(s)", t.calls())
            } else {
                format!("{} call(s), gate {}", t.calls(), t.gates.join(", "))
            }
        },
    )
}

pub(crate) fn time_cell(g: &GoalReport) -> String {
    match &g.time_to_goal {
        Some(t) => match t.limited_ms {
            Some(l) if (l - t.unlimited_ms).abs() < 1.0 => human_duration(t.unlimited_ms),
            Some(l) => format!(
                "{} (unlimited: {})",
                human_duration(l),
                human_duration(t.unlimited_ms)
            ),
            None => "never (a limit admits no call)".into(),
        },
        None => "—".into(),
    }
}

pub fn change_line(c: &Change) -> String {
    match c {
        Change::SplitIdentity { agent, parts, .. } => {
            let ps: Vec<String> = parts
                .iter()
                .map(|p| format!("{} {{{}}}", p.name, p.tools.join(", ")))
                .collect();
            format!("split identity `{agent}` into {}", ps.join(" and "))
        }
        Change::AddPolicy {
            id,
            action,
            target,
            goal,
            ..
        } => format!(
            "add policy `{id}` ({}, TARGET {}) for goal {goal}",
            action.as_str(),
            target.as_str()
        ),
        Change::AddRateLimit {
            id,
            pattern,
            max_calls,
            window_ms,
            ..
        } => format!(
            "add rate limit `{id}`: at most {max_calls} {pattern} calls per {} per orchestration",
            format_duration(*window_ms)
        ),
    }
}

/// Thousands separators: `65,536`.
pub(crate) fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `items` joined by `sep`, or `none` when there are none.
pub(crate) fn joined_or_none<S: AsRef<str>>(items: &[S], sep: &str) -> String {
    if items.is_empty() {
        return "none".into();
    }
    items
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(sep)
}

pub(crate) fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// The abstraction and its limits, for the "method" sections.
pub(crate) const METHOD: &[&str] = &[
    "Every call on every trajectory was decided by the TrustStack engine itself (Engine::queue on a fork of the state), on a simulated clock that advances by the step between calls.",
    "States are merged when the engine's monitor states agree on everything a policy can observe: ages instead of timestamps, ages beyond every window of their kind collapsed, expired ring entries dropped, and rate-limit rings whose counts cannot reach any threshold within the remaining budget abstracted away. Breadth-first order makes every trajectory a shortest one.",
    "A held call is explored twice: refused (the gate as a stop) and granted by an approver the engine accepts (the adversary and anyone in the call's chain of command cannot approve). A goal reached only through a grant is gated.",
    "The adversary may wait until any monitor entry leaves a window a policy reads; it never calls faster than one call per step.",
    "Limits: trajectories longer than the depth bound are not explored, so a rate limit that needs more calls to fire than the bound never fires here (time-to-goal accounts for it); argument values are the manifest's variants only; session-scoped policies see one session per agent per orchestration.",
];
