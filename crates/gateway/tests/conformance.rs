//! The MCP conformance suite (`@modelcontextprotocol/conformance`, server scenarios) against the
//! reference server (`@modelcontextprotocol/server-everything`) directly, and through an
//! allow-all gateway in front of it over stdio and over Streamable HTTP: the gateway passes
//! exactly the scenarios the server passes. The one exception is `dns-rebinding-protection`,
//! which the gateway answers itself (its `Origin` check), so it must pass through the gateway
//! whatever the server does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use truststack_gateway::{Gateway, GatewayConfig};
use truststack_testkit::everything_server;
use truststack_testkit::net::free_port;
use truststack_testkit::write_file;

/// The scenario the gateway answers itself.
const GATEWAY_OWN: &str = "dns-rebinding-protection";

/// Kills the process it holds when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_port(port: u16, child: &mut Child) {
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("the reference server exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on port {port}");
}

/// Runs every server scenario against `url`: scenario → passed.
async fn conformance(modules: &Path, url: &str, dir: &Path) -> BTreeMap<String, bool> {
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(modules.join("node/bin/node"))
            .arg(modules.join("@modelcontextprotocol/conformance/dist/index.js"))
            .args(["server", "--url", url])
            .current_dir(dir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the conformance suite finished")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The summary: `✓ name: 1 passed, 0 failed` or `✗ name: 0 passed, 1 failed`.
    let summary: BTreeMap<String, bool> = stdout
        .lines()
        .skip_while(|l| !l.contains("=== SUMMARY ==="))
        .filter_map(|l| {
            let (mark, rest) = l.split_once(' ')?;
            let (name, _) = rest.split_once(": ")?;
            match mark {
                "✓" => Some((name.to_string(), true)),
                "✗" => Some((name.to_string(), false)),
                _ => None,
            }
        })
        .collect();
    assert!(
        summary.len() >= 20,
        "no summary from the conformance suite against {url}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    summary
}

/// An allow-all gateway (anonymous callers, every call allowed) in front of `upstream` (an
/// `[[upstream]]` body), served over Streamable HTTP: its MCP endpoint.
async fn gateway(dir: &Path, upstream: &str) -> String {
    let path = write_file(
        dir,
        "gateway.toml",
        format!(
            "default_decision = \"allow\"\nunknown_tools = \"allow\"\n\
             [identity]\nallow_anonymous = true\n[[upstream]]\n{upstream}\n"
        ),
    );
    let gateway = Arc::new(Gateway::from_config(GatewayConfig::load(&path).unwrap()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { gateway.serve_http(listener).await });
    url
}

fn differences(direct: &BTreeMap<String, bool>, through: &BTreeMap<String, bool>) -> Vec<String> {
    let names: std::collections::BTreeSet<&String> = direct.keys().chain(through.keys()).collect();
    names
        .into_iter()
        .filter(|n| n.as_str() != GATEWAY_OWN)
        .filter(|n| direct.get(*n) != through.get(*n))
        .map(|n| {
            format!(
                "{n}: directly {:?}, through the gateway {:?}",
                direct.get(n),
                through.get(n)
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_passes_the_conformance_scenarios_the_reference_server_passes() {
    let modules: PathBuf = truststack_testkit::node_modules();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = Child(
        std::process::Command::new("node")
            .arg(everything_server())
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(port, &mut server).await;
    let server_url = format!("http://127.0.0.1:{port}/mcp");

    let direct = conformance(&modules, &server_url, dir.path()).await;
    for scenario in [
        "server-initialize",
        "tools-list",
        "tools-call-simple-text",
        "ping",
    ] {
        assert_eq!(
            direct.get(scenario),
            Some(&true),
            "{scenario} directly: {direct:?}"
        );
    }

    let stdio_dir = tempfile::tempdir().unwrap();
    let command = serde_json::json!(["node", everything_server()]);
    let via_stdio = gateway(stdio_dir.path(), &format!("command = {command}")).await;
    let through_stdio = conformance(&modules, &via_stdio, dir.path()).await;

    let http_dir = tempfile::tempdir().unwrap();
    let via_http = gateway(http_dir.path(), &format!("url = \"{server_url}\"")).await;
    let through_http = conformance(&modules, &via_http, dir.path()).await;

    for (how, through) in [("stdio", &through_stdio), ("HTTP", &through_http)] {
        let diff = differences(&direct, through);
        assert!(
            diff.is_empty(),
            "through the gateway to a {how} upstream:\n{}",
            diff.join("\n")
        );
        assert_eq!(through.get(GATEWAY_OWN), Some(&true), "{how}: {through:?}");
    }
}
