//! A paid API on the embedded defaults: `GET /fortune` costs 0.01 pathUSD on Tempo, paid
//! per request; `GET /health` is free, and so are `GET /openapi.json` (each price in
//! `x-payment-info`) and `GET /llms.txt`, made from the same declarations as the routes.
//!
//! Run with `scripts/demo.sh` (starts a local Tempo node, this server, and pays), or against
//! a node you run yourself:
//!
//! ```text
//! MPP_SECRET_KEY=$(openssl rand -base64 32) TEMPO_RPC_URL=http://127.0.0.1:8545 \
//!     cargo run -p mpp-example-paid-api
//! ```
//!
//! Each feature adds its routes in a module of its own: `fortune` (one-time charges),
//! `sessions` (pay-as-you-go over a payment channel, with a per-token SSE stream; served when
//! `MPP_ESCROW` is set), `mcp` (an MCP server at `/mcp`: `status` free, `search` at 0.01 a
//! call). `settings` reads the environment.

mod fortune;
mod mcp;
mod sessions;
mod settings;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use mpp_axum::Mpp;
use settings::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let settings = Settings::from_env()?;
    // The secret first: without it nothing else is worth connecting to.
    let mpp = settings.mpp()?;
    let (tempo, sessions) = settings.tempo().await?;
    let mut mpp = mpp.method(tempo);
    if let Some(sessions) = &sessions {
        mpp = mpp.method(sessions.sessions.clone());
    }
    let app = app(&mpp, sessions.is_some())?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", settings.port))
        .await
        .context("bind")?;
    tracing::info!("paid-api listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

/// Every feature's routes, the free ones, and the payment configuration around them.
fn app(mpp: &Mpp, sessions: bool) -> Result<Router, mpp_axum::ConfigError> {
    let mut paid = fortune::routes(mpp)?;
    if sessions {
        paid = paid.merge(sessions::routes(mpp)?);
    }
    // The paid routes, plus GET /openapi.json and GET /llms.txt (free) describing them.
    let app = paid.title("paid-api").categories(["data"]).into_router();
    Ok(app
        // Paid MCP tools: the payment happens inside MCP, so `/mcp` is not a paid HTTP route.
        .merge(mcp::routes(mpp)?)
        .route("/health", get(|| async { "ok" }))
        .layer(mpp.layer()))
}
