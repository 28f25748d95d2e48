//! The server's shared state: the engine (swapped atomically on policy reload), the ledger, the
//! identity service and the metrics.

use crate::backend::{IdentityService, LedgerBackend};
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::replicas::Replicas;
use parking_lot::RwLock;
use serde_json::{json, Value};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;
use truststack_engine::ledger::LedgerLocation;
use truststack_engine::{Engine, Recorded, Recorder, Recording};
use truststack_policy::load::{load_files, LoadError, Loaded};

/// Writes engine records to the ledger, timing each append.
struct LedgerRecorder {
    ledger: Arc<dyn LedgerBackend>,
    metrics: Arc<Metrics>,
}

impl LedgerRecorder {
    fn appended(metrics: &Metrics, kind: &str, started: Instant, index: u64) {
        metrics
            .ledger_append_latency
            .with_label_values(&[kind])
            .observe(started.elapsed().as_secs_f64());
        metrics
            .ledger_size
            .set(i64::try_from(index.saturating_add(1)).unwrap_or(i64::MAX));
    }
}

impl Recorder for LedgerRecorder {
    fn record(&self, record: Value) -> Recorded {
        self.submit(record).wait()
    }

    fn submit(&self, record: Value) -> Recording {
        let kind = record
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("other")
            .to_string();
        let started = Instant::now();
        match self.ledger.submit(record) {
            Recording::Settled(recorded) => {
                if let Ok(Some(index)) = recorded {
                    Self::appended(&self.metrics, &kind, started, index);
                }
                Recording::Settled(recorded)
            }
            Recording::Queued(durable) => {
                let metrics = Arc::clone(&self.metrics);
                Recording::Queued(Box::pin(async move {
                    let recorded = durable.await;
                    if let Ok(Some(index)) = recorded {
                        Self::appended(&metrics, &kind, started, index);
                    }
                    recorded
                }))
            }
        }
    }
}

