//! Prometheus metrics.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub decisions: IntCounterVec,
    pub policy_fired: IntCounterVec,
    pub decide_latency: HistogramVec,
    pub pending_approvals: IntGauge,
    pub ledger_size: IntGauge,
    pub ledger_append_latency: HistogramVec,
    /// Each notification delivery attempt, by target and outcome (delivered, failed, rejected).
    pub notify_attempts: IntCounterVec,
    /// Each notification's fate per target (delivered, gave_up, dropped).
    pub notify_deliveries: IntCounterVec,
}

fn buckets() -> Vec<f64> {
    vec![
        0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5,
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    ]
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let histogram = |name: &str, help: &str, label: &str| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets()), &[label])?;
            registry.register(Box::new(h.clone()))?;
            Ok::<_, prometheus::Error>(h)
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        Ok(Metrics {
            decisions: counter(
                "truststack_decisions_total",
                "Decisions by outcome",
                &["decision"],
            )?,
            policy_fired: counter(
                "truststack_policy_fired_total",
                "Policies that fired, by policy and action",
                &["policy", "action"],
            )?,
            decide_latency: histogram(
                "truststack_decide_seconds",
                "Time to decide a call, ledger write included",
                "decision",
            )?,
            pending_approvals: gauge("truststack_pending_approvals", "Calls held for a human")?,
            ledger_size: gauge("truststack_ledger_entries", "Entries in the ledger")?,
            ledger_append_latency: histogram(
                "truststack_ledger_append_seconds",
                "Durable ledger append latency",
                "kind",
            )?,
            notify_attempts: counter(
                "truststack_notify_attempts_total",
                "Notification delivery attempts, by target and outcome",
                &["target", "outcome"],
            )?,
            notify_deliveries: counter(
                "truststack_notify_deliveries_total",
                "Notifications by target and fate (delivered, gave_up, dropped)",
                &["target", "result"],
            )?,
            registry,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}
