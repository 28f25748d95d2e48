//! A real webhook receiver on a loopback port: records what it is sent, can answer 500 a number
//! of times first, or hang without ever answering (a dead receiver).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Default)]
pub struct Received {
    /// (path, headers, body) of every request, in arrival order (hung ones included).
    pub requests: Mutex<Vec<(String, HeaderMap, Bytes)>>,
    /// How many more requests to each path to answer 500.
    pub fail_next: Mutex<HashMap<String, usize>>,
}

pub struct Receiver {
    pub base: String,
    pub received: Arc<Received>,
}

async fn hook(
    State(r): State<Arc<Received>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    r.requests.lock().push((path.clone(), headers, body));
    if path == "hang" {
        // Never answers: the sender must give up on its own.
        std::future::pending::<()>().await;
    }
    let failing = r.fail_next.lock().get_mut(&path).is_some_and(|n| {
        let fail = *n > 0;
        *n = n.saturating_sub(1);
        fail
    });
    if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

/// Starts a receiver: `POST /<anything>` records; `POST /hang` records and never answers.
pub async fn start() -> Receiver {
    let received = Arc::new(Received::default());
    let app = Router::new()
        .route("/{path}", post(hook))
        .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { base, received }
}

impl Receiver {
    /// Answers the next `n` requests to `path` with 500.
    pub fn fail(&self, path: &str, n: usize) {
        self.received.fail_next.lock().insert(path.to_string(), n);
    }

    /// The requests to `path` so far.
    pub fn to(&self, path: &str) -> Vec<(HeaderMap, Bytes)> {
        self.received
            .requests
            .lock()
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, h, b)| (h.clone(), b.clone()))
            .collect()
    }

    /// Waits until `path` has had at least `n` requests (the test's own bound stops a hang).
    pub async fn until(&self, path: &str, n: usize) -> Vec<(HeaderMap, Bytes)> {
        loop {
            let got = self.to(path);
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
