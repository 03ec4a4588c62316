//! [`Tempo`]: the Tempo payment method, configured once with [`TempoBuilder`] and shared by
//! every route. It serves the `charge` intent; [`Method::verify`] parses the echoed request
//! once and hands it to the charge verifier (`charge/verify.rs`).

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use mpp_core::method::{Method, MethodError, PriceTerms, Verified, VerifyContext};
use mpp_core::{BoxFuture, Receipt, expiry::format_timestamp};
use serde_json::Value;

use crate::chain::{ChainClient, DEFAULT_BROADCAST_TIMEOUT, DEFAULT_RPC_TIMEOUT};
use crate::challenge::ChallengeView;
use crate::charge::{
    ChargeContext, ChargeError, ChargeMode, ChargeVerifier, MethodDetails, SettledCharge, Split,
    Sponsor, SponsorPolicy, TempoChargeRequest,
};
use crate::store::ReplayStore;
use crate::tokens::PATH_USD;
use crate::{CHARGE_INTENT, METHOD_NAME};

/// Builds a [`Tempo`] (see [`Tempo::builder`]).
#[derive(Default)]
#[must_use]
pub struct TempoBuilder {
    rpc_url: Option<String>,
    recipient: Option<Address>,
    currency: Option<Address>,
    decimals: Option<u8>,
    chain_id: Option<u64>,
    memo: Option<B256>,
    splits: Vec<Split>,
    supported_modes: Option<Vec<ChargeMode>>,
    sponsor: Option<Sponsor>,
    store: Option<Arc<dyn ReplayStore>>,
    rpc_timeout: Option<Duration>,
    broadcast_timeout: Option<Duration>,
}

impl std::fmt::Debug for TempoBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempoBuilder")
            .field("rpc_url", &self.rpc_url)
            .field("recipient", &self.recipient)
            .field("currency", &self.currency)
            .field("chain_id", &self.chain_id)
            .field("sponsor", &self.sponsor.as_ref().map(Sponsor::address))
            .finish_non_exhaustive()
    }
}

impl TempoBuilder {
    /// The node's JSON-RPC URL (required).
    pub fn rpc_url(mut self, url: impl Into<String>) -> Self {
        self.rpc_url = Some(url.into());
        self
    }

    /// Who gets paid (required).
    pub fn recipient(mut self, recipient: Address) -> Self {
        self.recipient = Some(recipient);
        self
    }

    /// The TIP-20 token charged (default pathUSD).
    pub fn currency(mut self, currency: Address) -> Self {
        self.currency = Some(currency);
        self
    }

    /// The token's decimals, for display prices (default 6).
    pub fn decimals(mut self, decimals: u8) -> Self {
        self.decimals = Some(decimals);
        self
    }

    /// The chain the node must serve; `build` fails if it serves another. Default: whatever
    /// the node reports.
    pub fn chain_id(mut self, chain_id: u64) -> Self {
        self.chain_id = Some(chain_id);
        self
    }

    /// A fixed memo the primary transfer must carry (replaces the attribution memo rule).
    pub fn memo(mut self, memo: B256) -> Self {
        self.memo = Some(memo);
        self
    }

    /// Splits paid out of every charge (base units each).
    pub fn splits(mut self, splits: Vec<Split>) -> Self {
        self.splits = splits;
        self
    }

    /// Restricts the credential modes offered (default: both, or pull only when sponsoring).
    pub fn supported_modes(mut self, modes: Vec<ChargeMode>) -> Self {
        self.supported_modes = Some(modes);
        self
    }

    /// Pays gas for pull transactions with `signer`, under `policy`.
    pub fn fee_payer(mut self, signer: PrivateKeySigner, policy: SponsorPolicy) -> Self {
        self.sponsor = Some(Sponsor::new(signer, policy));
        self
    }

