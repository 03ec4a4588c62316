//! # mpp-reqwest
//!
//! A [`reqwest`] client that pays: send any request (any HTTP method, any replayable body);
//! on `402 Payment Required` it picks the first challenge its [`Payer`] can answer, pays it,
//! and retries once with the credential. Method-agnostic: the payer decides how to pay (the
//! Tempo payer lives in `mpp-tempo` behind its `client` feature).
//!
//! ```no_run
//! # async fn demo(payer: impl mpp_core::Payer + 'static) -> Result<(), mpp_reqwest::PayError> {
//! use mpp_reqwest::PaymentClient;
//!
//! let client = PaymentClient::new(reqwest::Client::new(), payer);
//! let paid = client.send(client.http().post("http://127.0.0.1:3000/search").body("q=rust")).await?;
//! println!("{} paid with {:?}", paid.response.status(), paid.payment.map(|p| p.receipt));
//! # Ok(()) }
//! ```
//!
//! Sessions (payment channels: one open, then a voucher per request or per streamed unit)
//! go through [`SessionClient`], which also reads metered SSE streams and closes the channel.

mod session;

pub use session::{SessionClient, SessionEvents};

use mpp_core::receipt::PAYMENT_RECEIPT;
use mpp_core::{Challenge, Payer, Receipt};
use reqwest::header::{AUTHORIZATION, HeaderName, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};
use std::sync::Arc;

/// Why a paid request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayError {
    /// The HTTP exchange failed.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// The request's body is a stream, which cannot be sent twice.
    #[error("the request body cannot be replayed after a 402")]
    BodyNotReplayable,
    /// The 402 carried no challenge that parses.
    #[error("the 402 carries no valid Payment challenge: {0}")]
    NoChallenge(String),
    /// None of the offered challenges can be paid by this payer.
    #[error("no offered challenge can be paid (offered: {0})")]
    Unsupported(String),
    /// The payer could not pay.
    #[error("payment: {0}")]
    Payer(#[from] mpp_core::payer::PayError),
    /// A session exchange failed: a stream or a voucher, top-up or close was refused, or the
    /// server sent something unreadable (the message says which).
    #[error("session: {0}")]
    Session(String),
}

/// A payment made for a request.
#[derive(Debug, Clone)]
pub struct Payment {
    /// The challenge that was paid.
    pub challenge: Challenge,
    /// The server's `Payment-Receipt`, when the paid retry carried one.
    pub receipt: Option<Receipt>,
}

/// The response to a request, and the payment made for it, if one was needed.
#[derive(Debug)]
pub struct PaidResponse {
    /// The final response (the paid retry's, or the first one when it was not a 402).
    pub response: Response,
    /// The payment, when the first answer was a 402.
    pub payment: Option<Payment>,
}

/// An HTTP client that answers `402 Payment Required` with a payment; cheap to clone.
#[derive(Clone)]
pub struct PaymentClient {
    http: reqwest::Client,
    payer: Arc<dyn Payer>,
}

impl std::fmt::Debug for PaymentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentClient").finish_non_exhaustive()
    }
}

impl PaymentClient {
    /// A client that pays with `payer`.
    pub fn new(http: reqwest::Client, payer: impl Payer + 'static) -> Self {
        Self::with_payer(http, Arc::new(payer))
    }

    /// A client that pays with a shared payer.
    pub fn with_payer(http: reqwest::Client, payer: Arc<dyn Payer>) -> Self {
        Self { http, payer }
    }

    /// The underlying client, to build requests with.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `GET url`, paying if asked to.
    pub async fn get(&self, url: &str) -> Result<PaidResponse, PayError> {
        self.send(self.http.get(url)).await
    }

    /// Sends `request`; on a 402, pays the first challenge the payer supports and retries
    /// once. The body must be replayable (not a stream).
    pub async fn send(&self, request: RequestBuilder) -> Result<PaidResponse, PayError> {
        let retry = request.try_clone().ok_or(PayError::BodyNotReplayable)?;
        let first = request.send().await?;
        if first.status() != StatusCode::PAYMENT_REQUIRED {
            return Ok(PaidResponse {
                response: first,
                payment: None,
            });
        }
        let challenges = challenges(&first)?;
        let Some(challenge) = self.payer.choose(&challenges).cloned() else {
            let offered: Vec<String> = challenges
                .iter()
                .map(|c| format!("{}/{}", c.method, c.intent))
                .collect();
            return Err(PayError::Unsupported(offered.join(", ")));
        };
        let credential = self.payer.pay(&challenge).await?;
        let header = credential_header(&challenge)?;
        tracing::debug!(method = %challenge.method, intent = %challenge.intent, "paying and retrying");
        let response = retry
            .header(header, credential.to_authorization())
            .send()
            .await?;
        let receipt = receipt_of(&response);
        Ok(PaidResponse {
            response,
            payment: Some(Payment { challenge, receipt }),
        })
    }
}

/// The header a credential for `challenge` goes in: `Authorization`, unless a draft -01
/// server names another.
fn credential_header(challenge: &Challenge) -> Result<HeaderName, PayError> {
    match challenge.header.as_deref() {
        Some(name) => HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| PayError::NoChallenge(format!("bad `header` parameter `{name}`"))),
        None => Ok(AUTHORIZATION),
    }
}

/// The response's `Payment-Receipt`, when it carries a readable one.
fn receipt_of(response: &Response) -> Option<Receipt> {
    response
        .headers()
        .get(PAYMENT_RECEIPT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Receipt::from_header_value(v).ok())
}

fn challenges(response: &Response) -> Result<Vec<Challenge>, PayError> {
    let lines = response
        .headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    Challenge::parse_all_lines(lines).map_err(|e| PayError::NoChallenge(e.to_string()))
}
