//! CORS for browser clients on another origin: they can only read the payment headers if the
//! server exposes them.

use crate::headers::{
    ACCEPT_PAYMENT, PAYMENT_AUTHORIZATION, PAYMENT_RECEIPT, PAYMENT_SESSION,
    PAYMENT_SESSION_SNAPSHOT,
};
use http::HeaderName;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use tower_http::cors::CorsLayer;

/// The response headers a paying browser client must be able to read.
pub const EXPOSED_PAYMENT_HEADERS: [HeaderName; 4] = [
    WWW_AUTHENTICATE,
    PAYMENT_RECEIPT,
    PAYMENT_SESSION,
    PAYMENT_SESSION_SNAPSHOT,
];

/// The request headers a paying browser client must be allowed to send.
pub const ALLOWED_PAYMENT_HEADERS: [HeaderName; 4] = [
    AUTHORIZATION,
    PAYMENT_AUTHORIZATION,
    ACCEPT_PAYMENT,
    http::header::CONTENT_TYPE,
];

/// Adds the payment headers to `cors`: exposes `WWW-Authenticate`, `Payment-Receipt` and the
/// session headers, and allows `Authorization`, `Payment-Authorization` and `Accept-Payment`
/// on requests.
///
/// ```
/// use tower_http::cors::{Any, CorsLayer};
/// let cors = mpp_axum::cors::with_payment_headers(CorsLayer::new().allow_origin(Any));
/// # let _ = cors;
/// ```
pub fn with_payment_headers(cors: CorsLayer) -> CorsLayer {
    cors.expose_headers(EXPOSED_PAYMENT_HEADERS)
        .allow_headers(ALLOWED_PAYMENT_HEADERS)
}
