//! Decoding a pull credential (a signed `0x76` Tempo transaction or a `0x78` fee-payer
//! envelope), recovering its sender, and reading the payment out of its calls
//! (charge.md §6a.2-3).

use alloy::consensus::transaction::SignerRecoverable;
use alloy::eips::eip2718::Decodable2718;
use alloy::primitives::{Address, TxKind, U256};
use alloy::sol_types::SolCall;
use tempo_alloy::contracts::precompiles::{IStablecoinDEX, ITIP20, STABLECOIN_DEX_ADDRESS};
use tempo_primitives::transaction::{AASigned, Call, TEMPO_TX_TYPE_ID, TempoTransaction};

use super::ChargeError;
use super::envelope::{FEE_PAYER_ENVELOPE_TYPE, FeePayerEnvelope};
use super::request::{ExpectedTransfer, TempoChargeRequest};
use super::transfers::{ObservedTransfer, match_transfers};
use crate::challenge::ChallengeView;

/// A decoded pull transaction.
#[derive(Debug, Clone)]
pub enum PullTransaction {
    /// A complete `0x76` transaction, broadcast as is.
    Signed(AASigned),
    /// A `0x78` envelope the server must co-sign as fee payer.
    Sponsored(FeePayerEnvelope),
}

/// A pull transaction with its recovered sender.
#[derive(Debug, Clone)]
pub struct DecodedPull {
    /// The transaction.
    pub tx: PullTransaction,
    /// The recovered sender (for `0x78`, also equal to the envelope's sender field).
    pub sender: Address,
}

impl DecodedPull {
    /// The transaction fields.
    pub fn fields(&self) -> &TempoTransaction {
        match &self.tx {
            PullTransaction::Signed(s) => s.tx(),
            PullTransaction::Sponsored(e) => &e.tx,
        }
    }
}

/// Decodes `raw` (`0x76…` or `0x78…`), requires a sender signature and recovers the sender.
pub fn decode_pull(raw: &[u8]) -> Result<DecodedPull, ChargeError> {
    let failed = |m: String| ChargeError::VerificationFailed(m);
    match raw.first() {
        Some(&TEMPO_TX_TYPE_ID) => {
            let mut buf = raw;
            let signed = AASigned::decode_2718(&mut buf)
                .map_err(|e| failed(format!("undecodable 0x76 transaction: {e}")))?;
            if !buf.is_empty() {
                return Err(failed("trailing bytes after the 0x76 transaction".into()));
            }
            let sender = signed
                .recover_signer()
                .map_err(|e| failed(format!("cannot recover the sender: {e}")))?;
            Ok(DecodedPull {
                tx: PullTransaction::Signed(signed),
                sender,
            })
        }
        Some(&FEE_PAYER_ENVELOPE_TYPE) => {
            let envelope = FeePayerEnvelope::decode(raw)
                .map_err(|e| failed(format!("undecodable 0x78 fee payer envelope: {e}")))?;
            let sender = envelope
                .recoverable()
                .recover_signer()
                .map_err(|e| failed(format!("cannot recover the sender: {e}")))?;
            if sender != envelope.sender {
                return Err(failed(format!(
                    "the envelope names sender {} but was signed by {sender}",
                    envelope.sender
                )));
            }
            Ok(DecodedPull {
                tx: PullTransaction::Sponsored(envelope),
                sender,
            })
        }
        Some(other) => Err(failed(format!(
            "transaction type 0x{other:02x} is not a Tempo transaction (0x76 or 0x78)"
        ))),
        None => Err(failed("empty transaction".into())),
    }
}

/// The payment a transaction's calls make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallTransfers {
    /// One entry per transfer call, in call order.
    pub(crate) transfers: Vec<ObservedTransfer>,
    /// Whether the calls start with an `approve` + `swapExactAmountOut` auto-swap prefix.
    pub(crate) swap_prefix: bool,
}