pub struct AppState {
    pub config: ServerConfig,
    /// Decisions hold the read side while they are decided and their record queued; a reload
    /// takes the write side and waits for the queued records to be durable, so no decision is
    /// made on a bundle that is being replaced, and none is missing from the new engine's state.
    pub engine: RwLock<Arc<Engine>>,
    pub ledger: Arc<dyn LedgerBackend>,
    pub identity: Option<Arc<dyn IdentityService>>,
    pub metrics: Arc<Metrics>,
    pub ready: AtomicBool,
    /// Turns true when the server starts shutting down: long-polls end at once, so draining
    /// the requests in flight does not wait for them.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// The bounds on open approval waits.
    pub waiters: Arc<crate::waiters::Waiters>,
    /// The decision spans' OTLP exporter, when the environment configures one.
    pub telemetry: Option<crate::telemetry::Telemetry>,
    /// Notifications of held calls and their answers; the console's live queue.
    pub notify: crate::notify::Notifier,
    /// The console's signed-in sessions.
    pub sessions: crate::console::session::Sessions,
    /// This replica's turns at the state it shares with other replicas, when the ledger is a
    /// PostgreSQL database.
    pub replicas: Option<Arc<crate::replicas::Replicas>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Policies(#[from] LoadError),
    #[error("ledger: {0}")]
    Ledger(#[from] truststack_engine::ledger::LedgerError),
    /// The bundle's activation could not be recorded.
    #[error("ledger: {0}")]
    Activation(#[from] truststack_engine::WriteError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Notify(#[from] crate::notify::NotifyError),
    #[error("{0}")]
    Revocations(String),
}

impl AppState {
    /// Loads the policies, rebuilds the engine's state from the ledger and records the bundle
    /// activation.
    pub fn new(
        config: ServerConfig,
        ledger: Arc<dyn LedgerBackend>,
        identity: Option<Arc<dyn IdentityService>>,
    ) -> Result<AppState, StateError> {
        let metrics = Arc::new(Metrics::new()?);
        let loaded = load_bundle(&config)?;
        let (engine, replicas) = match config.ledger.location() {
            Ok(LedgerLocation::Postgres(url)) => {
                // Rebuilt from the log as it ends now, without the replicas' turn (a large log
                // would stall the fleet): what the others append meanwhile, this replica's
                // first turn applies before it decides anything.
                ledger.follow()?;
                let (engine, records) = build_engine(&config, loaded, &ledger, &metrics)?;
                // Revocations other replicas made, whatever this replica's issuer files say.
                crate::replicas::learn_revocations(identity.as_deref(), &records)
                    .map_err(StateError::Revocations)?;
                let applied = records.len() as u64;
                (engine, Some(Replicas::new(url, applied)))
            }
            _ => (build_engine(&config, loaded, &ledger, &metrics)?.0, None),
        };
        metrics
            .ledger_size
            .set(i64::try_from(ledger.size()).unwrap_or(i64::MAX));
        let waiters = crate::waiters::Waiters::new(config.max_waits_per_caller, config.max_waits);
        let notify = crate::notify::Notifier::new(
            &config.notify,
            &config.console_url(),
            Arc::clone(&metrics),
        )?;
        let sessions = crate::console::session::Sessions::new(config.console.session_ttl.std());
        Ok(AppState {
            notify,
            sessions,
            config,
            stopping: tokio::sync::watch::Sender::new(false),
            waiters,
            engine: RwLock::new(Arc::new(engine)),
            ledger,
            identity,
            metrics,
            ready: AtomicBool::new(true),
            telemetry: None,
            replicas,
        })
    }

    /// Exports a span per decision through `telemetry`.
    #[must_use]
    pub fn with_telemetry(mut self, telemetry: Option<crate::telemetry::Telemetry>) -> AppState {
        self.telemetry = telemetry;
        self
    }

    /// This request's place in the replicas' turn, when replicas share the state: held until
    /// the request's records are committed. `None` for a server alone on its ledger.
    pub async fn turn(&self) -> Result<Option<crate::replicas::Pass>, crate::error::ApiError> {
        match &self.replicas {
            None => Ok(None),
            Some(replicas) => replicas.enter().await.map(Some).map_err(|e| {
                crate::error::ApiError::unavailable(format!("not decided (failing closed): {e}"))
            }),
        }
    }

    /// Returns once this replica's state holds every change committed so far, on any replica
    /// (at once for a server alone on its ledger): for reads that must not miss one, such as
    /// an approver's queue.
    pub async fn caught_up(&self) -> Result<(), crate::error::ApiError> {
        self.turn().await.map(drop)
    }

    /// Sets the pending-approvals gauge from the engine: after anything that holds, answers,
    /// withdraws or expires a call.
    pub fn count_pending(&self) {
        self.metrics
            .pending_approvals
            .set(i64::try_from(self.engine().pending_count()).unwrap_or(0));
    }

    /// The active engine.
    pub fn engine(&self) -> Arc<Engine> {
        Arc::clone(&self.engine.read())
    }

    /// Atomically replaces the policy bundle: a bundle that fails to load is rejected whole and
    /// the old one stays active. The new engine's state is rebuilt from the ledger.
    pub fn reload(&self, by: &str) -> Result<Value, StateError> {
        let loaded = load_bundle(&self.config)?;
        let mut active = self.engine.write();
        // Decisions queued on the old engine are in the ledger before the new one reads it.
        self.ledger.sync()?;
        let (engine, _) = build_engine(&self.config, loaded, &self.ledger, &self.metrics)?;
        let hash = engine.bundle().hash.clone();
        *active = Arc::new(engine);
        tracing::info!(%hash, %by, "policy bundle reloaded");
        Ok(json!({"policy_hash": hash, "activated_by": by}))
    }
}

fn load_bundle(config: &ServerConfig) -> Result<Loaded, LoadError> {
    let policies: Vec<_> = config.policies.iter().map(|p| config.resolve(p)).collect();
    let catalog = config.catalog.as_ref().map(|c| config.resolve(c));
    load_files(&policies, catalog.as_deref())
}

fn build_engine(
    config: &ServerConfig,
    loaded: Loaded,
    ledger: &Arc<dyn LedgerBackend>,
    metrics: &Arc<Metrics>,
) -> Result<(Engine, Vec<Value>), StateError> {
    let warnings = loaded.render_warnings();
    if !warnings.is_empty() {
        tracing::warn!("policy warnings:\n{warnings}");
    }
    let sources = loaded.source_sizes();
    let recorder = Arc::new(LedgerRecorder {
        ledger: Arc::clone(ledger),
        metrics: Arc::clone(metrics),
    });
    let records = ledger.records()?;
    let engine = Engine::new(loaded.bundle, config.engine_settings())
        .resume(recorder, &records, &sources)?;
    Ok((engine, records))
}
