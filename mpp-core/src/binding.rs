//! The challenge id: an HMAC-SHA256 over the challenge parameters, so a server recognizes its
//! own challenges without storing them.
//!
//! ```
//! use mpp_core::binding::{BindingSlots, ChallengeSecret};
//!
//! let secret = ChallengeSecret::new("a-secret-of-at-least-32-bytes-long!").unwrap();
//! let slots = BindingSlots {
//!     realm: "api.example.com",
//!     method: "tempo",
//!     intent: "charge",
//!     request: "eyJhbW91bnQiOiIxMDAwMDAwIn0",
//!     expires: Some("2025-01-06T12:05:00.000Z"),
//!     digest: None,
//!     opaque: None,
//!     header: None,
//! };
//! let id = secret.challenge_id(&slots);
//! assert_eq!(id.len(), 43);
//! assert!(secret.verify(&id, &slots));
//! assert!(!secret.verify(&id, &BindingSlots { intent: "session", ..slots }));
//! assert!(ChallengeSecret::new("too short").is_err());
//! ```

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// The shortest secret accepted (mppx and the conformance suite require 32 bytes).
pub const MIN_SECRET_LEN: usize = 32;

/// The parameters an id binds, as the exact strings sent on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingSlots<'a> {
    /// Protection space.
    pub realm: &'a str,
    /// Payment method id.
    pub method: &'a str,
    /// Intent.
    pub intent: &'a str,
    /// The `request` parameter: base64url of the JCS request.
    pub request: &'a str,
    /// The `expires` parameter, verbatim.
    pub expires: Option<&'a str>,
    /// The `digest` parameter, verbatim.
    pub digest: Option<&'a str>,
    /// The `opaque` parameter: base64url of the JCS map.
    pub opaque: Option<&'a str>,
    /// The draft -01 `header` parameter. `Authorization` counts as absent.
    pub header: Option<&'a str>,
}

impl BindingSlots<'_> {
    /// The slots in HMAC order: `realm|method|intent|request|expires|digest[|header]|opaque`.
    ///
    /// Absent optional slots are empty but keep their place. The draft -01 `header` slot goes
    /// before `opaque`: that is the layout that reproduces the conformance vectors.
    fn ordered(&self) -> impl Iterator<Item = &str> {
        let header = self
            .header
            .filter(|h| !h.eq_ignore_ascii_case("Authorization"));
        [
            Some(self.realm),
            Some(self.method),
            Some(self.intent),
            Some(self.request),
            Some(self.expires.unwrap_or("")),
            Some(self.digest.unwrap_or("")),
            header,
            Some(self.opaque.unwrap_or("")),
        ]
        .into_iter()
        .flatten()
    }

    fn feed(&self, mac: &mut HmacSha256) {
        for (i, slot) in self.ordered().enumerate() {
            if i > 0 {
                mac.update(b"|");
            }
            mac.update(slot.as_bytes());
        }
    }

    /// The exact HMAC input, for debugging and test vectors.
    pub fn input_string(&self) -> String {
        self.ordered().collect::<Vec<_>>().join("|")
    }
}

/// Computes a challenge id with any key. Production code goes through [`ChallengeSecret`],
/// which enforces a minimum key length; this exists for test vectors with short keys.
pub fn compute_challenge_id(key: &[u8], slots: &BindingSlots<'_>) -> String {
    let mut mac = hmac_with_key(key);
    slots.feed(&mut mac);
    crate::base64url::encode(mac.finalize().into_bytes())
}

fn hmac_with_key(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC takes keys of any length (long ones are hashed), so this cannot happen.
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

/// A secret shorter than [`MIN_SECRET_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the challenge secret must be at least {MIN_SECRET_LEN} bytes (got {0})")]
pub struct SecretTooShort(pub usize);

/// The server's HMAC secret (its UTF-8 bytes are the key, as in both SDKs), plus optional
/// previous secrets still accepted while their challenges may be alive (rotation).
#[derive(Clone)]
pub struct ChallengeSecret {
    current: HmacSha256,
    previous: Vec<HmacSha256>,
}

impl fmt::Debug for ChallengeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChallengeSecret")
            .field("previous", &self.previous.len())
            .finish_non_exhaustive()
    }
}

fn keyed(secret: &[u8]) -> Result<HmacSha256, SecretTooShort> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(SecretTooShort(secret.len()));
    }
    Ok(hmac_with_key(secret))
}

impl ChallengeSecret {
    /// Makes the key; refuses secrets under 32 bytes.
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self, SecretTooShort> {
        Ok(Self {
            current: keyed(secret.as_ref())?,
            previous: Vec::new(),
        })
    }

    /// Also accepts ids made with an older secret (never used to issue new ones).
    pub fn with_previous(mut self, secret: impl AsRef<[u8]>) -> Result<Self, SecretTooShort> {
        self.previous.push(keyed(secret.as_ref())?);
        Ok(self)
    }

    /// The id for these parameters under the current secret.
    pub fn challenge_id(&self, slots: &BindingSlots<'_>) -> String {
        let mut mac = self.current.clone();
        slots.feed(&mut mac);
        crate::base64url::encode(mac.finalize().into_bytes())
    }

    /// Checks `id` against these parameters in constant time, under the current and the
    /// previous secrets.
    pub fn verify(&self, id: &str, slots: &BindingSlots<'_>) -> bool {
        let Ok(tag) = crate::base64url::decode(id) else {
            return false;
        };
        // Evaluate every key (no early exit) so timing does not reveal which one matched.
        std::iter::once(&self.current)
            .chain(&self.previous)
            .fold(false, |ok, key| {
                let mut mac = key.clone();
                slots.feed(&mut mac);
                mac.verify_slice(&tag).is_ok() | ok
            })
    }
}
