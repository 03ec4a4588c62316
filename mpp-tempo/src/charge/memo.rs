//! The attribution memo (charge.md §7): a `bytes32` a payer puts on its `transferWithMemo` so
//! that one on-chain payment can be claimed for exactly one challenge of one server.
//!
//! Layout: `keccak("mpp")[0..4] | 0x01 | keccak(realm)[0..10] | keccak(clientId)[0..10] or
//! zeros | keccak(challengeId)[0..7]`.

use alloy::primitives::{B256, keccak256};

/// `keccak256("mpp")[0..4]`.
pub const MEMO_TAG: [u8; 4] = [0xef, 0x1e, 0xd7, 0x12];
/// The layout version this crate writes and accepts.
pub const MEMO_VERSION: u8 = 0x01;

fn prefix<const N: usize>(input: &str) -> [u8; N] {
    let hash = keccak256(input.as_bytes());
    let mut out = [0u8; N];
    out.copy_from_slice(&hash[..N]);
    out
}

/// Builds the memo for a challenge `challenge_id` issued by `realm`, with an optional client
/// fingerprint (`None` = anonymous, 10 zero bytes).
pub fn attribution_memo(realm: &str, challenge_id: &str, client_id: Option<&str>) -> B256 {
    let mut memo = [0u8; 32];
    memo[0..4].copy_from_slice(&MEMO_TAG);
    memo[4] = MEMO_VERSION;
    memo[5..15].copy_from_slice(&prefix::<10>(realm));
    if let Some(client) = client_id {
        memo[15..25].copy_from_slice(&prefix::<10>(client));
    }
    memo[25..32].copy_from_slice(&prefix::<7>(challenge_id));
    B256::from(memo)
}

/// Whether `memo` binds a payment to challenge `challenge_id` of `realm`: tag, version, server
/// fingerprint and challenge nonce must match. The client fingerprint is not checked.
pub fn is_bound_to_challenge(memo: &B256, realm: &str, challenge_id: &str) -> bool {
    memo[0..4] == MEMO_TAG
        && memo[4] == MEMO_VERSION
        && memo[5..15] == prefix::<10>(realm)
        && memo[25..32] == prefix::<7>(challenge_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_is_keccak_of_mpp() {
        assert_eq!(keccak256(b"mpp")[..4], MEMO_TAG);
    }

    #[test]
    fn spec_example() {
        let memo = attribution_memo("api.example.com", "challenge-123", None);
        assert_eq!(
            memo.to_string(),
            "0xef1ed712011ece072f76bd8b82350e00000000000000000000eb18f2d4402269"
        );
        assert!(is_bound_to_challenge(
            &memo,
            "api.example.com",
            "challenge-123"
        ));
        assert!(!is_bound_to_challenge(
            &memo,
            "api.example.com",
            "challenge-124"
        ));
        assert!(!is_bound_to_challenge(
            &memo,
            "other.example.com",
            "challenge-123"
        ));
    }
}
