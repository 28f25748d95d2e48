//! `truststack gateway`: the MCP gateway in front of one or more MCP servers.

use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use truststack_gateway::config::{parse_upstream_arg, UpstreamConfig};
use truststack_gateway::{Gateway, GatewayConfig};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
#[command(after_help = "Examples:\n  \
truststack gateway --config gateway.toml -- npx -y @modelcontextprotocol/server-everything\n  \
truststack gateway --config gateway.toml --listen 127.0.0.1:8808 --upstream http://127.0.0.1:3001/mcp\n  \
truststack gateway --config gateway.toml --upstream 'fs=stdio:npx -y @modelcontextprotocol/server-filesystem /srv' --upstream web=http://127.0.0.1:3001/mcp")]
pub struct GatewayArgs {
    /// The gateway configuration (TOML): policies, catalog, engine settings, identities,
    /// approvals endpoint, upstreams, limits. Flags below add to it or override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A policy file (`.tsp`), in addition to the configuration's; repeat for several.
    #[arg(long = "policy")]
    policies: Vec<PathBuf>,
    /// The tool catalog (TOML), instead of the configuration's.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Serve Streamable HTTP on this address (`127.0.0.1:8808`, endpoint `/mcp`) instead of stdio.
    #[arg(long)]
    listen: Option<String>,
    /// An upstream MCP server: `[NAME=]stdio:COMMAND ARGS…` or `[NAME=]http://HOST:PORT/mcp`.
    /// Repeat for several; their tools and prompts are then namespaced `NAME__tool`.
    #[arg(long = "upstream", value_name = "SPEC")]
    upstreams: Vec<String>,
    /// Serve the embedded engine's approvals API (`/v1/approvals…`, as `truststack serve`'s) on
    /// this address.
    #[arg(long)]
    approvals_listen: Option<String>,
    /// Ask this decision point (`truststack serve`, e.g. `http://127.0.0.1:8181`) for every
    /// decision instead of an engine in this process; the configuration's `[decider]`.
    #[arg(long, value_name = "URL")]
    decider: Option<String>,
    /// Serve callers without a credential (as the configuration's anonymous identity).
    #[arg(long)]
    allow_anonymous: bool,
    /// The largest JSON-RPC message accepted from either side, in bytes (default 4 MiB).
    #[arg(long)]
    max_message_bytes: Option<usize>,
    /// A stdio upstream server: the command and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
    #[command(subcommand)]
    action: Option<GatewayAction>,
}

#[derive(clap::Subcommand)]
enum GatewayAction {
    /// Connect to the upstreams, list their tools and write their definitions and hashes to a
    /// pin file, for review; the gateway then withholds any tool whose definition differs
    /// (`[pinning] file`).
    Pin(PinArgs),
}

#[derive(clap::Args)]
#[command(after_help = "Example:\n  truststack gateway pin --config gateway.toml -o pins.json")]
struct PinArgs {
    /// The gateway configuration (TOML) whose upstreams are pinned.
    #[arg(long)]
    config: Option<PathBuf>,
    /// An upstream MCP server, as for `truststack gateway`; replaces the configuration's.
    #[arg(long = "upstream", value_name = "SPEC")]
    upstreams: Vec<String>,
    /// Where to write the pin file.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// A stdio upstream server: the command and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn build_config(args: &GatewayArgs) -> anyhow::Result<GatewayConfig> {
    let mut config = match &args.config {
        Some(path) => GatewayConfig::load(path)?,
        None => GatewayConfig::default(),
    };
    config.policies.extend(args.policies.iter().cloned());
    if let Some(c) = &args.catalog {
        config.catalog = Some(c.clone());
    }
    if let Some(l) = &args.listen {
        config.listen = Some(l.clone());
    }
    if let Some(a) = &args.approvals_listen {
        config.approvals.listen = Some(a.clone());
    }
    if let Some(url) = &args.decider {
        let timeout = config.decider.as_ref().map(|d| d.timeout);
        config.decider = Some(truststack_gateway::config::DeciderSection::new(
            url.clone(),
            timeout,
        ));
        config.check_decider()?;
    }
    if args.allow_anonymous {
        config.identity.allow_anonymous = true;
    }
    if let Some(m) = args.max_message_bytes {
        config.limits.max_message_bytes = m;
    }
    set_upstreams(&mut config, &args.upstreams, &args.command)?;
    Ok(config)
}

