//! One decision point for many enforcement points, with real processes: the GTG-1002 campaign's
//! tools split across three MCP servers (the example FastMCP server with `--tools`), each behind
//! its own stdio `truststack gateway` process started by the official Python SDK client (as a
//! desktop client's `mcpServers` entries start them), all deciding through one
//! `truststack serve` with the agent's own signed credential.
//!
//! The same campaign through gateways that embed their own engines shows what per-process state
//! misses: no trajectory across servers, no taint across servers, one rate-limit budget per
//! process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{cli, ok};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};
use truststack_testkit::assert_contains;
use truststack_testkit::net::{free_port, Bg};
use truststack_testkit::write_file;

const BIN: &str = env!("CARGO_BIN_EXE_truststack");
const AGENT: &str = "spiffe://acme.example/agent/claude-ops";
const SCANS_RECON: usize = 60;
const SCANS_CODE: usize = 41;

/// The project's Python, with the `mcp` SDK (a missing one fails naming the install command).
fn python() -> PathBuf {
    truststack_testkit::python()
}

fn example(rel: &str) -> String {
    let path = truststack_testkit::examples::gtg1002(rel);
    path.canonicalize().unwrap().display().to_string()
}

/// The issuer, the campaign agent's credential, a second agent's and an approver's.
struct Credentials {
    issuer: PathBuf,
    agent: String,
    other: String,
    /// An agent whose credential allows only scan tools.
    scanner: String,
    approver: String,
}

fn credentials(dir: &Path) -> Credentials {
    let issuer = dir.join("issuer");
    let id = |args: &[&str]| {
        ok(&cli()
            .arg("identity")
            .arg("--dir")
            .arg(&issuer)
            .args(args)
            .output()
            .unwrap())
        .trim()
        .to_string()
    };
    id(&["init", "--trust-domain", "acme.example"]);
    Credentials {
        agent: id(&[
            "issue",
            "--agent",
            "claude-ops",
            "--owner",
            "user:operator@acme.example",
            "--tools",
            "*",
        ]),
        other: id(&[
            "issue",
            "--agent",
            "triage",
            "--owner",
            "user:operator@acme.example",
            "--tools",
            "*",
        ]),
        scanner: id(&[
            "issue",
            "--agent",
            "scanner",
            "--owner",
            "user:operator@acme.example",
            "--tools",
            "ScanTool",
        ]),
        approver: id(&[
            "issue",
            "--user",
            "user:bob@acme.example",
            "--roles",
            "approver",
        ]),
        issuer,
    }
}

/// `truststack serve` on a free port with the seed policies: (process, base URL, ledger file).
fn serve(dir: &Path, creds: &Credentials) -> (Bg, String, PathBuf) {
    let ledger = dir.join("server.db");
    let (server, url) = serve_on(dir, "truststack.toml", creds, &ledger.display().to_string());
    (server, url, ledger)
}

/// `truststack serve` on a free port with the seed policies, configured in `dir/name`, on the
/// ledger at `ledger` (a file, or a database that replicas share).
fn serve_on(dir: &Path, name: &str, creds: &Credentials, ledger: &str) -> (Bg, String) {
    let port = free_port();
    let config = write_file(
        dir,
        name,
        format!(
            "listen = \"127.0.0.1:{port}\"\npolicies = [{:?}]\ncatalog = {:?}\n\
             issuer_dir = {:?}\ntrust_domain = \"acme.example\"\napproval_deadline = \"15min\"\n\
             [ledger]\npath = {:?}\nkey = {:?}\n",
            example("policies/seed.tsp"),
            example("catalog.toml"),
            creds.issuer.display().to_string(),
            ledger,
            dir.join("server.key").display().to_string(),
        ),
    );
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "truststack serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Bg(child), format!("http://127.0.0.1:{port}"))
}