    /// Where replay keys are claimed (required).
    pub fn store(mut self, store: Arc<dyn ReplayStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Timeout of each RPC call (default 5 s).
    pub fn rpc_timeout(mut self, timeout: Duration) -> Self {
        self.rpc_timeout = Some(timeout);
        self
    }

    /// Timeout of `eth_sendRawTransactionSync` (default 10 s).
    pub fn broadcast_timeout(mut self, timeout: Duration) -> Self {
        self.broadcast_timeout = Some(timeout);
        self
    }

    /// Connects to the node and reads its chain id, once: every verification compares the
    /// request's chain with this one. Fails if a configured chain id differs.
    pub async fn build(self) -> Result<Tempo, ChargeError> {
        let missing =
            |what: &str| ChargeError::Config(format!("Tempo::builder(): {what} is required"));
        let rpc_url = self.rpc_url.ok_or_else(|| missing("rpc_url"))?;
        let recipient = self.recipient.ok_or_else(|| missing("recipient"))?;
        let store = self.store.ok_or_else(|| missing("store"))?;
        let chain = ChainClient::new(&rpc_url, self.rpc_timeout.unwrap_or(DEFAULT_RPC_TIMEOUT))?;
        let node_chain_id = chain.chain_id().await?;
        if let Some(configured) = self.chain_id
            && configured != node_chain_id
        {
            return Err(ChargeError::Config(format!(
                "the node at {rpc_url} serves chain {node_chain_id}, not {configured}"
            )));
        }
        let supported_modes = self.supported_modes.or_else(|| {
            // The draft forbids hash credentials with feePayer: advertise pull only.
            self.sponsor.as_ref().map(|_| vec![ChargeMode::Pull])
        });
        Ok(Tempo {
            inner: Arc::new(Inner {
                chain,
                chain_id: node_chain_id,
                recipient,
                currency: self.currency.unwrap_or(PATH_USD),
                decimals: self.decimals.unwrap_or(6),
                memo: self.memo,
                splits: self.splits,
                supported_modes,
                sponsor: self.sponsor,
                store,
                broadcast_timeout: self.broadcast_timeout.unwrap_or(DEFAULT_BROADCAST_TIMEOUT),
            }),
        })
    }
}

/// The configuration, shared by clones.
struct Inner {
    chain: ChainClient,
    chain_id: u64,
    recipient: Address,
    currency: Address,
    decimals: u8,
    memo: Option<B256>,
    splits: Vec<Split>,
    supported_modes: Option<Vec<ChargeMode>>,
    sponsor: Option<Sponsor>,
    store: Arc<dyn ReplayStore>,
    broadcast_timeout: Duration,
}

/// The Tempo payment method (cheap to clone).
///
/// ```no_run
/// # async fn demo(store: std::sync::Arc<dyn mpp_tempo::store::ReplayStore>) -> Result<(), mpp_tempo::ChargeError> {
/// use mpp_tempo::Tempo;
/// let tempo = Tempo::builder()
///     .rpc_url("http://127.0.0.1:8545")
///     .recipient("0x742d35Cc6634C0532925a3b844Bc9e7595f8fE00".parse().unwrap())
///     .store(store)
///     .build()
///     .await?;
/// let terms = tempo.charge_request(10_000); // 0.01 pathUSD
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Tempo {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tempo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tempo")
            .field("chain_id", &self.inner.chain_id)
            .field("recipient", &self.inner.recipient)
            .field("currency", &self.inner.currency)
            .finish_non_exhaustive()
    }
}

impl Tempo {
    /// Starts a builder.
    pub fn builder() -> TempoBuilder {
        TempoBuilder::default()
    }

    /// The chain id read from the node at build time.
    pub fn chain_id(&self) -> u64 {
        self.inner.chain_id
    }

    /// The token charged.
    pub fn currency(&self) -> Address {
        self.inner.currency
    }

    /// The token's decimals.
    pub fn decimals(&self) -> u8 {
        self.inner.decimals
    }

    /// The primary recipient.
    pub fn recipient(&self) -> Address {
        self.inner.recipient
    }

    /// The fee payer's address, when sponsoring.
    pub fn fee_payer(&self) -> Option<Address> {
        self.inner.sponsor.as_ref().map(Sponsor::address)
    }

    /// The RPC client.
    pub fn chain(&self) -> &ChainClient {
        &self.inner.chain
    }

