//! Notifications to approvers where they already are: a signed JSON webhook, Slack or Teams.
//!
//! A held call, its answer and its expiry become an [`Event`]. Events go through a bounded
//! channel to one dispatcher task, which delivers each to every target with bounded retries and
//! exponential backoff. Nothing here is awaited by a decision: handing an event over is a
//! `try_send`, and a full queue drops the event (counted) rather than slow anything down.
//!
//! The same hook tells the console's live queue that the set of held calls changed.

use crate::metrics::Metrics;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, watch, Semaphore};
use truststack_engine::decision::{ApprovalOutcome, ApprovalResult, Decision};
use truststack_engine::ToolCall;
use truststack_policy::duration::Duration;

/// The header carrying the time (Unix seconds) a webhook body was signed at.
pub const TIMESTAMP_HEADER: &str = "truststack-timestamp";
/// The header carrying `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "truststack-signature";
/// The header carrying the event's id (the same on every retry: receivers de-duplicate by it).
pub const EVENT_ID_HEADER: &str = "truststack-event-id";

/// The `[notify]` section of `truststack.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Where notifications go (`[[notify.targets]]`).
    pub targets: Vec<TargetConfig>,
    /// Events waiting for delivery at most; past it new events are dropped (and counted).
    pub queue: usize,
    /// Attempts per event and target, the first included.
    pub attempts: u32,
    /// The wait before the first retry; it doubles for each further retry.
    pub backoff: Duration,
    /// Longest one delivery attempt may take.
    pub timeout: Duration,
    /// Deliveries in flight at once, all targets together.
    pub concurrency: usize,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            targets: Vec::new(),
            queue: 1024,
            attempts: 5,
            backoff: Duration::from_ms(500),
            timeout: Duration::from_ms(5_000),
            concurrency: 16,
        }
    }
}

/// One place notifications go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// A name for logs and metrics (defaults to the kind and position, e.g. `webhook-0`).
    #[serde(default)]
    pub name: Option<String>,
    pub kind: TargetKind,
    pub url: String,
    /// The HMAC key of a `webhook` target, read from this environment variable at start.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// The HMAC key written inline (prefer `secret_env`: keys do not belong in config files).
    #[serde(default)]
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// The event as JSON, signed with HMAC-SHA256.
    Webhook,
    /// A Slack incoming webhook (`{"text": …}` with a link).
    Slack,
    /// A Microsoft Teams incoming webhook / workflow (an Adaptive Card message).
    Teams,
}

impl TargetKind {
    fn as_str(self) -> &'static str {
        match self {
            TargetKind::Webhook => "webhook",
            TargetKind::Slack => "slack",
            TargetKind::Teams => "teams",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notify.targets[{index}]: {message}")]
    Target { index: usize, message: String },
    #[error("notify: {0}")]
    Invalid(String),
}

/// What happened to a held call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Held,
    Answered,
    Expired,
}

/// One notification: everything a receiver needs to show the call and link to it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// `approval.held`, `approval.answered` or `approval.expired`.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Unique per event; the same on every delivery attempt.
    pub id: String,
    pub approval_id: String,
    pub call_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    pub policies: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// For an answer: granted, granted_but_denied, refused, cancelled (expired has its own type).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<ApprovalResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<String>,
    pub reason: String,
    pub time: String,
    /// The call's page in the console.
    pub url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventType {
    #[serde(rename = "approval.held")]
    Held,
    #[serde(rename = "approval.answered")]
    Answered,
    #[serde(rename = "approval.expired")]
    Expired,
}

impl EventType {
    pub fn kind(self) -> EventKind {
        match self {
            EventType::Held => EventKind::Held,
            EventType::Answered => EventKind::Answered,
            EventType::Expired => EventKind::Expired,
        }
    }
}

/// What a held call was, kept until it is answered so the answer's event can say it.
#[derive(Debug, Clone)]
struct HeldCall {
    agent: String,
    chain: Vec<String>,
    tool: String,
}

struct Target {
    name: String,
    kind: TargetKind,
    url: String,
    secret: Option<Vec<u8>>,
}