/// The configuration of a gateway with its own engine: the seed policies, the test issuer.
fn embedded_config(dir: &Path, creds: &Credentials) -> String {
    let config = write_file(
        dir,
        "embedded.toml",
        format!(
            "policies = [{:?}]\ncatalog = {:?}\n[identity]\nissuer = {:?}\n",
            example("policies/seed.tsp"),
            example("catalog.toml"),
            creds.issuer.display().to_string()
        ),
    );
    config.display().to_string()
}

/// The example campaign server serving only `tools`.
fn campaign_server(tools: &str) -> Vec<String> {
    vec![
        python().display().to_string(),
        example("mcp/server.py"),
        "--tools".into(),
        tools.into(),
    ]
}

const SPLIT: [(&str, &str); 3] = [
    ("recon", "nmap_scan"),
    ("code", "service_probe,code_review,prod_db_query"),
    ("ops", "exploit_runner,http_upload"),
];

/// The gateway command lines of the three servers; `decide` is each gateway's own arguments.
fn gateways(decide: [&[String]; 3]) -> Value {
    let mut out = serde_json::Map::new();
    for ((name, tools), decide) in SPLIT.into_iter().zip(decide) {
        let mut argv = vec![BIN.to_string(), "gateway".into()];
        argv.extend(decide.iter().cloned());
        argv.push("--".into());
        argv.extend(campaign_server(tools));
        out.insert(name.into(), json!(argv));
    }
    Value::Object(out)
}

/// The Python SDK client running the split campaign.
struct Campaign {
    child: Bg,
    stdin: ChildStdin,
    lines: BufReader<ChildStdout>,
    calls: Vec<Value>,
}

impl Campaign {
    fn start(gateways: &Value, token: &str) -> Campaign {
        let mut child = truststack_testkit::python_command()
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/split_campaign.py"))
            .arg(gateways.to_string())
            .arg(SCANS_RECON.to_string())
            .arg(SCANS_CODE.to_string())
            .env("TRUSTSTACK_TOKEN", token)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap());
        Campaign {
            child: Bg(child),
            stdin,
            lines,
            calls: Vec::new(),
        }
    }

    /// The next event that is not a call result (results are collected in `calls`).
    fn next_event(&mut self) -> Value {
        loop {
            let mut line = String::new();
            let n = self.lines.read_line(&mut line).unwrap();
            assert!(
                n > 0,
                "the campaign client ended early; calls: {:#?}",
                self.calls
            );
            let v: Value = serde_json::from_str(&line).unwrap();
            if v.get("step").is_some() {
                self.calls.push(v);
            } else {
                return v;
            }
        }
    }

    fn step(&self, step: &str) -> Vec<&Value> {
        self.calls.iter().filter(|c| c["step"] == step).collect()
    }

    fn finish(mut self) -> Vec<Value> {
        let _ = writeln!(self.stdin);
        let _ = self.child.0.wait();
        self.calls
    }
}

fn approvals(server: &str, token: &str, args: &[&str]) -> Value {
    let out = ok(&cli()
        .args(["approvals", "--json", "--server", server, "--token", token])
        .args(args)
        .output()
        .unwrap());
    serde_json::from_str(&out).unwrap()
}

