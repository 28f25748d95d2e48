//! The TrustStack MCP gateway: put every tool call of an unmodified MCP client under TrustStack
//! decisions.
//!
//! The gateway is a JSON-RPC-level proxy between an MCP client and one or more MCP servers,
//! over stdio (the client starts the gateway as if it were the server; the gateway starts the
//! real server) or Streamable HTTP (sessions, SSE streams, the GET stream). It acts on two
//! messages only:
//!
//! - `tools/call` becomes a `tool_call` event for the caller and is decided by the
//!   [`decider`]: a decision point (`truststack serve`, `[decider] url`) asked with the agent's
//!   own credential, or an engine embedded in this process (whose state is this process's
//!   alone). Allowed calls are forwarded and
//!   their results reported as observations; denied calls are answered with a tool result
//!   (`isError: true`) naming the policy and the reason; held calls wait for an approver (with
//!   `notifications/progress` while they wait).
//! - `tools/list` answers lose the tools the identity may never call ([`truststack_engine::visibility`])
//!   and the tools whose definition is not the pinned one ([`pinning`]), whose calls are denied.
//!
//! Every other message passes through as the text it arrived as, ids preserved. With several
//! upstreams, tool and prompt names are namespaced `<upstream>__<name>`.
//!
//! Identity and recording come from the configuration: `[identity] issuer` verifies signed
//! credentials ([`identity::CredentialResolver`]) and authenticates approvers; `[ledger]` writes
//! every decision ahead to a tamper-evident ledger and, on start, rebuilds the monitors from it
//! (a restart does not reset a rate limit). Both also plug in through [`IdentityResolver`] and
//! [`Gateway::with_engine`].

pub mod approvals;
pub mod config;
pub mod decider;
pub mod enforce;
pub mod framing;
pub mod http;
pub mod identity;
pub mod jsonrpc;
pub mod pinning;
pub mod session;
pub mod stdio;
pub mod upstream;

pub use config::{GatewayConfig, Limits, Upstream};
pub use identity::{
    CallerIdentity, CredentialResolver, IdentityError, IdentityResolver, StaticResolver,
};

use std::sync::Arc;
use std::time::Duration;
use truststack_engine::identity::Issuer;
use truststack_engine::Engine;

