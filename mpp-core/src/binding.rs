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
//! let now = time::OffsetDateTime::now_utc();
//! assert_eq!(id.len(), 43);
//! assert!(secret.verify(&id, &slots, now));
//! assert!(!secret.verify(&id, &BindingSlots { intent: "session", ..slots }, now));
//! // Only the canonical spelling of the id verifies, not a padded one.
//! assert!(!secret.verify(&format!("{id}="), &slots, now));
//! assert!(ChallengeSecret::new("too short").is_err());
//! ```

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use time::OffsetDateTime;

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
/// previous secrets still accepted while their challenges may be alive (rotation), each until
/// its retirement time if it has one.
#[derive(Clone)]
pub struct ChallengeSecret {
    current: HmacSha256,
    previous: Vec<PreviousKey>,
}

/// A rotated-out key: verifies ids until `retire_at` (forever without one).
#[derive(Clone)]
struct PreviousKey {
    key: HmacSha256,
    retire_at: Option<OffsetDateTime>,
}

impl PreviousKey {
    fn active_at(&self, now: OffsetDateTime) -> bool {
        self.retire_at.is_none_or(|retire_at| now <= retire_at)
    }
}

impl fmt::Debug for ChallengeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChallengeSecret")
            .field("previous", &self.previous.len())
            .field(
                "retire_at",
                &self
                    .previous
                    .iter()
                    .map(|p| p.retire_at)
                    .collect::<Vec<_>>(),
            )
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

    /// Also accepts ids made with an older secret, with no end date (never used to issue new
    /// ones). Prefer [`ChallengeSecret::with_previous_until`]: a key that never retires keeps
    /// a leaked secret alive.
    pub fn with_previous(self, secret: impl AsRef<[u8]>) -> Result<Self, SecretTooShort> {
        self.push_previous(secret.as_ref(), None)
    }

    /// Also accepts ids made with an older secret until `retire_at` (inclusive), as judged by
    /// the `now` given to [`ChallengeSecret::verify`]; after that they no longer verify.
    pub fn with_previous_until(
        self,
        secret: impl AsRef<[u8]>,
        retire_at: OffsetDateTime,
    ) -> Result<Self, SecretTooShort> {
        self.push_previous(secret.as_ref(), Some(retire_at))
    }

    fn push_previous(
        mut self,
        secret: &[u8],
        retire_at: Option<OffsetDateTime>,
    ) -> Result<Self, SecretTooShort> {
        self.previous.push(PreviousKey {
            key: keyed(secret)?,
            retire_at,
        });
        Ok(self)
    }

    /// The id for these parameters under the current secret.
    pub fn challenge_id(&self, slots: &BindingSlots<'_>) -> String {
        let mut mac = self.current.clone();
        slots.feed(&mut mac);
        crate::base64url::encode(mac.finalize().into_bytes())
    }

    /// Checks `id` against these parameters in constant time, under the current secret and
    /// the previous secrets not retired at `now`.
    ///
    /// Only the canonical spelling of an id verifies (unpadded base64url, zero trailing bits:
    /// what [`ChallengeSecret::challenge_id`] emits), although base64url is otherwise decoded
    /// leniently: one tag must have exactly one id, because replay guards key on the string.
    pub fn verify(&self, id: &str, slots: &BindingSlots<'_>, now: OffsetDateTime) -> bool {
        let Ok(tag) = crate::base64url::decode(id) else {
            return false;
        };
        // The id is the client's; comparing it with its own re-encoding reveals no secret.
        if crate::base64url::encode(&tag) != id {
            return false;
        }
        let keys = std::iter::once((&self.current, true))
            .chain(self.previous.iter().map(|p| (&p.key, p.active_at(now))));
        // Evaluate every key (no early exit) so timing does not reveal which one matched.
        keys.fold(false, |ok, (key, active)| {
            let mut mac = key.clone();
            slots.feed(&mut mac);
            (mac.verify_slice(&tag).is_ok() & active) | ok
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const SLOTS: BindingSlots<'static> = BindingSlots {
        realm: "api.example.com",
        method: "tempo",
        intent: "charge",
        request: "eyJhbW91bnQiOiIxMDAwMDAwIn0",
        expires: Some("2025-01-06T12:05:00.000Z"),
        digest: None,
        opaque: None,
        header: None,
    };

    #[test]
    fn a_previous_secret_retires_at_its_time() {
        let old = ChallengeSecret::new("the-old-secret-0123456789abcdef-0123").unwrap();
        let id = old.challenge_id(&SLOTS);
        let retire_at = datetime!(2025-01-06 12:00:00 UTC);
        let rotated = ChallengeSecret::new("the-new-secret-0123456789abcdef-0123")
            .unwrap()
            .with_previous_until("the-old-secret-0123456789abcdef-0123", retire_at)
            .unwrap();
        assert!(rotated.verify(&id, &SLOTS, retire_at - time::Duration::minutes(1)));
        assert!(rotated.verify(&id, &SLOTS, retire_at));
        assert!(!rotated.verify(&id, &SLOTS, retire_at + time::Duration::seconds(1)));
        // The current secret does not retire.
        let current = rotated.challenge_id(&SLOTS);
        assert!(rotated.verify(&current, &SLOTS, datetime!(2099-01-01 00:00:00 UTC)));
    }

    #[test]
    fn only_the_canonical_id_verifies() {
        let secret = ChallengeSecret::new("a-secret-of-at-least-32-bytes-long!").unwrap();
        let id = secret.challenge_id(&SLOTS);
        let now = datetime!(2025-01-06 12:00:00 UTC);
        assert!(secret.verify(&id, &SLOTS, now));
        assert!(!secret.verify(&format!("{id}="), &SLOTS, now));
    }
}
