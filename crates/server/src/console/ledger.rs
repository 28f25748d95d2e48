//! The ledger browser and the policies page. An entry's page carries no verdict of the server's:
//! the browser fetches the entry's canonical bytes, its inclusion proof and the signed
//! checkpoint, and checks each step itself (WebCrypto SHA-256 and Ed25519, in `console.js`).

use super::pages::layout;
use super::{page, to_sign_in, viewer, Shared, Viewer};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use truststack_engine::event::Principals;
use truststack_engine::record::Record;

/// Entries one page of the browser lists at most.
const PAGE_ROWS: usize = 50;
/// Entries one page of the browser searches at most (newest first): a page costs the same
/// however long the ledger has grown.
const SCAN: u64 = 20_000;
/// Entries read per ledger call while searching.
const CHUNK: u64 = 512;

/// The browser's filters (empty fields are no filter).
#[derive(Deserialize, Default, Clone)]
pub struct LedgerFilter {
    #[serde(default)]
    agent: String,
    #[serde(default)]
    session: String,
    #[serde(default)]
    root: String,
    #[serde(default)]
    tool: String,
    #[serde(default)]
    decision: String,
    /// Times as the ledger writes them (RFC 3339, UTC): entries at or after `from`.
    #[serde(default)]
    from: String,
    /// Entries before `to`.
    #[serde(default)]
    to: String,
    /// Search entries below this index (the next page).
    #[serde(default)]
    before: Option<u64>,
}

/// One listed entry.
struct Row {
    index: u64,
    committed: String,
    kind: String,
    agent: String,
    tool: String,
    decision: String,
}

impl LedgerFilter {
    fn call_filtered(&self) -> bool {
        !(self.agent.is_empty()
            && self.session.is_empty()
            && self.root.is_empty()
            && self.tool.is_empty())
    }

    /// The entry as a row, if it passes.
    fn row(&self, entry: &Value) -> Option<Row> {
        let index = entry["index"].as_u64()?;
        let record = Record::decode(index, &entry["record"]).ok();
        let kind = entry["record"]["kind"]
            .as_str()
            .unwrap_or("unreadable")
            .to_string();
        let (mut agent, mut tool, mut decision, mut time) =
            (String::new(), String::new(), String::new(), String::new());
        match &record {
            Some(Record::Decision { call, decision: d }) => {
                let p = Principals::of(&call.agent, call.session.as_deref(), &call.chain);
                if (!self.agent.is_empty() && call.agent != self.agent)
                    || (!self.session.is_empty()
                        && call.session.as_deref() != Some(self.session.as_str()))
                    || (!self.root.is_empty() && p.root != self.root)
                    || (!self.tool.is_empty() && call.tool != self.tool)
                {
                    return None;
                }
                agent.clone_from(&call.agent);
                tool.clone_from(&call.tool);
                decision = d.decision.as_str().to_string();
                time.clone_from(&d.time);
            }
            Some(Record::Approval { outcome }) => {
                if self.call_filtered() {
                    return None;
                }
                decision = outcome.decision.as_str().to_string();
                time.clone_from(&outcome.time);
            }
            _ => {
                if self.call_filtered() || !self.decision.is_empty() {
                    return None;
                }
                time = entry["record"]["time"].as_str().unwrap_or_default().into();
            }
        }
        if !self.decision.is_empty() && decision != self.decision {
            return None;
        }
        if (!self.from.is_empty() && (time.is_empty() || time.as_str() < self.from.as_str()))
            || (!self.to.is_empty() && (time.is_empty() || time.as_str() >= self.to.as_str()))
        {
            return None;
        }
        Some(Row {
            index,
            committed: entry["committed"].as_str().unwrap_or_default().into(),
            kind,
            agent,
            tool,
            decision,
        })
    }
}

