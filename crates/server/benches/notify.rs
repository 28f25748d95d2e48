//! Decision latency with notifications to a receiver that never answers, against none, in one
//! run: a held call's notification must cost its decision nothing it can notice.
//!
//! ```text
//! cargo bench -p truststack-server --bench notify -- --warm-up-time 1 --measurement-time 3
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/receiver.rs"]
mod receiver;

use criterion::Criterion;
use serde_json::json;
use std::sync::Arc;
use truststack_engine::ledger::{Ledger, LedgerConfig};
use truststack_server::notify::{NotifyConfig, TargetConfig, TargetKind};
use truststack_server::{AppState, ServerConfig};
use truststack_testkit::write_file;

/// Holds every exploitation call, so each decision sends a notification.
const POLICY: &str = "POLICY hold-exploits:\n  ACTION: REQUIRE_HITL\n  TARGET: session\n  IF Trajectory_Contains('ExploitationTool')\n  REASON: \"exploitation needs a human\"\n";

/// Decisions made on each server before measuring.
const WARM: u64 = 3000;

struct Server {
    base: String,
    _dir: tempfile::TempDir,
}

async fn server(notify: NotifyConfig) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let policy = write_file(dir.path(), "hold.tsp", POLICY);
    let config = ServerConfig {
        policies: vec![policy],
        catalog: Some(truststack_testkit::examples::gtg1002("catalog.toml")),
        require_credentials: false,
        notify,
        ..ServerConfig::default()
    };
    let ledger = Arc::new(
        Ledger::open(
            &dir.path().join("ledger.db"),
            &LedgerConfig::new(dir.path().join("ledger.key")),
        )
        .unwrap(),
    );
    let state = Arc::new(AppState::new(config, ledger, None).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(truststack_server::serve(
        state,
        listener,
        std::future::pending(),
    ));
    Server { base, _dir: dir }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (quiet, notifying) = rt.block_on(async {
        let receiver = receiver::start().await;
        let dead = NotifyConfig {
            targets: vec![TargetConfig {
                name: Some("dead".into()),
                kind: TargetKind::Webhook,
                url: format!("{}/hang", receiver.base),
                secret_env: None,
                secret: Some("a-webhook-signing-key-for-benches".into()),
            }],
            timeout: "1h".parse().unwrap(),
            ..NotifyConfig::default()
        };
        (server(NotifyConfig::default()).await, server(dead).await)
    });
    let client = reqwest::Client::new();
    let decide = |base: &str, n: u64| {
        let body = json!({"tool": "exploit_runner", "args": {"target": "10.0.0.5"}, "agent": "spiffe://acme.example/agent/bench", "session": format!("s-{n}")});
        let url = format!("{base}/v1/decide");
        let client = client.clone();
        async move {
            let d: serde_json::Value = client
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(d["decision"], "require_approval", "{d}");
        }
    };
    // Both ledgers warm before measuring: a fresh SQLite WAL grows its file on every commit,
    // which makes the first thousand durable writes slower than the rest.
    rt.block_on(async {
        for s in [&quiet, &notifying] {
            for n in 0..WARM {
                decide(&s.base, u64::MAX - n).await;
            }
        }
    });
    let mut group = c.benchmark_group("held_call_decision");
    // The quiet server again last: the machine's drift over the run shows as the difference
    // between the two quiet measurements.
    for (name, s) in [
        ("no_notify", &quiet),
        ("dead_webhook", &notifying),
        ("no_notify_again", &quiet),
    ] {
        let mut n = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                n += 1;
                rt.block_on(decide(&s.base, n));
            })
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
