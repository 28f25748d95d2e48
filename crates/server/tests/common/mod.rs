//! A real server on a loopback port, over a real SQLite ledger.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod receiver;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::oneshot;
use truststack_engine::ledger::{Ledger, LedgerConfig};
use truststack_server::backend::IdentityService;
use truststack_server::{AppState, ServerConfig};
use truststack_testkit::net::JsonReply;
use truststack_testkit::write_file;

pub use truststack_testkit::examples::gtg1002 as example;

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// The server's state, to see it gone after `stop`.
    state: std::sync::Weak<AppState>,
    /// The SQLite ledger's writer lock, to see it released after `stop`.
    writer_lock: Option<PathBuf>,
}

pub async fn start(
    config: ServerConfig,
    dir: &Path,
    identity: Option<Arc<dyn IdentityService>>,
) -> TestServer {
    let ledger = Arc::new(
        Ledger::open(
            &dir.join("ledger.db"),
            &LedgerConfig::new(dir.join("ledger.key")),
        )
        .unwrap(),
    );
    let state = Arc::new(AppState::new(config, ledger, identity).unwrap());
    let mut server = serve_state(state).await;
    server.writer_lock = Some(dir.join("ledger.db.lock"));
    server
}

/// A server on the ledger `config.ledger` names, opened as `truststack serve` opens it (a
/// PostgreSQL database shared with other replicas, for one), off the async workers as the
/// blocking database client needs.
pub async fn start_replica(config: ServerConfig) -> TestServer {
    start_replica_with(config, None).await
}

/// [`start_replica`] with `identity` as its identity service.
pub async fn start_replica_with(
    config: ServerConfig,
    identity: Option<Arc<dyn IdentityService>>,
) -> TestServer {
    let state = tokio::task::spawn_blocking(move || {
        let ledger = Arc::new(config.ledger.open().unwrap());
        Arc::new(AppState::new(config, ledger, identity).unwrap())
    })
    .await
    .unwrap();
    serve_state(state).await
}

async fn serve_state(state: Arc<AppState>) -> TestServer {
    let weak = Arc::downgrade(&state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(truststack_server::serve(state, listener, async {
        let _ = rx.await;
    }));
    TestServer {
        base,
        client: reqwest::Client::new(),
        shutdown: Some(tx),
        handle: Some(handle),
        state: weak,
        writer_lock: None,
    }
}

impl TestServer {
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
        // Work the server handed to other tasks (a blocking write, a closing connection) may
        // hold the state a moment longer; a restart on the same ledger waits for it, as a new
        // process waits for the old one to exit.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.state.strong_count() > 0 || !self.writer_released() {
            assert!(
                std::time::Instant::now() < until,
                "the stopped server still holds its state or its ledger's writer lock"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Whether another writer could open the ledger now.
    fn writer_released(&self) -> bool {
        self.writer_lock
            .as_ref()
            .is_none_or(|lock| std::fs::File::open(lock).is_ok_and(|f| f.try_lock().is_ok()))
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        answer(
            self.client.post(format!("{}{path}", self.base)).json(&body),
            token,
        )
        .await
    }

    /// Asks `/v1/decide` about `call`.
    pub async fn decide(&self, token: Option<&str>, call: Value) -> (u16, Value) {
        self.post("/v1/decide", token, call).await
    }

    /// Grants held call `approval` as `approver` (a server without required credentials).
    pub async fn grant(&self, approval: &str, approver: &str) -> (u16, Value) {
        self.post(
            &format!("/v1/approvals/{approval}/grant"),
            None,
            serde_json::json!({"approver": approver}),
        )
        .await
    }

    /// POSTs a request that issues or delegates a credential; asserts it succeeded and gives
    /// the new token.
    pub async fn issued(&self, path: &str, token: Option<&str>, body: Value) -> String {
        let (status, answer) = self.post(path, token, body).await;
        assert_eq!(status, 200, "{answer}");
        answer["token"].as_str().unwrap().to_string()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        answer(self.client.get(format!("{}{path}", self.base)), token).await
    }
}

/// Sends `req` (with `token` as its bearer, if any): the status and the body as JSON, or as a
/// string when it is not JSON.
pub async fn answer(mut req: reqwest::RequestBuilder, token: Option<&str>) -> (u16, Value) {
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.status_reply().await
}

/// A config over the GTG-1002 example, with credentials off (the body names the agent and the
/// approver); the on-call engineer is in the examples' approver group.
pub fn open_config(policies: &[&str]) -> ServerConfig {
    ServerConfig {
        policies: policies.iter().map(|p| example(p)).collect(),
        catalog: Some(example("catalog.toml")),
        require_credentials: false,
        approver_groups: [(
            "security-oncall".to_string(),
            vec!["user:oncall@acme.example".to_string()],
        )]
        .into(),
        ..ServerConfig::default()
    }
}

/// [`open_config`] with one policy file, written into `dir` as `name`, instead of the examples'.
pub fn config_with_policy(dir: &Path, name: &str, text: &str) -> (ServerConfig, PathBuf) {
    let policy = write_file(dir, name, text);
    let mut config = open_config(&[]);
    config.policies = vec![policy.clone()];
    (config, policy)
}

/// An issuer for `acme.example` in `dir` as the server's identity service, and an admin's token.
pub fn identity_service(dir: &Path) -> (Arc<dyn IdentityService>, String) {
    use truststack_engine::identity::{Issuer, TrustDomain};
    let issuer = Issuer::init(
        &dir.join("issuer"),
        &TrustDomain::new("acme.example").unwrap(),
    )
    .unwrap();
    let service: Arc<dyn IdentityService> = Arc::new(
        truststack_server::identity_backend::IssuerService::new(issuer),
    );
    let admin = service
        .issue(&serde_json::json!({"user": "user:root@acme.example", "roles": ["admin"]}))
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    (service, admin)
}