/// Turns approval events into notifications and console updates.
pub struct Notifier {
    targets: Arc<Vec<Target>>,
    sender: mpsc::Sender<Event>,
    receiver: Mutex<Option<mpsc::Receiver<Event>>>,
    /// Held calls by approval id (removed when answered): bounded by the held calls.
    held: Mutex<HashMap<String, HeldCall>>,
    /// Bumped on every event: the console's live queue watches it.
    changed: watch::Sender<u64>,
    console_url: String,
    config: NotifyConfig,
    metrics: Arc<Metrics>,
}

static EVENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn event_id() -> String {
    let n = EVENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "n-{:x}-{n}-{:08x}",
        truststack_engine::engine::system_now(),
        rand::random::<u32>()
    )
}

impl Notifier {
    /// Checks the targets and reads their keys. `console_url` is the console's base address as
    /// approvers reach it (links are `<console_url>/console/approvals/<id>`).
    pub fn new(
        config: &NotifyConfig,
        console_url: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Notifier, NotifyError> {
        if config.attempts == 0 {
            return Err(NotifyError::Invalid("attempts must be at least 1".into()));
        }
        if config.queue == 0 || config.concurrency == 0 {
            return Err(NotifyError::Invalid(
                "queue and concurrency must be at least 1".into(),
            ));
        }
        let mut targets = Vec::new();
        for (index, t) in config.targets.iter().enumerate() {
            let bad = |message: String| NotifyError::Target { index, message };
            if !(t.url.starts_with("https://") || t.url.starts_with("http://")) {
                return Err(bad(format!("url `{}` is not an http(s) URL", t.url)));
            }
            let secret = match (&t.secret_env, &t.secret) {
                (Some(_), Some(_)) => {
                    return Err(bad("give `secret_env` or `secret`, not both".into()))
                }
                (Some(var), None) => Some(
                    std::env::var(var)
                        .map_err(|_| bad(format!("environment variable `{var}` is not set")))?
                        .into_bytes(),
                ),
                (None, Some(s)) => Some(s.clone().into_bytes()),
                (None, None) => None,
            };
            match (t.kind, &secret) {
                (TargetKind::Webhook, None) => {
                    return Err(bad(
                        "a webhook needs a signing key: `secret_env` (or `secret`)".into(),
                    ))
                }
                (TargetKind::Webhook, Some(s)) if s.len() < 16 => {
                    return Err(bad("the signing key must be at least 16 bytes".into()))
                }
                (TargetKind::Slack | TargetKind::Teams, Some(_)) => {
                    return Err(bad(format!(
                        "a {} webhook is not signed: its URL is its secret; remove the key",
                        t.kind.as_str()
                    )))
                }
                _ => {}
            }
            targets.push(Target {
                name: t
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{}-{index}", t.kind.as_str())),
                kind: t.kind,
                url: t.url.clone(),
                secret,
            });
        }
        let (sender, receiver) = mpsc::channel(config.queue);
        Ok(Notifier {
            targets: Arc::new(targets),
            sender,
            receiver: Mutex::new(Some(receiver)),
            held: Mutex::new(HashMap::new()),
            changed: watch::Sender::new(0),
            console_url: console_url.trim_end_matches('/').to_string(),
            config: config.clone(),
            metrics,
        })
    }

    /// The console page of approval `id`.
    pub fn link(&self, approval_id: &str) -> String {
        format!(
            "{}/console/approvals/{}",
            self.console_url,
            percent_encode(approval_id)
        )
    }

    /// Watches for changes to the held calls (the console's live queue).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// A call was decided: if it was held, say so.
    pub fn decided(&self, call: &ToolCall, decision: &Decision) {
        let Some(approval_id) = &decision.approval_id else {
            return;
        };
        self.held.lock().insert(
            approval_id.clone(),
            HeldCall {
                agent: call.agent.clone(),
                chain: call.chain.clone(),
                tool: call.tool.clone(),
            },
        );
        let event = Event {
            kind: EventType::Held,
            id: event_id(),
            approval_id: approval_id.clone(),
            call_id: call.id.clone(),
            agent: Some(call.agent.clone()),
            chain: call.chain.clone(),
            tool: Some(call.tool.clone()),
            policies: decision.policies.iter().map(|p| p.id.clone()).collect(),
            deadline: decision.deadline.clone(),
            result: None,
            approver: None,
            lease_until: None,
            reason: decision.reason.clone(),
            time: decision.time.clone(),
            url: self.link(approval_id),
        };
        self.send(event);
    }

    /// A held call was answered, cancelled or expired.
    pub fn answered(&self, outcome: &ApprovalOutcome) {
        let held = self.held.lock().remove(&outcome.approval_id);
        let expired = outcome.result == ApprovalResult::Expired;
        let event = Event {
            kind: if expired {
                EventType::Expired
            } else {
                EventType::Answered
            },
            id: event_id(),
            approval_id: outcome.approval_id.clone(),
            call_id: outcome.call_id.clone(),
            agent: held.as_ref().map(|h| h.agent.clone()),
            chain: held.as_ref().map(|h| h.chain.clone()).unwrap_or_default(),
            tool: held.map(|h| h.tool),
            policies: outcome.policies.iter().map(|p| p.id.clone()).collect(),
            deadline: None,
            result: (!expired).then_some(outcome.result),
            approver: (!expired).then(|| outcome.approver.clone()),
            lease_until: outcome.lease_until.clone(),
            reason: outcome.reason.clone(),
            time: outcome.time.clone(),
            url: self.link(&outcome.approval_id),
        };
        self.send(event);
    }

    fn send(&self, event: Event) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        if self.targets.is_empty() {
            return;
        }
        if let Err(e) = self.sender.try_send(event) {
            let event = match e {
                mpsc::error::TrySendError::Full(ev) | mpsc::error::TrySendError::Closed(ev) => ev,
            };
            tracing::warn!(approval = %event.approval_id, "notification queue full: event dropped");
            for t in self.targets.iter() {
                self.metrics
                    .notify_deliveries
                    .with_label_values(&[t.name.as_str(), "dropped"])
                    .inc();
            }
        }
    }

