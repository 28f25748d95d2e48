//! The console's pages. maud escapes every interpolated value, so whatever a held call carries
//! (an attacker may have written any of it) is shown as text.

use super::{QueueFilter, Viewer};
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;
use truststack_engine::event::Principals;
use truststack_engine::{ApprovalOutcome, ApprovalResult, PendingApproval};

pub(crate) fn layout(title: &str, viewer: Option<&Viewer>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · TrustStack console" }
                link rel="stylesheet" href="/console/assets/console.css";
                link rel="icon" href="/console/assets/favicon.svg" type="image/svg+xml";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    span.brand { "TrustStack" }
                    @if let Some(v) = viewer {
                        nav aria-label="Console" {
                            a href="/console/approvals" { "Approvals" }
                            a href="/console/ledger" { "Ledger" }
                            a href="/console/policies" { "Policies" }
                        }
                        form.signout method="post" action="/console/sign-out" {
                            input type="hidden" name="csrf" value=(v.session.csrf);
                            span { "Signed in as " strong { (v.human.principal) } }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

pub fn sign_in(csrf: &str, error: Option<&str>, configured: bool) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            @if let Some(e) = error {
                p.error role="alert" { (e) }
            }
            @if !configured {
                p { "This server does not verify credentials (it needs an identity service and \
                     require_credentials = true), so nobody can sign in to its console." }
            }
            p { "Sign in with an approver's or administrator's credential, as issued by "
                code { "truststack identity issue --user … --roles approver" } "." }
            form method="post" action="/console/sign-in" {
                input type="hidden" name="csrf" value=(csrf);
                label for="credential" { "Credential" }
                textarea id="credential" name="credential" rows="4" required
                    autocomplete="off" spellcheck="false" {}
                button type="submit" { "Sign in" }
            }
        },
    )
}

pub fn message(title: &str, text: &str) -> Markup {
    layout(
        title,
        None,
        html! {
            p.error role="alert" { (text) }
            p { a href="/console/approvals" { "Back to the approvals" } }
        },
    )
}

