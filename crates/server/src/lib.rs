//! The TrustStack enforcement server: an HTTP API over the decision engine.
//!
//! Any agent framework asks `POST /v1/decide` before every tool call and gets a deterministic
//! answer; held calls wait for a human approver on the defender's side; every decision,
//! observation, approval and identity event is written to the ledger before it is answered.
//! Identities and the ledger are reached through the [`backend`] traits.

pub mod api;
pub mod auth;
pub mod backend;
pub mod config;
pub mod console;
pub mod error;
pub mod identity_backend;
pub mod ledger_backend;
pub mod metrics;
pub mod notify;
pub mod replicas;
pub mod state;
pub mod telemetry;
pub mod waiters;

pub use config::ServerConfig;
pub use state::AppState;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Disables Nagle's algorithm on every accepted connection. An answer written in more than one
/// piece (headers then body, or an SSE stream's events) would otherwise wait for the client's
/// delayed ACK after the first piece: about 40 ms per call on a keep-alive connection.
pub fn no_delay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt as _;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a client connection");
        }
    })
}

/// How often held calls are checked against their deadlines.
const EXPIRY_TICK: Duration = Duration::from_millis(500);

/// Serves the API on `listener` until `shutdown` completes, then stops accepting, drains the
/// requests in flight and returns (the ledger flushes when the state is dropped).
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Some(replicas) = &state.replicas {
        replicas.start(&state)?;
    }
    let expiry = tokio::spawn(expire_held_calls(Arc::clone(&state)));
    let notifications = state.notify.start();
    let draining = Arc::clone(&state);
    let result = axum::serve(no_delay(listener), api::router(Arc::clone(&state)))
        .with_graceful_shutdown(async move {
            shutdown.await;
            draining.ready.store(false, Ordering::Relaxed);
            draining.stopping.send_replace(true);
            tracing::info!("shutting down: draining requests in flight");
        })
        .await;
    expiry.abort();
    if let Some(replicas) = &state.replicas {
        replicas.stop();
    }
    // Wait for the task to go, so the state (and the ledger's writer) can be released.
    let _ = expiry.await;
    if let Some(n) = notifications {
        n.abort();
        let _ = n.await;
    }
    result
}

/// Turns held calls whose deadline passed into refusals (recorded in the ledger).
async fn expire_held_calls(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    loop {
        tick.tick().await;
        let now = truststack_engine::engine::system_now();
        if !state.engine().overdue(now) {
            continue;
        }
        // With replicas, in a turn: the call may have been answered on another replica.
        let Ok(_turn) = state.turn().await else {
            continue;
        };
        let st = Arc::clone(&state);
        let expired = tokio::task::spawn_blocking(move || {
            st.engine
                .read()
                .expire(truststack_engine::engine::system_now())
        })
        .await
        .unwrap_or_default();
        for outcome in &expired {
            tracing::info!(approval = %outcome.approval_id, call = %outcome.call_id, "held call expired: refused");
            state.notify.answered(outcome);
        }
        if !expired.is_empty() {
            state.count_pending();
        }
    }
}
