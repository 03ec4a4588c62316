//! `Idempotency-Key` on paid routes (core.md §11): a paid request sent again with the same
//! key and the same credential gets the stored response; the handler does not run again.
//!
//! The record is keyed by the route (method and path) and the client's key, and remembers the
//! credential that paid: the same key with another credential is refused (422), a repeat
//! while the first is still being served waits its turn (409). Only a paid answer (2xx, the
//! payment taken) is stored, with its `Payment-Receipt`, for as long as a challenge can live;
//! a request that took no money is forgotten, so its retry runs again. Responses are kept up to
//! [`MAX_STORED_BODY`] bytes of a body whose size is known up front; a larger or streamed one
//! is served once and not kept (a repeat is then refused as already used, never charged twice).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use mpp_core::gate::Refusal;
use mpp_core::idempotency::{Begin, IdempotencyStore, StoredResponse};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::response::{plain_problem, refusal_response};

/// The request header (draft-ietf-httpapi-idempotency-key-header).
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The largest response body kept for repeats.
pub const MAX_STORED_BODY: u64 = 1024 * 1024;

/// The longest `Idempotency-Key` accepted (a UUID is 36 characters; keys are opaque).
const MAX_KEY_LEN: usize = 255;

/// A paid request that carries an `Idempotency-Key`, recorded as in flight: it ends
/// [completed](Idempotent::complete) with the response or [abandoned](Idempotent::abandon);
/// dropped without either (a panic, a hung-up client), it is abandoned in the background.
pub(crate) struct Idempotent {
    store: Arc<dyn IdempotencyStore>,
    key: String,
    owner: String,
    keep_for: time::Duration,
    ended: bool,
}

/// Looks the request up when it carries both a credential (`credential`, the header's value)
/// and an `Idempotency-Key`: `Ok(None)` without one of them, `Ok(Some)` for a request to
/// serve, `Err` with the response to send instead (the stored one, 409, 422, 400, 503).
pub(crate) async fn begin(
    store: &Arc<dyn IdempotencyStore>,
    parts: &Parts,
    path: &str,
    credential: Option<&HeaderValue>,
    keep_for: std::time::Duration,
) -> Result<Option<Idempotent>, Response<Full<Bytes>>> {
    let (Some(credential), Some(key)) = (credential, parts.headers.get(IDEMPOTENCY_KEY)) else {
        return Ok(None);
    };
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(plain_problem(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "Idempotency-Key must be 1 to 255 characters.",
        ));
    }
    let keep_for = time::Duration::try_from(keep_for).unwrap_or(time::Duration::HOUR);
    let record_key = digest(&[
        parts.method.as_str().as_bytes(),
        path.as_bytes(),
        key.as_bytes(),
    ]);
    let credential = digest(&[credential.as_bytes()]);
    let owner = owner_id();
    let expires_at = OffsetDateTime::now_utc() + keep_for;
    match store
        .begin(&record_key, &credential, &owner, expires_at)
        .await
    {
        Ok(Begin::Started) => Ok(Some(Idempotent {
            store: store.clone(),
            key: record_key,
            owner,
            keep_for,
            ended: false,
        })),
        Ok(Begin::Replay(stored)) => {
            tracing::debug!("Idempotency-Key repeat: the stored response");
            Err(replay(stored))
        }
        Ok(Begin::InFlight) => Err(plain_problem(
            StatusCode::CONFLICT,
            "Conflict",
            "A request with this Idempotency-Key is still being served; retry after it ends.",
        )),
        Ok(Begin::OtherCredential) => Err(plain_problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Unprocessable Content",
            "This Idempotency-Key was used with another payment credential.",
        )),
        Err(e) => {
            tracing::warn!(reason = %e, "idempotency store unavailable");
            Err(refusal_response(&Refusal::unavailable()))
        }
    }
}

impl Idempotent {
    /// Stores the paid response (`status`, `headers` with the receipt, `body`) for repeats.
    pub(crate) async fn complete(mut self, status: StatusCode, headers: &HeaderMap, body: &Bytes) {
        self.ended = true;
        let response = StoredResponse {
            status: status.as_u16(),
            headers: headers
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
                .collect(),
            body: body.to_vec(),
        };
        let expires_at = OffsetDateTime::now_utc() + self.keep_for;
        match self
            .store
            .complete(&self.key, &self.owner, &response, expires_at)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!("idempotency record changed under its request"),
            // The payment is taken and the response goes out; only a repeat will miss it.
            Err(e) => {
                tracing::warn!(reason = %e, "could not store a response for Idempotency-Key repeats")
            }
        }
    }

    /// Forgets the request: nothing was charged, so a retry with the key runs again.
    pub(crate) async fn abandon(mut self) {
        self.ended = true;
        abandon(self.store.clone(), &self.key, &self.owner).await;
    }
}

impl Drop for Idempotent {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, key, owner) = (
            self.store.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.owner),
        );
        runtime.spawn(async move { abandon(store, &key, &owner).await });
    }
}

async fn abandon(store: Arc<dyn IdempotencyStore>, key: &str, owner: &str) {
    if let Err(e) = store.abandon(key, owner).await {
        // The record then blocks the key until it expires: a retry gets 409, never a charge.
        tracing::warn!(reason = %e, "could not forget an unserved Idempotency-Key request");
    }
}

/// A stored response as it is sent again.
fn replay(stored: StoredResponse) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(stored.body)));
    *response.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    for (name, value) in stored.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            headers.append(name, value);
        }
    }
    response
}

/// Hex SHA-256 of the parts, each length-prefixed so no two splits collide.
fn digest(parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Tells this request's record from any other's (in this process and others).
fn owner_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let now = OffsetDateTime::now_utc().unix_timestamp_nanos();
    digest(&[
        &std::process::id().to_be_bytes(),
        &NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes(),
        &now.to_be_bytes(),
    ])
}
