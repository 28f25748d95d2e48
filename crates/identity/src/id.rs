//! Identifiers: SPIFFE IDs, agent identities, human principals.
//!
//! An agent is `spiffe://<trust-domain>/agent/<name>`, validated by the rules of the SPIFFE ID
//! specification (`standards/SPIFFE-ID.md` §2): the scheme is `spiffe`; the trust domain is the
//! URI host, made of lowercase letters, digits, `.`, `-` and `_`, at most 255 bytes, with no
//! userinfo and no port; the path is made of segments of letters, digits, `.`, `-` and `_`, none
//! empty, `.` or `..`, with no trailing `/`; there is no query and no fragment; the whole ID is at
//! most 2048 bytes. A human is `user:<name>` (`user:alice@acme.example`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The longest SPIFFE ID, in bytes (SPIFFE-ID §2.3).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// The longest trust domain name, in bytes (SPIFFE-ID §2.3, after RFC 3986's host limit).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// The longest `user:` principal name, in bytes.
pub const MAX_USER_NAME_LEN: usize = 256;

const SCHEME: &str = "spiffe://";
const USER_PREFIX: &str = "user:";
const AGENT_PATH: &str = "/agent/";

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string does not start with `spiffe://`.
    #[error("`{input}` is not a SPIFFE ID: it must start with `spiffe://` (lowercase scheme)")]
    MissingScheme {
        /// The rejected input.
        input: String,
    },
    /// Nothing between `spiffe://` and the path.
    #[error("`{input}`: the trust domain is empty")]
    EmptyTrustDomain {
        /// The rejected input.
        input: String,
    },
    /// The trust domain is longer than 255 bytes.
    #[error("the trust domain is {len} bytes long; at most {MAX_TRUST_DOMAIN_LEN} are allowed")]
    TrustDomainTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The authority has a userinfo part (`user@host`).
    #[error("`{input}`: a SPIFFE ID must not have a userinfo part (`...@`) in its authority")]
    Userinfo {
        /// The rejected input.
        input: String,
    },
    /// The authority has a port (`host:port`).
    #[error("`{input}`: a SPIFFE ID must not have a port (`:...`) in its authority")]
    Port {
        /// The rejected input.
        input: String,
    },
    /// A character outside `[a-z0-9._-]` in the trust domain (uppercase included).
    #[error("trust domain `{trust_domain}`: character {ch:?} is not allowed (only lowercase letters, digits, `.`, `-`, `_`)")]
    TrustDomainChar {
        /// The trust domain.
        trust_domain: String,
        /// The offending character.
        ch: char,
    },
    /// A `?` query component.
    #[error("`{input}`: a SPIFFE ID must not have a query component (`?...`)")]
    Query {
        /// The rejected input.
        input: String,
    },
    /// A `#` fragment component.
    #[error("`{input}`: a SPIFFE ID must not have a fragment component (`#...`)")]
    Fragment {
        /// The rejected input.
        input: String,
    },
    /// `//` in the path.
    #[error("`{input}`: the path has an empty segment (`//`)")]
    EmptySegment {
        /// The rejected input.
        input: String,
    },
    /// A `.` or `..` path segment.
    #[error("`{input}`: the path segment `{segment}` is not allowed (no `.` or `..` segments)")]
    DotSegment {
        /// The rejected input.
        input: String,
        /// The segment.
        segment: String,
    },
    /// The path ends with `/`.
    #[error("`{input}`: the path must not end with `/`")]
    TrailingSlash {
        /// The rejected input.
        input: String,
    },
    /// A character outside `[A-Za-z0-9._-]` in a path segment.
    #[error("path segment `{segment}`: character {ch:?} is not allowed (only letters, digits, `.`, `-`, `_`)")]
    SegmentChar {
        /// The segment.
        segment: String,
        /// The offending character.
        ch: char,
    },
    /// Longer than 2048 bytes.
    #[error("the SPIFFE ID is {len} bytes long; at most {MAX_SPIFFE_ID_LEN} are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A valid SPIFFE ID whose path is not `/agent/<name>`.
    #[error(
        "`{input}` is a SPIFFE ID but not an agent identity: its path must be `/agent/<name>`"
    )]
    NotAgentPath {
        /// The rejected input.
        input: String,
    },
    /// `user:` with nothing after it.
    #[error("`{input}`: the user name after `user:` is empty")]
    EmptyUserName {
        /// The rejected input.
        input: String,
    },
    /// The user name is longer than 256 bytes.
    #[error("the user name is {len} bytes long; at most {MAX_USER_NAME_LEN} are allowed")]
    UserNameTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A character outside `[A-Za-z0-9._@+-]` in a user name.
    #[error("user `{input}`: character {ch:?} is not allowed (only letters, digits, `.`, `_`, `@`, `+`, `-`)")]
    UserNameChar {
        /// The rejected input.
        input: String,
        /// The offending character.
        ch: char,
    },
    /// Not `user:...`.
    #[error("`{input}` is not a user principal: it must start with `user:`")]
    NotUser {
        /// The rejected input.
        input: String,
    },
    /// Neither `user:...` nor `spiffe://...`.
    #[error("`{input}` is not a principal: expected `user:<name>` or `spiffe://<trust-domain>/agent/<name>`")]
    NotPrincipal {
        /// The rejected input.
        input: String,
    },
}

