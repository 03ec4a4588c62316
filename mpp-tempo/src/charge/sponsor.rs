//! Fee sponsorship (charge.md §5, §6a.5): the rules a `0x78` envelope must meet before the
//! server pays its gas, and the co-signature that turns it into a broadcastable `0x76`.

use std::time::Duration;

use alloy::primitives::Address;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use tempo_primitives::transaction::{AASigned, TEMPO_EXPIRING_NONCE_KEY};
use time::OffsetDateTime;

use super::ChargeError;
use super::envelope::FeePayerEnvelope;
use crate::tokens::PATH_USD;

/// Limits a sponsored transaction must respect (defaults: the SDKs').
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SponsorPolicy {
    /// Highest `gasLimit`.
    pub max_gas_limit: u64,
    /// Highest `maxFeePerGas` (attodollars per gas).
    pub max_fee_per_gas: u128,
    /// Highest `maxPriorityFeePerGas`.
    pub max_priority_fee_per_gas: u128,
    /// Highest `gasLimit × maxFeePerGas`.
    pub max_fee_budget: u128,
    /// Longest `validBefore − now`.
    pub max_validity: Duration,
    /// How far `validBefore` may pass the challenge expiry.
    pub expiry_grace: Duration,
    /// Fee tokens the sponsor pays with; a client-chosen fee token must be one of them.
    pub fee_tokens: Vec<Address>,
    /// The fee token used when the client leaves it empty (the usual case).
    pub default_fee_token: Address,
}

impl Default for SponsorPolicy {
    fn default() -> Self {
        Self {
            max_gas_limit: 2_000_000,
            max_fee_per_gas: 100_000_000_000,
            max_priority_fee_per_gas: 10_000_000_000,
            max_fee_budget: 50_000_000_000_000_000,
            max_validity: Duration::from_secs(900),
            expiry_grace: Duration::from_secs(60),
            fee_tokens: vec![PATH_USD],
            default_fee_token: PATH_USD,
        }
    }
}

/// The sponsor: a fee-payer key and its policy.
#[derive(Debug, Clone)]
pub struct Sponsor {
    signer: PrivateKeySigner,
    policy: SponsorPolicy,
}

impl Sponsor {
    /// A sponsor paying with `signer` under `policy`.
    pub fn new(signer: PrivateKeySigner, policy: SponsorPolicy) -> Self {
        Self { signer, policy }
    }

    /// The fee payer's address.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// The policy.
    pub fn policy(&self) -> &SponsorPolicy {
        &self.policy
    }

    /// Applies the policy to `envelope` (for a challenge expiring at `expires`), and returns
    /// the fee token to pay with.
    ///
    /// What every pull transaction must meet, sponsored or not, is checked once by the charge
    /// verifier before this runs, not here: the chain id, and `validBefore` later than `now`.
    pub fn check(
        &self,
        envelope: &FeePayerEnvelope,
        now: OffsetDateTime,
        expires: OffsetDateTime,
    ) -> Result<Address, ChargeError> {
        let p = &self.policy;
        let tx = &envelope.tx;
        let refuse = |m: String| {
            Err(ChargeError::VerificationFailed(format!(
                "sponsor policy: {m}"
            )))
        };
        let fee_token = match tx.fee_token {
            None => p.default_fee_token,
            Some(t) if p.fee_tokens.contains(&t) => t,
            Some(t) => return refuse(format!("fee token {t} is not allowed")),
        };
        if tx.nonce_key != TEMPO_EXPIRING_NONCE_KEY {
            return refuse("must use the expiring nonce key".into());
        }
        let Some(valid_before) = tx.valid_before.map(|v| v.get()) else {
            return refuse("validBefore is required".into());
        };
        let valid_before = i64::try_from(valid_before).unwrap_or(i64::MAX);
        if valid_before.saturating_sub(now.unix_timestamp()) > secs(p.max_validity) {
            return refuse("validity window too long".into());
        }
        if valid_before
            > expires
                .unix_timestamp()
                .saturating_add(secs(p.expiry_grace))
        {
            return refuse("validBefore is past the challenge expiry".into());
        }
        if tx.gas_limit > p.max_gas_limit {
            return refuse(format!(
                "gas limit {} above {}",
                tx.gas_limit, p.max_gas_limit
            ));
        }
        if tx.max_fee_per_gas > p.max_fee_per_gas {
            return refuse(format!(
                "maxFeePerGas {} above {}",
                tx.max_fee_per_gas, p.max_fee_per_gas
            ));
        }
        if tx.max_priority_fee_per_gas > p.max_priority_fee_per_gas
            || tx.max_priority_fee_per_gas > tx.max_fee_per_gas
        {
            return refuse("maxPriorityFeePerGas too high".into());
        }
        if u128::from(tx.gas_limit).saturating_mul(tx.max_fee_per_gas) > p.max_fee_budget {
            return refuse(format!(
                "gas budget {} × {} above {}",
                tx.gas_limit, tx.max_fee_per_gas, p.max_fee_budget
            ));
        }
        if !tx.access_list.is_empty() {
            return refuse("access list is not allowed".into());
        }
        if !tx.tempo_authorization_list.is_empty() || tx.key_authorization.is_some() {
            return refuse("authorizations are not allowed".into());
        }
        Ok(fee_token)
    }

    /// Completes the envelope: sets `fee_token`, signs the fee-payer hash, and returns the
    /// broadcastable `0x76` transaction.
    pub fn co_sign(
        &self,
        envelope: &FeePayerEnvelope,
        fee_token: Address,
    ) -> Result<AASigned, ChargeError> {
        let mut tx = envelope.recoverable().strip_signature();
        tx.fee_token = Some(fee_token);
        let hash = tx.fee_payer_signature_hash(envelope.sender);
        let signature = self
            .signer
            .sign_hash_sync(&hash)
            .map_err(|e| ChargeError::Config(format!("fee payer signing failed: {e}")))?;
        tx.fee_payer_signature = Some(signature);
        Ok(AASigned::new_unhashed(tx, envelope.signature.clone()))
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}
