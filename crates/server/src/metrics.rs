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
        let decisions = IntCounterVec::new(
            Opts::new("truststack_decisions_total", "Decisions by outcome"),
            &["decision"],
        )?;
        let policy_fired = IntCounterVec::new(
            Opts::new(
                "truststack_policy_fired_total",
                "Policies that fired, by policy and action",
            ),
            &["policy", "action"],
        )?;
        let decide_latency = HistogramVec::new(
            HistogramOpts::new(
                "truststack_decide_seconds",
                "Time to decide a call, ledger write included",
            )
            .buckets(buckets()),
            &["decision"],
        )?;
        let pending_approvals =
            IntGauge::new("truststack_pending_approvals", "Calls held for a human")?;
        let ledger_size = IntGauge::new("truststack_ledger_entries", "Entries in the ledger")?;
        let ledger_append_latency = HistogramVec::new(
            HistogramOpts::new(
                "truststack_ledger_append_seconds",
                "Durable ledger append latency",
            )
            .buckets(buckets()),
            &["kind"],
        )?;
        let notify_attempts = IntCounterVec::new(
            Opts::new(
                "truststack_notify_attempts_total",
                "Notification delivery attempts, by target and outcome",
            ),
            &["target", "outcome"],
        )?;
        let notify_deliveries = IntCounterVec::new(
            Opts::new(
                "truststack_notify_deliveries_total",
                "Notifications by target and fate (delivered, gave_up, dropped)",
            ),
            &["target", "result"],
        )?;
        registry.register(Box::new(notify_attempts.clone()))?;
        registry.register(Box::new(notify_deliveries.clone()))?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(policy_fired.clone()))?;
        registry.register(Box::new(decide_latency.clone()))?;
        registry.register(Box::new(pending_approvals.clone()))?;
        registry.register(Box::new(ledger_size.clone()))?;
        registry.register(Box::new(ledger_append_latency.clone()))?;
        Ok(Metrics {
            registry,
            decisions,
            policy_fired,
            decide_latency,
            pending_approvals,
            ledger_size,
            ledger_append_latency,
            notify_attempts,
            notify_deliveries,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}