fn pending(server: &str, token: &str) -> Vec<Value> {
    approvals(server, token, &["list"])["pending"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Every record of the server's ledger, through its API.
fn ledger_records(server: &str) -> Vec<Value> {
    let http = reqwest::blocking::Client::new();
    let mut out = Vec::new();
    loop {
        let page: Value = http
            .get(format!("{server}/v1/ledger/entries?start={}", out.len()))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let entries = page["entries"].as_array().cloned().unwrap_or_default();
        if entries.is_empty() {
            return out;
        }
        for e in entries {
            let record = e.get("record").cloned().unwrap_or(e);
            out.push(match record {
                Value::String(s) => serde_json::from_str(&s).unwrap(),
                v => v,
            });
        }
    }
}

/// A stdio gateway process driven with raw JSON-RPC.
struct Raw {
    _child: Bg,
    stdin: Option<ChildStdin>,
    lines: BufReader<ChildStdout>,
}

impl Raw {
    fn start(server: &str, token: &str, tools: &str) -> Raw {
        Raw::start_with(&["--decider", server], token, tools)
    }

    fn start_with(decide: &[&str], token: &str, tools: &str) -> Raw {
        let mut child = Command::new(BIN)
            .arg("gateway")
            .args(decide)
            .arg("--")
            .args(campaign_server(tools))
            .env("TRUSTSTACK_TOKEN", token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().unwrap());
        let mut raw = Raw {
            _child: Bg(child),
            stdin,
            lines,
        };
        raw.send(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}));
        raw.until(|v| v["id"] == 0);
        raw.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        raw
    }

    fn send(&mut self, v: Value) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{v}").unwrap();
        stdin.flush().unwrap();
    }

    fn until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let mut line = String::new();
            assert!(
                self.lines.read_line(&mut line).unwrap() > 0,
                "the gateway ended"
            );
            let v: Value = serde_json::from_str(&line).unwrap();
            if pred(&v) {
                return v;
            }
        }
    }

    fn call(&mut self, id: i64, tool: &str, args: Value) -> Value {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}}));
        self.until(|v| v["id"] == id)
    }

    /// Calls `exploit_runner` and returns once the gateway reports it held.
    fn held_exploit(&mut self, id: i64) -> Value {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "exploit_runner", "arguments": {"target": "10.0.0.6"}, "_meta": {"progressToken": id}}}));
        self.until(|v| {
            v["method"] == "notifications/progress" && v["params"]["progressToken"] == id
        })
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn three_gateways_one_decision_point_see_the_whole_campaign() {
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(dir.path());
    let (_server, url, ledger) = serve(dir.path(), &creds);
    the_whole_campaign(
        &creds,
        [&url, &url, &url],
        &url,
        &ledger.display().to_string(),
    );
}

/// Two replicas on one database are one decision point: the same campaign, with the gateways,
/// the approver and the other clients spread over both, ends as it ends with one server.
#[test]
fn three_gateways_two_replicas_see_the_whole_campaign_as_one_server() {
    let (dir, db) = (
        tempfile::tempdir().unwrap(),
        truststack_testkit::postgres::database(),
    );
    let creds = credentials(dir.path());
    let (_a, a) = serve_on(dir.path(), "a.toml", &creds, db.url());
    let (_b, b) = serve_on(dir.path(), "b.toml", &creds, db.url());
    the_whole_campaign(&creds, [&a, &b, &a], &b, db.url());
}

