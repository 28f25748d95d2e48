//! A PostgreSQL database per test, on a real server, found once per test process:
//!
//! 1. the server of `TRUSTSTACK_TEST_DATABASE_URL` (a `postgres://` URL), when it is set;
//! 2. else the local server at [`LOCAL_URL`], when it answers;
//! 3. else a throwaway cluster: `initdb` and `postgres` from `/usr/lib/postgresql/*/bin` or
//!    `PATH`, as an unprivileged user when the tests run as root, in a temporary directory, on a
//!    free port; it stops and its directory is removed when the test process ends, however it
//!    ends.
//!
//! Each test gets a database of its own ([`database`]: `CREATE DATABASE` with a unique name,
//! dropped when the test is done), so tests run in parallel. A test that needs PostgreSQL fails
//! when none can be had, naming [`INSTALL_PEERS`]: it never passes by skipping.

use crate::peers::INSTALL_PEERS;
use postgres::{Client, NoTls};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use truststack_ledger::postgres::describe;
use truststack_ledger::PostgresUrl;

/// The variable naming the server the tests use (a `postgres://` URL with rights to create
/// databases).
pub const DATABASE_URL_VAR: &str = "TRUSTSTACK_TEST_DATABASE_URL";

/// The server tried when the variable is not set: local, trust authentication.
pub const LOCAL_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database of one test, dropped (with any connection still open to it) when this is.
pub struct TestDatabase {
    url: String,
    name: String,
    admin_url: &'static str,
}

impl TestDatabase {
    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A connection to the server's administrative database, which outlives this one (to
    /// refuse this database's connections, and allow them again).
    pub fn admin(&self) -> Client {
        Client::connect(self.admin_url, NoTls)
            .unwrap_or_else(|e| panic!("connecting to the test server: {}", describe(&e)))
    }

    /// A connection to it.
    pub fn connect(&self) -> Client {
        Client::connect(&self.url, NoTls).unwrap_or_else(|e| {
            panic!(
                "connecting to the test database {}: {}",
                self.name,
                describe(&e)
            )
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(self.admin_url, NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A fresh, empty database on the test server (see the module documentation); the test fails
/// here if there is no server to be had.
pub fn database() -> TestDatabase {
    static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
    let server = match SERVER.get_or_init(find_server) {
        Ok(server) => server,
        Err(why) => panic!("{why}"),
    };
    server.create_database()
}

/// A server the tests may create databases on.
struct Server {
    admin_url: String,
    /// The throwaway cluster, when one was started: kept for the life of the process.
    _cluster: Option<Cluster>,
}

impl Server {
    fn create_database(&'static self) -> TestDatabase {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "truststack_test_{}_{}_{:08x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let mut admin = Client::connect(&self.admin_url, NoTls).unwrap_or_else(|e| {
            let shown = PostgresUrl::parse(&self.admin_url).map(|u| u.to_string());
            panic!(
                "connecting to the test server {}: {}",
                shown.unwrap_or_default(),
                describe(&e)
            )
        });
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("creating the test database {name}: {}", describe(&e)));
        TestDatabase {
            url: with_database(&self.admin_url, &name),
            name,
            admin_url: &self.admin_url,
        }
    }
}

fn find_server() -> Result<Server, String> {
    if let Ok(url) = std::env::var(DATABASE_URL_VAR) {
        answers(&url).map_err(|e| {
            format!("{DATABASE_URL_VAR} is set, but its server does not answer: {e}")
        })?;
        return Ok(Server {
            admin_url: url,
            _cluster: None,
        });
    }
    let local = match answers(LOCAL_URL) {
        Ok(()) => {
            return Ok(Server {
                admin_url: LOCAL_URL.to_string(),
                _cluster: None,
            })
        }
        Err(e) => e,
    };
    let cluster = start_cluster().map_err(|e| {
        format!(
            "these tests need PostgreSQL: {DATABASE_URL_VAR} is not set, no server answers at \
             {LOCAL_URL} ({local}), and no throwaway cluster could be started: {e}"
        )
    })?;
    Ok(Server {
        admin_url: cluster.url.clone(),
        _cluster: Some(cluster),
    })
}

/// Whether a server answers at `url` (and lets us in); why not, with the URL shown without its
/// password.
fn answers(url: &str) -> Result<(), String> {
    let parsed = PostgresUrl::parse(url).map_err(|e| e.to_string())?;
    let mut config = parsed.config().clone();
    config.connect_timeout(Duration::from_secs(3));
    config
        .connect(NoTls)
        .map(drop)
        .map_err(|e| format!("{parsed}: {}", describe(&e)))
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let (head, rest) = url.split_at(authority_start);
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    format!("{head}{authority}/{name}{query}")
}

/// A PostgreSQL cluster of its own, in a temporary directory; stopped, and its directory
/// removed, when this is dropped or the process ends.
pub struct Cluster {
    url: String,
    /// The watchdog shell stops the server when this pipe closes.
    stop: Option<ChildStdin>,
    watchdog: Child,
}

impl Cluster {
    /// The URL of its `postgres` database, as the superuser `postgres`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        drop(self.stop.take());
        let _ = self.watchdog.wait();
    }
}

/// Where `initdb` and `postgres` are: the newest `/usr/lib/postgresql/<version>/bin`, else the
/// directory `initdb` on `PATH` links to.
fn server_binaries() -> Result<PathBuf, String> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("initdb"))
        .find(|p| p.is_file())
        .and_then(|p| p.canonicalize().ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .filter(|bin| bin.join("postgres").is_file() && bin.join("pg_ctl").is_file())
        .ok_or_else(|| {
            format!(
                "initdb and pg_ctl are not installed (looked in /usr/lib/postgresql/*/bin and \
                 PATH); `{INSTALL_PEERS}` installs Debian's postgresql package"
            )
        })
}

