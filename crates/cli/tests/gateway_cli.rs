//! `truststack gateway` end to end, against real MCP servers and real SDK clients:
//! `@modelcontextprotocol/server-everything` (stdio and Streamable HTTP) and
//! `@modelcontextprotocol/server-filesystem`, driven by the official Python SDK client and the
//! TypeScript SDK client; the GTG-1002 scenario through the example FastMCP server; a
//! differential test (directly vs. through an allow-all gateway); stdout hygiene.
//!
//! The peers are installed by `bash scripts/install-peers.sh` (npm packages under `.ci/peers`,
//! the Python `mcp` SDK in the project's `.venv`); a test whose peer is missing fails, naming it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use truststack_testkit::assert_contains;
use truststack_testkit::net::{free_port, wait_port, Bg};
use truststack_testkit::write_file;
use truststack_testkit::{everything_server, filesystem_server};

const BIN: &str = env!("CARGO_BIN_EXE_truststack");
const TOKEN: &str = "e2e-token";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn clients() -> PathBuf {
    root().join("crates/gateway/tests/clients")
}

/// Where the npm peers are; fails the test, naming the install command, when any peer (npm or
/// the Python SDK) is missing.
fn peers() -> PathBuf {
    truststack_testkit::python();
    truststack_testkit::node_modules()
}