    /// Starts the dispatcher (once; later calls return `None`). It ends when the notifier is
    /// dropped; deliveries in flight are abandoned with the task.
    pub fn start(&self) -> Option<tokio::task::JoinHandle<()>> {
        let mut receiver = self.receiver.lock().take()?;
        let targets = Arc::clone(&self.targets);
        let metrics = Arc::clone(&self.metrics);
        let config = self.config.clone();
        let client = match reqwest::Client::builder()
            .timeout(config.timeout.std())
            // A redirect could carry a signed body somewhere the operator did not configure.
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "notifications disabled: no HTTP client");
                return None;
            }
        };
        let slots = Arc::new(Semaphore::new(config.concurrency));
        Some(tokio::spawn(async move {
            let mut deliveries = tokio::task::JoinSet::new();
            while let Some(event) = receiver.recv().await {
                for index in 0..targets.len() {
                    // Waiting for a slot holds the queue back (the channel then fills and drops),
                    // never a decision.
                    let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                        return;
                    };
                    let (targets, metrics, client, event) = (
                        Arc::clone(&targets),
                        Arc::clone(&metrics),
                        client.clone(),
                        event.clone(),
                    );
                    let (attempts, backoff) = (config.attempts, config.backoff.std());
                    deliveries.spawn(async move {
                        if let Some(target) = targets.get(index) {
                            deliver(&client, target, &event, attempts, backoff, &metrics).await;
                        }
                        drop(slot);
                    });
                }
                // Reap finished deliveries so the set does not grow.
                while deliveries.try_join_next().is_some() {}
            }
        }))
    }
}

/// How one attempt went.
enum Attempt {
    Delivered,
    /// Worth another try (5xx, 408, 429, a transport error or timeout).
    Retry(String),
    /// The receiver refused the message itself (another 4xx): retrying would not help.
    Rejected(String),
}

