//! The issuer directory as the server's identity service.

use anyhow::Context;
use std::sync::Arc;
use truststack_engine::identity::{Issuer, TrustDomain};
use truststack_server::backend::IdentityService;
use truststack_server::identity_backend::IssuerService;
use truststack_server::ServerConfig;

/// The identity service for a server config: `None` when credentials are not required. The
/// issuer directory is created on first start.
pub fn open(config: &ServerConfig) -> anyhow::Result<Option<Arc<dyn IdentityService>>> {
    if !config.require_credentials {
        return Ok(None);
    }
    let dir = config.resolve(&config.issuer_dir);
    let td =
        TrustDomain::new(&config.trust_domain).map_err(|e| anyhow::anyhow!("trust_domain: {e}"))?;
    let issuer = Issuer::open_or_init(&dir, &td)
        .with_context(|| format!("issuer directory {}", dir.display()))?;
    Ok(Some(Arc::new(IssuerService::new(issuer))))
}