/// The split campaign through gateways deciding at `deciders` (one per MCP server), with the
/// approver, a plain HTTP client and a second agent's gateway at `other`; `ledger` is where
/// the decision point's ledger is, for `truststack ledger verify`.
fn the_whole_campaign(creds: &Credentials, deciders: [&str; 3], other: &str, ledger: &str) {
    let decide = deciders.map(|url| vec!["--decider".to_string(), url.to_string()]);
    let mut campaign = Campaign::start(
        &gateways([&decide[0], &decide[1], &decide[2]]),
        &creds.agent,
    );
    let url = other.to_string();

    let connected = campaign.next_event();
    assert_eq!(connected["event"], "connected", "{connected}");
    assert_eq!(connected["tools"]["recon"], json!(["nmap_scan"]));
    assert_eq!(
        connected["tools"]["ops"],
        json!(["exploit_runner", "http_upload"])
    );

    // The exploitation call, made through the third server, is held: the trajectory
    // Scan -> CodeAnalysis -> Exploitation ran across all three.
    let held = campaign.next_event();
    assert_eq!(held["event"], "held", "{held}");
    let listed = pending(&url, &creds.approver);
    assert_eq!(listed.len(), 1, "held once, in one place: {listed:#?}");
    assert_eq!(listed[0]["call"]["tool"], "exploit_runner");
    assert_eq!(listed[0]["call"]["agent"], AGENT);
    let id = listed[0]["approval_id"].as_str().unwrap().to_string();
    // Once the trajectory is complete, every further call of the agent needs a human: the
    // approver grants a lease for the rest of the engagement (DENY policies still win).
    let granted = approvals(&url, &creds.approver, &["grant", &id, "--lease", "30min"]);
    assert_eq!(granted["result"], "granted", "{granted}");

    let done = campaign.next_event();
    assert_eq!(done["event"], "done", "{done}");

    // The rate limit is one budget across the gateways: the 101st scan is denied, on the
    // second server, though neither server saw more than 60.
    let scans = campaign.step("scan");
    assert_eq!(scans.len(), SCANS_RECON + SCANS_CODE);
    let denied: Vec<usize> = scans
        .iter()
        .enumerate()
        .filter(|(_, c)| c["isError"] == true)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(denied, [SCANS_RECON + SCANS_CODE - 1], "{scans:#?}");
    assert_contains!(
        scans[SCANS_RECON + SCANS_CODE - 1]["text"]
            .as_str()
            .unwrap(),
        "TrustStack denied"
    );
    let exploit = campaign.step("exploit");
    assert_eq!(
        exploit[0]["isError"], false,
        "released by the grant: {exploit:?}"
    );
    assert_eq!(campaign.step("db")[0]["isError"], false);
    // The upload, through another server than the database read, is denied: the taint is the
    // agent's, wherever it was set.
    let upload = campaign.step("exfiltration");
    assert_eq!(upload[0]["isError"], true, "{upload:?}");
    assert_contains!(upload[0]["text"].as_str().unwrap(), "TrustStack denied");

    // A plain HTTP client deciding for the same agent sees that taint too.
    let http = reqwest::blocking::Client::new();
    let decision: Value = http
        .post(format!("{url}/v1/decide"))
        .bearer_auth(&creds.agent)
        .json(&json!({"tool": "http_upload", "args": {"url": "https://203.0.113.9/b"}}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(decision["decision"], "deny", "{decision}");

    // Held calls withdrawn at a gateway are refused at the server: a client's
    // `notifications/cancelled`, and a session that ends. (Another agent, without a lease.)
    let mut raw = Raw::start(&url, &creds.other, "nmap_scan,code_review,exploit_runner");
    let r = raw.call(5, "nmap_scan", json!({"target": "10.0.0.7"}));
    assert_eq!(r["result"]["isError"], false, "{r}");
    let r = raw.call(6, "code_review", json!({"repo": "git.acme.example/web"}));
    assert_eq!(r["result"]["isError"], false, "{r}");
    raw.held_exploit(7);
    assert_eq!(pending(&url, &creds.approver).len(), 1);
    raw.send(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7, "reason": "user"}}));
    wait_until("the cancelled call leaves the queue", || {
        pending(&url, &creds.approver).is_empty()
    });
    raw.held_exploit(8);
    assert_eq!(pending(&url, &creds.approver).len(), 1);
    raw.stdin = None; // the client goes away
    wait_until("the ended session's call leaves the queue", || {
        pending(&url, &creds.approver).is_empty()
    });

    let calls = campaign.finish();
    // Every call is in the server's ledger, decided once, and the ledger verifies. (Listing
    // the queue first: a replica reads what the others appended before it answers.)
    pending(&url, &creds.approver);
    let records = ledger_records(&url);
    let decided: Vec<&Value> = records.iter().filter(|r| r["kind"] == "decision").collect();
    // The campaign's calls, the plain HTTP decision, and the second agent's four calls.
    assert_eq!(decided.len(), calls.len() + 1 + 4, "{decided:#?}");
    let campaign_agent = decided
        .iter()
        .filter(|r| r["call"]["agent"] == AGENT)
        .count();
    assert_eq!(campaign_agent, calls.len() + 1);
    let outcomes: Vec<&str> = records
        .iter()
        .filter(|r| r["kind"] == "approval")
        .map(|r| r["outcome"]["result"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["granted", "cancelled", "cancelled"]);
    let verified = cli().args(["ledger", "verify", ledger]).output().unwrap();
    ok(&verified);
}

