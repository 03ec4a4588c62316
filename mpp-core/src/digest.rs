//! Body digests that bind a challenge to a request body.
//!
//! Emitted in the form both SDKs use (`sha-256=<base64 with padding>`); the RFC 9530
//! structured-field form (`sha-256=:<base64>:`) is accepted when verifying.
//!
//! ```
//! use mpp_core::digest::{body_digest, verify_body_digest};
//!
//! let d = body_digest(br#"{"amount":"1000"}"#);
//! assert_eq!(d, "sha-256=Bxp4xJtbVfsB9npD5AEWUnIk76Cuv8Au4ECDA+F0biY=");
//! assert!(verify_body_digest(&d, br#"{"amount":"1000"}"#));
//! assert!(verify_body_digest("sha-256=:Bxp4xJtbVfsB9npD5AEWUnIk76Cuv8Au4ECDA+F0biY=:", br#"{"amount":"1000"}"#));
//! assert!(!verify_body_digest(&d, br#"{"amount":"1001"}"#));
//! ```

use sha2::{Digest as _, Sha256};

/// The prefix every digest value starts with.
pub const DIGEST_PREFIX: &str = "sha-256=";

/// `sha-256=` + standard padded base64 of SHA-256(`body`).
pub fn body_digest(body: &[u8]) -> String {
    format!(
        "{DIGEST_PREFIX}{}",
        crate::base64url::encode_standard(Sha256::digest(body))
    )
}

/// Checks, in constant time, that `digest` (SDK or RFC 9530 form) is the digest of `body`.
pub fn verify_body_digest(digest: &str, body: &[u8]) -> bool {
    let Some(encoded) = digest.strip_prefix(DIGEST_PREFIX) else {
        return false;
    };
    let encoded = encoded
        .strip_prefix(':')
        .and_then(|e| e.strip_suffix(':'))
        .unwrap_or(encoded);
    let Ok(claimed) = crate::base64url::decode_standard(encoded) else {
        return false;
    };
    let actual = Sha256::digest(body);
    constant_time_eq(&claimed, &actual)
}

/// Compares two byte strings without an early exit on the first difference.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}