/// A SPIFFE trust domain name (`acme.example`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Validates a trust domain name (not a URI: no `spiffe://`).
    pub fn new(name: &str) -> Result<Self, IdError> {
        check_trust_domain(name, name)?;
        Ok(TrustDomain(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own SPIFFE ID, `spiffe://<name>` (the issuer's identity).
    pub fn id(&self) -> String {
        format!("{SCHEME}{}", self.0)
    }
}

fn check_trust_domain(td: &str, input: &str) -> Result<(), IdError> {
    if td.is_empty() {
        return Err(IdError::EmptyTrustDomain {
            input: input.to_string(),
        });
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(IdError::TrustDomainTooLong { len: td.len() });
    }
    if td.contains('@') {
        return Err(IdError::Userinfo {
            input: input.to_string(),
        });
    }
    if td.contains(':') {
        return Err(IdError::Port {
            input: input.to_string(),
        });
    }
    if let Some(ch) = td
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
    {
        return Err(IdError::TrustDomainChar {
            trust_domain: td.to_string(),
            ch,
        });
    }
    Ok(())
}

fn check_segment(segment: &str, input: &str) -> Result<(), IdError> {
    if segment.is_empty() {
        return Err(IdError::EmptySegment {
            input: input.to_string(),
        });
    }
    if segment == "." || segment == ".." {
        return Err(IdError::DotSegment {
            input: input.to_string(),
            segment: segment.to_string(),
        });
    }
    if let Some(ch) = segment
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_'))
    {
        return Err(IdError::SegmentChar {
            segment: segment.to_string(),
            ch,
        });
    }
    Ok(())
}

impl FromStr for TrustDomain {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        TrustDomain::new(s)
    }
}

impl TryFrom<String> for TrustDomain {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        TrustDomain::new(&s)
    }
}

impl From<TrustDomain> for String {
    fn from(td: TrustDomain) -> String {
        td.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Any valid SPIFFE ID (`spiffe://<trust-domain>[/<path>]`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    uri: String,
    /// Byte length of the trust domain, which starts right after `spiffe://`.
    td_len: usize,
}

impl SpiffeId {
    /// Validates a SPIFFE ID by the rules of the SPIFFE ID specification.
    pub fn parse(input: &str) -> Result<Self, IdError> {
        if input.len() > MAX_SPIFFE_ID_LEN {
            return Err(IdError::TooLong { len: input.len() });
        }
        let rest = input
            .strip_prefix(SCHEME)
            .ok_or_else(|| IdError::MissingScheme {
                input: input.to_string(),
            })?;
        if rest.contains('?') {
            return Err(IdError::Query {
                input: input.to_string(),
            });
        }
        if rest.contains('#') {
            return Err(IdError::Fragment {
                input: input.to_string(),
            });
        }
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        check_trust_domain(td, input)?;
        // `path` is empty or starts with `/`; its segments follow that first `/`.
        let mut segments = path.split('/').skip(1).peekable();
        while let Some(segment) = segments.next() {
            if segment.is_empty() && segments.peek().is_none() {
                return Err(IdError::TrailingSlash {
                    input: input.to_string(),
                });
            }
            check_segment(segment, input)?;
        }
        Ok(SpiffeId {
            uri: input.to_string(),
            td_len: td.len(),
        })
    }

    /// The whole URI.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// The trust domain name.
    pub fn trust_domain(&self) -> &str {
        self.uri
            .get(SCHEME.len()..SCHEME.len() + self.td_len)
            .unwrap_or_default()
    }

    /// The path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        self.uri
            .get(SCHEME.len() + self.td_len..)
            .unwrap_or_default()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

/// An agent identity: a SPIFFE ID whose path is `/agent/<name>` (the name may have several
/// segments, `/agent/team/recon`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentId(SpiffeId);

impl AgentId {
    /// Parses `spiffe://<trust-domain>/agent/<name>`.
    pub fn parse(input: &str) -> Result<Self, IdError> {
        let id = SpiffeId::parse(input)?;
        if !id.path().starts_with(AGENT_PATH) {
            return Err(IdError::NotAgentPath {
                input: input.to_string(),
            });
        }
        Ok(AgentId(id))
    }

    /// The agent `name` in `trust_domain`.
    pub fn new(trust_domain: &TrustDomain, name: &str) -> Result<Self, IdError> {
        AgentId::parse(&format!("{SCHEME}{trust_domain}{AGENT_PATH}{name}"))
    }

    /// A full `spiffe://` URI as is, or a bare name expanded in `trust_domain`.
    pub fn expand(name_or_uri: &str, trust_domain: &TrustDomain) -> Result<Self, IdError> {
        if name_or_uri.contains("://") {
            AgentId::parse(name_or_uri)
        } else {
            AgentId::new(trust_domain, name_or_uri)
        }
    }

    /// The URI.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The trust domain name.
    pub fn trust_domain(&self) -> &str {
        self.0.trust_domain()
    }

    /// The name after `/agent/`.
    pub fn name(&self) -> &str {
        self.0.path().get(AGENT_PATH.len()..).unwrap_or_default()
    }

    /// The sub-agent `name` under this agent: its path extended by `name` (`recon` under
    /// `spiffe://acme.example/agent/orch` is `spiffe://acme.example/agent/orch/recon`).
    pub fn child(&self, name: &str) -> Result<Self, IdError> {
        AgentId::parse(&format!("{}/{name}", self.as_str()))
    }

    /// Whether this agent's id lies strictly below `parent`'s (`…/orch/recon` below `…/orch`).
    pub fn is_under(&self, parent: &AgentId) -> bool {
        self.as_str()
            .strip_prefix(parent.as_str())
            .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'))
    }
}

impl FromStr for AgentId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        AgentId::parse(s)
    }
}

impl TryFrom<String> for AgentId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        AgentId::parse(&s)
    }
}

