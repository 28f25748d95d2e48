//! The gateway configuration file (TOML) and the `--upstream` argument syntax.
//!
//! Settings shared with `truststack serve` have the same names and are written the same way
//! (`approval_deadline = "15min"`).
//!
//! ```toml
//! policies = ["../policies/seed.tsp"]        # relative to this file
//! catalog = "../catalog.toml"
//! listen = "127.0.0.1:8808"                  # Streamable HTTP mode (else stdio)
//! default_decision = "allow"
//! unknown_tools = "deny"
//! approval_deadline = "15min"
//!
//! [identity]
//! issuer = "../issuer"                       # verify signed credentials (`truststack identity init`)
//! allow_anonymous = false
//! [[identity.tokens]]
//! token_sha256 = "…"
//! agent = "spiffe://acme.example/agent/claude-ops"
//! chain = ["user:operator@acme.example"]
//!
//! [approvals]                                # the `/v1/approvals…` API of this process
//! listen = "127.0.0.1:7391"
//!
//! [ledger]                                   # write every decision ahead to a ledger
//! path = "truststack.db"
//! key = "truststack.key"                   # default: the path with .key
//!
//! [limits]
//! max_message_bytes = 4194304
//!
//! [pinning]                                  # tool definitions as reviewed (crate::pinning)
//! file = "pins.json"                         # `truststack gateway pin` writes it
//! mode = "file"                              # default: "file" with a file, else "first-seen"
//!
//! [[upstream]]
//! name = "fs"
//! command = ["npx", "-y", "@modelcontextprotocol/server-filesystem", "/srv/docs"]
//! ```
//!
//! Deciding through a decision point instead (no policies, ledger, issuer or approvals here):
//!
//! ```toml
//! [decider]
//! url = "http://127.0.0.1:8181"              # `truststack serve`
//! timeout = "2s"                             # no answer by then: deny
//! ```

use crate::identity::StaticResolver;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use truststack_engine::ledger::LedgerSettings;
use truststack_engine::{DefaultDecision, Settings, TimeSource};
use truststack_policy::duration::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("upstream `{spec}`: {message}")]
    Upstream { spec: String, message: String },
    #[error("no upstream server: give `-- <command> [args]`, `--upstream`, or `[[upstream]]` in the configuration")]
    NoUpstream,
    #[error("{0}")]
    Policy(String),
    #[error("{0}")]
    Invalid(String),
}

/// Size and timing limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The largest JSON-RPC message accepted from either side, in bytes.
    pub max_message_bytes: usize,
    /// How often a held call sends `notifications/progress` while it waits (when the client
    /// asked for progress): `progress_interval = "1s"`.
    pub progress_interval: Duration,
    /// How long the gateway waits for an upstream's answer to a request it makes itself
    /// (aggregating `tools/list` of several upstreams, initializing a restarted server):
    /// `internal_timeout = "30s"`.
    pub internal_timeout: Duration,
    /// How many times a stdio upstream that exits is restarted before it is reported down.
    pub max_restarts: u32,
    /// An HTTP session that no request has named for this long, and on which the client holds
    /// no stream open, is ended, and its upstream with it: `session_idle_timeout = "30min"`.
    pub session_idle_timeout: Duration,
    /// The most HTTP sessions at once (each may run its own upstream process); an `initialize`
    /// beyond it is refused with 503 once idle sessions are ended.
    pub max_sessions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 4 * 1024 * 1024,
            progress_interval: Duration::from_ms(1000),
            internal_timeout: Duration::from_ms(30_000),
            max_restarts: 3,
            session_idle_timeout: Duration::from_ms(30 * 60 * 1000),
            max_sessions: 64,
        }
    }
}

/// The approvals API of an embedded engine (the same `/v1/approvals…` API as the server's).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// Where to serve `/v1/approvals…`. In HTTP mode they are also served on the main
    /// listener.
    pub listen: Option<String>,
    /// When set, approvers must send `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

fn default_provenance_bound() -> usize {
    truststack_policy::provenance::DEFAULT_BOUND
}

fn deny() -> DefaultDecision {
    DefaultDecision::Deny
}

/// The decision point every `tools/call` is asked of.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeciderSection {
    /// The base URL of `truststack serve` (`http://127.0.0.1:8181`).
    pub url: String,
    /// How long to wait for a decision (or any other answer) before denying the call.
    #[serde(default = "default_decider_timeout")]
    pub timeout: Duration,
}