pub async fn list(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(filter): Query<LedgerFilter>,
) -> Response {
    let Some(viewer) = viewer(&state, &headers) else {
        return to_sign_in();
    };
    let st = Arc::clone(&state);
    let f = filter.clone();
    let found = tokio::task::spawn_blocking(move || {
        let size = st.ledger.size();
        let mut end = f.before.unwrap_or(size).min(size);
        let floor = end.saturating_sub(SCAN);
        let mut rows = Vec::new();
        while end > floor && rows.len() < PAGE_ROWS {
            let start = end.saturating_sub(CHUNK).max(floor);
            for entry in st.ledger.entries(start, end)?.iter().rev() {
                if let Some(row) = f.row(entry) {
                    rows.push(row);
                    if rows.len() == PAGE_ROWS {
                        break;
                    }
                }
            }
            end = start;
        }
        // Where the next page starts: below the last row listed, or below what was searched.
        let next = match rows.last() {
            Some(r) if rows.len() == PAGE_ROWS => Some(r.index),
            _ => (end > 0).then_some(end),
        };
        // The checkpoint may be signed now (SQLite and a signature): off the async workers too.
        let checkpoint = st.ledger.checkpoint()?;
        Ok::<_, truststack_engine::ledger::LedgerError>((rows, next, size, checkpoint))
    })
    .await;
    match found {
        Ok(Ok((rows, next, size, checkpoint))) => page(
            StatusCode::OK,
            list_page(&viewer, &state, &filter, &rows, next, size, &checkpoint),
        ),
        Ok(Err(e)) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            layout(
                "Ledger",
                Some(&viewer),
                html! { p.error role="alert" { "The ledger could not be read: " (e.to_string()) } },
            ),
        ),
        Err(e) => page(
            StatusCode::INTERNAL_SERVER_ERROR,
            layout(
                "Ledger",
                Some(&viewer),
                html! { p.error { (e.to_string()) } },
            ),
        ),
    }
}

fn next_link(filter: &LedgerFilter, before: u64) -> String {
    let mut q = vec![format!("before={before}")];
    for (k, v) in [
        ("agent", &filter.agent),
        ("session", &filter.session),
        ("root", &filter.root),
        ("tool", &filter.tool),
        ("decision", &filter.decision),
        ("from", &filter.from),
        ("to", &filter.to),
    ] {
        if !v.is_empty() {
            q.push(format!("{k}={}", crate::notify::percent_encode(v)));
        }
    }
    format!("/console/ledger?{}", q.join("&"))
}

fn list_page(
    viewer: &Viewer,
    state: &crate::state::AppState,
    filter: &LedgerFilter,
    rows: &[Row],
    next: Option<u64>,
    size: u64,
    checkpoint: &str,
) -> Markup {
    let key = state.ledger.verifier_key().unwrap_or_default();
    layout(
        "Ledger",
        Some(viewer),
        html! {
            h2 { "Current checkpoint" }
            p { (size) " entries. The signed checkpoint (C2SP signed note) and the key that verifies it:" }
            pre.note tabindex="0" aria-label="Signed checkpoint" { (checkpoint) }
            p { "Verifier key: " code id="verifier-key" { (key) } }
            h2 { "Entries" }
            form.filters method="get" action="/console/ledger" aria-label="Filter the entries" {
                label { "Agent " input type="text" name="agent" value=(filter.agent); }
                label { "Session " input type="text" name="session" value=(filter.session); }
                label { "Delegation root " input type="text" name="root" value=(filter.root); }
                label { "Tool " input type="text" name="tool" value=(filter.tool); }
                label { "Decision "
                    select name="decision" {
                        @for d in ["", "allow", "deny", "require_approval"] {
                            option value=(d) selected[filter.decision == d] { @if d.is_empty() { "any" } @else { (d) } }
                        }
                    }
                }
                label { "From (RFC 3339) " input type="text" name="from" value=(filter.from) placeholder="2026-01-01T00:00:00Z"; }
                label { "To " input type="text" name="to" value=(filter.to); }
                button type="submit" { "Filter" }
                a href="/console/ledger" { "Clear" }
            }
            table {
                caption { "Newest first" }
                thead { tr {
                    th scope="col" { "Entry" } th scope="col" { "Committed" } th scope="col" { "Kind" }
                    th scope="col" { "Agent" } th scope="col" { "Tool" } th scope="col" { "Decision" }
                } }
                tbody {
                    @for r in rows {
                        tr {
                            td { a href=(format!("/console/ledger/{}", r.index)) { (r.index) } }
                            td { (r.committed) }
                            td { (r.kind) }
                            td { (r.agent) }
                            td { (r.tool) }
                            td { (r.decision) }
                        }
                    }
                }
            }
            @if rows.is_empty() { p { "No entries match in this part of the ledger." } }
            @if let Some(before) = next {
                p { a href=(next_link(filter, before)) { "Older entries" } }
            }
        },
    )
}

