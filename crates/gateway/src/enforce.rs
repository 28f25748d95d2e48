//! From MCP to the engine and back: a `tools/call` becomes a `tool_call` event decided for the
//! caller's verified identity; an allowed call's result becomes an observation labelled with the
//! catalog's data source; a denial becomes a tool result the model can read.

use crate::identity::CallerIdentity;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use truststack_engine::{ApprovalOutcome, DataAccess, Decision, Engine, Observation, ToolCall};
use truststack_policy::RecordMode;
use truststack_server::telemetry::{Telemetry, TraceHeaders};

/// The `_meta` key under which denials carry the decision.
pub const META_KEY: &str = "io.truststack/decision";

/// The embedded engine as the gateway uses it.
pub struct Enforcer {
    engine: Arc<Engine>,
    /// The decision spans' OTLP exporter, when the environment configures one.
    telemetry: std::sync::OnceLock<Telemetry>,
    /// Whether observations carry the result (a recorder is attached); without one, the result
    /// is not parsed at all.
    record_results: bool,
}

impl Enforcer {
    pub fn new(engine: Arc<Engine>, record_results: bool) -> Enforcer {
        Enforcer {
            engine,
            telemetry: std::sync::OnceLock::new(),
            record_results,
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Exports a span per decision through `telemetry` (the first one set stays).
    pub fn set_telemetry(&self, telemetry: Telemetry) {
        let _ = self.telemetry.set(telemetry);
    }

    /// Flushes the decision spans, at shutdown.
    pub fn shutdown_telemetry(&self) {
        if let Some(t) = self.telemetry.get() {
            t.shutdown();
        }
    }

    /// Decides a call for a verified caller; `trace` is the caller's W3C trace context, which
    /// the decision's span continues.
    pub fn decide(&self, who: &CallerIdentity, call: &ToolCall, trace: &TraceHeaders) -> Decision {
        let started = std::time::SystemTime::now();
        let decision = self.engine.decide_as(who, call);
        if let Some(telemetry) = self.telemetry.get() {
            let record = self
                .engine
                .bundle()
                .catalog
                .tool(&call.tool)
                .map(|t| t.record);
            telemetry.decision(trace, started, call, &decision, record);
        }
        decision
    }

    /// The tools among `tools` that `who` may never call in `session`, each with why (see
    /// [`truststack_engine::visibility`]).
    pub fn hidden(
        &self,
        who: &CallerIdentity,
        session: &str,
        tools: Vec<String>,
    ) -> Vec<(String, String)> {
        let bundle = self.engine.bundle();
        truststack_engine::visibility::split(&bundle, self.engine.settings(), who, session, tools).1
    }

    /// Reports an allowed call's result (`result_text`: the JSON-RPC response) as an observation
    /// with the tool's catalog data source.
    pub fn observe(&self, call: &ToolCall, result_text: &str) {
        let bundle = self.engine.bundle();
        let spec = bundle.catalog.tool(&call.tool);
        let data_sources: Vec<DataAccess> = spec
            .and_then(|s| s.data_source.as_ref())
            .map(|d| {
                vec![DataAccess {
                    name: d.name.clone(),
                    mode: d.mode.clone(),
                }]
            })
            .unwrap_or_default();
        let result = if self.record_results {
            match spec.map(|s| s.record).unwrap_or_default() {
                RecordMode::Full => serde_json::from_str::<Value>(result_text)
                    .ok()
                    .and_then(|v| v.get("result").cloned()),
                RecordMode::Hash => {
                    Some(json!({"sha256": hex::encode(Sha256::digest(result_text.as_bytes()))}))
                }
                RecordMode::Redacted => None,
            }
        } else {
            None
        };
        let obs = Observation {
            id: None,
            time: None,
            agent: call.agent.clone(),
            session: call.session.clone(),
            chain: call.chain.clone(),
            call_id: Some(call.id.clone()),
            tool: Some(call.tool.clone()),
            data_sources,
            result,
        };
        if let Err(e) = self.engine.observe(&obs) {
            tracing::warn!(call = %call.id, error = %e, "observation not recorded");
        }
    }
}

/// The policies that fired, as `id (reason)`.
fn policy_list(decision: &Decision) -> Vec<String> {
    decision
        .policy_ids()
        .into_iter()
        .map(String::from)
        .collect()
}

/// The text and `_meta` of a denied call.
pub fn denial(tool: &str, decision: &Decision) -> (String, Value) {
    let text = format!(
        "TrustStack denied this call to `{tool}`: {}. (decision {})",
        decision.reason, decision.decision_id
    );
    let meta = json!({ META_KEY: {
        "decision": "deny",
        "decision_id": decision.decision_id,
        "policies": policy_list(decision),
        "reason": decision.reason,
    }});
    (text, meta)
}

/// The text and `_meta` of a call refused because the session's credential no longer verifies
/// (revoked or expired since the session began).
pub fn credential_denial(tool: &str, error: &str) -> (String, Value) {
    let reason = format!("the session's credential is no longer valid: {error}");
    let text = format!("TrustStack denied this call to `{tool}`: {reason}.");
    let meta = json!({ META_KEY: { "decision": "deny", "reason": reason }});
    (text, meta)
}

/// The text and `_meta` of a held call that was not released.
pub fn refusal(tool: &str, held: &Decision, outcome: &ApprovalOutcome) -> (String, Value) {
    let text = format!(
        "TrustStack denied this call to `{tool}`: {}; {}. (approval {})",
        held.reason, outcome.reason, outcome.approval_id
    );
    let meta = json!({ META_KEY: {
        "decision": "deny",
        "decision_id": held.decision_id,
        "approval_id": outcome.approval_id,
        "approval": outcome.result,
        "policies": policy_list(held),
        "reason": outcome.reason,
    }});
    (text, meta)
}

/// The progress message of a held call.
pub fn held_message(decision: &Decision) -> String {
    format!(
        "{}; waiting for an approver (approval {}, deadline {})",
        decision.reason,
        decision.approval_id.as_deref().unwrap_or("?"),
        decision.deadline.as_deref().unwrap_or("?")
    )
}
