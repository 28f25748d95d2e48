//! `truststack.toml`: everything the server needs, each setting with a default so that
//! `truststack serve` alone starts on the embedded SQLite ledger.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use truststack_engine::{DefaultDecision, Settings};
use truststack_policy::duration::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Policy files, relative to the config file.
    pub policies: Vec<PathBuf>,
    /// The tool catalog.
    pub catalog: Option<PathBuf>,
    /// The `[ledger]` table, as in the gateway's configuration.
    pub ledger: truststack_engine::ledger::LedgerSettings,
    /// Where the issuer's keys and revocation list live.
    pub issuer_dir: PathBuf,
    /// The trust domain of agent identities issued by this server.
    pub trust_domain: String,
    /// Take the agent and its chain only from a verified credential (the default). Turning this
    /// off trusts the request body: for local experiments only.
    pub require_credentials: bool,
    pub default_decision: DefaultDecision,
    pub unknown_tools: DefaultDecision,
    /// How long a held call waits for an approver unless its policy says otherwise.
    pub approval_deadline: Duration,
    /// Approver groups: group → human principals (tokens may also carry groups).
    pub approver_groups: BTreeMap<String, Vec<String>>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Longest a request may take (approval waits are capped below it).
    pub request_timeout: Duration,
    /// Most approval waits (`GET /v1/approvals/{id}/wait`) one caller may have open at once.
    pub max_waits_per_caller: usize,
    /// Most approval waits open at once on this server, all callers together.
    pub max_waits: usize,
    /// Where `now` comes from: `system` (enforcement) or `event` (the request's `time`, for
    /// replaying recorded traces through the API; never for enforcement, since the caller would
    /// choose the time).
    pub clock: truststack_engine::TimeSource,
    /// Bytes the value provenance index of one session (or delegation root) may hold.
    pub provenance_bound: usize,
    /// What the ledger keeps of users' inputs: `full`, `hash` or `redacted` (privacy mode).
    pub input_record: truststack_policy::RecordMode,
    /// Notifications of held calls (`[notify]`): webhooks, Slack, Teams.
    pub notify: crate::notify::NotifyConfig,
    /// The approvals console (`[console]`).
    pub console: crate::console::ConsoleConfig,
    /// The directory relative paths are resolved against (the config file's).
    #[serde(skip)]
    pub base: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8181".into(),
            policies: Vec::new(),
            catalog: None,
            ledger: Default::default(),
            issuer_dir: ".truststack/issuer".into(),
            trust_domain: "truststack.local".into(),
            require_credentials: true,
            default_decision: DefaultDecision::Allow,
            unknown_tools: DefaultDecision::Deny,
            approval_deadline: Duration::from_ms(15 * 60 * 1000),
            approver_groups: BTreeMap::new(),
            max_body_bytes: 1 << 20,
            request_timeout: Duration::from_ms(60_000),
            max_waits_per_caller: 16,
            max_waits: 1024,
            clock: truststack_engine::TimeSource::System,
            provenance_bound: truststack_policy::provenance::DEFAULT_BOUND,
            input_record: truststack_policy::RecordMode::Full,
            notify: Default::default(),
            console: Default::default(),
            base: PathBuf::from("."),
        }
    }
}

impl ServerConfig {
    /// Reads a config file; relative paths in it are relative to the file.
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: ServerConfig = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        self.listen.parse::<std::net::SocketAddr>().map_err(|e| {
            invalid(format!(
                "listen: `{}` is not an address like 127.0.0.1:8181: {e}",
                self.listen
            ))
        })?;
        if let Some(url) = &self.console.public_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(invalid(format!(
                    "console.public_url: `{url}` is not an http(s) URL"
                )));
            }
        }
        Ok(())
    }

    /// The console's base address as approvers reach it: `console.public_url`, or the listen
    /// address over plain HTTP.
    pub fn console_url(&self) -> String {
        self.console
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }

    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// The engine settings this configuration gives (approver groups bind on the system clock:
    /// [`Settings::enforces_approver_groups`]).
    pub fn engine_settings(&self) -> Settings {
        Settings {
            default_decision: self.default_decision,
            unknown_tools: self.unknown_tools,
            approval_deadline_ms: self.approval_deadline.ms(),
            time_source: self.clock,
            approver_groups: self.approver_groups.clone(),
            provenance_bound: self.provenance_bound,
            input_record: self.input_record,
        }
    }
}
