//! Processes and ports on loopback: what tests that start a real server or gateway need.

use std::net::{TcpListener, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

/// A port nothing listens on now (the OS's choice; free until someone binds it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the OS gives a free loopback port")
}

/// Blocks until something accepts connections on `port` (at most 30 s; then the test fails).
pub fn wait_port(port: u16) {
    let until = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A background process killed (and reaped) when the test ends, however it ends.
pub struct Bg(pub Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends a request and reads its answer as JSON: what a test of an HTTP API does most.
pub trait JsonReply {
    fn json_reply(self) -> impl std::future::Future<Output = serde_json::Value> + Send;
    /// The status and the body: as JSON, or as a JSON string when it is not JSON.
    fn status_reply(self) -> impl std::future::Future<Output = (u16, serde_json::Value)> + Send;
}

impl JsonReply for reqwest::RequestBuilder {
    async fn json_reply(self) -> serde_json::Value {
        let response = self.send().await.expect("the request reaches the server");
        response.json().await.expect("the server answers JSON")
    }

    async fn status_reply(self) -> (u16, serde_json::Value) {
        let response = self.send().await.expect("the request reaches the server");
        let status = response.status().as_u16();
        let text = response.text().await.expect("the server sends a body");
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, body)
    }
}