pub async fn entry(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(index): Path<u64>,
) -> Response {
    let Some(viewer) = viewer(&state, &headers) else {
        return to_sign_in();
    };
    let st = Arc::clone(&state);
    let got = tokio::task::spawn_blocking(move || st.ledger.entries(index, index + 1)).await;
    let entry = match got {
        Ok(Ok(mut list)) if !list.is_empty() => list.swap_remove(0),
        _ => {
            return page(
                StatusCode::NOT_FOUND,
                layout(
                    "Ledger entry",
                    Some(&viewer),
                    html! { p.error role="alert" { "There is no entry " (index) " in the ledger." } },
                ),
            )
        }
    };
    let record = serde_json::to_string_pretty(&entry["record"]).unwrap_or_default();
    page(
        StatusCode::OK,
        layout(
            &format!("Ledger entry {index}"),
            Some(&viewer),
            html! {
                p { "Committed " (entry["committed"].as_str().unwrap_or_default()) "." }
                h2 { "Verified in this browser" }
                p {
                    "Your browser fetches the entry's bytes, its inclusion proof and the signed \
                     checkpoint, and checks each step itself (SHA-256 and Ed25519 through WebCrypto). \
                     Compare the verifier key with one you obtained independently, or paste that one."
                }
                form id="verify" data-index=(index) {
                    label for="vkey" { "Verifier key" }
                    input id="vkey" type="text" name="vkey" value=(state.ledger.verifier_key().unwrap_or_default()) autocomplete="off" spellcheck="false";
                    button type="submit" { "Verify again" }
                }
                p id="verdict" role="status" aria-live="polite" { "Verifying…" }
                ol id="steps" {}
                h2 { "Record, decoded from the bytes checked above" }
                pre.args id="verified-record" tabindex="0" aria-label="The record decoded from the verified bytes" {}
                h2 { "Record, as the server lists it" }
                pre.args tabindex="0" aria-label="The record as listed" { (record) }
            },
        ),
    )
}

/// What the browser verifies: the entry's canonical bytes, its leaf hash, the audit path to the
/// checkpoint's tree, the signed checkpoint and the verifier key.
pub async fn proof(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(index): Path<u64>,
) -> Response {
    if viewer(&state, &headers).is_none() {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "sign in first"})),
        )
            .into_response();
    }
    let st = Arc::clone(&state);
    let got = tokio::task::spawn_blocking(move || {
        let entry = st
            .ledger
            .entries(index, index + 1)?
            .into_iter()
            .next()
            .ok_or(truststack_engine::ledger::LedgerError::NoSuchEntry {
                index,
                size: st.ledger.size(),
            })?;
        let proof = st.ledger.inclusion_proof(index, None)?;
        Ok::<_, truststack_engine::ledger::LedgerError>((entry, proof))
    })
    .await;
    let (entry, proof) = match got {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            return (StatusCode::NOT_FOUND, Json(json!({"error": e.to_string()}))).into_response()
        }
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": e.to_string()})),
            )
                .into_response()
        }
    };
    // The stored bytes are the record's RFC 8785 canonical form: the ledger hashed exactly these.
    let data = match entry.get("data").and_then(Value::as_str) {
        Some(raw) => raw.to_string(),
        None => truststack_engine::ledger::canonical::canonicalize(&entry["record"])
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
            .unwrap_or_default(),
    };
    Json(json!({
        "index": index,
        "data": data,
        "leaf_hash": entry["leaf_hash"],
        "tree_size": proof.tree_size,
        "path": proof.path,
        "root_hash": proof.root_hash,
        "checkpoint": proof.checkpoint,
        "verifier_key": state.ledger.verifier_key(),
    }))
    .into_response()
}