async fn deliver(
    client: &reqwest::Client,
    target: &Target,
    event: &Event,
    attempts: u32,
    backoff: std::time::Duration,
    metrics: &Metrics,
) {
    let body = match target.kind {
        TargetKind::Webhook => serde_json::to_vec(event),
        TargetKind::Slack => serde_json::to_vec(&slack_message(event)),
        TargetKind::Teams => serde_json::to_vec(&teams_message(event)),
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "notification not encoded");
            return;
        }
    };
    let count = |outcome: &str| {
        metrics
            .notify_attempts
            .with_label_values(&[target.name.as_str(), outcome])
            .inc();
    };
    let mut wait = backoff;
    for attempt in 1..=attempts {
        let mut req = client
            .post(&target.url)
            .header("content-type", "application/json")
            .header(EVENT_ID_HEADER, &event.id);
        if let Some(secret) = &target.secret {
            // Signed at each attempt, so the timestamp is fresh when a retry arrives.
            let timestamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            if let Some(signature) = sign(secret, timestamp, &body) {
                req = req
                    .header(TIMESTAMP_HEADER, timestamp.to_string())
                    .header(SIGNATURE_HEADER, signature);
            }
        }
        let result = match req.body(body.clone()).send().await {
            Ok(resp) if resp.status().is_success() => Attempt::Delivered,
            Ok(resp) => {
                let status = resp.status();
                let why = format!("HTTP {status}");
                if status.is_server_error()
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                {
                    Attempt::Retry(why)
                } else {
                    Attempt::Rejected(why)
                }
            }
            Err(e) if e.is_timeout() => Attempt::Retry("timed out".into()),
            Err(e) => Attempt::Retry(format!("transport: {e}")),
        };
        match result {
            Attempt::Delivered => {
                count("delivered");
                metrics
                    .notify_deliveries
                    .with_label_values(&[target.name.as_str(), "delivered"])
                    .inc();
                return;
            }
            Attempt::Rejected(why) => {
                count("rejected");
                tracing::warn!(target = %target.name, event = %event.id, %why, "notification rejected by its receiver");
                break;
            }
            Attempt::Retry(why) => {
                count("failed");
                tracing::info!(target = %target.name, event = %event.id, attempt, %why, "notification attempt failed");
                if attempt < attempts {
                    tokio::time::sleep(wait).await;
                    wait = wait.saturating_mul(2);
                }
            }
        }
    }
    metrics
        .notify_deliveries
        .with_label_values(&[target.name.as_str(), "gave_up"])
        .inc();
    tracing::warn!(target = %target.name, event = %event.id, "notification not delivered");
}

/// `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`: the timestamp is signed with the body
/// so a captured message cannot be replayed later under a fresh timestamp.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> Option<String> {
    let mac = keyed(secret, &timestamp.to_string(), body)?;
    Some(format!("v1={}", hex::encode(mac.finalize().into_bytes())))
}

/// The HMAC over `"<timestamp>.<body>"` (HMAC takes keys of any length: never `None` in
/// practice, but nothing here panics).
fn keyed(secret: &[u8], timestamp: &str, body: &[u8]) -> Option<Hmac<Sha256>> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).ok()?;
    m.update(timestamp.as_bytes());
    m.update(b".");
    m.update(body);
    Some(m)
}

/// Why a signed webhook does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("the timestamp header is not a number of seconds")]
    BadTimestamp,
    #[error("the timestamp is {0} s away from now (at most {1} s allowed)")]
    Stale(u64, u64),
    #[error("the signature header is not `v1=<64 hex digits>`")]
    BadSignature,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// What a receiver does (documented in docs/console.md): checks the timestamp is within
/// `tolerance_s` of `now_s`, then the signature over `"<timestamp>.<body>"`, in constant time.
pub fn verify(
    secret: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now_s: u64,
    tolerance_s: u64,
) -> Result<(), VerifyError> {
    let ts: u64 = timestamp.parse().map_err(|_| VerifyError::BadTimestamp)?;
    let skew = ts.abs_diff(now_s);
    if skew > tolerance_s {
        return Err(VerifyError::Stale(skew, tolerance_s));
    }
    let given = signature
        .strip_prefix("v1=")
        .and_then(|h| hex::decode(h).ok())
        .filter(|b| b.len() == 32)
        .ok_or(VerifyError::BadSignature)?;
    keyed(secret, &ts.to_string(), body)
        .ok_or(VerifyError::Mismatch)?
        .verify_slice(&given)
        .map_err(|_| VerifyError::Mismatch)
}

fn headline(event: &Event) -> String {
    let tool = event.tool.as_deref().unwrap_or("a tool call");
    match event.kind {
        EventType::Held => format!("Held for approval: {tool}"),
        EventType::Expired => format!("Approval expired (refused): {tool}"),
        EventType::Answered => {
            let result = match event.result {
                Some(ApprovalResult::Granted) => "granted",
                Some(ApprovalResult::GrantedButDenied) => "granted, then denied by policy",
                Some(ApprovalResult::Refused) => "refused",
                Some(ApprovalResult::Cancelled) => "withdrawn by its caller",
                _ => "answered",
            };
            format!("Approval {result}: {tool}")
        }
    }
}

