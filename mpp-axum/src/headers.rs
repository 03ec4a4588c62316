//! The HTTP header names of the Payment scheme, defined once.

use http::HeaderName;

/// `Payment-Receipt`: the receipt of a paid response.
pub const PAYMENT_RECEIPT: HeaderName = HeaderName::from_static(mpp_core::receipt::PAYMENT_RECEIPT);

/// `Payment-Authorization` (draft -01): the credential, on routes that leave `Authorization`
/// to the application (see [`CredentialHeader`](crate::CredentialHeader)).
pub const PAYMENT_AUTHORIZATION: HeaderName = HeaderName::from_static("payment-authorization");

/// `Accept-Payment`: the methods and intents a client prefers.
pub const ACCEPT_PAYMENT: HeaderName =
    HeaderName::from_static(mpp_core::accept_payment::ACCEPT_PAYMENT);

/// `Payment-Session`: the session state of a payment channel.
pub const PAYMENT_SESSION: HeaderName = HeaderName::from_static("payment-session");

/// `Payment-Session-Snapshot`: a snapshot of the session state.
pub const PAYMENT_SESSION_SNAPSHOT: HeaderName =
    HeaderName::from_static("payment-session-snapshot");