/// Reads the calls: an optional DEX auto-swap prefix, then only `transfer`/`transferWithMemo`
/// calls on `currency`. Any other call is refused: a payer must not make the server broadcast
/// (or sponsor) arbitrary calls. `expected_total` is the amount the swap must produce.
pub(crate) fn read_calls(
    calls: &[Call],
    currency: Address,
    expected_total: u128,
) -> Result<CallTransfers, ChargeError> {
    let failed = |m: String| ChargeError::VerificationFailed(m);
    let swap_prefix = is_swap_prefix(calls);
    let rest = if swap_prefix {
        check_swap_prefix(&calls[..2], currency, expected_total)?;
        &calls[2..]
    } else {
        calls
    };
    let mut transfers = Vec::with_capacity(rest.len());
    for (i, call) in rest.iter().enumerate() {
        let TxKind::Call(to) = call.to else {
            return Err(failed(format!("call {i} creates a contract")));
        };
        if to != currency {
            return Err(failed(format!(
                "call {i} targets {to}, not the charge currency {currency}"
            )));
        }
        if !call.value.is_zero() {
            return Err(failed(format!("call {i} carries native value")));
        }
        let input = call.input.as_ref();
        let transfer = if input.starts_with(&ITIP20::transferWithMemoCall::SELECTOR) {
            let c = ITIP20::transferWithMemoCall::abi_decode(input)
                .map_err(|e| failed(format!("call {i}: bad transferWithMemo data: {e}")))?;
            ObservedTransfer {
                token: to,
                from: None,
                to: c.to,
                amount: c.amount,
                memo: Some(c.memo),
            }
        } else if input.starts_with(&ITIP20::transferCall::SELECTOR) {
            let c = ITIP20::transferCall::abi_decode(input)
                .map_err(|e| failed(format!("call {i}: bad transfer data: {e}")))?;
            ObservedTransfer {
                token: to,
                from: None,
                to: c.to,
                amount: c.amount,
                memo: None,
            }
        } else {
            return Err(failed(format!(
                "call {i} is not a transfer or transferWithMemo"
            )));
        };
        transfers.push(transfer);
    }
    if transfers.is_empty() {
        return Err(failed("the transaction contains no transfer".into()));
    }
    Ok(CallTransfers {
        transfers,
        swap_prefix,
    })
}

/// Whether `calls` start with an auto-swap prefix and go on after it.
fn is_swap_prefix(calls: &[Call]) -> bool {
    calls.len() > 2 && is_swap_pair(&calls[..2])
}

/// Whether `pair` has the shape of an auto-swap prefix: an `approve`, then a call on the DEX
/// (what it says is checked by [`check_swap_prefix`]).
pub(crate) fn is_swap_pair(pair: &[Call]) -> bool {
    pair.len() == 2
        && pair[0].input.starts_with(&ITIP20::approveCall::SELECTOR)
        && pair[1].to == TxKind::Call(STABLECOIN_DEX_ADDRESS)
}

/// `approve(DEX, maxIn)` on tokenIn, then `swapExactAmountOut(tokenIn, currency, total, maxIn)`
/// on the DEX.
pub(crate) fn check_swap_prefix(
    prefix: &[Call],
    currency: Address,
    expected_total: u128,
) -> Result<(), ChargeError> {
    let failed = |m: &str| ChargeError::VerificationFailed(format!("auto-swap prefix: {m}"));
    let (approve_call, swap_call) = (&prefix[0], &prefix[1]);
    let approve = ITIP20::approveCall::abi_decode(&approve_call.input)
        .map_err(|_| failed("bad approve data"))?;
    let swap = IStablecoinDEX::swapExactAmountOutCall::abi_decode(&swap_call.input)
        .map_err(|_| failed("bad swapExactAmountOut data"))?;
    if !approve_call.value.is_zero() || !swap_call.value.is_zero() {
        return Err(failed("calls carry native value"));
    }
    if approve.spender != STABLECOIN_DEX_ADDRESS {
        return Err(failed("approve spender is not the DEX"));
    }
    if approve_call.to != TxKind::Call(swap.tokenIn) {
        return Err(failed("approve target is not the swap input token"));
    }
    if approve.amount != U256::from(swap.maxAmountIn) {
        return Err(failed("approve amount differs from the swap maximum input"));
    }
    if swap.tokenOut != currency {
        return Err(failed("swap output token is not the charge currency"));
    }
    if swap.amountOut != expected_total {
        return Err(failed("swap output differs from the charge total"));
    }
    Ok(())
}