fn policies_of(p: &PendingApproval) -> String {
    p.policies
        .iter()
        .map(|x| x.id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn queue(viewer: &Viewer, list: &[PendingApproval], filter: &QueueFilter) -> Markup {
    layout(
        "Approvals",
        Some(viewer),
        html! {
            form.filters method="get" action="/console/approvals" aria-label="Filter the queue" {
                label { "Policy " input type="text" name="policy" value=(filter.policy); }
                label { "Agent " input type="text" name="agent" value=(filter.agent); }
                label { "Delegation root " input type="text" name="root" value=(filter.root); }
                button type="submit" { "Filter" }
                a href="/console/approvals" { "Clear" }
            }
            p id="queue-status" role="status" aria-live="polite" {
                (list.len()) " call(s) held, oldest first."
            }
            table id="queue" data-live="true" {
                caption { "Calls waiting for an approver" }
                thead {
                    tr {
                        th scope="col" { "Held at" }
                        th scope="col" { "Time left" }
                        th scope="col" { "Tool" }
                        th scope="col" { "Agent" }
                        th scope="col" { "Delegation root" }
                        th scope="col" { "Policies" }
                    }
                }
                tbody {
                    @for p in list {
                        tr {
                            td { (p.held_at) }
                            td { span.countdown data-deadline=(p.deadline) { (p.deadline) } }
                            td {
                                a href=(format!("/console/approvals/{}", crate::notify::percent_encode(&p.approval_id))) {
                                    (p.call.tool)
                                }
                            }
                            td { (p.call.agent) }
                            td { (super::root_of(p)) }
                            td { (policies_of(p)) }
                        }
                    }
                }
            }
        },
    )
}

fn monitor_value(v: &Value) -> Markup {
    match v {
        Value::Bool(true) => html! { span.yes aria-label="true" { "✓" } },
        Value::Bool(false) => html! { span.no aria-label="false" { "✗" } },
        Value::String(s) => html! { (s) },
        other => html! { (other.to_string()) },
    }
}

pub fn call(viewer: &Viewer, p: &PendingApproval, view: &Value, error: Option<&str>) -> Markup {
    let c = &p.call;
    let principals = Principals::of(&c.agent, c.session.as_deref(), &c.chain);
    let in_chain = principals.involves(&viewer.human.principal);
    let args = serde_json::to_string_pretty(&c.args).unwrap_or_default();
    let expired = truststack_engine::event::parse_time(&p.deadline)
        .is_ok_and(|d| d < truststack_engine::engine::system_now());
    let action = format!(
        "/console/approvals/{}",
        crate::notify::percent_encode(&p.approval_id)
    );
    layout(
        &format!("Held call: {}", c.tool),
        Some(viewer),
        html! {
            @if let Some(e) = error {
                p.error role="alert" { (e) }
            }
            div id="call-status" role="status" aria-live="polite" data-approval=(p.approval_id) {}
            dl.facts {
                dt { "Tool" } dd { code { (c.tool) } }
                dt { "Agent" } dd { code { (c.agent) } }
                @if let Some(s) = &c.session { dt { "Session" } dd { code { (s) } } }
                dt { "Call" } dd { code { (c.id) } }
                dt { "Held at" } dd { (p.held_at) }
                dt { "Deadline" } dd {
                    (p.deadline) " "
                    span.countdown data-deadline=(p.deadline) {}
                    @if expired { " " strong.no { "(passed: the call is refused)" } }
                }
                @if !p.approvers.is_empty() {
                    dt { "Approver groups" } dd { (p.approvers.join(", ")) }
                }
            }
            h2 { "Chain of command" }
            ol.chain aria-label="From the human to the agent" {
                @for link in &c.chain { li { code { (link) } } }
                li { code { (c.agent) } " (made this call)" }
            }
            h2 { "Arguments" }
            pre.args tabindex="0" aria-label="Arguments, as JSON" { (args) }
            @let sources = view.get("provenance").and_then(Value::as_array).cloned().unwrap_or_default();
            @if !sources.is_empty() {
                h2 { "Where the argument values came from" }
                table.provenance {
                    caption { "As this session's provenance index knows them: " code { "user" } " (the human's instruction), " code { "trusted" } " or " code { "untrusted" } " tool output, " code { "none" } " (never seen)" }
                    thead { tr { th scope="col" { "Argument" } th scope="col" { "Value" } th scope="col" { "Came from" } } }
                    tbody {
                        @for s in &sources {
                            tr {
                                td { code { (s["pointer"].as_str().unwrap_or_default()) } }
                                td { code { (compact(&s["value"])) } }
                                td { (s["source"].as_str().unwrap_or_default()) }
                            }
                        }
                    }
                }
            }
            h2 { "Policies that held it" }
            @for fired in &p.policies {
                section.policy {
                    h3 { code { (fired.id) } " " (fired.action.as_str()) }
                    @if let Some(r) = &fired.reason { p { (r) } }
                    @if !fired.monitors.is_empty() {
                        ul.monitors {
                            @for (name, value) in fired.monitors.iter() {
                                li { code { (name) } " " (monitor_value(&value.to_value())) }
                            }
                        }
                    }
                }
            }
            h2 { "Recent trajectory of the orchestration" }
            @if let Some(e) = view.get("trajectory_error").and_then(Value::as_str) {
                p.error { (e) }
            }
            @let trajectory = view.get("trajectory").and_then(Value::as_array).cloned().unwrap_or_default();
            @if trajectory.is_empty() {
                p { "No recorded decisions of this orchestration." }
            } @else {
                table {
                    caption { "Recorded decisions under " code { (principals.root) } ", oldest first" }
                    thead { tr { th scope="col" { "Ledger" } th scope="col" { "Time" } th scope="col" { "Agent" } th scope="col" { "Tool" } th scope="col" { "Decision" } } }
                    tbody {
                        @for t in &trajectory {
                            tr {
                                td { (t["ledger_index"].to_string()) }
                                td { (t["time"].as_str().unwrap_or_default()) }
                                td { (t["agent"].as_str().unwrap_or_default()) }
                                td { (t["tool"].as_str().unwrap_or_default()) }
                                td { (t["decision"].as_str().unwrap_or_default()) }
                            }
                        }
                    }
                }
            }
            h2 { "Answer" }
            @if in_chain {
                p.error role="note" {
                    "Separation of duties: you (" (viewer.human.principal) ") are in this call's \
                     chain of command, so you cannot grant or refuse it. Another approver must."
                }
            } @else if !viewer.can_answer() {
                p.error role="note" { "You do not hold the approver role: you can see this call but not answer it." }
            } @else {
                div.answers {
                    form method="post" action=(format!("{action}/grant")) aria-labelledby="grant-h" {
                        h3 id="grant-h" { "Grant" }
                        input type="hidden" name="csrf" value=(viewer.session.csrf);
                        label for="lease" { "Lease (optional, e.g. 10min: later calls of this policy and scope pass without asking)" }
                        input id="lease" type="text" name="lease" autocomplete="off";
                        label for="grant-comment" { "Comment (optional)" }
                        textarea id="grant-comment" name="comment" rows="2" {}
                        button.grant type="submit" { "Grant" }
                    }
                    form method="post" action=(format!("{action}/refuse")) aria-labelledby="refuse-h" {
                        h3 id="refuse-h" { "Refuse" }
                        input type="hidden" name="csrf" value=(viewer.session.csrf);
                        label for="refuse-comment" { "Comment (optional)" }
                        textarea id="refuse-comment" name="comment" rows="2" {}
                        button.refuse type="submit" { "Refuse" }
                    }
                }
            }
        },
    )
}

pub fn gone(viewer: &Viewer, id: &str, why: &str, outcome: Option<&ApprovalOutcome>) -> Markup {
    layout(
        "Not held",
        Some(viewer),
        html! {
            p role="alert" { "Approval " code { (id) } ": " (why) }
            @if let Some(o) = outcome {
                (outcome_facts(o))
            }
            p { a href="/console/approvals" { "Back to the approvals" } }
        },
    )
}

fn outcome_facts(o: &ApprovalOutcome) -> Markup {
    let what = match o.result {
        ApprovalResult::Granted => "Granted: the call proceeds.",
        ApprovalResult::GrantedButDenied => {
            "Granted, but a DENY policy fires now: the call is denied."
        }
        ApprovalResult::Refused => "Refused: the call is denied.",
        ApprovalResult::Expired => {
            "Expired: the deadline passed without an answer, so the call was refused."
        }
        ApprovalResult::Cancelled => "Withdrawn by its caller: the call is denied.",
    };
    html! {
        p role="status" { strong { (what) } }
        dl.facts {
            dt { "Approval" } dd { code { (o.approval_id) } }
            dt { "Call" } dd { code { (o.call_id) } }
            dt { "Answered by" } dd { (o.approver) }
            dt { "Decision" } dd { (o.decision.as_str()) }
            dt { "Reason" } dd { (o.reason) }
            @if let Some(l) = &o.lease_until { dt { "Lease until" } dd { (l) } }
            @if let Some(i) = o.ledger_index {
                dt { "Ledger entry" } dd { a href=(format!("/console/ledger/{i}")) { (i) } }
            }
            dt { "Time" } dd { (o.time) }
        }
    }
}

pub fn answered(viewer: &Viewer, o: &ApprovalOutcome) -> Markup {
    layout(
        "Answered",
        Some(viewer),
        html! {
            (outcome_facts(o))
            p { a href="/console/approvals" { "Back to the approvals" } }
        },
    )
}

/// A JSON value as one line of text (a string without its quotes).
fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
