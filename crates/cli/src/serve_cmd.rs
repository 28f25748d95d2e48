//! `truststack serve`: the enforcement server.

use anyhow::Context;
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Before the ledger is opened: its first write may already meet the limit.
    runtime.block_on(async { survive_file_size_limit() });
    let mut ledger_settings = config.ledger.clone();
    ledger_settings.resolve(&config.base);
    let ledger_location = ledger_settings.location()?;
    let ledger = ledger_settings
        .open()
        .with_context(|| format!("opening the ledger {ledger_location}"))?;
    let identity = crate::identity_service::open(&config)?;
    let telemetry = truststack_server::telemetry::Telemetry::from_env("truststack-serve")?;
    let tracing_on = telemetry.is_some();
    let state = Arc::new(
        AppState::new(config.clone(), Arc::new(ledger), identity)?.with_telemetry(telemetry),
    );
    let flushed = Arc::clone(&state);
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        eprintln!(
            "truststack: serving on http://{} (ledger {}, {} policies, credentials {}{})",
            listener.local_addr()?,
            ledger_location,
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

/// Keeps the process alive past the file size limit (`ulimit -f`, `RLIMIT_FSIZE`). By default
/// SIGXFSZ kills a process whose write crosses the limit, so a server whose ledger reaches it
/// would die instead of failing closed. With a handler installed, the write fails with `EFBIG`
/// instead, the ledger reports the failed write, and every decision that needed it is denied with
/// the reason. Tokio's signal listener installs that handler (through `signal-hook-registry`)
/// without `unsafe` in this crate, which forbids it, and keeps it for the life of the process;
/// the listener task logs each occurrence. Must run inside the runtime.
pub(crate) fn survive_file_size_limit() {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ)) {
        Ok(mut signals) => {
            tokio::spawn(async move {
                while signals.recv().await.is_some() {
                    tracing::warn!(
                        "a write crossed the file size limit (SIGXFSZ, ulimit -f): it fails, and \
                         the decisions that needed it are denied"
                    );
                }
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGXFSZ: the file size limit would end the process")
        }
    }
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