fn default_decider_timeout() -> Duration {
    Duration::from_ms(2000)
}

impl DeciderSection {
    /// The decision point at `url`, with `timeout` or the default one.
    pub fn new(url: String, timeout: Option<Duration>) -> DeciderSection {
        DeciderSection {
            url,
            timeout: timeout.unwrap_or_else(default_decider_timeout),
        }
    }
}

fn default_deadline() -> Duration {
    Duration::from_ms(15 * 60 * 1000)
}

/// One upstream MCP server as written in the configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The namespace of its tools and prompts when several upstreams are configured.
    pub name: Option<String>,
    /// A stdio server: the program and its arguments.
    pub command: Option<Vec<String>>,
    /// A Streamable HTTP server: its MCP endpoint.
    pub url: Option<String>,
    /// Extra environment for a stdio server.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory of a stdio server.
    pub cwd: Option<PathBuf>,
    /// Extra HTTP headers for a Streamable HTTP server (e.g. its own `Authorization`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The gateway configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    #[serde(default)]
    pub policies: Vec<PathBuf>,
    pub catalog: Option<PathBuf>,
    /// The answer for calls no enforced policy speaks about.
    #[serde(default)]
    pub default_decision: DefaultDecision,
    /// Whether tools missing from the catalog may be called at all.
    #[serde(default = "deny")]
    pub unknown_tools: DefaultDecision,
    /// How long a held call waits for an approver unless its policy sets `DEADLINE`.
    #[serde(default = "default_deadline")]
    pub approval_deadline: Duration,
    /// Approver groups: group → human principals (credentials may also carry groups).
    #[serde(default)]
    pub approver_groups: BTreeMap<String, Vec<String>>,
    /// Bytes the value provenance index of one session (or delegation root) may hold.
    #[serde(default = "default_provenance_bound")]
    pub provenance_bound: usize,
    /// What the ledger keeps of users' inputs: `full`, `hash` or `redacted` (privacy mode).
    #[serde(default)]
    pub input_record: truststack_policy::RecordMode,
    /// Ask this decision point instead of deciding in this process.
    pub decider: Option<DeciderSection>,
    #[serde(default)]
    pub identity: StaticResolver,
    #[serde(default)]
    pub approvals: ApprovalsConfig,
    #[serde(default)]
    pub limits: Limits,
    /// Write decisions ahead to a ledger (none: decisions are not recorded).
    pub ledger: Option<LedgerSettings>,
    /// Serve Streamable HTTP on this address instead of stdio.
    pub listen: Option<String>,
    /// Origins allowed to call the HTTP endpoint (browsers send `Origin`); requests without an
    /// `Origin` header are always accepted. Default: `http://localhost`, `http://127.0.0.1`
    /// and `http://[::1]` on any port.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<UpstreamConfig>,
    /// Tool pinning (see [`crate::pinning`]).
    #[serde(default)]
    pub pinning: crate::pinning::PinningConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            policies: Vec::new(),
            catalog: None,
            default_decision: DefaultDecision::Allow,
            unknown_tools: deny(),
            approval_deadline: default_deadline(),
            approver_groups: BTreeMap::new(),
            provenance_bound: default_provenance_bound(),
            input_record: truststack_policy::RecordMode::Full,
            decider: None,
            identity: StaticResolver::default(),
            approvals: ApprovalsConfig::default(),
            limits: Limits::default(),
            ledger: None,
            listen: None,
            allowed_origins: Vec::new(),
            upstreams: Vec::new(),
            pinning: crate::pinning::PinningConfig::default(),
        }
    }
}

