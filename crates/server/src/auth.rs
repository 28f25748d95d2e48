//! Who is calling the API: an agent (for decisions), or a human with roles (approvers,
//! administrators). Credentials are verified by an [`Authenticator`]; the request body is never
//! trusted for identity when credentials are required.

use axum::http::HeaderMap;
use truststack_engine::Caller;

/// A verified human principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Human {
    pub principal: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
}

impl Human {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Verifies bearer credentials.
pub trait Authenticator: Send + Sync {
    /// An agent credential: who acts, on whose authority, with which tools.
    fn agent(&self, token: &str) -> Result<Caller, String>;
    /// A human credential with roles and groups.
    fn human(&self, token: &str) -> Result<Human, String>;
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}
