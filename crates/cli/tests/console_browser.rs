//! The approvals console in real Chromium against a real `truststack serve`: sign-in by
//! keyboard, a call held by the seed's trajectory policy appearing live, its page (chain,
//! arguments rendered inert, monitor values), separation of duties, a grant with a lease that
//! releases the waiting agent, the decision's inclusion verified in the browser and a tampered
//! entry failing visibly, with axe-core audits of the queue and the call page.
//!
//! The browser half is `tests/browser/console.mjs` (playwright-core driving Debian's
//! Chromium); its screenshots are saved under `target/console-browser/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{cli, ok, root};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use truststack_testkit::assert_contains;
use truststack_testkit::write_file;

struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn example(rel: &str) -> String {
    let path = truststack_testkit::examples::gtg1002(rel);
    path.canonicalize().unwrap().display().to_string()
}

fn identity(issuer: &Path, args: &[&str]) -> String {
    ok(&cli()
        .arg("identity")
        .arg("--dir")
        .arg(issuer)
        .args(args)
        .output()
        .unwrap())
    .trim()
    .to_string()
}

#[test]
fn an_approver_answers_a_held_call_in_chromium_and_verifies_it_in_the_ledger() {
    // Peers first: a missing one fails here, naming the install command.
    let chromium = truststack_testkit::chromium();
    let modules = truststack_testkit::node_modules();
    let dir = tempfile::tempdir().unwrap();
    let issuer = dir.path().join("issuer");
    identity(&issuer, &["init", "--trust-domain", "acme.example"]);
    let agent = identity(
        &issuer,
        &[
            "issue",
            "--agent",
            "orchestrator",
            "--owner",
            "user:operator@acme.example",
            "--tools",
            "*",
        ],
    );
    let approver = identity(
        &issuer,
        &[
            "issue",
            "--user",
            "user:oncall@acme.example",
            "--roles",
            "approver",
        ],
    );
    // The operator who launched the orchestrator approves other calls, not this one.
    let operator = identity(
        &issuer,
        &[
            "issue",
            "--user",
            "user:operator@acme.example",
            "--roles",
            "approver",
        ],
    );

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = write_file(
        dir.path(),
        "truststack.toml",
        format!(
            "listen = \"127.0.0.1:{port}\"\npolicies = [{:?}]\ncatalog = {:?}\n\
             issuer_dir = {:?}\ntrust_domain = \"acme.example\"\n\
             [ledger]\npath = {:?}\nkey = {:?}\n",
            example("policies/seed.tsp"),
            example("catalog.toml"),
            issuer.display().to_string(),
            dir.path().join("ledger.db").display().to_string(),
            dir.path().join("ledger.key").display().to_string(),
        ),
    );
    let _server = Bg(cli()
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .spawn()
        .unwrap());
    let until = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "truststack serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let shots = root().join("target/console-browser");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg(root().join("crates/cli/tests/browser/console.mjs"))
        .env("BASE", format!("http://127.0.0.1:{port}"))
        .env("CHROMIUM", &chromium)
        .env("NODE_MODULES", &modules)
        .env("SHOTS", &shots)
        .env("AGENT", &agent)
        .env("APPROVER", &approver)
        .env("OPERATOR", &operator)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser checks failed:\n{report}");
    println!("{report}");
    assert_contains!(report, "console browser checks passed");
    for shot in [
        "01-sign-in",
        "03-queue-live",
        "04-separation-of-duties",
        "05-call",
        "06-granted",
        "08-ledger-verified",
        "09-ledger-tampered",
    ] {
        assert!(shots.join(format!("{shot}.png")).exists(), "{shot} saved");
    }
}
