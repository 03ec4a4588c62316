//! Shared code of the runnable examples: the paid API's router, and a client that pays an
//! MPP-protected URL with a Tempo key.

use alloy::signers::local::PrivateKeySigner;
use axum::Router;
use axum::routing::get;
use mpp_axum::{Mpp, PaymentReceipt};
use mpp_core::expiry::parse_timestamp;
use mpp_core::{Challenge, Credential, Receipt};
use mpp_tempo::client::{ChargeChallenge, TempoPayer};
use serde_json::Value;

/// The demo's fortunes.
const FORTUNES: [&str; 4] = [
    "A paid request is a happy request.",
    "Your next 402 will be answered.",
    "Fortune favours the well-funded agent.",
    "The receipt is in the header.",
];

/// The paid API: `GET /fortune` at 0.01 (pathUSD on Tempo), and a free `GET /health`.
pub fn paid_api(mpp: &Mpp) -> Result<Router, mpp_axum::ConfigError> {
    let price = mpp.charge("0.01")?.description("One fortune");
    Ok(Router::new()
        .route("/fortune", get(fortune).layer(price))
        .route("/health", get(|| async { "ok" }))
        .layer(mpp.layer()))
}

async fn fortune(paid: PaymentReceipt) -> axum::Json<Value> {
    let index = paid.reference().bytes().map(usize::from).sum::<usize>() % FORTUNES.len();
    axum::Json(serde_json::json!({
        "fortune": FORTUNES[index],
        "paidBy": paid.payer,
        "amount": paid.amount.map(|a| a.to_string()),
        "tx": paid.reference(),
    }))
}

/// Why paying a URL failed.
#[derive(Debug, thiserror::Error)]
pub enum PayError {
    /// HTTP transport failure.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// The server did not offer a Tempo charge we can pay.
    #[error("no payable challenge: {0}")]
    NoChallenge(String),
    /// Building the payment failed.
    #[error("payment: {0}")]
    Payment(#[from] mpp_tempo::client::ClientError),
}

/// The outcome of [`pay_url`].
#[derive(Debug)]
pub struct Paid {
    /// The challenge that was paid (from the first, unpaid response).
    pub challenge: Challenge,
    /// Status of the paid retry.
    pub status: reqwest::StatusCode,
    /// The decoded `Payment-Receipt`, if any.
    pub receipt: Option<Receipt>,
    /// The body of the paid retry.
    pub body: String,
}

/// GETs `url`; on `402`, pays the `tempo`/`charge` challenge with `payer` and retries once.
pub async fn pay_url(
    http: &reqwest::Client,
    url: &str,
    payer: &TempoPayer,
) -> Result<Paid, PayError> {
    let first = http.get(url).send().await?;
    if first.status() != reqwest::StatusCode::PAYMENT_REQUIRED {
        return Err(PayError::NoChallenge(format!(
            "expected 402, got {}",
            first.status()
        )));
    }
    let lines: Vec<String> = first
        .headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let challenges = Challenge::parse_all_lines(lines.iter().map(String::as_str))
        .map_err(|e| PayError::NoChallenge(e.to_string()))?;
    let challenge = challenges
        .into_iter()
        .find(|c| c.method == "tempo" && c.intent == "charge")
        .ok_or_else(|| PayError::NoChallenge("no tempo/charge offer".into()))?;
    let authorization = pay_challenge(&challenge, payer).await?;
    let retry = http
        .get(url)
        .header("authorization", authorization)
        .send()
        .await?;
    let status = retry.status();
    let receipt = retry
        .headers()
        .get("payment-receipt")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Receipt::from_header_value(v).ok());
    let body = retry.text().await?;
    Ok(Paid {
        challenge,
        status,
        receipt,
        body,
    })
}

/// Pays a `tempo`/`charge` challenge with `payer`: the `Authorization` value to retry with.
pub async fn pay_challenge(challenge: &Challenge, payer: &TempoPayer) -> Result<String, PayError> {
    let expires = challenge
        .expires
        .as_deref()
        .and_then(|e| parse_timestamp(e).ok())
        .ok_or_else(|| PayError::NoChallenge("challenge without a valid expiry".into()))?;
    let request = Value::Object(challenge.request.value().clone());
    let paid = payer
        .pay(ChargeChallenge {
            id: &challenge.id,
            realm: &challenge.realm,
            request: &request,
            expires,
        })
        .await?;
    Ok(Credential::new(challenge.clone(), paid.payload)
        .with_source(paid.source)
        .to_authorization())
}

/// Parses a hex private key (with or without `0x`).
pub fn signer_from_hex(key: &str) -> anyhow::Result<PrivateKeySigner> {
    Ok(key.trim().trim_start_matches("0x").parse()?)
}