impl GatewayConfig {
    /// Reads a configuration file; relative paths in it are resolved against its directory.
    pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: GatewayConfig = toml::from_str(&text).map_err(|e| ConfigError::Toml {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let rel = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        config.policies.iter_mut().for_each(rel);
        config.catalog.iter_mut().for_each(rel);
        config.identity.issuer.iter_mut().for_each(rel);
        if let Some(l) = &mut config.ledger {
            l.resolve(base);
        }
        for u in &mut config.upstreams {
            u.cwd.iter_mut().for_each(rel);
        }
        config.pinning.file.iter_mut().for_each(rel);
        let invalid = |e: ConfigError| ConfigError::Toml {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        config.check_decider().map_err(invalid)?;
        config.check_ledger().map_err(invalid)?;
        config
            .pinning
            .check()
            .map_err(|e| invalid(ConfigError::Invalid(e)))?;
        Ok(config)
    }

    /// The engine settings the gateway runs with: always on the system clock (an agent does not
    /// get to say what time it is).
    pub fn engine_settings(&self) -> Settings {
        Settings {
            default_decision: self.default_decision,
            unknown_tools: self.unknown_tools,
            approval_deadline_ms: self.approval_deadline.ms(),
            time_source: TimeSource::System,
            approver_groups: self.approver_groups.clone(),
            provenance_bound: self.provenance_bound,
            input_record: self.input_record,
        }
    }

    /// With `[decider]`, the decision point holds the policies, the ledger, the identities and
    /// the approvals: configuring them here as well would suggest a second decision, so it is
    /// refused.
    pub fn check_decider(&self) -> Result<(), ConfigError> {
        let Some(d) = &self.decider else {
            return Ok(());
        };
        if !(d.url.starts_with("http://") || d.url.starts_with("https://")) {
            return Err(ConfigError::Invalid(format!(
                "decider.url: `{}` is not an http:// or https:// URL",
                d.url
            )));
        }
        let here = [
            ("policies", !self.policies.is_empty()),
            ("catalog", self.catalog.is_some()),
            ("ledger", self.ledger.is_some()),
            ("identity.issuer", self.identity.issuer.is_some()),
            ("identity.tokens", !self.identity.tokens.is_empty()),
            ("approvals", self.approvals.listen.is_some()),
            ("approver_groups", !self.approver_groups.is_empty()),
        ];
        let set: Vec<&str> = here.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect();
        if set.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(format!(
                "with [decider] the decision point at {} holds the policies, catalog, ledger, identities and approvals; remove {} from this configuration",
                d.url,
                set.join(", ")
            )))
        }
    }

    /// A gateway's own engine keeps its state in its process, and takes no turns with the
    /// `truststack serve` replicas a PostgreSQL ledger is for: writing their log, it would
    /// decide without what they decided, and they without its decisions. So it is refused.
    pub fn check_ledger(&self) -> Result<(), ConfigError> {
        match self.ledger.as_ref().map(LedgerSettings::location) {
            Some(Ok(truststack_engine::ledger::LedgerLocation::Postgres(url))) => {
                Err(ConfigError::Invalid(format!(
                    "[ledger] path is the PostgreSQL database {url}: a gateway's own engine \
                     does not share state with the replicas on it; decide through them \
                     ([decider] url = a replica or their load balancer), or give [ledger] a file"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The upstreams, validated: names are unique and usable as namespaces when there are
    /// several.
    pub fn resolved_upstreams(&self) -> Result<Vec<Upstream>, ConfigError> {
        if self.upstreams.is_empty() {
            return Err(ConfigError::NoUpstream);
        }
        let several = self.upstreams.len() > 1;
        let mut out: Vec<Upstream> = Vec::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            let spec = u
                .name
                .clone()
                .or_else(|| u.url.clone())
                .or_else(|| u.command.as_ref().map(|c| c.join(" ")))
                .unwrap_or_default();
            let err = |message: String| ConfigError::Upstream {
                spec: spec.clone(),
                message,
            };
            let target = match (&u.command, &u.url) {
                (Some(cmd), None) => {
                    let Some((program, args)) = cmd.split_first() else {
                        return Err(err("`command` is empty".into()));
                    };
                    Target::Stdio {
                        program: program.clone(),
                        args: args.to_vec(),
                        env: u.env.clone(),
                        cwd: u.cwd.clone(),
                    }
                }
                (None, Some(url)) => {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(err(format!("`{url}` is not an http:// or https:// URL")));
                    }
                    Target::Http {
                        url: url.clone(),
                        headers: u.headers.clone(),
                    }
                }
                _ => {
                    return Err(err(
                        "give exactly one of `command` (stdio) and `url` (Streamable HTTP)".into(),
                    ))
                }
            };
            let name =
                match &u.name {
                    Some(n) => {
                        check_name(n).map_err(err)?;
                        n.clone()
                    }
                    None if several => return Err(err(
                        "several upstreams need names: their tools are namespaced `<name>__<tool>`"
                            .into(),
                    )),
                    None => format!("upstream{i}"),
                };
            if out.iter().any(|o| o.name == name) {
                return Err(err(format!("the name `{name}` is used twice")));
            }
            out.push(Upstream { name, target });
        }
        Ok(out)
    }
}

/// A namespace: letters, digits, `-` and `_`, without `__` (the separator).
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.contains(crate::NAMESPACE_SEPARATOR)
        && !name.ends_with('_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the name `{name}` must be letters, digits, `-` and `_`, without `__` and not ending in `_`"
        ))
    }
}

/// How to reach an upstream server.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Stdio {
        program: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
        cwd: Option<PathBuf>,
    },
    Http {
        url: String,
        headers: BTreeMap<String, String>,
    },
}

