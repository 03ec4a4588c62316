//! A small rmcp server with paid and free tools, and the client side of the tests.

// Not every test binary uses every helper.
#![allow(dead_code, unreachable_pub)]

use mpp_core::expiry::{Clock, ManualClock};
use mpp_core::mcp::META_CREDENTIAL;
use mpp_core::testing::TestMethod;
use mpp_core::{Method, PaymentGate};
use mpp_mcp::{PaidTools, ToolPayment};
use rmcp::handler::server::common::Extension;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientConfig, ContentBlock, RequestMetaObject,
    ServerCapabilities, ServerConfig,
};
use rmcp::service::{RoleClient, RunningService};
use rmcp::{
    ErrorData, ServerHandler, ServiceError, ServiceExt, schemars, tool, tool_handler, tool_router,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The test server: `search` (paid), `premium` (paid, shows its `_meta`), `flaky` (paid, a
/// tool error), `broken` (paid, a JSON-RPC error), `status` (free).
#[derive(Clone)]
pub struct Api {
    tool_router: ToolRouter<Self>,
    searches: Arc<AtomicUsize>,
}

impl Default for Api {
    fn default() -> Self {
        Self {
            tool_router: Self::tool_router(),
            searches: Arc::default(),
        }
    }
}

impl Api {
    /// How often `search` ran.
    pub fn searches(&self) -> usize {
        self.searches.load(Ordering::SeqCst)
    }
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
pub struct Query {
    q: String,
}

#[tool_router]
impl Api {
    #[tool(description = "Searches (paid)")]
    fn search(
        &self,
        Parameters(Query { q }): Parameters<Query>,
        Extension(paid): Extension<ToolPayment>,
    ) -> String {
        self.searches.fetch_add(1, Ordering::SeqCst);
        let payer = paid.payer.unwrap_or_default();
        let amount = paid.amount.unwrap_or_default();
        format!("results for {q} (paid by {payer}, {amount})")
    }

    #[tool(description = "Shows the `_meta` keys it gets (paid)")]
    fn premium(&self, meta: RequestMetaObject) -> String {
        let keys: Vec<&str> = meta.keys().map(String::as_str).collect();
        format!("meta: {keys:?}")
    }

    #[tool(description = "Fails as a tool (paid)")]
    fn flaky(&self) -> CallToolResult {
        CallToolResult::error(vec![ContentBlock::text("try again later")])
    }

    #[tool(description = "Fails as a server (paid)")]
    fn broken(&self) -> Result<CallToolResult, ErrorData> {
        Err(ErrorData::internal_error("the index is down", None))
    }

    #[tool(description = "Free")]
    fn status(&self) -> String {
        "up".into()
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Api {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// A gate with the in-process test method, and the method to count with.
pub struct TestGate {
    pub gate: PaymentGate,
    pub test: Arc<TestMethod>,
}

pub const SECRET: &str = "mcp-test-secret-0123456789abcdef0123";

pub fn test_gate() -> TestGate {
    test_gate_with(|gate| gate)
}

pub fn test_gate_with(configure: impl FnOnce(PaymentGate) -> PaymentGate) -> TestGate {
    let test = Arc::new(TestMethod::new("test"));
    let gate = PaymentGate::new(SECRET)
        .unwrap()
        .realm("api.example.com")
        .method_arc(test.clone() as Arc<dyn Method>);
    TestGate {
        gate: configure(gate),
        test,
    }
}

/// The paid tools of [`Api`] at 0.01 each.
pub fn paid(api: &Api, gate: PaymentGate) -> PaidTools<Api> {
    let mut tools = PaidTools::new(api.clone(), gate).unwrap();
    for tool in ["search", "premium", "flaky", "broken"] {
        tools = tools.charge(tool, "0.01").unwrap();
    }
    tools
}

/// A clock the test moves while the gate holds it.
pub struct SharedClock(pub Arc<ManualClock>);

impl Clock for SharedClock {
    fn now(&self) -> time::OffsetDateTime {
        self.0.now()
    }
}

pub type Client = RunningService<RoleClient, ClientConfig>;

/// Serves the paid [`Api`] over an in-process byte stream (what stdio carries) and connects
/// a client to it.
pub async fn start(api: &Api, gate: PaymentGate) -> Client {
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let server = paid(api, gate);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    ClientConfig::default().serve(client_io).await.unwrap()
}

/// Calls `tool` with `arguments` and, when given, a credential in `_meta`; a JSON-RPC error
/// comes back as `Err`.
pub async fn call(
    client: &Client,
    tool: &'static str,
    arguments: Value,
    credential: Option<Value>,
) -> Result<CallToolResult, ErrorData> {
    let mut params = CallToolRequestParams::new(tool)
        .with_arguments(arguments.as_object().cloned().unwrap_or_default());
    if let Some(credential) = credential {
        let mut meta = RequestMetaObject::new();
        meta.insert(META_CREDENTIAL.into(), credential);
        params.meta = Some(meta);
    }
    match client.call_tool(params).await {
        Ok(result) => Ok(result),
        Err(ServiceError::McpError(error)) => Err(error),
        Err(other) => panic!("transport failure: {other}"),
    }
}

/// A fresh challenge for `tool` (from its `-32042`).
pub async fn challenge(client: &Client, tool: &'static str) -> Value {
    let error = call(client, tool, json!({"q": "?"}), None)
        .await
        .unwrap_err();
    assert_eq!(error.code.0, -32042);
    error.data.unwrap()["challenges"][0].clone()
}

/// A credential answering `challenge` with `payload`, as MCP carries it.
pub fn credential(challenge: &Value, payload: Value) -> Value {
    json!({"challenge": challenge, "payload": payload})
}

/// The text of a result's first content block.
pub fn text(result: &CallToolResult) -> String {
    result
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .unwrap_or_default()
}