/// A minimal HTTP/1.1 exchange with a local server: (status, body).
fn http(method: &str, port: u16, path: &str, body: Option<&Value>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// In the background: waits for a held call at the approvals endpoint and grants it as
/// `approver`. Returns the pending approval it saw and the answer.
fn approve_when_held(
    port: u16,
    approver: &'static str,
) -> std::thread::JoinHandle<(Value, u16, Value)> {
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < until, "no call was held");
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                let (status, body) = http("GET", port, "/v1/approvals", None);
                if status == 200 {
                    let list: Value = serde_json::from_str(&body).unwrap_or(json!({}));
                    if let Some(p) = list["pending"].as_array().and_then(|l| l.first()) {
                        let id = p["approval_id"].as_str().unwrap().to_string();
                        let (status, body) = http(
                            "POST",
                            port,
                            &format!("/v1/approvals/{id}/grant"),
                            Some(&json!({"approver": approver})),
                        );
                        return (
                            p.clone(),
                            status,
                            serde_json::from_str(&body).unwrap_or(Value::Null),
                        );
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

const CATALOG: &str = r#"
[tools.echo]
classes = ["Benign"]
[tools."get-sum"]
classes = ["Compute"]
[tools."get-env"]
classes = ["SecretsAccess"]
[tools.write_file]
classes = ["FileWrite"]
[tools.edit_file]
classes = ["FileWrite"]
[tools.fs__write_file]
classes = ["FileWrite"]
[tools.fs__edit_file]
classes = ["FileWrite"]
[tools.everything__get-env]
classes = ["SecretsAccess"]
[tools."trigger-long-running-operation"]
classes = ["Compute"]
"#;

const POLICIES: &str = r#"
POLICY no-env:
  ACTION: DENY
  TARGET: agent_identity
  IF Tool_Call('SecretsAccess')
  REASON: "the environment holds secrets"

POLICY no-writes:
  ACTION: DENY
  TARGET: agent_identity
  IF Tool_Call('FileWrite')
  REASON: "this agent only reads files"

POLICY sums-need-a-human:
  ACTION: REQUIRE_HITL
  TARGET: agent_identity
  IF Tool_Call('Compute')
  REASON: "arithmetic is a human decision here"
"#;

/// A gateway configuration in `dir`: the policies above (or none: allow-all), the test token.
fn gateway_config(dir: &Path, policies: bool, extra: &str) -> PathBuf {
    std::fs::write(dir.join("catalog.toml"), CATALOG).unwrap();
    std::fs::write(dir.join("policies.tsp"), POLICIES).unwrap();
    let policies = if policies {
        "policies = [\"policies.tsp\"]\ncatalog = \"catalog.toml\"\n"
    } else {
        ""
    };
    let text = format!(
        "{policies}unknown_tools = \"allow\"\n{extra}\n\
         [[identity.tokens]]\ntoken = \"{TOKEN}\"\nagent = \"spiffe://e2e.example/agent/client\"\nchain = [\"user:alice@e2e.example\"]\n\
         [limits]\nprogress_interval = \"200ms\"\n"
    );
    write_file(dir, "gateway.toml", text)
}

/// Runs a client script; returns its JSON output.
fn run_client(mut cmd: Command) -> Value {
    let out = cmd.stderr(Stdio::inherit()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed ({}): {stdout}",
        out.status
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("client output is not JSON: {e}: {stdout}"))
}

fn python(args: &[&str]) -> Command {
    let mut c = truststack_testkit::python_command();
    c.arg(clients().join("py_session.py")).args(args);
    c
}

fn node(modules: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("node");
    c.env("NODE_PATH", modules)
        .arg(clients().join("ts_session.cjs"))
        .args(args);
    c
}

/// The gateway in front of `upstream` as a stdio command line (JSON, for the clients).
fn stdio_gateway(config: &Path, approvals: u16, upstream: &[String]) -> String {
    let mut cmd = vec![
        BIN.to_string(),
        "gateway".into(),
        "--config".into(),
        config.display().to_string(),
        "--approvals-listen".into(),
        format!("127.0.0.1:{approvals}"),
        "--".into(),
    ];
    cmd.extend(upstream.iter().cloned());
    serde_json::to_string(&cmd).unwrap()
}

fn spawn_everything_http() -> (Bg, u16) {
    let port = free_port();
    let child = Command::new("node")
        .arg(everything_server())
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port);
    (Bg(child), port)
}

fn spawn_http_gateway(config: &Path, upstream: &str) -> (Bg, u16) {
    let port = free_port();
    let child = Command::new(BIN)
        .args(["gateway", "--config"])
        .arg(config)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--upstream",
            upstream,
        ])
        // A configuration may name its own approvals port; tests keep to free ones.
        .args(["--approvals-listen", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port);
    (Bg(child), port)
}

/// What every policy scenario must show: listing (filtered), allowed, denied with the reason,
/// held and released, resources and prompts.
fn check_policy_scenario(out: &Value, held: &(Value, u16, Value)) {
    assert_eq!(out["server"], "mcp-servers/everything", "{out}");
    let tools: Vec<&str> = out["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        tools.contains(&"echo") && tools.contains(&"get-sum"),
        "{tools:?}"
    );
    assert!(
        !tools.contains(&"get-env"),
        "get-env is denied unconditionally, so it is not listed: {tools:?}"
    );
    assert_eq!(out["echo"]["isError"], false);
    assert_contains!(out["echo"]["text"].as_str().unwrap(), "Echo:");
    assert_eq!(out["get_env"]["isError"], true);
    let denial = out["get_env"]["text"].as_str().unwrap();
    assert!(
        denial.contains("no-env") && denial.contains("the environment holds secrets"),
        "{denial}"
    );
    assert_eq!(out["get_sum"]["isError"], false, "{out}");
    assert_contains!(out["get_sum"]["text"].as_str().unwrap(), "The sum of");
    let progress = match &out["get_sum"]["progress"] {
        Value::Array(a) => a.len() as u64,
        v => v.as_u64().unwrap_or(0),
    };
    assert!(progress >= 1, "progress notifications while held: {out}");
    let (pending, status, answer) = held;
    assert_eq!(pending["call"]["tool"], "get-sum");
    assert_eq!(pending["policies"][0]["id"], "sums-need-a-human");
    assert_eq!(*status, 200, "{answer}");
    assert_eq!(answer["result"], "granted");
}

#[test]
fn python_sdk_through_the_stdio_gateway_to_server_everything() {
    peers();
    let dir = tempfile::tempdir().unwrap();
    let config = gateway_config(dir.path(), true, "");
    let approvals = free_port();
    let held = approve_when_held(approvals, "user:bob@e2e.example");
    let cmd = stdio_gateway(
        &config,
        approvals,
        &["node".into(), everything_server(), "stdio".into()],
    );
    let out = run_client(python(&[
        "--scenario",
        "policy",
        "--token",
        TOKEN,
        "--stdio",
        &cmd,
    ]));
    check_policy_scenario(&out, &held.join().unwrap());
    // Resources and prompts pass through untouched.
    assert_contains!(
        out["read"]["contents"][0]["text"].as_str().unwrap(),
        "Everything Server"
    );
    assert_eq!(
        out["prompt"]["messages"][0]["content"]["text"],
        "This is a simple prompt without arguments."
    );
    assert_eq!(
        out["prompts"],
        json!([
            "args-prompt",
            "completable-prompt",
            "resource-prompt",
            "simple-prompt"
        ])
    );
}

#[test]
fn python_sdk_through_the_http_gateway_to_server_everything_over_http() {
    peers();
    let dir = tempfile::tempdir().unwrap();
    let config = gateway_config(dir.path(), true, "");
    let (_everything, ev_port) = spawn_everything_http();
    let (_gateway, gw_port) =
        spawn_http_gateway(&config, &format!("http://127.0.0.1:{ev_port}/mcp"));
    let held = approve_when_held(gw_port, "user:bob@e2e.example");
    let url = format!("http://127.0.0.1:{gw_port}/mcp");
    let out = run_client(python(&[
        "--scenario",
        "policy",
        "--token",
        TOKEN,
        "--url",
        &url,
    ]));
    check_policy_scenario(&out, &held.join().unwrap());
    assert_eq!(out["protocol"], "2025-11-25");
}

#[test]
fn typescript_sdk_through_the_gateway_over_stdio_and_http() {
    let modules = peers();
    let dir = tempfile::tempdir().unwrap();
    let config = gateway_config(dir.path(), true, "");
    // stdio: the client starts the gateway, which starts the server.
    let approvals = free_port();
    let held = approve_when_held(approvals, "user:bob@e2e.example");
    let cmd = stdio_gateway(
        &config,
        approvals,
        &["node".into(), everything_server(), "stdio".into()],
    );
    let out = run_client(node(&modules, &["--token", TOKEN, "--stdio", &cmd]));
    check_policy_scenario(&out, &held.join().unwrap());
    assert_eq!(out["prompt"], "What's weather in Lyon?");
    // Streamable HTTP in front of a stdio server (one server process per client session).
    let (_gateway, gw_port) = spawn_http_gateway(
        &config,
        &format!("stdio:node {} stdio", everything_server()),
    );
    let held = approve_when_held(gw_port, "user:bob@e2e.example");
    let url = format!("http://127.0.0.1:{gw_port}/mcp");
    let out = run_client(node(&modules, &["--token", TOKEN, "--url", &url]));
    check_policy_scenario(&out, &held.join().unwrap());
    assert!(out["resource_count"].as_u64().unwrap() > 0);
}

#[test]
fn server_filesystem_reads_are_allowed_and_writes_denied_and_hidden() {
    peers();
    let dir = tempfile::tempdir().unwrap();
    let config = gateway_config(dir.path(), true, "");
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().canonicalize().unwrap();
    let file = write_file(&data_dir, "notes.txt", "the original text\n");
    let cmd = stdio_gateway(
        &config,
        free_port(),
        &[
            "node".into(),
            filesystem_server(),
            data_dir.display().to_string(),
        ],
    );
    let out = run_client(python(&[
        "--scenario",
        "fs",
        "--token",
        TOKEN,
        "--file",
        &file.display().to_string(),
        "--dir",
        &data_dir.display().to_string(),
        "--stdio",
        &cmd,
    ]));
    let tools: Vec<&str> = out["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        tools.contains(&"read_text_file") && tools.contains(&"list_directory"),
        "{tools:?}"
    );
    assert!(
        !tools.contains(&"write_file") && !tools.contains(&"edit_file"),
        "{tools:?}"
    );
    assert_eq!(out["read"]["text"], "the original text\n");
    assert_eq!(out["write"]["isError"], true);
    assert_contains!(out["write"]["text"].as_str().unwrap(), "no-writes");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "the original text\n",
        "the write never reached the server"
    );
    assert_contains!(out["list"]["text"].as_str().unwrap(), "notes.txt");
}