#[test]
fn embedded_gateways_see_only_their_own_process() {
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(dir.path());
    let own = vec!["--config".to_string(), embedded_config(dir.path(), &creds)];
    let mut campaign = Campaign::start(&gateways([&own, &own, &own]), &creds.agent);
    assert_eq!(campaign.next_event()["event"], "connected");
    let done = campaign.next_event();
    // No hold: the exploitation gateway never saw the scans or the code analysis.
    assert_eq!(done["event"], "done", "{done}");
    // Each process has its own rate-limit budget: 60 and 41 scans, none denied.
    assert!(campaign.step("scan").iter().all(|c| c["isError"] == false));
    assert_eq!(campaign.step("exploit")[0]["isError"], false);
    // The upload gateway never saw the database read: the exfiltration passes.
    assert_eq!(campaign.step("exfiltration")[0]["isError"], false);
    campaign.finish();
}

/// `tools/list` through a remote-decision gateway leaves out what the decision point would
/// never allow this credential, as an embedded gateway does; when the decision point cannot be
/// asked, nothing is listed.
#[test]
fn a_remote_gateway_lists_what_the_decision_point_could_allow() {
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(dir.path());
    let (server, base, _) = serve(dir.path(), &creds);
    let tools = "service_probe,code_review,prod_db_query";
    let names = |answer: &Value| -> Vec<String> {
        let list = answer["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("{answer}"));
        list.iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});

    let mut scanner = Raw::start(&base, &creds.scanner, tools);
    scanner.send(list.clone());
    assert_eq!(names(&scanner.until(|v| v["id"] == 1)), ["service_probe"]);
    let mut agent = Raw::start(&base, &creds.agent, tools);
    agent.send(list.clone());
    assert_eq!(
        names(&agent.until(|v| v["id"] == 1)),
        ["service_probe", "code_review", "prod_db_query"]
    );

    // The same through an embedded gateway with the same policies and catalog.
    let config = embedded_config(dir.path(), &creds);
    let mut embedded = Raw::start_with(&["--config", &config], &creds.scanner, tools);
    embedded.send(list.clone());
    assert_eq!(names(&embedded.until(|v| v["id"] == 1)), ["service_probe"]);

    // The decision point is gone: no list that nobody checked.
    drop(server);
    scanner.send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    let answer = scanner.until(|v| v["id"] == 2);
    let message = answer["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"));
    assert_contains!(message, "no tools listed");
}

/// A gateway reports each call's result to the decision point in the background, yet the
/// session's next call is decided only once that report is recorded: provenance and taint read
/// what the agent saw, whatever the timing. Calls follow each other as fast as the client can
/// send them.
#[test]
fn each_result_is_recorded_before_the_sessions_next_decision() {
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(dir.path());
    let (_server, url, _ledger) = serve(dir.path(), &creds);
    let mut raw = Raw::start(&url, &creds.agent, "code_review");
    const CALLS: i64 = 30;
    for id in 1..=CALLS {
        let r = raw.call(id, "code_review", json!({"repo": format!("repo-{id}")}));
        assert_eq!(r["result"]["isError"], false, "{r}");
    }
    let records = ledger_records(&url);
    let position = |kind: &str, call_id: &str| {
        records
            .iter()
            .position(|r| {
                r["kind"] == kind
                    && (r["call"]["id"] == call_id || r["observation"]["call_id"] == call_id)
            })
            .unwrap_or_else(|| panic!("no {kind} of {call_id} in {records:#?}"))
    };
    let decided: Vec<String> = records
        .iter()
        .filter(|r| r["kind"] == "decision" && r["call"]["tool"] == "code_review")
        .map(|r| r["call"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(decided.len(), CALLS as usize);
    for pair in decided.windows(2) {
        let (earlier, next) = (&pair[0], &pair[1]);
        assert!(
            position("observation", earlier) < position("decision", next),
            "the result of {earlier} was recorded after {next} was decided"
        );
    }
}
