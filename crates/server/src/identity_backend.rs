//! The issuer directory (`truststack identity init`) as the server's identity service.

use crate::auth::{Authenticator, Human};
use crate::backend::{IdentityService, IssueError, RevokeError};
use serde_json::{json, Value};
use truststack_engine::identity::issuer::{AgentRequest, DelegationRequest, Issued, UserRequest};
use truststack_engine::identity::ttl::parse_ttl;
use truststack_engine::identity::{
    AgentId, Issuer, IssuerError, Principal, RevocationError, Revoke, ToolSet, UserId,
};
use truststack_engine::Caller;

/// Verifies and mints credentials with one issuer.
pub struct IssuerService {
    issuer: Issuer,
}

impl IssuerService {
    pub fn new(issuer: Issuer) -> Self {
        IssuerService { issuer }
    }
}

fn text<'a>(request: &'a Value, field: &str) -> Result<&'a str, IssueError> {
    request
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| IssueError::Request(format!("`{field}` is required (a string)")))
}

fn strings(request: &Value, field: &str) -> Result<Vec<String>, IssueError> {
    match request.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect()),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| IssueError::Request(format!("`{field}` must be a list of strings"))),
    }
}

fn ttl(request: &Value, default: &str) -> Result<std::time::Duration, IssueError> {
    Ok(parse_ttl(
        request
            .get("ttl")
            .and_then(Value::as_str)
            .unwrap_or(default),
    )?)
}

/// `{token, credential, record}`: the record is what the ledger keeps (no token).
fn issued(i: Issued) -> Value {
    json!({"token": i.token, "credential": i.credential, "record": i.record})
}

impl IssuerService {
    /// Verifies `token`, first picking up revocations another process wrote.
    fn verified(
        &self,
        token: &str,
    ) -> Result<std::sync::Arc<truststack_engine::identity::VerifiedCredential>, String> {
        self.issuer
            .refresh_revocations()
            .map_err(|e| format!("cannot read revocations: {e}"))?;
        self.issuer.verify(token).map_err(|e| e.to_string())
    }
}

impl Authenticator for IssuerService {
    fn agent(&self, token: &str) -> Result<Caller, String> {
        let v = self.verified(token)?;
        Caller::from_credential(&v)
    }

    fn human(&self, token: &str) -> Result<Human, String> {
        let v = self.verified(token)?;
        if v.subject.as_user().is_none() {
            return Err(format!(
                "{} is an agent's credential; a human must answer",
                v.subject
            ));
        }
        Ok(Human {
            principal: v.subject.to_string(),
            roles: v.roles.clone(),
            groups: v.groups.clone(),
        })
    }
}

impl IdentityService for IssuerService {
    fn issue(&self, request: &Value) -> Result<Value, IssueError> {
        let td = &self.issuer.config().trust_domain;
        if let Some(agent) = request.get("agent").and_then(Value::as_str) {
            let tools = ToolSet::new(strings(request, "tools")?)?;
            let i = self.issuer.issue_agent(&AgentRequest {
                agent: AgentId::expand(agent, td)?,
                owner: UserId::parse(text(request, "owner")?)?,
                tools,
                ttl: ttl(request, "1h")?,
                audience: None,
            })?;
            return Ok(issued(i));
        }
        let i = self.issuer.issue_user(&UserRequest {
            user: UserId::parse(text(request, "user")?)?,
            roles: strings(request, "roles")?,
            groups: strings(request, "groups")?,
            ttl: ttl(request, "8h")?,
            audience: None,
        })?;
        Ok(issued(i))
    }

    fn delegate(&self, parent_token: &str, request: &Value) -> Result<Value, IssueError> {
        let ttl = match request.get("ttl").and_then(Value::as_str) {
            Some(t) => Some(parse_ttl(t)?),
            None => None,
        };
        let i = self.issuer.delegate(
            parent_token,
            &DelegationRequest {
                agent: text(request, "agent")?.to_string(),
                tools: ToolSet::new(strings(request, "tools")?)?,
                ttl,
            },
        )?;
        Ok(issued(i))
    }

    fn revoke(
        &self,
        request: &Value,
        record: &mut dyn FnMut(&Value) -> Result<u64, String>,
    ) -> Result<Value, RevokeError> {
        let by = request
            .get("by")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        let reason = request
            .get("reason")
            .and_then(Value::as_str)
            .map(String::from);
        let principal;
        let what = match (
            request.get("jti").and_then(Value::as_str),
            request.get("agent").and_then(Value::as_str),
        ) {
            (Some(jti), None) => Revoke::Jti(jti),
            (None, Some(who)) => {
                principal = Principal::expand(who, &self.issuer.config().trust_domain)
                    .map_err(|e| RevokeError::Refused(e.to_string()))?;
                Revoke::Identity(&principal)
            }
            _ => {
                return Err(RevokeError::Refused(
                    "give exactly one of `jti` and `agent`".into(),
                ))
            }
        };
        let revocation = self
            .issuer
            .revoke(what, by, reason, |r| record(&r.record()).map(|_| ()))
            .map_err(|e| match e {
                IssuerError::NotRecorded(_)
                | IssuerError::Revocations(RevocationError::Io { .. }) => {
                    RevokeError::Unavailable(e.to_string())
                }
                _ => RevokeError::Refused(e.to_string()),
            })?;
        Ok(revocation.record())
    }

    fn jwks(&self) -> Value {
        self.issuer.jwks()
    }

    fn learn_revocation(&self, record: &Value) -> Result<(), String> {
        let Some(revocation) =
            truststack_engine::identity::revocation::Revocation::from_record(record)
        else {
            return Err("not a revocation record".into());
        };
        if self
            .issuer
            .learn_revocation(revocation)
            .map_err(|e| e.to_string())?
        {
            tracing::info!("a revocation recorded by another replica is in force here");
        }
        Ok(())
    }
}
