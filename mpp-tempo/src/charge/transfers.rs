//! Matching the transfers a payment contains (decoded calls or receipt logs) against the
//! transfers a request expects (charge.md §6a.3, §6b.4), and the attribution rule (§6a.4).

use alloy::primitives::{Address, B256, U256};

use super::memo::is_bound_to_challenge;
use super::request::ExpectedTransfer;
use crate::challenge::ChallengeView;

/// A TIP-20 transfer seen in a transaction's calls or in a receipt's logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ObservedTransfer {
    /// The token contract.
    pub(crate) token: Address,
    /// The sender, when known (logs); calls are sent by the transaction's sender.
    pub(crate) from: Option<Address>,
    /// The recipient.
    pub(crate) to: Address,
    /// Base units.
    pub(crate) amount: U256,
    /// The memo of a `transferWithMemo`.
    pub(crate) memo: Option<B256>,
}

/// Why observed transfers do not pay a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MatchFailure {
    /// No distinct observed transfer pays this expected one.
    Missing(ExpectedTransfer),
    /// Every expected transfer is paid, but none carries a memo bound to this challenge.
    NoAttribution,
}

impl std::fmt::Display for MatchFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing(t) => write!(
                f,
                "no matching transfer of {} to {}{}",
                t.amount,
                t.recipient,
                t.memo
                    .map(|m| format!(" with memo {m}"))
                    .unwrap_or_default()
            ),
            Self::NoAttribution => {
                f.write_str("no transfer carries the attribution memo of this challenge")
            }
        }
    }
}

/// Matches every expected transfer to a distinct observed one (same token, recipient, exact
/// amount, memo rule), memo-carrying expectations first. When the request has no memo
/// (`server_memo == false`), at least one matched transfer must carry a memo bound to
/// `challenge`. Returns the indexes of the matched observed transfers.
pub(crate) fn match_transfers(
    expected: &[ExpectedTransfer],
    observed: &[ObservedTransfer],
    currency: Address,
    server_memo: bool,
    challenge: ChallengeView<'_>,
) -> Result<Vec<usize>, MatchFailure> {
    let bound = |o: &ObservedTransfer| {
        o.memo
            .is_some_and(|m| is_bound_to_challenge(&m, challenge.realm, challenge.id))
    };
    let mut order: Vec<&ExpectedTransfer> = expected.iter().collect();
    // Stable sort: expectations that demand a memo pick their transfer first, so a
    // memo-less expectation cannot take the only transfer that carries a required memo.
    order.sort_by_key(|t| t.memo.is_none());
    let mut used = vec![false; observed.len()];
    let mut matched = Vec::with_capacity(expected.len());
    for want in order {
        let fits = |(i, o): &(usize, &ObservedTransfer)| {
            !used[*i]
                && o.token == currency
                && o.to == want.recipient
                && o.amount == U256::from(want.amount)
                && match want.memo {
                    Some(m) => o.memo == Some(m),
                    None => true,
                }
        };
        let candidates = observed.iter().enumerate().filter(|c| fits(c));
        // Without a server memo, prefer a transfer that carries this challenge's attribution
        // memo, so an unrelated duplicate transfer cannot hide it.
        let pick = if !server_memo && want.memo.is_none() {
            let all: Vec<(usize, &ObservedTransfer)> = candidates.collect();
            all.iter()
                .find(|(_, o)| bound(o))
                .or_else(|| all.first())
                .map(|(i, _)| *i)
        } else {
            candidates.map(|(i, _)| i).next()
        };
        let Some(i) = pick else {
            return Err(MatchFailure::Missing(*want));
        };
        used[i] = true;
        matched.push(i);
    }
    if !server_memo && !matched.iter().any(|&i| bound(&observed[i])) {
        return Err(MatchFailure::NoAttribution);
    }
    Ok(matched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charge::memo::attribution_memo;
    use alloy::primitives::address;
    use time::OffsetDateTime;

    const TOKEN: Address = address!("20c0000000000000000000000000000000000000");
    const TO: Address = address!("4567890123456789012345678901234567890123");
    const BIND: ChallengeView<'static> = ChallengeView {
        id: "challenge-123",
        realm: "api.example.com",
        expires: OffsetDateTime::UNIX_EPOCH,
    };

    fn seen(memo: Option<B256>) -> ObservedTransfer {
        ObservedTransfer {
            token: TOKEN,
            from: None,
            to: TO,
            amount: U256::from(1000u64),
            memo,
        }
    }

    fn want() -> Vec<ExpectedTransfer> {
        vec![ExpectedTransfer {
            recipient: TO,
            amount: 1000,
            memo: None,
        }]
    }

    #[test]
    fn attribution_vector_cases() {
        let good = attribution_memo("api.example.com", "challenge-123", None);
        assert!(match_transfers(&want(), &[seen(Some(good))], TOKEN, false, BIND).is_ok());
        for memo in [
            None,
            Some(B256::repeat_byte(0xab)),
            Some(
                "0xef1ed712011ece072f76bd8b82350e000000000000000000000ba7f8d2502b26"
                    .parse()
                    .unwrap(),
            ),
            Some(
                "0xef1ed712019daa026d82c6f784db2b00000000000000000000eb18f2d4402269"
                    .parse()
                    .unwrap(),
            ),
        ] {
            assert_eq!(
                match_transfers(&want(), &[seen(memo)], TOKEN, false, BIND),
                Err(MatchFailure::NoAttribution),
                "{memo:?}"
            );
        }
        // A plain duplicate does not hide the attributed transfer.
        assert!(
            match_transfers(&want(), &[seen(None), seen(Some(good))], TOKEN, false, BIND).is_ok()
        );
    }

    #[test]
    fn amount_token_recipient_and_server_memo() {
        let memo = B256::repeat_byte(7);
        let mut expected = want();
        expected[0].memo = Some(memo);
        assert!(match_transfers(&expected, &[seen(Some(memo))], TOKEN, true, BIND).is_ok());
        assert!(match_transfers(&expected, &[seen(None)], TOKEN, true, BIND).is_err());
        let mut wrong_amount = seen(Some(memo));
        wrong_amount.amount = U256::from(999u64);
        assert!(match_transfers(&expected, &[wrong_amount], TOKEN, true, BIND).is_err());
        let mut wrong_token = seen(Some(memo));
        wrong_token.token = Address::repeat_byte(1);
        assert!(match_transfers(&expected, &[wrong_token], TOKEN, true, BIND).is_err());
        // One transfer cannot pay two expectations.
        let two = vec![expected[0], expected[0]];
        assert!(match_transfers(&two, &[seen(Some(memo))], TOKEN, true, BIND).is_err());
    }
}