impl From<AgentId> for String {
    fn from(id: AgentId) -> String {
        id.0.uri
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A human principal, `user:<name>` (`user:alice@acme.example`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    /// Parses `user:<name>`; the name is 1 to 256 bytes of `[A-Za-z0-9._@+-]`.
    pub fn parse(input: &str) -> Result<Self, IdError> {
        let name = input
            .strip_prefix(USER_PREFIX)
            .ok_or_else(|| IdError::NotUser {
                input: input.to_string(),
            })?;
        if name.is_empty() {
            return Err(IdError::EmptyUserName {
                input: input.to_string(),
            });
        }
        if name.len() > MAX_USER_NAME_LEN {
            return Err(IdError::UserNameTooLong { len: name.len() });
        }
        if let Some(ch) = name
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '@' | '+' | '-'))
        {
            return Err(IdError::UserNameChar {
                input: input.to_string(),
                ch,
            });
        }
        Ok(UserId(input.to_string()))
    }

    /// `user:<name>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name after `user:`.
    pub fn name(&self) -> &str {
        self.0.get(USER_PREFIX.len()..).unwrap_or_default()
    }
}

impl FromStr for UserId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        UserId::parse(s)
    }
}

impl TryFrom<String> for UserId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        UserId::parse(&s)
    }
}

impl From<UserId> for String {
    fn from(id: UserId) -> String {
        id.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a principal, as written in a verified chain, names a human (`user:…`) rather than an
/// agent: the one test of a principal's kind for the paths that do not parse it (deciding a call
/// reads its chain on every decision; the chain was parsed when its credential was issued).
pub fn names_a_human(principal: &str) -> bool {
    principal.starts_with(USER_PREFIX)
}

/// Who can hold a credential or appear in a delegation chain: a human or an agent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Principal {
    /// A human, `user:<name>`.
    User(UserId),
    /// An agent, `spiffe://<trust-domain>/agent/<name>`.
    Agent(AgentId),
}

impl Principal {
    /// Parses `user:<name>` or `spiffe://<trust-domain>/agent/<name>`.
    pub fn parse(input: &str) -> Result<Self, IdError> {
        if input.starts_with(USER_PREFIX) {
            UserId::parse(input).map(Principal::User)
        } else if input.starts_with(SCHEME) {
            AgentId::parse(input).map(Principal::Agent)
        } else {
            Err(IdError::NotPrincipal {
                input: input.to_string(),
            })
        }
    }