#[test]
fn several_upstreams_behind_one_gateway_are_namespaced() {
    peers();
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().canonicalize().unwrap();
    let file = write_file(&data_dir, "a.txt", "namespaced\n");
    let upstreams = format!(
        "[[upstream]]\nname = \"everything\"\ncommand = [\"node\", \"{}\", \"stdio\"]\n\
         [[upstream]]\nname = \"fs\"\ncommand = [\"node\", \"{}\", \"{}\"]\n",
        everything_server(),
        filesystem_server(),
        data_dir.display()
    );
    std::fs::write(dir.path().join("catalog.toml"), CATALOG).unwrap();
    std::fs::write(dir.path().join("policies.tsp"), POLICIES).unwrap();
    let config = gateway_config(dir.path(), true, "");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&upstreams);
    std::fs::write(&config, text).unwrap();
    let cmd = serde_json::to_string(&[BIN, "gateway", "--config", &config.display().to_string()])
        .unwrap();
    let out = run_client(python(&[
        "--scenario",
        "multi",
        "--token",
        TOKEN,
        "--file",
        &file.display().to_string(),
        "--stdio",
        &cmd,
    ]));
    assert_eq!(out["server"], "truststack-gateway");
    let tools: Vec<&str> = out["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        tools.contains(&"everything__echo") && tools.contains(&"fs__read_text_file"),
        "{tools:?}"
    );
    assert!(
        !tools.contains(&"fs__write_file") && !tools.contains(&"everything__get-env"),
        "{tools:?}"
    );
    assert_eq!(out["echo"]["text"], "Echo: ns");
    assert_eq!(out["read"]["text"], "namespaced\n");
    assert_eq!(out["write"]["isError"], true);
    assert!(out["prompts"]
        .as_array()
        .unwrap()
        .contains(&json!("everything__simple-prompt")));
    assert_eq!(
        out["prompt"]["messages"][0]["content"]["text"],
        "This is a simple prompt without arguments."
    );
    assert!(out["resource_count"].as_u64().unwrap() > 0);
}

