//! One `truststack serve` process: started from the harness's config, killed with SIGKILL.

use anyhow::{bail, Context};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a restart may take before the server counts as not answering again. Start-up
/// rebuilds the engine's state from the whole ledger, so it grows with the ledger.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The standard error lines kept for a failure report.
const TAIL_LINES: usize = 40;

/// What `truststack serve` prints once it listens (the port is chosen by the OS).
const SERVING: &str = "serving on http://";

pub struct Server {
    child: Child,
    /// `http://127.0.0.1:port`.
    pub base: String,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Server {
    /// Starts the server and waits until it listens and `/readyz` answers 200.
    pub fn start(
        bin: &Path,
        config: &Path,
        http: &reqwest::blocking::Client,
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel();
        if let Some(pipe) = child.stderr.take() {
            let tail = Arc::clone(&stderr);
            // Drains the pipe for the process's whole life, so logging never blocks the server.
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some((_, rest)) = line.split_once(SERVING) {
                        let addr = rest
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string();
                        let _ = tx.send(addr);
                    }
                    if let Ok(mut tail) = tail.lock() {
                        if tail.len() == TAIL_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(line);
                    }
                }
            });
        }
        let mut server = Server {
            child,
            base: String::new(),
            stderr,
        };
        let started = Instant::now();
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let status = server.child.try_wait().ok().flatten();
                bail!(
                    "no `{SERVING}…` line within {START_TIMEOUT:?} (exit status {status:?}); stderr:\n{}",
                    server.stderr_tail()
                );
            }
        };
        server.base = format!("http://{addr}");
        loop {
            let ready = http
                .get(format!("{}/readyz", server.base))
                .send()
                .map(|r| r.status().as_u16());
            match ready {
                Ok(200) => return Ok(server),
                _ if started.elapsed() > START_TIMEOUT => bail!(
                    "{}/readyz did not answer 200 within {START_TIMEOUT:?} (last: {ready:?}); stderr:\n{}",
                    server.base,
                    server.stderr_tail()
                ),
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// SIGKILL: no drain, no flush, no goodbye.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().context("kill -9 of the server")?;
        self.child.wait().context("reaping the killed server")?;
        Ok(())
    }

    /// The last lines the server wrote to standard error.
    pub fn stderr_tail(&self) -> String {
        self.stderr
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A harness that stops early (a failed check, an error) leaves no server behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