    /// A `user:` principal, a full `spiffe://` URI, or a bare agent name expanded in
    /// `trust_domain` (the command line's shorthand).
    pub fn expand(input: &str, trust_domain: &TrustDomain) -> Result<Self, IdError> {
        if input.starts_with(USER_PREFIX) {
            UserId::parse(input).map(Principal::User)
        } else {
            AgentId::expand(input, trust_domain).map(Principal::Agent)
        }
    }

    /// The string form.
    pub fn as_str(&self) -> &str {
        match self {
            Principal::User(u) => u.as_str(),
            Principal::Agent(a) => a.as_str(),
        }
    }

    /// The agent, if this is one.
    pub fn as_agent(&self) -> Option<&AgentId> {
        match self {
            Principal::Agent(a) => Some(a),
            Principal::User(_) => None,
        }
    }

    /// The human, if this is one.
    pub fn as_user(&self) -> Option<&UserId> {
        match self {
            Principal::User(u) => Some(u),
            Principal::Agent(_) => None,
        }
    }
}

impl From<AgentId> for Principal {
    fn from(a: AgentId) -> Self {
        Principal::Agent(a)
    }
}

impl From<UserId> for Principal {
    fn from(u: UserId) -> Self {
        Principal::User(u)
    }
}

impl FromStr for Principal {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Principal::parse(s)
    }
}

impl TryFrom<String> for Principal {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Principal::parse(&s)
    }
}

