//! Pay-as-you-go over a payment channel (the `session` intent):
//!
//! - `GET /ping`: 0.001 per request (`unitType` `request`);
//! - `GET /tokens?n=N`: an SSE stream of `N` words (at most 1000) about 20 ms apart, as a
//!   model would stream tokens, billed 0.0001 per token; a stream whose vouchers run out asks
//!   for one (`payment-need-voucher`) and waits at most 30 s for it.
//!
//! Served when `MPP_ESCROW` names a v1 escrow on the node (see `settings`).

use axum::extract::Query;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use http::StatusCode;
use mpp_axum::discovery::{self, PaidRouter};
use mpp_axum::{ConfigError, Meter, Mpp, PaymentReceipt};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// The longest stream `/tokens` serves.
const MAX_TOKENS: usize = 1000;
/// The pause between two streamed words.
const TOKEN_PACE: Duration = Duration::from_millis(20);

const WORDS: [&str; 12] = [
    "Machine", "payments", "flow", "one", "voucher", "at", "a", "time,", "settled", "in",
    "batches", "later.",
];

/// The session routes, served and documented from one declaration (a session layer wraps
/// the whole route, so the vouchers a stream needs, POSTed to its URL, reach it). Prices are
/// checked against the methods now, at start-up.
pub(crate) fn routes(mpp: &Mpp) -> Result<PaidRouter, ConfigError> {
    let per_request = mpp.session("0.001")?.description("One ping");
    let per_token = mpp
        .session("0.0001")?
        .unit("token")
        .description("Streamed tokens, billed per token")
        .voucher_wait(Duration::from_secs(30));
    let ping = discovery::get("/ping", ping).summary("Pong, paid per request");
    let tokens = discovery::get("/tokens", tokens)
        .summary("An SSE stream of `n` words (`?n=`, default 20, at most 1000)");
    PaidRouter::new(mpp)
        .paid(ping, per_request)?
        .paid(tokens, per_token)
}

async fn ping(paid: PaymentReceipt) -> axum::Json<Value> {
    axum::Json(json!({
        "pong": true,
        "channel": paid.reference(),
        "paidBy": paid.payer,
    }))
}

#[derive(Deserialize)]
struct TokensQuery {
    n: Option<usize>,
}

async fn tokens(meter: Meter, Query(query): Query<TokensQuery>) -> Response {
    let n = query.n.unwrap_or(20);
    if n == 0 || n > MAX_TOKENS {
        // Not a success: the unit held at admission is not taken.
        return (
            StatusCode::BAD_REQUEST,
            format!("n must be between 1 and {MAX_TOKENS}"),
        )
            .into_response();
    }
    let words = futures_util::stream::iter((0..n).map(|i| WORDS[i % WORDS.len()])).then(
        |word| async move {
            tokio::time::sleep(TOKEN_PACE).await;
            word
        },
    );
    meter.sse(words).into_response()
}
