//! Streamable HTTP (feature `http`): a [`PaidTools`] server as rmcp's
//! [`StreamableHttpService`], a tower service to nest in an axum router.

use crate::server::PaidTools;
use rmcp::ServerHandler;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

impl<H: ServerHandler + Clone> PaidTools<H> {
    /// Serves these tools over MCP streamable HTTP, one clone per session, with sessions kept
    /// in memory:
    ///
    /// ```
    /// # use mpp_core::{PaymentGate, testing::TestMethod};
    /// # use rmcp::{ServerHandler, model::ServerConfig};
    /// # #[derive(Clone)] struct Tools;
    /// # impl ServerHandler for Tools { fn get_info(&self) -> ServerConfig { ServerConfig::default() } }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let gate = PaymentGate::new("an-hmac-secret-of-at-least-32-bytes")?
    /// #     .realm("api.example.com").method(TestMethod::new("tempo"));
    /// use mpp_mcp::PaidTools;
    /// use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
    ///
    /// let mcp = PaidTools::new(Tools, gate)?
    ///     .charge("search", "0.01")?
    ///     .into_streamable_http_service(StreamableHttpServerConfig::default());
    /// let app: axum::Router = axum::Router::new().nest_service("/mcp", mcp);
    /// # Ok(()) }
    /// ```
    ///
    /// The payment happens inside MCP (HTTP status 200, the `402` only in `error.data`), so
    /// the path is not an HTTP paid route. rmcp's default configuration accepts loopback
    /// `Host`s only (against DNS rebinding): list a public deployment's host names with
    /// [`StreamableHttpServerConfig::with_allowed_hosts`].
    pub fn into_streamable_http_service(
        self,
        config: StreamableHttpServerConfig,
    ) -> StreamableHttpService<Self, LocalSessionManager> {
        StreamableHttpService::new(move || Ok(self.clone()), Default::default(), config)
    }
}
