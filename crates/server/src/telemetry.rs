//! OpenTelemetry: one span per decision, exported over OTLP (HTTP, protobuf), continuing the
//! caller's W3C trace context, so each decision appears in the operator's traces beside the
//! agent's own spans.
//!
//! Off unless configured: it starts only when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (and `OTEL_SDK_DISABLED` is not `true`, and
//! `OTEL_TRACES_EXPORTER` is not `none`). The exporter reads the other standard variables itself
//! (`OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`, `OTEL_BSP_*`, `OTEL_SERVICE_NAME`, ...).
//!
//! What a span carries: the verdict, the fired policies' ids, the agent, the user, the delegation
//! root, the session, the tool, the call, decision and approval ids, the ledger index. Argument
//! values only when the tool's catalog `record` mode is `full` (the default) — a tool the
//! ledger keeps only hashed or redacted arguments for never has them in a span, nor does a tool
//! missing from the catalog.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer, TracerProvider as _};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::time::SystemTime;
use truststack_engine::event::Principals;
use truststack_engine::{Decision, ToolCall};
use truststack_policy::RecordMode;

/// The W3C trace-context headers of a request (`traceparent`, `tracestate`).
#[derive(Debug, Clone, Default)]
pub struct TraceHeaders {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl TraceHeaders {
    /// From HTTP headers; absent or non-UTF-8 values are ignored (a new trace is started).
    pub fn from_http(headers: &axum::http::HeaderMap) -> TraceHeaders {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        TraceHeaders {
            traceparent: get("traceparent"),
            tracestate: get("tracestate"),
        }
    }
}

impl Extractor for TraceHeaders {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent.as_deref(),
            "tracestate" => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTEL_EXPORTER_OTLP_PROTOCOL={0}: only `http/protobuf` is supported")]
    Protocol(String),
    #[error("the OTLP exporter cannot be built: {0}")]
    Exporter(String),
}

/// The decision spans' exporter, when configured.
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Telemetry {
    /// The exporter the standard environment variables configure, or `None` when they configure
    /// none. `service` names the process in the traces unless `OTEL_SERVICE_NAME` does.
    pub fn from_env(service: &str) -> Result<Option<Telemetry>, TelemetryError> {
        let configured = env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
        let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        if !configured || disabled {
            return Ok(None);
        }
        let protocol = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"));
        if let Some(p) = protocol.filter(|p| p != "http/protobuf") {
            return Err(TelemetryError::Protocol(p));
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let name = env("OTEL_SERVICE_NAME").unwrap_or_else(|| service.to_string());
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name(name).build())
            .build();
        let tracer = provider.tracer("truststack");
        Ok(Some(Telemetry {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
        }))
    }

    /// Exports the span of one decision, from `started` to now, as a child of the caller's
    /// trace context when it sent one.
    pub fn decision(
        &self,
        parent: &TraceHeaders,
        started: SystemTime,
        call: &ToolCall,
        decision: &Decision,
        record: Option<RecordMode>,
    ) {
        let parent_cx = self
            .propagator
            .extract_with_context(&Context::new(), parent);
        let principals = Principals::of(&call.agent, call.session.as_deref(), &call.chain);
        let policies: Vec<StringValue> = decision
            .policies
            .iter()
            .map(|p| StringValue::from(p.id.clone()))
            .collect();
        let mut attributes = vec![
            KeyValue::new("truststack.decision", decision.decision.as_str()),
            KeyValue::new(
                "truststack.policy_ids",
                Value::Array(Array::String(policies)),
            ),
            KeyValue::new("truststack.agent", call.agent.clone()),
            KeyValue::new("truststack.delegation_root", principals.root.to_string()),
            KeyValue::new("truststack.tool", call.tool.clone()),
            KeyValue::new("truststack.call_id", call.id.clone()),
            KeyValue::new("truststack.decision_id", decision.decision_id.clone()),
            KeyValue::new("truststack.reason", decision.reason.clone()),
        ];
        if let Some(user) = call.chain.first() {
            attributes.push(KeyValue::new("truststack.user", user.clone()));
        }
        if let Some(session) = &call.session {
            attributes.push(KeyValue::new("truststack.session", session.clone()));
        }
        if let Some(id) = &decision.approval_id {
            attributes.push(KeyValue::new("truststack.approval_id", id.clone()));
        }
        if let Some(index) = decision.ledger_index.and_then(|i| i64::try_from(i).ok()) {
            attributes.push(KeyValue::new("truststack.ledger_index", index));
        }
        if record == Some(RecordMode::Full) {
            attributes.push(KeyValue::new("truststack.args", call.args.to_string()));
        }
        let mut span = self
            .tracer
            .span_builder("truststack.decide")
            .with_kind(SpanKind::Server)
            .with_start_time(started)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent_cx);
        if decision.decision.as_str() == "deny" {
            span.set_status(Status::error(decision.reason.clone()));
        }
        span.end();
    }

    /// Exports what is buffered and stops: at shutdown, so no decision span is lost.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "OpenTelemetry: spans not flushed at shutdown");
        }
    }
}
