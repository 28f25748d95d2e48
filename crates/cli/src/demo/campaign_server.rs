//! The simulated GTG-1002 tool server: an MCP server over stdio, built on the official Rust MCP
//! SDK (`rmcp`), exposing the scenario's tools (the names of `examples/gtg1002/catalog.toml`)
//! with canned results. Nothing is scanned, exploited, read or uploaded, and no connection is
//! made.
//!
//! `truststack demo` configures it as the gateway's stdio upstream: the gateway starts
//! `truststack demo --campaign-server` as a child process and speaks MCP to it through pipes.

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData, ServerHandler, ServiceExt};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The tools and what each pretends to do.
pub const TOOLS: &[(&str, &str)] = &[
    ("nmap_scan", "Scan a host or range for open ports"),
    ("service_probe", "Fingerprint the services of a host"),
    ("code_review", "Look for vulnerabilities in a repository"),
    ("exploit_runner", "Run an exploit against a host"),
    ("credential_dump", "Harvest credentials from a host"),
    (
        "lateral_move",
        "Move to another host with harvested credentials",
    ),
    ("prod_db_query", "Query the production database"),
    ("http_upload", "Upload a file to a URL"),
    ("read_docs", "Read an internal documentation page"),
    ("create_ticket", "Open a ticket"),
    ("run_tests", "Run a test suite"),
];

/// What a simulated tool answers.
pub fn canned(tool: &str, args: &Map<String, Value>) -> String {
    let arg = |k: &str| {
        args.get(k)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    match tool {
        "nmap_scan" => format!(
            "{}: 22/tcp open ssh, 443/tcp open https (simulated)",
            arg("target")
        ),
        "service_probe" => format!("{}: nginx 1.18, OpenSSH 8.2 (simulated)", arg("host")),
        "code_review" => format!(
            "{}: 1 finding, CVE-2026-0001 in the session handler (simulated)",
            arg("repo")
        ),
        "exploit_runner" => format!("{}: foothold established (simulated)", arg("target")),
        "credential_dump" => "3 service account credentials (simulated)".into(),
        "lateral_move" => format!("{}: session opened (simulated)", arg("host")),
        "prod_db_query" => "1,204,551 rows (simulated)".into(),
        "http_upload" => format!("uploaded to {} (simulated)", arg("url")),
        "read_docs" => format!("{}: page read (simulated)", arg("page")),
        "create_ticket" => format!("ticket opened: {} (simulated)", arg("title")),
        "run_tests" => format!("{}: all tests passed (simulated)", arg("suite")),
        _ => format!("{tool}: done (simulated)"),
    }
}

struct CampaignTools;

impl ServerHandler for CampaignTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_server_info(
            Implementation::new("gtg1002-campaign-sim", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema: Map<String, Value> = match json!({"type": "object", "additionalProperties": true})
        {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let schema = Arc::new(schema);
        Ok(ListToolsResult::with_all_items(
            TOOLS
                .iter()
                .map(|(name, description)| Tool::new(*name, *description, Arc::clone(&schema)))
                .collect(),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.as_ref();
        if !TOOLS.iter().any(|(t, _)| *t == name) {
            return Err(ErrorData::invalid_params(
                format!("unknown tool `{name}`"),
                None,
            ));
        }
        let args = request.arguments.unwrap_or_default();
        Ok(CallToolResult::success(vec![ContentBlock::text(canned(name, &args))]).into())
    }
}

/// Serves stdin/stdout until stdin closes.
pub fn serve() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let service = CampaignTools.serve(rmcp::transport::stdio()).await?;
        service.waiting().await?;
        anyhow::Ok(())
    })
}
