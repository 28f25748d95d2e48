//! `truststack serve` as a real process on a loopback port: under a file size limit
//! (`ulimit -f`), and shut down by SIGTERM with a crowd of approval waiters open.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use truststack_testkit::assert_contains;
use truststack_testkit::write_file;

const POLICY: &str =
    "POLICY gate: ACTION: REQUIRE_HITL TARGET: agent_identity IF Tool_Call('ExploitationTool')\n";
const AGENT: &str = "spiffe://acme.example/agent/recon";

use truststack_testkit::examples::gtg1002 as example;
use truststack_testkit::net::JsonReply;

/// Writes a config (credentials off: the body names the agent) with `extra` settings.
fn config(dir: &Path, extra: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("gate.tsp"), POLICY).unwrap();
    write_file(dir, "truststack.toml", format!(
            "listen = \"127.0.0.1:0\"\npolicies = [\"gate.tsp\"]\ncatalog = {:?}\nrequire_credentials = false\n{extra}",
            example("catalog.toml")
        ))
}

/// Starts `sh -c '<prefix>; exec truststack serve --config …'` and waits for its address.
fn serve(config: &Path, prefix: &str) -> (Child, String) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("{prefix}; exec \"$0\" serve --config \"$1\""))
        .arg(env!("CARGO_BIN_EXE_truststack"))
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("the server ended before it listened")
            .unwrap();
        if let Some(rest) = line.split("serving on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > within {
            let _ = child.kill();
            panic!("the server did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Past the file size limit the ledger's writes fail with EFBIG instead of the process dying
/// of SIGXFSZ: decisions are denied with the reason, and the server keeps answering.
#[test]
fn a_file_size_limit_fails_closed_and_the_server_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "[ledger]\ncheckpoint_every = 0\n");
    // `ulimit -f` counts 512-byte blocks in POSIX sh: 2 MiB, a few hundred decisions.
    let (mut child, base) = serve(&config, "ulimit -f 4096");
    let client = reqwest::blocking::Client::new();
    let padding = "p".repeat(4000);
    let mut allowed = 0;
    let mut denied = None;
    for i in 0..20_000 {
        let answer: Value = client
            .post(format!("{base}/v1/decide"))
            .json(&json!({"id": format!("c-{i}"), "tool": "nmap_scan", "agent": AGENT, "chain": ["user:op@acme.example"], "args": {"target": "10.0.0.1", "note": padding}}))
            .send()
            .unwrap_or_else(|e| panic!("call {i}: the server is gone after {allowed} decisions: {e}"))
            .json()
            .unwrap();
        if answer["decision"] == "allow" {
            allowed += 1;
        } else {
            denied = Some(answer);
            break;
        }
    }
    let denied = denied.expect("the file size limit was never reached");
    assert!(allowed > 0, "{denied}");
    assert_eq!(denied["decision"], "deny");
    assert_contains!(denied["reason"].as_str().unwrap(), "ledger");
    // Still alive, still failing closed.
    assert!(child.try_wait().unwrap().is_none(), "the process died");
    let health = client.get(format!("{base}/healthz")).send().unwrap();
    assert_eq!(health.status(), 200);
    let again: Value = client
        .post(format!("{base}/v1/decide"))
        .json(&json!({"tool": "nmap_scan", "agent": AGENT, "chain": ["user:op@acme.example"], "args": {"note": padding}}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(again["decision"], "deny", "{again}");
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.code().is_some(), "ended by a signal: {status:?}");
}

/// Hundreds of approval waiters hold no thread each: a grant still answers at once, and SIGTERM
/// ends the process at once instead of after their timeouts.
#[test]
fn waiters_slow_neither_a_grant_nor_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        "max_waits_per_caller = 1000\nmax_waits = 1000\nrequest_timeout = \"60s\"\n",
    );
    let (mut child, base) = serve(&config, "true");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let hold = || async {
            let held: Value = client
                .post(format!("{base}/v1/decide"))
                .json(&json!({"tool": "exploit_runner", "agent": AGENT, "chain": ["user:op@acme.example"]}))
                .json_reply().await;
            held["approval_id"].as_str().unwrap().to_string()
        };
        let crowd = |approval: String| -> Vec<tokio::task::JoinHandle<Option<Value>>> {
            (0..600)
                .map(|_| {
                    let (client, url) = (
                        client.clone(),
                        format!("{base}/v1/approvals/{approval}/wait?timeout=55s"),
                    );
                    tokio::spawn(async move {
                        // A connection cut at shutdown is an ended wait too.
                        client.get(url).send().await.ok()?.json::<Value>().await.ok()
                    })
                })
                .collect()
        };

        let approval = hold().await;
        let waiters = crowd(approval.clone());
        tokio::time::sleep(Duration::from_secs(1)).await;
        let started = Instant::now();
        let granted: Value = client
            .post(format!("{base}/v1/approvals/{approval}/grant"))
            .json(&json!({"approver": "user:oncall@acme.example"}))
            .json_reply().await;
        assert_eq!(granted["decision"], "allow", "{granted}");
        let grant_took = started.elapsed();
        for w in waiters {
            let answer = w.await.unwrap().expect("a waiter got no answer");
            assert_eq!(answer["status"], "answered", "{answer}");
        }
        assert!(grant_took < Duration::from_secs(2), "the grant took {grant_took:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());

        let approval = hold().await;
        let waiters = crowd(approval);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let started = Instant::now();
        sigterm(&child);
        let status = wait_exit(&mut child, Duration::from_secs(10));
        let took = started.elapsed();
        assert!(status.success(), "{status:?}");
        assert!(took < Duration::from_secs(5), "SIGTERM took {took:?} to end the process");
        for w in waiters {
            if let Some(answer) = w.await.unwrap() {
                assert_eq!(answer["status"], "pending", "{answer}");
            }
        }
    });
}

/// Two replicas with one PostgreSQL ledger (and one signing key): their decisions land in one
/// log, each at its own index, and the log verifies.
#[test]
fn two_replicas_write_one_postgres_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let pg = truststack_testkit::postgres::database();
    let key = dir.path().join("ledger.key");
    let config = config(
        dir.path(),
        &format!(
            "[ledger]\npath = {:?}\nkey = {:?}\ncheckpoint_every = 5\n",
            pg.url(),
            key
        ),
    );
    let (mut first, first_base) = serve(&config, "true");
    let (mut second, second_base) = serve(&config, "true");
    let client = reqwest::blocking::Client::new();
    let mut indexes = Vec::new();
    for i in 0..20 {
        let base = if i % 2 == 0 {
            &first_base
        } else {
            &second_base
        };
        let answer: Value = client
            .post(format!("{base}/v1/decide"))
            .json(&json!({"id": format!("c-{i}"), "tool": "nmap_scan", "agent": AGENT, "chain": ["user:op@acme.example"], "args": {"target": "10.0.0.1"}}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(answer["decision"], "allow", "{answer}");
        indexes.push(answer["ledger_index"].as_u64().unwrap());
    }
    let mut sorted = indexes.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 20, "one index per decision: {indexes:?}");
    for child in [&mut first, &mut second] {
        sigterm(child);
        assert!(wait_exit(child, Duration::from_secs(10)).success());
    }
    let out = Command::new(env!("CARGO_BIN_EXE_truststack"))
        .args(["ledger", "verify", pg.url()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // Two policy activations (one per replica) and the twenty decisions.
    assert!(text.starts_with("ok: 22 entries, "), "{text}");
}
