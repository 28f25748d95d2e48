//! `truststack serve`: the enforcement server.

use anyhow::Context;
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use truststack_engine::ledger::{Ledger, LedgerConfig};
use truststack_server::{AppState, ServerConfig};

#[derive(Args)]
pub struct ServeArgs {
    /// The server's config file (default: ./truststack.toml when present, else built-in defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The address to listen on, overriding the config.
    #[arg(long)]
    listen: Option<String>,
}

pub fn load_config(path: Option<&Path>) -> anyhow::Result<ServerConfig> {
    Ok(match path {
        Some(p) => ServerConfig::load(p)?,
        None if Path::new("truststack.toml").exists() => {
            ServerConfig::load(Path::new("truststack.toml"))?
        }
        None => ServerConfig::default(),
    })
}

pub fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = load_config(args.config.as_deref())?;
    if let Some(listen) = &args.listen {
        config.listen.clone_from(listen);
    }
    let ledger_path = config.resolve(&config.ledger);
    let ledger = Ledger::open(
        &ledger_path,
        &LedgerConfig {
            key_file: config.resolve(&config.ledger_key),
            origin: config.ledger_origin.clone(),
            checkpoint_every: config.checkpoint_every,
        },
    )
    .with_context(|| format!("opening the ledger {}", ledger_path.display()))?;
    let identity = crate::identity_service::open(&config)?;
    let telemetry = truststack_server::telemetry::Telemetry::from_env("truststack-serve")?;
    let tracing_on = telemetry.is_some();
    let state = Arc::new(
        AppState::new(config.clone(), Arc::new(ledger), identity)?.with_telemetry(telemetry),
    );
    let flushed = Arc::clone(&state);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        eprintln!(
            "truststack: serving on http://{} (ledger {}, {} policies, credentials {}{})",
            listener.local_addr()?,
            ledger_path.display(),
            state.engine().bundle().policies.len(),
            if config.require_credentials {
                "required"
            } else {
                "NOT required"
            },
            if tracing_on {
                ", decision spans over OTLP"
            } else {
                ""
            }
        );
        truststack_server::serve(state, listener, shutdown_signal()).await?;
        eprintln!("truststack: stopped; the ledger is flushed");
        anyhow::Ok(())
    })?;
    if let Some(telemetry) = &flushed.telemetry {
        telemetry.shutdown();
    }
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