/// Runs a command as the cluster's owner: `nobody` when we are root (PostgreSQL refuses to run
/// as root), else ourselves.
fn as_owner(program: &Path, root: bool) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Starts a throwaway cluster (see the module documentation) and waits until it answers.
pub fn start_cluster() -> Result<Cluster, String> {
    let bin = server_binaries()?;
    let root = is_root();
    let dir = tempfile::Builder::new()
        .prefix("truststack-pg-")
        .tempdir()
        .map_err(|e| format!("creating a directory for the cluster: {e}"))?
        // The watchdog removes it, as its owner, once the server has stopped.
        .keep();
    if root {
        let chown = Command::new("chown")
            .arg("nobody")
            .arg(&dir)
            .status()
            .map_err(|e| format!("chown nobody {}: {e}", dir.display()))?;
        if !chown.success() {
            return Err(format!("chown nobody {}: {chown}", dir.display()));
        }
    }
    let data = dir.join("data");
    let init = as_owner(&bin.join("initdb"), root)
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
        .current_dir(&dir)
        .output()
        .map_err(|e| format!("running {}: {e}", bin.join("initdb").display()))?;
    if !init.status.success() {
        return Err(format!(
            "initdb failed ({}): {}",
            init.status,
            String::from_utf8_lossy(&init.stderr)
        ));
    }
    let port = crate::net::free_port();
    // Stops the server (fast shutdown) and removes the directory once its standard input
    // closes: when the Cluster is dropped, or when the test process ends in any way.
    let script = r#"
"$1" -D "$2/data" -p "$3" -k "$2" -c listen_addresses=127.0.0.1 >"$2/server.log" 2>&1 &
pid=$!
cat >/dev/null
kill -INT "$pid"
wait "$pid"
rm -rf "$2"
"#;
    let mut watchdog = as_owner(Path::new("sh"), root)
        .args(["-c", script, "sh"])
        .arg(bin.join("postgres"))
        .arg(&dir)
        .arg(port.to_string())
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.join("postgres").display()))?;
    let stop = watchdog.stdin.take();
    let cluster = Cluster {
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        stop,
        watchdog,
    };
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        match answers(&cluster.url) {
            Ok(()) => return Ok(cluster),
            Err(e) if Instant::now() > until => {
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                return Err(format!(
                    "the cluster in {} did not start: {e}\n{log}",
                    dir.display()
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_replaced_in_a_url() {
        assert_eq!(
            with_database("postgres://u:p@h:5/test?sslmode=disable", "x"),
            "postgres://u:p@h:5/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }

    #[test]
    fn each_test_gets_a_fresh_database_that_is_dropped_after() {
        let (first, second) = (database(), database());
        assert_ne!(first.url(), second.url());
        let mut c = first.connect();
        c.batch_execute("CREATE TABLE t (x INT)").unwrap();
        assert!(second.connect().query("SELECT * FROM t", &[]).is_err());
        let name = first.name.clone();
        let mut admin = Client::connect(first.admin_url, NoTls).unwrap();
        drop(first);
        let left = admin
            .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .unwrap();
        assert!(left.is_empty(), "{name} was not dropped");
    }

    #[test]
    fn a_throwaway_cluster_starts_answers_and_is_removed() {
        let cluster = start_cluster().unwrap();
        let mut c = Client::connect(cluster.url(), NoTls).unwrap();
        let dir: String = c.query_one("SHOW data_directory", &[]).unwrap().get(0);
        drop(c);
        drop(cluster);
        assert!(!Path::new(&dir).exists(), "{dir} is left behind");
    }
}
