//! Reading TIP-20 transfers out of a transaction receipt (charge.md §2, §6b): `Transfer` and
//! `TransferWithMemo` logs, with the adjacent pair a `transferWithMemo` emits merged into one.

use alloy::primitives::{Address, B256, Log, U256};
use alloy::sol_types::SolEvent;
use tempo_alloy::contracts::precompiles::ITIP20;

use super::transfers::ObservedTransfer;

/// The transfers the logs record, each `transferWithMemo` pair counted once (with its memo).
pub(crate) fn transfers_from_logs<'a>(
    logs: impl IntoIterator<Item = &'a Log>,
) -> Vec<ObservedTransfer> {
    let mut out: Vec<ObservedTransfer> = Vec::new();
    // Whether the last entry of `out` is a plain Transfer that the next TransferWithMemo may
    // complete.
    let mut last_plain = false;
    for log in logs {
        let topics = log.topics();
        let Some(&topic0) = topics.first() else {
            last_plain = false;
            continue;
        };
        let amount = match log.data.data.as_ref().try_into() {
            Ok(word) => U256::from_be_bytes::<32>(word),
            Err(_) => {
                last_plain = false;
                continue;
            }
        };
        if topic0 == ITIP20::Transfer::SIGNATURE_HASH && topics.len() == 3 {
            out.push(ObservedTransfer {
                token: log.address,
                from: Some(address_topic(&topics[1])),
                to: address_topic(&topics[2]),
                amount,
                memo: None,
            });
            last_plain = true;
        } else if topic0 == ITIP20::TransferWithMemo::SIGNATURE_HASH && topics.len() == 4 {
            let with_memo = ObservedTransfer {
                token: log.address,
                from: Some(address_topic(&topics[1])),
                to: address_topic(&topics[2]),
                amount,
                memo: Some(topics[3]),
            };
            match out.last_mut() {
                Some(prev)
                    if last_plain
                        && ObservedTransfer {
                            memo: Some(topics[3]),
                            ..*prev
                        } == with_memo =>
                {
                    prev.memo = Some(topics[3]);
                }
                _ => out.push(with_memo),
            }
            last_plain = false;
        } else {
            last_plain = false;
        }
    }
    out
}

fn address_topic(topic: &B256) -> Address {
    Address::from_word(*topic)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{LogData, address};

    fn log(token: Address, topics: Vec<B256>, amount: u64) -> Log {
        Log {
            address: token,
            data: LogData::new_unchecked(
                topics,
                U256::from(amount).to_be_bytes::<32>().to_vec().into(),
            ),
        }
    }

    #[test]
    fn merges_adjacent_pairs_only() {
        let token = address!("20c0000000000000000000000000000000000000");
        let from = address!("abcdabcdabcdabcdabcdabcdabcdabcdabcdabcd").into_word();
        let to = address!("4567890123456789012345678901234567890123").into_word();
        let memo = B256::repeat_byte(9);
        let t = ITIP20::Transfer::SIGNATURE_HASH;
        let m = ITIP20::TransferWithMemo::SIGNATURE_HASH;
        let logs = vec![
            log(token, vec![t, from, to], 1000),
            log(token, vec![m, from, to, memo], 1000),
            // fee transfer to the fee manager
            log(
                token,
                vec![
                    t,
                    from,
                    address!("feec000000000000000000000000000000000000").into_word(),
                ],
                7,
            ),
            // a pair with mismatching amounts is two transfers
            log(token, vec![t, from, to], 5),
            log(token, vec![m, from, to, memo], 6),
        ];
        let seen = transfers_from_logs(&logs);
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[0].memo, Some(memo));
        assert_eq!(seen[0].amount, U256::from(1000));
        assert_eq!(seen[1].memo, None);
        assert_eq!(seen[2].memo, None);
        assert_eq!(seen[3].memo, Some(memo));
    }
}
