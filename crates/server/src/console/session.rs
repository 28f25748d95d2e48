//! Console sessions: a credential, verified at sign-in and again on every request (so expiry
//! and revocation take effect at once), behind a random session id in an HttpOnly,
//! `SameSite=Strict` cookie; and the CSRF token every state change must carry.

use base64::Engine as _;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The session cookie.
pub const SESSION_COOKIE: &str = "truststack_console";
/// The cookie carrying the sign-in form's token (before there is a session).
pub const SIGN_IN_COOKIE: &str = "truststack_console_signin";
/// Signed-in sessions kept at most; past it the oldest is ended.
const MAX_SESSIONS: usize = 10_000;

#[derive(Clone)]
pub struct Session {
    /// The credential the approver signed in with (kept server-side only).
    pub token: String,
    /// The CSRF token of this session's forms.
    pub csrf: String,
    created: Instant,
}

pub struct Sessions {
    ttl: Duration,
    map: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes, URL-safe base64.
pub fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Compares two secrets in constant time.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Opens a session for `token`; gives its id.
    pub fn open(&self, token: String) -> String {
        let id = random_token();
        let mut map = self.map.lock();
        let ttl = self.ttl;
        map.retain(|_, s| s.created.elapsed() < ttl);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            id.clone(),
            Session {
                token,
                csrf: random_token(),
                created: Instant::now(),
            },
        );
        id
    }

    /// The live session `id`, if any.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.map.lock();
        let live = map.get(id)?.created.elapsed() < self.ttl;
        if !live {
            map.remove(id);
            return None;
        }
        map.get(id).cloned()
    }

    pub fn close(&self, id: &str) {
        self.map.lock().remove(id);
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h axum::http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly, `SameSite=Strict`, scoped to the console, `Secure` when the
/// console is reached over TLS. `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_http_only_strict_and_secure_over_tls() {
        let c = set_cookie("s", "v", Duration::from_secs(60), true);
        assert_eq!(
            c,
            "s=v; Path=/console; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
        assert!(!set_cookie("s", "v", Duration::ZERO, false).contains("Secure"));
    }

    #[test]
    fn a_session_ends_when_closed_or_expired() {
        let sessions = Sessions::new(Duration::from_secs(3600));
        let id = sessions.open("token".into());
        assert_eq!(sessions.get(&id).map(|s| s.token), Some("token".into()));
        assert!(sessions.get("another").is_none());
        sessions.close(&id);
        assert!(sessions.get(&id).is_none());
        let expired = Sessions::new(Duration::ZERO);
        let id = expired.open("token".into());
        assert!(expired.get(&id).is_none());
    }
}
