//! MCP tools at `/mcp` (streamable HTTP): `status` is free, `search` costs 0.01 a call (a
//! Tempo charge).
//!
//! The payment happens inside MCP, not over HTTP (`/mcp` is not a paid route): an unpaid
//! `tools/call` of `search` gets JSON-RPC error `-32042` with the challenges, the client pays
//! one and calls again with the credential in `params._meta`, and the result carries the
//! receipt in `result._meta`. The tools use the HTTP routes' gate (the same Tempo method,
//! stores and replay protection), under a fixed realm: `MPP_REALM`, or `localhost`. Requests
//! are served for that host name and loopback ones.

use axum::Router;
use mpp_axum::{ConfigError, Mpp};
use mpp_mcp::{PaidTools, ToolPayment};
use rmcp::handler::server::common::Extension;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use rmcp::{ServerHandler, schemars, tool, tool_handler, tool_router};
use serde_json::json;

/// The price of one `search`.
const SEARCH_PRICE: &str = "0.01";

/// The realm when `MPP_REALM` names none: MCP requests carry no host to take one from.
const DEFAULT_REALM: &str = "localhost";

/// What `search` searches.
const NOTES: [&str; 4] = [
    "MPP answers an unpaid request with 402 and a Payment challenge.",
    "Over MCP the challenge comes as JSON-RPC error -32042.",
    "A Tempo charge is a TIP-20 transfer, verified on the node.",
    "A tool that fails after payment is not charged.",
];

/// The MCP server of the paid API.
#[derive(Clone)]
pub(crate) struct Tools {
    tool_router: ToolRouter<Self>,
}

/// The arguments of `search`.
#[derive(serde::Deserialize, schemars::JsonSchema)]
struct SearchRequest {
    /// Words to look for in the notes.
    query: String,
}

#[tool_router]
impl Tools {
    /// Paid: the payment is verified before this runs, and taken only if it answers with a
    /// result (not for the tool error of an empty query).
    #[tool(description = "Searches the MPP notes (0.01 pathUSD a call, paid over MPP)")]
    fn search(
        &self,
        Parameters(SearchRequest { query }): Parameters<SearchRequest>,
        Extension(paid): Extension<ToolPayment>,
    ) -> CallToolResult {
        let query = query.trim().to_lowercase();
        if query.is_empty() {
            return CallToolResult::error(vec![ContentBlock::text("the query is empty")]);
        }
        let results: Vec<&str> = NOTES
            .into_iter()
            .filter(|note| note.to_lowercase().contains(&query))
            .collect();
        let answer = json!({"query": query, "results": results, "tx": paid.receipt.reference});
        CallToolResult::success(vec![ContentBlock::text(answer.to_string())])
    }

    #[tool(description = "Says whether the service is up (free)")]
    fn status(&self) -> String {
        "ok".into()
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// `/mcp`, with `search` priced. The price is checked against the methods now, at start-up.
pub(crate) fn routes(mpp: &Mpp) -> Result<Router, ConfigError> {
    let gate = mpp.gate();
    let realm = gate.configured_realm().unwrap_or(DEFAULT_REALM).to_owned();
    let tools = Tools {
        tool_router: Tools::tool_router(),
    };
    let server = PaidTools::new(tools, gate.clone().realm(realm))
        .and_then(|tools| tools.charge("search", SEARCH_PRICE))
        .map_err(|e| ConfigError::Price {
            literal: SEARCH_PRICE.into(),
            reason: e.to_string(),
        })?;
    tracing::info!(
        realm = server.realm(),
        "MCP tools at /mcp: search (paid), status (free)"
    );
    // rmcp serves loopback `Host`s only (against DNS rebinding); the realm is the public one.
    let hosts = ["localhost", "127.0.0.1", "::1", server.realm()].map(str::to_owned);
    let config = StreamableHttpServerConfig::default().with_allowed_hosts(hosts);
    let service = server.into_streamable_http_service(config);
    Ok(Router::new().nest_service("/mcp", service))
}