/// A validated upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: String,
    pub target: Target,
}

/// Parses an `--upstream` argument: `[NAME=]stdio:COMMAND ARGS…` (split on whitespace) or
/// `[NAME=]http(s)://…`.
pub fn parse_upstream_arg(arg: &str) -> Result<UpstreamConfig, ConfigError> {
    let err = |message: &str| ConfigError::Upstream {
        spec: arg.to_string(),
        message: message.to_string(),
    };
    let (name, rest) = match arg.split_once('=') {
        Some((n, r))
            if !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && (r.starts_with("stdio:")
                    || r.starts_with("http://")
                    || r.starts_with("https://")) =>
        {
            (Some(n.to_string()), r)
        }
        _ => (None, arg),
    };
    if let Some(cmd) = rest.strip_prefix("stdio:") {
        let command: Vec<String> = cmd.split_whitespace().map(String::from).collect();
        if command.is_empty() {
            return Err(err("`stdio:` needs a command"));
        }
        return Ok(UpstreamConfig {
            name,
            command: Some(command),
            ..UpstreamConfig::default()
        });
    }
    if rest.starts_with("http://") || rest.starts_with("https://") {
        return Ok(UpstreamConfig {
            name,
            url: Some(rest.to_string()),
            ..UpstreamConfig::default()
        });
    }
    Err(err(
        "expected `[NAME=]stdio:COMMAND [ARGS]` or `[NAME=]http://HOST/PATH`",
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn upstream_arguments() {
        let u = parse_upstream_arg("fs=stdio:npx -y @modelcontextprotocol/server-filesystem /tmp")
            .unwrap();
        assert_eq!(u.name.as_deref(), Some("fs"));
        assert_eq!(u.command.unwrap()[3], "/tmp");
        let u = parse_upstream_arg("http://127.0.0.1:3001/mcp?x=a=b").unwrap();
        assert_eq!(u.name, None);
        assert_eq!(u.url.as_deref(), Some("http://127.0.0.1:3001/mcp?x=a=b"));
        assert!(parse_upstream_arg("ftp://x").is_err());
    }

    #[test]
    fn several_upstreams_need_distinct_names() {
        let mut c = GatewayConfig::default();
        c.upstreams.push(parse_upstream_arg("stdio:a").unwrap());
        assert_eq!(c.resolved_upstreams().unwrap()[0].name, "upstream0");
        c.upstreams.push(parse_upstream_arg("b=stdio:b").unwrap());
        assert!(c.resolved_upstreams().is_err());
        c.upstreams[0].name = Some("b".into());
        assert!(c
            .resolved_upstreams()
            .unwrap_err()
            .to_string()
            .contains("twice"));
        c.upstreams[0].name = Some("a__x".into());
        assert!(c.resolved_upstreams().is_err());
    }

    #[test]
    fn config_file_paths_are_relative_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.toml");
        std::fs::write(
            &path,
            "policies = [\"p.tsp\"]\ncatalog = \"c.toml\"\n[limits]\nmax_message_bytes = 10\n[[upstream]]\nurl = \"http://127.0.0.1:1/mcp\"\n",
        )
        .unwrap();
        let c = GatewayConfig::load(&path).unwrap();
        assert_eq!(c.policies[0], dir.path().join("p.tsp"));
        assert_eq!(c.limits.max_message_bytes, 10);
        assert_eq!(c.limits.progress_interval.ms(), 1000);
        std::fs::write(
            &path,
            "[ledger]\npath = \"postgres://ts@db.internal/truststack\"\nkey = \"k\"\n",
        )
        .unwrap();
        let err = GatewayConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("does not share state"), "{err}");
        std::fs::write(&path, "bogus = 1\n").unwrap();
        assert!(GatewayConfig::load(&path)
            .unwrap_err()
            .to_string()
            .contains("bogus"));
    }
}