/// Upstreams given on the command line (`--upstream`, `-- COMMAND`) replace the configuration's.
fn set_upstreams(
    config: &mut GatewayConfig,
    specs: &[String],
    command: &[String],
) -> anyhow::Result<()> {
    let mut extra: Vec<UpstreamConfig> = Vec::new();
    for spec in specs {
        extra.push(parse_upstream_arg(spec)?);
    }
    if !command.is_empty() {
        extra.push(UpstreamConfig {
            command: Some(command.to_vec()),
            ..UpstreamConfig::default()
        });
    }
    if !extra.is_empty() {
        config.upstreams = extra;
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("truststack-gateway")
        .build()
        .context("cannot start the async runtime")
}

/// `truststack gateway pin`: only the upstreams of the configuration matter; its policies,
/// ledger (which a running gateway holds), issuer and current pins are left alone.
fn pin(args: &PinArgs) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => GatewayConfig::load(path)?,
        None => GatewayConfig::default(),
    };
    set_upstreams(&mut config, &args.upstreams, &args.command)?;
    let config = GatewayConfig {
        upstreams: config.upstreams,
        limits: config.limits,
        pinning: truststack_gateway::pinning::PinningConfig {
            file: None,
            mode: Some(truststack_gateway::pinning::PinMode::Off),
        },
        ..GatewayConfig::default()
    };
    let upstreams = config.upstreams.len();
    let pins = runtime()?.block_on(async move {
        let gateway = Gateway::from_config(config)?;
        truststack_gateway::pinning::pin_upstreams(&gateway)
            .await
            .map_err(anyhow::Error::msg)
    })?;
    pins.write(&args.output)?;
    println!(
        "pinned {} tools of {upstreams} upstream{} to {}",
        pins.tools.len(),
        if upstreams == 1 { "" } else { "s" },
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn run(args: &GatewayArgs) -> anyhow::Result<ExitCode> {
    if let Some(GatewayAction::Pin(pin_args)) = &args.action {
        return pin(pin_args);
    }
    let config = build_config(args)?;
    if config.policies.is_empty() && config.decider.is_none() {
        tracing::warn!("no policy files: every call follows the default decision");
    }
    runtime()?.block_on(serve(config))
}

async fn serve(config: GatewayConfig) -> anyhow::Result<ExitCode> {
    crate::serve_cmd::survive_file_size_limit();
    let gateway = Arc::new(Gateway::from_config(config)?);
    if let Some(telemetry) =
        truststack_server::telemetry::Telemetry::from_env("truststack-gateway")?
    {
        eprintln!("truststack gateway: decision spans over OTLP");
        gateway.set_telemetry(telemetry);
    }
    let served = run_gateway(&gateway).await;
    // A call's outcome reaches the decision point after its answer reached the client: send
    // what is still on its way before stopping.
    gateway.flush_reports().await;
    // The exporter's flush blocks until its last batch is sent.
    let gw = Arc::clone(&gateway);
    let _ = tokio::task::spawn_blocking(move || gw.shutdown_telemetry()).await;
    served
}

async fn run_gateway(gateway: &Arc<Gateway>) -> anyhow::Result<ExitCode> {
    gateway.spawn_expiry(Duration::from_millis(500));
    let listen = gateway.config().listen.clone();
    let approvals = gateway.config().approvals.listen.clone();
    match listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let local = listener.local_addr()?;
            match gateway.engine() {
                Some(_) => eprintln!("truststack gateway: MCP endpoint http://{local}/mcp (approvals: http://{local}/v1/approvals)"),
                None => eprintln!("truststack gateway: MCP endpoint http://{local}/mcp (decisions and approvals: {})", decider_url(gateway)),
            }
            if let Some(a) = approvals {
                spawn_approvals(gateway, &a).await?;
            }
            // On SIGTERM or Ctrl-C the runtime ends with its sessions, which closes the ledger
            // (its writer signs a final checkpoint).
            tokio::select! {
                served = gateway.serve_http(listener) => served?,
                () = crate::serve_cmd::shutdown_signal() => {
                    eprintln!("truststack gateway: stopped");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        None => {
            if let Some(a) = approvals {
                spawn_approvals(gateway, &a).await?;
            }
            let token = std::env::var("TRUSTSTACK_TOKEN").ok();
            if gateway.resolver().resolve(token.as_deref()).is_err() && token.is_none() {
                bail!("{}", truststack_gateway::IdentityError::Missing);
            }
            tokio::select! {
                served = gateway.serve_stdio(tokio::io::stdin(), tokio::io::stdout(), token.as_deref()) => served?,
                () = crate::serve_cmd::shutdown_signal() => {}
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn decider_url(gateway: &Gateway) -> String {
    gateway
        .config()
        .decider
        .as_ref()
        .map(|d| d.url.clone())
        .unwrap_or_default()
}

async fn spawn_approvals(gateway: &Arc<Gateway>, addr: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for approvals"))?;
    eprintln!(
        "truststack gateway: approvals API http://{}/v1/approvals",
        listener.local_addr()?
    );
    let gw = Arc::clone(gateway);
    tokio::spawn(async move {
        if let Err(e) = gw.serve_approvals(listener).await {
            tracing::error!("approvals endpoint stopped: {e}");
        }
    });
    Ok(())
}