fn facts(event: &Event) -> Vec<(&'static str, String)> {
    let mut facts = Vec::new();
    if let Some(agent) = &event.agent {
        facts.push(("Agent", agent.clone()));
    }
    if let Some(human) = event.chain.first() {
        facts.push(("On behalf of", human.clone()));
    }
    if !event.policies.is_empty() {
        facts.push(("Policies", event.policies.join(", ")));
    }
    if let Some(deadline) = &event.deadline {
        facts.push(("Deadline", deadline.clone()));
    }
    if let Some(approver) = &event.approver {
        facts.push(("Approver", approver.clone()));
    }
    if let Some(lease) = &event.lease_until {
        facts.push(("Lease until", lease.clone()));
    }
    facts.push(("Approval", event.approval_id.clone()));
    facts
}

/// Slack's escaping: `&`, `<` and `>` are control characters of its message format (links,
/// mentions such as `<!channel>`); everything in an event may come from an attacker.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Slack incoming-webhook message.
pub fn slack_message(event: &Event) -> Value {
    let mut text = format!("*{}*", slack_escape(&headline(event)));
    for (k, v) in facts(event) {
        text.push_str(&format!("\n{k}: `{}`", slack_escape(&v).replace('`', "'")));
    }
    text.push_str(&format!(
        "\n<{}|Open in the TrustStack console>",
        slack_escape(&event.url)
    ));
    json!({"text": text})
}

/// Markdown in Teams cards would turn an attacker's `[x](url)` into a link: escape it.
fn teams_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(
            c,
            '\\' | '[' | ']' | '(' | ')' | '*' | '_' | '~' | '`' | '#' | '<' | '>' | '!'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A Microsoft Teams incoming-webhook (workflow) message: an Adaptive Card.
pub fn teams_message(event: &Event) -> Value {
    let facts: Vec<Value> = facts(event)
        .into_iter()
        .map(|(k, v)| json!({"title": k, "value": teams_escape(&v)}))
        .collect();
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": teams_escape(&headline(event)), "weight": "Bolder", "wrap": true},
                    {"type": "FactSet", "facts": facts}
                ],
                "actions": [{"type": "Action.OpenUrl", "title": "Open in the TrustStack console", "url": event.url}]
            }
        }]
    })
}

/// Percent-encodes everything but unreserved characters (an approval id in a URL path).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_a_changed_body_or_old_timestamp_does_not() {
        let key = b"0123456789abcdef0123";
        let sig = sign(key, 1_700_000_000, b"{\"a\":1}").unwrap_or_default();
        assert_eq!(
            verify(key, "1700000000", &sig, b"{\"a\":1}", 1_700_000_010, 300),
            Ok(())
        );
        assert_eq!(
            verify(key, "1700000000", &sig, b"{\"a\":2}", 1_700_000_010, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(key, "1700000000", &sig, b"{\"a\":1}", 1_700_001_000, 300),
            Err(VerifyError::Stale(1000, 300))
        );
        assert_eq!(
            verify(key, "x", &sig, b"", 0, 300),
            Err(VerifyError::BadTimestamp)
        );
    }

    #[test]
    fn slack_and_teams_messages_escape_what_an_attacker_wrote() {
        let event = Event {
            kind: EventType::Held,
            id: "n-1".into(),
            approval_id: "a-1".into(),
            call_id: "c-1".into(),
            agent: Some("spiffe://x/agent/<!channel>".into()),
            chain: vec![],
            tool: Some("[click](https://evil.example)".into()),
            policies: vec![],
            deadline: None,
            result: None,
            approver: None,
            lease_until: None,
            reason: String::new(),
            time: String::new(),
            url: "https://console.example/console/approvals/a-1".into(),
        };
        let slack = slack_message(&event)["text"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(!slack.contains("<!channel>"), "{slack}");
        assert!(slack.contains("&lt;!channel&gt;"), "{slack}");
        let teams = teams_message(&event).to_string();
        assert!(
            teams.contains(r"\\[click\\]\\(https://evil.example\\)"),
            "{teams}"
        );
    }
}
