//! One-time charges: `GET /fortune` at 0.01 (pathUSD on Tempo).

use mpp_axum::discovery::{self, PaidRouter};
use mpp_axum::{ConfigError, Mpp, PaymentReceipt};
use serde_json::{Value, json};

const FORTUNES: [&str; 4] = [
    "A paid request is a happy request.",
    "Your next 402 will be answered.",
    "Fortune favours the well-funded agent.",
    "The receipt is in the header.",
];

/// The charge routes, served and documented from one declaration. The price is checked
/// against the methods now, at start-up.
pub(crate) fn routes(mpp: &Mpp) -> Result<PaidRouter, ConfigError> {
    let price = mpp.charge("0.01")?.description("One fortune");
    let fortune = discovery::get("/fortune", fortune).summary("A fortune, paid per request");
    PaidRouter::new(mpp).paid(fortune, price)
}

async fn fortune(paid: PaymentReceipt) -> axum::Json<Value> {
    let index = paid.reference().bytes().map(usize::from).sum::<usize>() % FORTUNES.len();
    axum::Json(json!({
        "fortune": FORTUNES[index],
        "paidBy": paid.payer,
        "amount": paid.amount.map(|a| a.to_string()),
        "tx": paid.reference(),
    }))
}