/// The call checks of charge.md §6a.3-4 on a decoded pull transaction for `challenge`:
/// allowed calls only, every transfer of `expected` (the request's
/// [`TempoChargeRequest::expected_transfers`]) matched (exactly as many transfers as expected
/// when sponsored), and the attribution memo when the request has no memo. Pure: no node, no
/// store.
pub fn check_pull_calls(
    decoded: &DecodedPull,
    req: &TempoChargeRequest,
    expected: &[ExpectedTransfer],
    challenge: ChallengeView<'_>,
) -> Result<(), ChargeError> {
    let calls = read_calls(&decoded.fields().calls, req.currency, req.amount)?;
    if matches!(decoded.tx, PullTransaction::Sponsored(_))
        && calls.transfers.len() != expected.len()
    {
        return Err(ChargeError::VerificationFailed(
            "a sponsored transaction must contain exactly the expected transfers".into(),
        ));
    }
    match_transfers(
        expected,
        &calls.transfers,
        req.currency,
        req.method_details.memo.is_some(),
        challenge,
    )
    .map_err(|e| ChargeError::VerificationFailed(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{B256, address};

    const CURRENCY: Address = address!("20c0000000000000000000000000000000000000");
    const ALPHA: Address = address!("20c0000000000000000000000000000000000001");
    const TO: Address = address!("742d35Cc6634c0532925a3b844bC9e7595F8fE00");

    fn call(to: Address, input: Vec<u8>) -> Call {
        Call {
            to: TxKind::Call(to),
            value: U256::ZERO,
            input: input.into(),
        }
    }

    fn swap_calls(max_in: u128, out: u128, token_out: Address, spender: Address) -> Vec<Call> {
        vec![
            call(
                ALPHA,
                ITIP20::approveCall {
                    spender,
                    amount: U256::from(max_in),
                }
                .abi_encode(),
            ),
            call(
                STABLECOIN_DEX_ADDRESS,
                IStablecoinDEX::swapExactAmountOutCall {
                    tokenIn: ALPHA,
                    tokenOut: token_out,
                    amountOut: out,
                    maxAmountIn: max_in,
                }
                .abi_encode(),
            ),
            call(
                CURRENCY,
                ITIP20::transferWithMemoCall {
                    to: TO,
                    amount: U256::from(out),
                    memo: B256::ZERO,
                }
                .abi_encode(),
            ),
        ]
    }

    #[test]
    fn accepts_a_valid_auto_swap_prefix() {
        let read = read_calls(
            &swap_calls(1100, 1000, CURRENCY, STABLECOIN_DEX_ADDRESS),
            CURRENCY,
            1000,
        )
        .unwrap();
        assert!(read.swap_prefix);
        assert_eq!(read.transfers.len(), 1);
    }

    #[test]
    fn rejects_bad_prefixes_and_foreign_calls() {
        // Swap output below the total, into another token, or approving someone else.
        assert!(
            read_calls(
                &swap_calls(1100, 999, CURRENCY, STABLECOIN_DEX_ADDRESS),
                CURRENCY,
                1000
            )
            .is_err()
        );
        assert!(
            read_calls(
                &swap_calls(1100, 1000, ALPHA, STABLECOIN_DEX_ADDRESS),
                CURRENCY,
                1000
            )
            .is_err()
        );
        let mut calls = swap_calls(1100, 1000, CURRENCY, STABLECOIN_DEX_ADDRESS);
        calls[0] = call(
            ALPHA,
            ITIP20::approveCall {
                spender: TO,
                amount: U256::from(1100u64),
            }
            .abi_encode(),
        );
        assert!(read_calls(&calls, CURRENCY, 1000).is_err());
        // An approve on the charge currency without a swap is a foreign call.
        let approve_only = vec![call(
            CURRENCY,
            ITIP20::approveCall {
                spender: TO,
                amount: U256::MAX,
            }
            .abi_encode(),
        )];
        assert!(read_calls(&approve_only, CURRENCY, 1000).is_err());
        assert!(read_calls(&[], CURRENCY, 1000).is_err());
    }
}
