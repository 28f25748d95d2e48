//! Tool pinning against a real MCP server (the Python SDK's FastMCP) whose tool changes its
//! description mid-session: the changed tool leaves `tools/list`, its calls are denied naming
//! the change, and the ledger records it — over stdio and over Streamable HTTP on both sides.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{config_for, fixture, text, Client, Http, TOKEN};
use serde_json::{json, Value};
use std::path::Path;
use truststack_engine::ledger::Ledger;
use truststack_gateway::pinning::{self, PinFile};
use truststack_gateway::{Gateway, GatewayConfig};
use truststack_testkit::assert_contains;

/// A gateway configuration with `extra` (TOML) and `upstream` (an `[[upstream]]` body); the
/// rug-pull server's tools are not in the test catalog, and unknown tools are allowed.
fn config(dir: &Path, extra: &str, upstream: &str) -> GatewayConfig {
    config_for(dir, &[upstream.to_string()], extra)
}

/// The rug-pull server over stdio, with `args`.
fn stdio_server(args: &[&str]) -> String {
    let mut command = vec![
        truststack_testkit::python().display().to_string(),
        fixture("rug_pull_server.py").display().to_string(),
    ];
    command.extend(args.iter().map(|a| a.to_string()));
    format!("command = {}", json!(command))
}

fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools: {list}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// Asserts a denied call to `forecast` because its description changed; returns its `_meta`.
fn assert_changed_denial(r: &Value) -> Value {
    assert_eq!(r["result"]["isError"], true, "{r}");
    let t = text(r);
    assert_contains!(t, "the definition of tool `forecast` changed since it was pinned (description changed; pinned sha256 ");
    let meta = r["result"]["_meta"]["io.truststack/decision"].clone();
    assert_eq!(meta["decision"], "deny");
    assert_eq!(meta["pin"]["fields"], json!(["description"]));
    let (old, new) = (&meta["pin"]["pinned_sha256"], &meta["pin"]["sha256"]);
    assert_eq!(old.as_str().unwrap().len(), 64);
    assert_eq!(new.as_str().unwrap().len(), 64);
    assert_ne!(old, new);
    assert!(t.contains(&format!(
        "pinned sha256 {}, now {}",
        old.as_str().unwrap(),
        new.as_str().unwrap()
    )));
    meta
}

fn records(ledger: &Path, kind: &str) -> Vec<Value> {
    Ledger::open_read_only(ledger)
        .unwrap()
        .records()
        .unwrap()
        .into_iter()
        .filter(|r| r["kind"] == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_whose_description_changes_is_hidden_denied_and_recorded_over_stdio() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.db");
    let extra = "[ledger]\npath = \"ledger.db\"";
    let mut c = Client::start(config(dir.path(), extra, &stdio_server(&[])), Some(TOKEN)).await;
    c.initialize("2025-11-25").await;
    let list = c.request(1, "tools/list", json!({})).await;
    assert_eq!(names(&list), ["forecast", "rotate", "stable"]);
    let r = c.call(2, "forecast", json!({"city": "Oslo"})).await;
    assert_eq!(text(&r), "Oslo: sunny, 21 degrees", "{r}");

    // The server changes the description and says so.
    let r = c.call(3, "rotate", json!({})).await;
    assert_eq!(text(&r), "rotated", "{r}");
    c.until(|v| v["method"] == "notifications/tools/list_changed")
        .await;
    let list = c.request(4, "tools/list", json!({})).await;
    assert_eq!(names(&list), ["rotate", "stable"]);
    let r = c.call(5, "forecast", json!({"city": "Oslo"})).await;
    let meta = assert_changed_denial(&r);
    let r = c.call(6, "stable", json!({})).await;
    assert_eq!(text(&r), "stable", "{r}");
    c.close_released(&ledger).await;

    let pinned = records(&ledger, "tool_pinned");
    let tools: Vec<&str> = pinned.iter().map(|r| r["tool"].as_str().unwrap()).collect();
    assert_eq!(tools, ["forecast", "rotate", "stable"]);
    assert_eq!(pinned[0]["sha256"], meta["pin"]["pinned_sha256"]);
    let changed = records(&ledger, "tool_definition_changed");
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0]["tool"], "forecast");
    assert_eq!(changed[0]["change"], "changed");
    assert_eq!(changed[0]["fields"], json!(["description"]));
    assert_eq!(changed[0]["pinned_sha256"], meta["pin"]["pinned_sha256"]);
    assert_eq!(changed[0]["sha256"], meta["pin"]["sha256"]);
    assert_contains!(
        changed[0]["definition"]["description"].as_str().unwrap(),
        "~/.ssh/id_rsa"
    );

    // Restarted on the same ledger, in front of a server changed from the start: the first-seen
    // pin still holds.
    let mut c = Client::start(
        config(dir.path(), extra, &stdio_server(&["--poisoned"])),
        Some(TOKEN),
    )
    .await;
    c.initialize("2025-11-25").await;
    let list = c.request(1, "tools/list", json!({})).await;
    assert_eq!(names(&list), ["rotate", "stable"]);
    assert_changed_denial(&c.call(2, "forecast", json!({"city": "Oslo"})).await);
    c.close_released(&ledger).await;
    // Already recorded: not again.
    assert_eq!(records(&ledger, "tool_definition_changed").len(), 1);
}