    /// The terms of a challenge for `amount_base_units`. With configured splits whose sum is
    /// not below the amount, the result fails [`TempoChargeRequest::validate`].
    pub fn charge_request(&self, amount_base_units: u128) -> TempoChargeRequest {
        let i = &self.inner;
        TempoChargeRequest {
            amount: amount_base_units,
            currency: i.currency,
            recipient: i.recipient,
            description: None,
            external_id: None,
            method_details: MethodDetails {
                chain_id: i.chain_id,
                fee_payer: i.sponsor.is_some() && amount_base_units > 0,
                memo: i.memo,
                splits: (!i.splits.is_empty()).then(|| i.splits.clone()),
                supported_modes: i.supported_modes.clone(),
            },
        }
    }

    /// Verifies and settles a charge credential (its `payload`, and its `source` DID when
    /// present) for `ctx`: the typed entry point under [`Method::verify`].
    ///
    /// What the payment gate checks is not checked again: the challenge's HMAC binding, that
    /// `ctx.request` is this route's terms, and the challenge expiry. Payer faults and
    /// infrastructure faults are distinct [`ChargeError`]s; replay keys are claimed before
    /// anything is broadcast.
    pub async fn verify_charge(
        &self,
        ctx: ChargeContext<'_>,
        source: Option<&str>,
        payload: &Value,
    ) -> Result<SettledCharge, ChargeError> {
        self.charge_verifier().verify(ctx, source, payload).await
    }

    fn charge_verifier(&self) -> ChargeVerifier<'_> {
        let i = &self.inner;
        ChargeVerifier {
            chain: &i.chain,
            chain_id: i.chain_id,
            store: i.store.as_ref(),
            sponsor: i.sponsor.as_ref(),
            broadcast_timeout: i.broadcast_timeout,
        }
    }

    /// The `charge` intent of [`Method::verify`].
    async fn verify_charge_credential(
        &self,
        ctx: VerifyContext<'_>,
    ) -> Result<Verified, MethodError> {
        // Parsed once, in place; validated once, by the verifier.
        let request = TempoChargeRequest::parse_map(ctx.request)
            .map_err(|e| MethodError::verification_failed(e.to_string()))?;
        let credential = ctx.credential;
        let charge =
            ChargeContext::new(&request, ChallengeView::from_verify_context(&ctx), ctx.now);
        let settled = self
            .verify_charge(charge, credential.source.as_deref(), &credential.payload)
            .await?;
        let mut receipt = Receipt::success(
            METHOD_NAME,
            settled.reference.clone(),
            format_timestamp(ctx.now),
        );
        receipt.external_id = settled.external_id.clone();
        Ok(Verified::serve(receipt)
            .with_payer(settled.payer_did().to_string())
            .with_amount(settled.amount))
    }
}

impl Method for Tempo {
    fn name(&self) -> &str {
        METHOD_NAME
    }

    fn supports_intent(&self, intent: &str) -> bool {
        intent == CHARGE_INTENT
    }

    fn request(&self, terms: &PriceTerms) -> Result<Value, MethodError> {
        if terms.intent != CHARGE_INTENT {
            return Err(MethodError::config(format!(
                "the tempo method does not serve `{}` yet",
                terms.intent
            )));
        }
        let amount = terms.amount.to_base_units(self.inner.decimals)?;
        let mut request = self.charge_request(amount);
        if let Some(currency) = &terms.currency {
            request.currency = currency
                .parse()
                .map_err(|_| MethodError::config(format!("`{currency}` is not a token address")))?;
        }
        request.external_id = terms.external_id.clone();
        request.validate().map_err(MethodError::config)?;
        Ok(request.to_json())
    }

    fn verify<'a>(
        &'a self,
        ctx: VerifyContext<'a>,
    ) -> BoxFuture<'a, Result<Verified, MethodError>> {
        Box::pin(async move {
            match ctx.credential.challenge.intent.as_str() {
                CHARGE_INTENT => self.verify_charge_credential(ctx).await,
                // The gate only hands over intents this method supports.
                other => Err(MethodError::verification_failed(format!(
                    "the tempo method does not serve `{other}`"
                ))),
            }
        })
    }
}
