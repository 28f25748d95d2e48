//! The issuer directory as the server's identity service.

use std::sync::Arc;
use truststack_server::backend::IdentityService;
use truststack_server::ServerConfig;

/// The identity service for a server config: `None` when credentials are not required.
pub fn open(config: &ServerConfig) -> anyhow::Result<Option<Arc<dyn IdentityService>>> {
    if !config.require_credentials {
        return Ok(None);
    }
    anyhow::bail!(
        "credentials are required but no identity service is available; set `require_credentials = false` for local experiments"
    )
}