pub async fn policies(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let Some(viewer) = viewer(&state, &headers) else {
        return to_sign_in();
    };
    let bundle = state.engine().bundle();
    let hash = bundle.hash.clone();
    // The newest activation record of the active bundle, searched newest first.
    let st = Arc::clone(&state);
    let want = hash.clone();
    let activation = tokio::task::spawn_blocking(move || {
        let mut end = st.ledger.size();
        let floor = end.saturating_sub(SCAN);
        while end > floor {
            let start = end.saturating_sub(CHUNK).max(floor);
            for entry in st.ledger.entries(start, end).ok()?.iter().rev() {
                let record = &entry["record"];
                if record["kind"] == "policy_activation" && record["policy_hash"] == want.as_str() {
                    return Some((entry["index"].as_u64().unwrap_or_default(), record.clone()));
                }
            }
            end = start;
        }
        None
    })
    .await
    .ok()
    .flatten();
    let cases = safety_cases(&state);
    page(
        StatusCode::OK,
        layout(
            "Policies",
            Some(&viewer),
            html! {
                dl.facts {
                    dt { "Active bundle" } dd { code { (hash) } }
                    @if let Some((index, record)) = &activation {
                        dt { "Activated" } dd {
                            (record["time"].as_str().unwrap_or_default()) ", ledger entry "
                            a href=(format!("/console/ledger/{index}")) { (index) }
                        }
                        dt { "Sources" } dd {
                            @for s in record["sources"].as_array().cloned().unwrap_or_default() {
                                code { (s["name"].as_str().unwrap_or_default()) } " (" (s["bytes"].to_string()) " bytes) "
                            }
                        }
                    } @else {
                        dt { "Activated" } dd { "no activation record in the newest " (SCAN) " entries" }
                    }
                }
                @for p in &bundle.policies {
                    @let p = &p.policy;
                    section.policy {
                        h2 { code { (p.id) } " " (p.action.as_str()) " · " (p.target.as_str()) " · " (if p.mode == truststack_policy::Mode::Shadow { "shadow" } else { "enforce" }) }
                        @if let Some(r) = &p.reason { p { (r) } }
                        pre.args tabindex="0" { (p.text) }
                    }
                }
                h2 { "Safety cases" }
                @if cases.is_empty() {
                    p { "None configured: set " code { "[console] safety_cases" } " to the directory "
                        code { "truststack prove --out" } " writes." }
                } @else {
                    ul { @for c in &cases { li { a href=(format!("/console/safety-cases/{}", crate::notify::percent_encode(c))) { (c) } } } }
                }
            },
        ),
    )
}

/// The safety cases in the configured directory (`.md`, `.json`, `.txt` files).
fn safety_cases(state: &crate::state::AppState) -> Vec<String> {
    let Some(dir) = &state.config.console.safety_cases else {
        return Vec::new();
    };
    let mut names: Vec<String> = std::fs::read_dir(state.config.resolve(dir))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with(".md") || n.ends_with(".json") || n.ends_with(".txt"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

pub async fn safety_case(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let Some(viewer) = viewer(&state, &headers) else {
        return to_sign_in();
    };
    // Only a name listed from the directory: never a path a request made up.
    let listed = safety_cases(&state).into_iter().any(|n| n == name);
    let text = match (&state.config.console.safety_cases, listed) {
        (Some(dir), true) => std::fs::read_to_string(state.config.resolve(dir).join(&name)).ok(),
        _ => None,
    };
    match text {
        Some(text) => page(
            StatusCode::OK,
            layout(
                &format!("Safety case: {name}"),
                Some(&viewer),
                html! { pre.args tabindex="0" { (text) } },
            ),
        ),
        None => page(
            StatusCode::NOT_FOUND,
            layout(
                "Safety case",
                Some(&viewer),
                html! { p.error role="alert" { "No safety case " code { (name) } "." } },
            ),
        ),
    }
}
