//! base64url (RFC 4648 §5) as MPP uses it: emitted without padding, decoded leniently.
//!
//! ```
//! use mpp_core::base64url;
//!
//! assert_eq!(base64url::encode(b">>>???"), "Pj4-Pz8_");
//! // Both SDKs also accept the standard alphabet and padding when decoding.
//! assert_eq!(base64url::decode("Pj4+Pz8/").unwrap(), b">>>???");
//! assert_eq!(base64url::decode("YQ==").unwrap(), b"a");
//! assert!(base64url::decode("not-valid!!!").is_err());
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};

/// Why a base64url string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Base64Error {
    /// A character outside both base64 alphabets, misplaced padding or an impossible length.
    #[error("invalid base64url")]
    Invalid,
    /// The decoded bytes were expected to be UTF-8 text and are not.
    #[error("decoded base64url is not UTF-8")]
    NotUtf8,
}

/// Decodes the url-safe alphabet with or without padding, tolerating non-zero trailing bits
/// as JavaScript decoders do.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Encodes `bytes` as unpadded base64url.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url, also accepting `+`, `/` and `=` padding (as both official SDKs do).
/// Any other character is an error.
pub fn decode(input: &str) -> Result<Vec<u8>, Base64Error> {
    if input.bytes().any(|b| b == b'+' || b == b'/') {
        let mapped: String = input
            .chars()
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                c => c,
            })
            .collect();
        LENIENT.decode(mapped).map_err(|_| Base64Error::Invalid)
    } else {
        LENIENT.decode(input).map_err(|_| Base64Error::Invalid)
    }
}

/// Decodes base64url into a UTF-8 string.
pub fn decode_utf8(input: &str) -> Result<String, Base64Error> {
    String::from_utf8(decode(input)?).map_err(|_| Base64Error::NotUtf8)
}

/// Encodes `bytes` as standard base64 with padding (the alphabet of body digests and of
/// session snapshot headers).
pub fn encode_standard(bytes: impl AsRef<[u8]>) -> String {
    general_purpose::STANDARD.encode(bytes)
}

/// Decodes standard padded base64 strictly.
pub fn decode_standard(input: &str) -> Result<Vec<u8>, Base64Error> {
    general_purpose::STANDARD
        .decode(input)
        .map_err(|_| Base64Error::Invalid)
}