impl From<Principal> for String {
    fn from(p: Principal) -> String {
        match p {
            Principal::User(u) => u.into(),
            Principal::Agent(a) => a.into(),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn valid_spiffe_ids() {
        for id in [
            "spiffe://acme.example",
            "spiffe://acme.example/agent/recon",
            "spiffe://trust_domain-1.example/a/B/c.d-e_f",
            "spiffe://example.org/9eebccd2-12bf-40a6-b262-65fe0487d453",
            "spiffe://k8s-west.example.com/ns/staging/sa/default",
            "spiffe://a/...a/..b/.c",
        ] {
            let parsed = SpiffeId::parse(id).unwrap_or_else(|e| panic!("{id}: {e}"));
            assert_eq!(parsed.as_str(), id);
        }
        let id = SpiffeId::parse("spiffe://acme.example/agent/recon").unwrap();
        assert_eq!(id.trust_domain(), "acme.example");
        assert_eq!(id.path(), "/agent/recon");
        let max = format!("spiffe://td/{}", "a".repeat(MAX_SPIFFE_ID_LEN - 12));
        assert_eq!(max.len(), MAX_SPIFFE_ID_LEN);
        assert!(SpiffeId::parse(&max).is_ok());
    }

    #[test]
    fn invalid_spiffe_ids() {
        use IdError as E;
        #[allow(clippy::type_complexity)]
        let cases: Vec<(String, fn(&IdError) -> bool)> = vec![
            ("".into(), |e| matches!(e, E::MissingScheme { .. })),
            ("http://acme.example/agent/x".into(), |e| {
                matches!(e, E::MissingScheme { .. })
            }),
            ("SPIFFE://acme.example/agent/x".into(), |e| {
                matches!(e, E::MissingScheme { .. })
            }),
            ("spiffe:/acme.example".into(), |e| {
                matches!(e, E::MissingScheme { .. })
            }),
            ("spiffe://".into(), |e| {
                matches!(e, E::EmptyTrustDomain { .. })
            }),
            ("spiffe:///agent/x".into(), |e| {
                matches!(e, E::EmptyTrustDomain { .. })
            }),
            ("spiffe://Acme.example/agent/x".into(), |e| {
                matches!(e, E::TrustDomainChar { ch: 'A', .. })
            }),
            ("spiffe://acme example/agent/x".into(), |e| {
                matches!(e, E::TrustDomainChar { ch: ' ', .. })
            }),
            ("spiffe://acme.example:443/agent/x".into(), |e| {
                matches!(e, E::Port { .. })
            }),
            ("spiffe://admin@acme.example/agent/x".into(), |e| {
                matches!(e, E::Userinfo { .. })
            }),
            ("spiffe://acme.example/agent/x?debug=1".into(), |e| {
                matches!(e, E::Query { .. })
            }),
            ("spiffe://acme.example/agent/x#frag".into(), |e| {
                matches!(e, E::Fragment { .. })
            }),
            ("spiffe://acme.example/agent//x".into(), |e| {
                matches!(e, E::EmptySegment { .. })
            }),
            ("spiffe://acme.example//".into(), |e| {
                matches!(e, E::EmptySegment { .. })
            }),
            ("spiffe://acme.example/agent/x/".into(), |e| {
                matches!(e, E::TrailingSlash { .. })
            }),
            ("spiffe://acme.example/".into(), |e| {
                matches!(e, E::TrailingSlash { .. })
            }),
            (
                "spiffe://acme.example/agent/./x".into(),
                |e| matches!(e, E::DotSegment { segment, .. } if segment == "."),
            ),
            (
                "spiffe://acme.example/agent/../x".into(),
                |e| matches!(e, E::DotSegment { segment, .. } if segment == ".."),
            ),
            ("spiffe://acme.example/agent/re%20con".into(), |e| {
                matches!(e, E::SegmentChar { ch: '%', .. })
            }),
            ("spiffe://acme.example/agent/récon".into(), |e| {
                matches!(e, E::SegmentChar { ch: 'é', .. })
            }),
            (format!("spiffe://{}/agent/x", "a".repeat(256)), |e| {
                matches!(e, E::TrustDomainTooLong { len: 256 })
            }),
            (
                format!("spiffe://td/{}", "a".repeat(MAX_SPIFFE_ID_LEN - 11)),
                |e| matches!(e, E::TooLong { len: 2049 }),
            ),
        ];
        for (input, expected) in cases {
            let err = SpiffeId::parse(&input).expect_err(&input);
            assert!(expected(&err), "{input}: unexpected error {err:?}");
        }
    }

    #[test]
    fn agent_ids() {
        let td = TrustDomain::new("acme.example").unwrap();
        let a = AgentId::new(&td, "recon").unwrap();
        assert_eq!(a.as_str(), "spiffe://acme.example/agent/recon");
        assert_eq!(a.name(), "recon");
        assert_eq!(a.trust_domain(), "acme.example");
        assert_eq!(AgentId::expand("recon", &td).unwrap(), a);
        assert_eq!(
            AgentId::expand("spiffe://other.example/agent/x", &td)
                .unwrap()
                .trust_domain(),
            "other.example"
        );
        assert!(AgentId::new(&td, "team/recon").is_ok());
        assert!(matches!(
            AgentId::parse("spiffe://acme.example/workload/x"),
            Err(IdError::NotAgentPath { .. })
        ));
        assert!(matches!(
            AgentId::parse("spiffe://acme.example/agent"),
            Err(IdError::NotAgentPath { .. })
        ));
        assert!(matches!(
            AgentId::new(&td, "re con"),
            Err(IdError::SegmentChar { ch: ' ', .. })
        ));
        assert!(matches!(
            AgentId::new(&td, ""),
            Err(IdError::TrailingSlash { .. })
        ));
    }

    #[test]
    fn trust_domains() {
        assert!(TrustDomain::new("acme.example").is_ok());
        assert!(TrustDomain::new("a_b-c.1").is_ok());
        assert!(matches!(
            TrustDomain::new(""),
            Err(IdError::EmptyTrustDomain { .. })
        ));
        assert!(matches!(
            TrustDomain::new("ACME"),
            Err(IdError::TrustDomainChar { ch: 'A', .. })
        ));
        assert_eq!(
            TrustDomain::new("acme.example").unwrap().id(),
            "spiffe://acme.example"
        );
    }

    #[test]
    fn users_and_principals() {
        let u = UserId::parse("user:alice@acme.example").unwrap();
        assert_eq!(u.name(), "alice@acme.example");
        assert!(matches!(
            UserId::parse("user:"),
            Err(IdError::EmptyUserName { .. })
        ));
        assert!(matches!(
            UserId::parse("user:al ice"),
            Err(IdError::UserNameChar { ch: ' ', .. })
        ));
        assert!(matches!(
            UserId::parse("alice"),
            Err(IdError::NotUser { .. })
        ));
        assert!(matches!(
            UserId::parse(&format!("user:{}", "a".repeat(257))),
            Err(IdError::UserNameTooLong { len: 257 })
        ));
        assert!(matches!(
            Principal::parse("user:bob").unwrap(),
            Principal::User(_)
        ));
        assert!(matches!(
            Principal::parse("spiffe://acme.example/agent/x").unwrap(),
            Principal::Agent(_)
        ));
        assert!(matches!(
            Principal::parse("bob"),
            Err(IdError::NotPrincipal { .. })
        ));
        let td = TrustDomain::new("acme.example").unwrap();
        assert_eq!(
            Principal::expand("recon", &td).unwrap().as_str(),
            "spiffe://acme.example/agent/recon"
        );
        let json = serde_json::to_string(&Principal::parse("user:bob").unwrap()).unwrap();
        assert_eq!(json, "\"user:bob\"");
        assert!(serde_json::from_str::<Principal>("\"spiffe://X/agent/y\"").is_err());
    }
}