/// Kills the server it holds when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The rug-pull server over Streamable HTTP on a free port, once it accepts connections.
async fn http_server(args: &[&str]) -> (Server, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = truststack_testkit::python_command()
        .arg(fixture("rug_pull_server.py"))
        .args(["--port", &port.to_string()])
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (server, format!("http://127.0.0.1:{port}/mcp"));
        }
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("the rug-pull server exited: {status}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the rug-pull server did not listen on port {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_whose_description_changes_is_hidden_and_denied_over_http() {
    let dir = tempfile::tempdir().unwrap();
    // The description changes after the first listing.
    let (_server, url) = http_server(&["--change-after", "1"]).await;
    let mut h = Http::serve(config(dir.path(), "", &format!("url = \"{url}\""))).await;
    h.initialize().await;
    let list = h
        .rpc(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .await;
    assert_eq!(names(&list), ["forecast", "rotate", "stable"]);
    let list = h
        .rpc(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
        .await;
    assert_eq!(names(&list), ["rotate", "stable"]);
    let r = h.rpc(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "forecast", "arguments": {"city": "Oslo"}}})).await;
    assert_changed_denial(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_pin_file_only_its_tools_as_pinned_are_visible() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = stdio_server(&[]);
    // What `truststack gateway pin` writes, less one tool nobody reviewed.
    let gateway =
        Gateway::from_config(config(dir.path(), "[pinning]\nmode = \"off\"", &upstream)).unwrap();
    let mut pins = pinning::pin_upstreams(&gateway).await.unwrap();
    assert_eq!(
        pins.tools.keys().collect::<Vec<_>>(),
        ["forecast", "rotate", "stable"]
    );
    pins.tools.remove("stable");
    pins.write(&dir.path().join("pins.json")).unwrap();
    assert_eq!(PinFile::load(&dir.path().join("pins.json")).unwrap(), pins);

    let mut c = Client::start(
        config(dir.path(), "[pinning]\nfile = \"pins.json\"", &upstream),
        Some(TOKEN),
    )
    .await;
    c.initialize("2025-11-25").await;
    // Called before any listing: refused all the same.
    let r = c.call(1, "stable", json!({})).await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert_contains!(text(&r), "tool `stable` is not in the pin file");
    let list = c.request(2, "tools/list", json!({})).await;
    assert_eq!(names(&list), ["forecast", "rotate"]);
    let r = c.call(3, "stable", json!({})).await;
    let meta = &r["result"]["_meta"]["io.truststack/decision"];
    assert_eq!(meta["pin"]["change"], "unpinned", "{r}");
    assert_eq!(meta["pin"]["sha256"].as_str().unwrap().len(), 64);
    let r = c.call(4, "forecast", json!({"city": "Oslo"})).await;
    assert_eq!(text(&r), "Oslo: sunny, 21 degrees", "{r}");
    c.call(5, "rotate", json!({})).await;
    let list = c.request(6, "tools/list", json!({})).await;
    assert_eq!(names(&list), ["rotate"]);
    assert_changed_denial(&c.call(7, "forecast", json!({"city": "Oslo"})).await);
    c.close().await;
}