/// Runs a scripted raw session (one JSON-RPC message per line) against a stdio command and
/// returns what came back, one line per message, waiting for each request's answer.
fn raw_session(cmd: &mut Command, messages: &[Value]) -> Vec<String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut out = Vec::new();
    for m in messages {
        writeln!(stdin, "{m}").unwrap();
        stdin.flush().unwrap();
        if m.get("id").is_some() {
            loop {
                let mut line = String::new();
                assert!(stdout.read_line(&mut line).unwrap() > 0, "output ended");
                let v: Value = serde_json::from_str(&line).unwrap();
                out.push(line.trim_end().to_string());
                if v.get("id") == m.get("id") && v.get("method").is_none() {
                    break;
                }
            }
        }
    }
    drop(stdin);
    let _ = child.wait();
    out
}

#[test]
fn differential_the_same_session_directly_and_through_an_allow_all_gateway() {
    peers();
    let dir = tempfile::tempdir().unwrap();
    let config = gateway_config(dir.path(), false, "");
    // Raw bytes over stdio: every answer identical, byte for byte.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "diff", "version": "1"}}});
    let messages = vec![
        init,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        json!({"jsonrpc": "2.0", "id": "three", "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "é ☃ \"quoted\""}}}),
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "get-sum", "arguments": {"a": 1.5, "b": -2}}}),
        json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "get-tiny-image", "arguments": {}}}),
        json!({"jsonrpc": "2.0", "id": 6, "method": "resources/list"}),
        json!({"jsonrpc": "2.0", "id": 7, "method": "resources/templates/list"}),
        json!({"jsonrpc": "2.0", "id": 8, "method": "prompts/list"}),
        json!({"jsonrpc": "2.0", "id": 9, "method": "prompts/get", "params": {"name": "args-prompt", "arguments": {"city": "Oslo"}}}),
        json!({"jsonrpc": "2.0", "id": 10, "method": "ping"}),
        json!({"jsonrpc": "2.0", "id": 11, "method": "no/such/method"}),
        json!({"jsonrpc": "2.0", "id": 12, "method": "tools/call", "params": {"name": "get-sum", "arguments": {"a": "x"}}}),
        json!({"jsonrpc": "2.0", "id": 13, "method": "completion/complete",
            "params": {"ref": {"type": "ref/prompt", "name": "completable-prompt"}, "argument": {"name": "department", "value": "E"}}}),
    ];
    let direct = raw_session(
        Command::new("node").arg(everything_server()).arg("stdio"),
        &messages,
    );
    let via = raw_session(
        Command::new(BIN)
            .args(["gateway", "--config"])
            .arg(&config)
            .env("TRUSTSTACK_TOKEN", TOKEN)
            .args(["--", "node", &everything_server(), "stdio"]),
        &messages,
    );
    assert_eq!(
        direct.len(),
        via.len(),
        "direct: {direct:#?}\nvia: {via:#?}"
    );
    for (d, v) in direct.iter().zip(&via) {
        assert_eq!(d, v);
    }
    // Through the SDK over Streamable HTTP (gateway → server over HTTP): identical results.
    let (_everything, ev_port) = spawn_everything_http();
    let direct = run_client(python(&[
        "--scenario",
        "diff",
        "--url",
        &format!("http://127.0.0.1:{ev_port}/mcp"),
    ]));
    let (_gateway, gw_port) =
        spawn_http_gateway(&config, &format!("http://127.0.0.1:{ev_port}/mcp"));
    let via = run_client(python(&[
        "--scenario",
        "diff",
        "--token",
        TOKEN,
        "--url",
        &format!("http://127.0.0.1:{gw_port}/mcp"),
    ]));
    let steps = |v: &Value| v["steps"].as_array().unwrap().clone();
    assert_eq!(steps(&direct).len(), steps(&via).len());
    for (d, v) in steps(&direct).iter().zip(steps(&via).iter()) {
        assert_eq!(d, v);
    }
    assert_eq!(direct["server"], via["server"]);
}