/// Separates an upstream's name from its tool and prompt names: `fs__read_file`.
pub const NAMESPACE_SEPARATOR: &str = "__";

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Pins(#[from] pinning::PinError),
    #[error("{0}")]
    Policy(String),
    /// The issuer's revocations could not be written to the ledger: the gateway does not start
    /// rather than admit a credential whose revocation it cannot record.
    #[error("cannot record the issuer's revocations in the ledger: {0}")]
    RevocationsNotRecorded(#[source] truststack_engine::WriteError),
    #[error("ledger {path}: {source}{hint}")]
    Ledger {
        path: std::path::PathBuf,
        #[source]
        source: truststack_engine::WriteError,
        /// What to do about it, when there is something to say.
        hint: &'static str,
    },
    #[error("issuer {path}: {detail}")]
    Issuer {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// What every session of a gateway shares.
pub struct Core {
    pub decider: decider::Decider,
    pub limits: Limits,
    pub upstreams: Vec<Upstream>,
    pub http: reqwest::Client,
    /// The tools' pinned definitions.
    pub pins: pinning::Pins,
}

/// A configured gateway. Serve it with [`Gateway::serve_stdio`] or [`Gateway::serve_http`].
pub struct Gateway {
    core: Arc<Core>,
    resolver: Arc<dyn IdentityResolver>,
    /// Authenticates approvers when configured.
    issuer: Option<Arc<Issuer>>,
    config: GatewayConfig,
}

impl Gateway {
    /// A gateway from its configuration. With `[decider]`, decisions are asked of that server
    /// and nothing else is loaded; otherwise compiles the policies and catalog it names, opens
    /// the ledger (rebuilding the engine's state from it) and the issuer when they are
    /// configured.
    pub fn from_config(config: GatewayConfig) -> Result<Gateway, GatewayError> {
        config.check_decider()?;
        if let Some(section) = &config.decider {
            let remote = decider::Remote::new(&section.url, section.timeout.std())
                .map_err(GatewayError::Policy)?;
            let resolver = Arc::new(identity::RemoteResolver::new(config.identity.clone()));
            let pins = pinning::Pins::new(&config.pinning, &[], None)?;
            return Ok(
                Gateway::with_decider(config, decider::Decider::Remote(remote), pins)?
                    .with_resolver(resolver),
            );
        }
        let loaded =
            truststack_policy::load::load_files(&config.policies, config.catalog.as_deref())
                .map_err(|e| GatewayError::Policy(e.to_string()))?;
        if !loaded.warnings.diagnostics.is_empty() {
            tracing::warn!("{}", loaded.render_warnings());
        }
        let sources = loaded.source_sizes();
        let mut engine = Engine::new(loaded.bundle, config.engine_settings());
        let mut revocation_log = None;
        let mut pins = None;
        if let Some(section) = &config.ledger {
            let ledger_err = |source: truststack_engine::WriteError| GatewayError::Ledger {
                path: section.path.clone(),
                source,
                hint: "",
            };
            let ledger = section.open().map_err(|e| {
                use truststack_engine::ledger::{store::StoreError, LedgerError};
                let hint = if matches!(e, LedgerError::Store(StoreError::InUse { .. })) {
                    "; gateways that share one ledger decide through one `truststack serve`: \
                     give each `--decider <url>` (or `[decider] url`) instead of `[ledger]`"
                } else {
                    ""
                };
                GatewayError::Ledger {
                    path: section.path.clone(),
                    source: e.into(),
                    hint,
                }
            })?;
            let records = ledger.records().map_err(|e| ledger_err(e.into()))?;
            let ledger = Arc::new(ledger);
            engine = engine
                .resume(ledger.clone(), &records, &sources)
                .map_err(ledger_err)?;
            pins = Some(pinning::Pins::new(
                &config.pinning,
                &records,
                Some(ledger.clone() as Arc<dyn truststack_engine::Recorder>),
            )?);
            revocation_log = Some(identity::RevocationLog::new(ledger, &records));
        }
        let issuer = match &config.identity.issuer {
            Some(dir) => Some(Arc::new(Issuer::open(dir).map_err(|e| {
                GatewayError::Issuer {
                    path: dir.clone(),
                    detail: e.to_string(),
                }
            })?)),
            None => None,
        };
        let pins = match pins {
            Some(p) => p,
            None => pinning::Pins::new(&config.pinning, &[], None)?,
        };
        let enforcer = enforce::Enforcer::new(Arc::new(engine));
        let mut gateway =
            Gateway::with_decider(config, decider::Decider::Embedded(enforcer), pins)?;
        if let Some(issuer) = issuer {
            let mut resolver =
                CredentialResolver::new(Arc::clone(&issuer), gateway.config.identity.clone());
            if let Some(log) = revocation_log {
                resolver = resolver
                    .with_revocation_log(log)
                    .map_err(GatewayError::RevocationsNotRecorded)?;
            }
            gateway.resolver = Arc::new(resolver);
            gateway.issuer = Some(issuer);
        }
        Ok(gateway)
    }

    /// A gateway around an engine built elsewhere (e.g. with a ledger recorder attached).
    pub fn with_engine(
        config: GatewayConfig,
        engine: Arc<Engine>,
    ) -> Result<Gateway, GatewayError> {
        let enforcer = enforce::Enforcer::new(engine);
        let pins = pinning::Pins::new(&config.pinning, &[], None)?;
        Gateway::with_decider(config, decider::Decider::Embedded(enforcer), pins)
    }

    fn with_decider(
        config: GatewayConfig,
        decider: decider::Decider,
        pins: pinning::Pins,
    ) -> Result<Gateway, GatewayError> {
        let upstreams = config.resolved_upstreams()?;
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| GatewayError::Policy(format!("cannot build the HTTP client: {e}")))?;
        let core = Arc::new(Core {
            decider,
            limits: config.limits.clone(),
            upstreams,
            http,
            pins,
        });
        let resolver = Arc::new(config.identity.clone());
        Ok(Gateway {
            core,
            resolver,
            issuer: None,
            config,
        })
    }

    /// Replaces the identity resolver (e.g. a verifier of signed credentials).
    pub fn with_resolver(mut self, resolver: Arc<dyn IdentityResolver>) -> Gateway {
        self.resolver = resolver;
        self
    }

    /// The embedded engine (`None` when a decision point decides).
    pub fn engine(&self) -> Option<&Arc<Engine>> {
        self.core.decider.embedded().map(enforce::Enforcer::engine)
    }

    /// Exports a span per decision over OTLP (see `truststack_server::telemetry`); with a
    /// decision point, the server exports its own.
    pub fn set_telemetry(&self, telemetry: truststack_server::telemetry::Telemetry) {
        if let Some(e) = self.core.decider.embedded() {
            e.set_telemetry(telemetry);
        }
    }

    /// Sends the outcome reports still on their way to a decision point, at shutdown.
    pub async fn flush_reports(&self) {
        self.core.decider.flush().await;
    }

    /// Flushes the decision spans, at shutdown.
    pub fn shutdown_telemetry(&self) {
        if let Some(e) = self.core.decider.embedded() {
            e.shutdown_telemetry();
        }
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// The issuer whose credentials are verified, when one is configured.
    pub fn issuer(&self) -> Option<&Arc<Issuer>> {
        self.issuer.as_ref()
    }

    pub fn resolver(&self) -> &Arc<dyn IdentityResolver> {
        &self.resolver
    }

    /// Refuses held calls whose deadline passed, every `period`, for as long as the engine
    /// lives (the embedded engine's; a decision point expires its own). It does not keep the
    /// engine, or its ledger, alive.
    pub fn spawn_expiry(&self, period: Duration) -> Option<tokio::task::JoinHandle<()>> {
        let engine = Arc::downgrade(self.engine()?);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                let expired = engine.expire(truststack_engine::engine::system_now());
                for o in expired {
                    tracing::info!(approval = %o.approval_id, call = %o.call_id, "approval expired: {}", o.reason);
                }
            }
        }))
    }
}

/// A random session id: 128 bits, hex (visible ASCII, as the transport requires).
pub fn new_session_id() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}
