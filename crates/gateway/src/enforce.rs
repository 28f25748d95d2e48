//! From MCP to the engine and back: a `tools/call` becomes a `tool_call` event decided for the
//! caller's verified identity; an allowed call's result becomes an observation labelled with the
//! catalog's data source; a denial becomes a tool result the model can read.

use crate::identity::CallerIdentity;
use serde_json::{json, Value};
use std::sync::Arc;
use truststack_engine::{
    ApprovalOutcome, DataAccess, Decision, Engine, Observation, Request, ToolCall,
};
use truststack_server::telemetry::{Telemetry, TraceHeaders};

/// The `_meta` key under which denials carry the decision.
pub const META_KEY: &str = "io.truststack/decision";

/// The embedded engine as the gateway uses it.
pub struct Enforcer {
    engine: Arc<Engine>,
    /// The decision spans' OTLP exporter, when the environment configures one.
    telemetry: std::sync::OnceLock<Telemetry>,
}

impl Enforcer {
    pub fn new(engine: Arc<Engine>) -> Enforcer {
        Enforcer {
            engine,
            telemetry: std::sync::OnceLock::new(),
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

    /// Decides a call for a verified caller, once its record is durable; `trace` is the
    /// caller's W3C trace context, which the decision's span continues.
    pub async fn decide(
        &self,
        who: &CallerIdentity,
        call: &ToolCall,
        trace: &TraceHeaders,
    ) -> Decision {
        let started = std::time::SystemTime::now();
        let decision = self
            .engine
            .queue(Request::new(call).for_caller(who))
            .durable()
            .await;
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
    /// with the tool's catalog data source. The engine applies it to its scopes at once and
    /// keeps of the result what the catalog's `record` mode says; the record is written in the
    /// background.
    pub fn observe(&self, call: &ToolCall, result_text: &str) {
        let bundle = self.engine.bundle();
        let data_sources: Vec<DataAccess> = bundle
            .catalog
            .tool(&call.tool)
            .and_then(|s| s.data_source.as_ref())
            .map(|d| {
                vec![DataAccess {
                    name: d.name.clone(),
                    mode: d.mode.clone(),
                }]
            })
            .unwrap_or_default();
        let result = self
            .engine
            .wants_results()
            .then(|| serde_json::from_str::<Value>(result_text).ok())
            .flatten()
            .and_then(|mut v| v.get_mut("result").map(Value::take));
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
        match self.engine.queue_observation(&obs) {
            Ok(recording) => {
                let call_id = call.id.clone();
                tokio::spawn(async move {
                    if let Err(e) = recording.durable().await {
                        tracing::warn!(call = %call_id, error = %e, "observation not recorded");
                    }
                });
            }
            Err(e) => tracing::warn!(call = %call.id, error = %e, "observation not recorded"),
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