#[test]
fn the_gtg1002_campaign_is_stopped_at_the_gateway_over_stdio_and_http() {
    peers();
    let example = root().join("examples/gtg1002/mcp");
    // stdio: the replay starts the gateway, which starts the simulated server.
    let approvals = free_port();
    let out = truststack_testkit::python_command()
        .arg(example.join("replay.py"))
        .args([
            "--truststack",
            BIN,
            "--json",
            "--approvals",
            &format!("http://127.0.0.1:{approvals}"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    check_campaign(&summary);
    // Streamable HTTP: the gateway in front of the simulated server running over HTTP too.
    let sim_port = free_port();
    let _sim = Bg(truststack_testkit::python_command()
        .arg(example.join("server.py"))
        .args([
            "--transport",
            "streamable-http",
            "--port",
            &sim_port.to_string(),
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    wait_port(sim_port);
    let (_gateway, gw_port) = spawn_http_gateway(
        &example.join("gateway.toml"),
        &format!("http://127.0.0.1:{sim_port}/mcp"),
    );
    let out = truststack_testkit::python_command()
        .arg(example.join("replay.py"))
        .args([
            "--json",
            "--url",
            &format!("http://127.0.0.1:{gw_port}/mcp"),
        ])
        .args(["--approvals", &format!("http://127.0.0.1:{gw_port}")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_campaign(&serde_json::from_str(&stdout).unwrap());
}

fn check_campaign(summary: &Value) {
    assert_eq!(summary["failures"], json!([]), "{summary:#}");
    let d = &summary["decisions"];
    assert_contains!(
        d["ext-scan"]["text"].as_str().unwrap(),
        "External_Public",
        "{d:#}"
    );
    assert_contains!(
        d["scan-101"]["text"].as_str().unwrap(),
        "Count > 100",
        "{d:#}"
    );
    assert_eq!(d["exploit-1"]["outcome"], "allow");
    assert_contains!(d["exfil-1"]["text"].as_str().unwrap(), "seed#3", "{d:#}");
    let approvals = summary["approvals"].as_array().unwrap();
    assert!(
        approvals.iter().any(|a| a["status"] == 403),
        "the operator's own approval is refused"
    );
    assert!(
        approvals.iter().any(|a| a["status"] == 200),
        "the on-call engineer's is accepted"
    );
    assert!(summary["progress_notifications"].as_u64().unwrap() >= 1);
    assert_eq!(summary["calls"], 114);
}

#[test]
fn stdout_carries_only_protocol_messages_even_with_debug_logs() {
    let dir = tempfile::tempdir().unwrap();
    let config = gateway_config(dir.path(), true, "");
    let fake = root().join("crates/gateway/tests/fixtures/fake_server.py");
    let mut child = Command::new(BIN)
        .args(["gateway", "--config"])
        .arg(&config)
        .env("TRUSTSTACK_TOKEN", TOKEN)
        .env("TRUSTSTACK_LOG", "debug")
        .args(["--", "python3", "-u"])
        .arg(&fake)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let lines = [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"0"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        "garbage that is not json",
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"garbage","arguments":{}}}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get-env","arguments":{}}}"#,
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#,
    ];
    for l in lines {
        writeln!(stdin, "{l}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let messages: Vec<Value> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON-RPC message on stdout: {l}: {e}"))
        })
        .collect();
    assert!(messages.iter().all(|m| m["jsonrpc"] == "2.0"));
    assert_eq!(messages.len(), 5, "{stdout}");
    assert!(messages.iter().any(|m| m["error"]["code"] == -32700));
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(!logs.is_empty(), "logs go to stderr");
    // Not a terminal (a desktop client's log file): no colour escapes.
    assert!(!logs.contains('\u{1b}'), "ANSI escapes in logs: {logs}");
}

#[test]
fn gateway_command_line_errors_are_clear() {
    let out = Command::new(BIN).args(["gateway"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_contains!(String::from_utf8_lossy(&out.stderr), "no upstream server");
    let dir = tempfile::tempdir().unwrap();
    let config = gateway_config(dir.path(), true, "");
    let out = Command::new(BIN)
        .args(["gateway", "--config"])
        .arg(&config)
        .args(["--", "python3", "-c", "pass"])
        .env_remove("TRUSTSTACK_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("anonymous") && err.contains("TRUSTSTACK_TOKEN"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    let out = Command::new(BIN)
        .args(["gateway", "--upstream", "ftp://x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_contains!(String::from_utf8_lossy(&out.stderr), "ftp://x");
}

/// Progress on one token only increases: the gateway's own notifications while the call is
/// held, then the upstream's for the released call, shifted past them.
#[test]
fn progress_of_a_held_call_only_increases() {
    let dir = tempfile::tempdir().unwrap();
    let config = gateway_config(dir.path(), true, "");
    let approvals = free_port();
    // Granted after a second: the gateway has sent several notifications of its own by then
    // (every 200 ms), and the upstream's steps count from 1 again.
    let held = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        approve_when_held(approvals, "user:bob@e2e.example")
            .join()
            .unwrap()
    });
    let mut cmd = Command::new(BIN);
    cmd.args(["gateway", "--config"])
        .arg(&config)
        .args(["--approvals-listen", &format!("127.0.0.1:{approvals}")])
        .args(["--", "node", &everything_server()])
        .env("TRUSTSTACK_TOKEN", TOKEN);
    let out = raw_session(
        &mut cmd,
        &[
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "trigger-long-running-operation", "arguments": {"duration": 1, "steps": 4}, "_meta": {"progressToken": "p-7"}}}),
        ],
    );
    let (_, status, _) = held.join().unwrap();
    assert_eq!(status, 200);
    let messages: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let progress: Vec<f64> = messages
        .iter()
        .filter(|m| {
            m["method"] == "notifications/progress" && m["params"]["progressToken"] == "p-7"
        })
        .map(|m| m["params"]["progress"].as_f64().unwrap())
        .collect();
    // The gateway's notifications while held (at least one, however slow the machine), then
    // the upstream's four steps.
    assert!(progress.len() >= 5, "{progress:?}");
    assert!(
        progress.windows(2).all(|w| w[0] < w[1]),
        "progress went backwards: {progress:?}"
    );
    let last = messages.last().unwrap();
    assert_eq!(last["id"], 2);
    let text = last["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert_contains!(text, "completed", "{last}");
}

/// A client of a gateway's Streamable HTTP endpoint, as the test token.
struct McpHttp {
    http: reqwest::blocking::Client,
    url: String,
}

impl McpHttp {
    fn new(port: u16) -> McpHttp {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        McpHttp {
            http,
            url: format!("http://127.0.0.1:{port}/mcp"),
        }
    }

    /// POSTs one message (or batch), in `session` (2025-11-25) when given.
    fn post(&self, session: Option<&str>, body: &Value) -> reqwest::blocking::Response {
        let mut r = self
            .http
            .post(&self.url)
            .bearer_auth(TOKEN)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(s) = session {
            r = r
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", "2025-11-25");
        }
        r.send().unwrap()
    }
}

/// A JSON-RPC batch in a 2025-11-25 session over HTTP is refused at once (400, -32600), as
/// the server itself refuses it, instead of leaving the POST waiting for an answer that has
/// no id to go to.
#[test]
fn a_batch_in_a_later_protocol_version_is_refused_at_once_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, server_port) = spawn_everything_http();
    let config = gateway_config(dir.path(), false, "");
    let (_gw, port) = spawn_http_gateway(&config, &format!("http://127.0.0.1:{server_port}/mcp"));
    let http = McpHttp::new(port);
    let post = |session: Option<&str>, body: Value| http.post(session, &body);
    let init = post(
        None,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}),
    );
    assert_eq!(init.status(), 200);
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    // The answer (one server-sent event): the version is negotiated once it has arrived.
    let body = init.text().unwrap();
    assert_contains!(body, "\"protocolVersion\":\"2025-11-25\"");
    let note = post(
        Some(&session),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    );
    assert_eq!(note.status(), 202);
    let batch = post(
        Some(&session),
        json!([{"jsonrpc": "2.0", "id": 5, "method": "ping"}]),
    );
    assert_eq!(batch.status(), 400);
    let answer: Value = batch.json().unwrap();
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    assert_eq!(answer["id"], Value::Null, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert_contains!(message, "2025-11-25");
    // The session still serves single messages.
    let ping = post(
        Some(&session),
        json!({"jsonrpc": "2.0", "id": 6, "method": "ping"}),
    );
    assert_eq!(ping.status(), 200);
}

/// Two gateways configured with the same ledger (one `gateway.toml` for several `mcpServers`
/// entries): the second refuses to start, saying what to do, and the first keeps serving.
#[test]
fn a_second_gateway_on_the_same_ledger_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = gateway_config(dir.path(), true, "[ledger]\npath = \"shared.db\"\n");
    let gateway = |approvals: u16| {
        let mut c = Command::new(BIN);
        c.args(["gateway", "--config"])
            .arg(&config)
            .args(["--approvals-listen", &format!("127.0.0.1:{approvals}")])
            .args(["--", "node", &everything_server()])
            .env("TRUSTSTACK_TOKEN", TOKEN);
        c
    };
    let first_port = free_port();
    let mut first = gateway(first_port)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(first_port);
    let second = gateway(free_port()).stdin(Stdio::null()).output().unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("shared.db is open for writing in another process")
            && err.contains("--decider"),
        "{err}"
    );
    // The first still decides and records.
    let mut stdin = first.stdin.take().unwrap();
    let mut stdout = BufReader::new(first.stdout.take().unwrap());
    for m in [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "hi"}}}),
    ] {
        writeln!(stdin, "{m}").unwrap();
    }
    stdin.flush().unwrap();
    let answer = loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the first gateway ended"
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["id"] == 2 {
            break v;
        }
    };
    assert_eq!(answer["result"]["isError"], Value::Null, "{answer}");
    drop(stdin);
    let _ = first.wait();
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// HTTP sessions end when idle, their upstream processes with them, and no more than
/// `max_sessions` are served at once.
#[test]
fn idle_http_sessions_end_with_their_upstreams_and_sessions_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(
        dir.path(),
        "gateway.toml",
        format!(
            "unknown_tools = \"allow\"\n[[identity.tokens]]\ntoken = \"{TOKEN}\"\n\
             agent = \"spiffe://e2e.example/agent/client\"\nchain = [\"user:alice@e2e.example\"]\n\
             [limits]\nsession_idle_timeout = \"5s\"\nmax_sessions = 2\n"
        ),
    );
    let port = free_port();
    let gateway = Command::new(BIN)
        .args(["gateway", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--", "node", &everything_server()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = gateway.id();
    let _gateway = Bg(gateway);
    wait_port(port);
    let http = McpHttp::new(port);
    let post = |session: Option<&str>, body: Value| http.post(session, &body);
    let initialize = || {
        post(
            None,
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}),
        )
    };
    let open = || {
        let r = initialize();
        assert_eq!(r.status(), 200);
        let session = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
        let _ = r.text().unwrap();
        session
    };
    let first = open();
    let second = open();
    assert_eq!(children(pid).len(), 2, "one upstream per session");
    // Both are in use: a third is refused, saying why.
    let third = initialize();
    assert_eq!(third.status(), 503);
    let refusal: Value = third.json().unwrap();
    let message = refusal["error"]["message"].as_str().unwrap();
    assert_contains!(message, "at most 2");
    // Kept alive by requests, the first outlives the second, which nothing names for 7.5 s
    // (the idle timeout is 5 s: a loaded machine may stall a ping for seconds).
    let quiet = Instant::now() + Duration::from_millis(7500);
    while Instant::now() < quiet {
        std::thread::sleep(Duration::from_millis(300));
        let ping = post(
            Some(&first),
            json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}),
        );
        assert_eq!(ping.status(), 200, "the session in use was ended");
        let _ = ping.text();
    }
    let gone = post(
        Some(&second),
        json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}),
    );
    assert_eq!(gone.status(), 404, "the idle session was not ended");
    // Its upstream ended with it.
    let until = Instant::now() + Duration::from_secs(10);
    while children(pid).len() != 1 {
        assert!(
            Instant::now() < until,
            "the idle session's upstream still runs"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // There is room again.
    let _ = open();
}

/// An HTTP upstream that restarts forgets the gateway's session (404): the gateway opens a
/// new one, so the client's session recovers instead of failing every call from then on.
#[test]
fn a_restarted_http_upstream_gets_a_new_session() {
    let dir = tempfile::tempdir().unwrap();
    let (server, server_port) = spawn_everything_http();
    let config = gateway_config(dir.path(), false, "");
    let mut gateway = Command::new(BIN)
        .args(["gateway", "--config"])
        .arg(&config)
        .args(["--approvals-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--upstream", &format!("http://127.0.0.1:{server_port}/mcp")])
        .env("TRUSTSTACK_TOKEN", TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = gateway.stdin.take().unwrap();
    let mut stdout = BufReader::new(gateway.stdout.take().unwrap());
    let _gateway = Bg(gateway);
    let mut exchange = |m: Value| -> Value {
        writeln!(stdin, "{m}").unwrap();
        stdin.flush().unwrap();
        if m.get("id").is_none() {
            return Value::Null;
        }
        loop {
            let mut line = String::new();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "the gateway ended"
            );
            let v: Value = serde_json::from_str(&line).unwrap();
            if v.get("id") == m.get("id") && v.get("method").is_none() {
                return v;
            }
        }
    };
    exchange(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}),
    );
    exchange(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let echo = |id: i64| json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "hi"}}});
    let ok = |v: &Value| {
        v["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("hi"))
    };
    let first = exchange(echo(2));
    assert!(ok(&first), "{first}");
    // The upstream restarts on the same port; it knows no session any more.
    drop(server);
    let _server = {
        let child = Command::new("node")
            .arg(everything_server())
            .arg("streamableHttp")
            .env("PORT", server_port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(server_port);
        Bg(child)
    };
    // The call that met the 404 fails with the reason; a later one is served again.
    let until = Instant::now() + Duration::from_secs(20);
    let mut id = 3;
    loop {
        let answer = exchange(echo(id));
        if ok(&answer) {
            break;
        }
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert_contains!(message, "ended the session", "{answer}");
        assert!(
            Instant::now() < until,
            "the session never recovered: {answer}"
        );
        std::thread::sleep(Duration::from_millis(200));
        id += 1;
    }
}
