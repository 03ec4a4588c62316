//! [`Tempo`]: the Tempo payment method, configured once with [`TempoBuilder`] and shared by
//! every route. It serves the `charge` intent; [`Method::verify`] parses the echoed request
//! once and hands it to the charge verifier (`charge/verify.rs`).

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use mpp_core::method::{Method, MethodError, PriceTerms, Settle, Verified, VerifyContext};
use mpp_core::{BoxFuture, Receipt, expiry::format_timestamp};
use serde_json::Value;

use crate::address::{AddressError, IntoAddress, parse_address};
use crate::chain::{ChainClient, DEFAULT_BROADCAST_TIMEOUT, DEFAULT_RPC_TIMEOUT};
use crate::chains::TempoChain;
use crate::challenge::ChallengeView;
use crate::charge::{
    ChargeContext, ChargeError, ChargeMode, ChargeVerifier, MethodDetails, SettledCharge, Split,
    Sponsor, SponsorPolicy, TempoChargeRequest, resolve_pending,
};
use crate::session::store::ChannelStore;
use crate::store::ReplayStore;
use crate::tokens::PATH_USD;
use crate::{CHARGE_INTENT, METHOD_NAME};

/// The replay store's file when [`TempoBuilder::store`] is not called: an embedded SQLite
/// database in the working directory (feature `sqlite`).
pub const DEFAULT_STORE_PATH: &str = "mpp-tempo.db";

/// Builds a [`Tempo`] (see [`Tempo::builder`]).
///
/// Only the recipient is required; everything else has a default:
///
/// - the node: [`rpc_url`](Self::rpc_url), else the public RPC of [`chain`](Self::chain);
/// - the currency: [`currency`](Self::currency), else the chain's default (USDC.e on mainnet,
///   pathUSD elsewhere), the chain being the one chosen or the one the node serves;
/// - the replay store: [`store`](Self::store), else an embedded SQLite file,
///   [`DEFAULT_STORE_PATH`] (`mpp-tempo.db` in the working directory), created if missing,
///   its path logged at `info` (feature `sqlite`, on by default). Several instances behind a
///   load balancer need a shared store instead: [`crate::store::PgStore`].
///
/// Addresses are accepted as strings or alloy [`Address`]es ([`IntoAddress`]); a malformed one
/// fails [`build`](Self::build) with the field's name and the expected form.
#[derive(Default)]
#[must_use]
pub struct TempoBuilder {
    rpc_url: Option<String>,
    chain: Option<TempoChain>,
    recipient: Option<Result<Address, AddressError>>,
    currency: Option<Result<Address, AddressError>>,
    decimals: Option<u8>,
    chain_id: Option<u64>,
    memo: Option<B256>,
    splits: Vec<Split>,
    supported_modes: Option<Vec<ChargeMode>>,
    sponsor: Option<Sponsor>,
    store: Option<Arc<dyn ReplayStore>>,
    root_certificates: Vec<Vec<u8>>,
    rpc_timeout: Option<Duration>,
    broadcast_timeout: Option<Duration>,
    maintenance_interval: Option<Duration>,
}

/// How often pending payments are resolved and expired claims purged, by default.
pub const DEFAULT_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(15);

impl std::fmt::Debug for TempoBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempoBuilder")
            .field("rpc_url", &self.rpc_url)
            .field("chain", &self.chain)
            .field("recipient", &self.recipient)
            .field("currency", &self.currency)
            .field("chain_id", &self.chain_id)
            .field("sponsor", &self.sponsor.as_ref().map(Sponsor::address))
            .field("root_certificates", &self.root_certificates.len())
            .finish_non_exhaustive()
    }
}

impl TempoBuilder {
    /// The node's JSON-RPC URL, `http://` or `https://` (default: the chosen
    /// [`chain`](Self::chain)'s public RPC). An https node must present a certificate that
    /// chains to a system root (`SSL_CERT_FILE` is honoured) or to a
    /// [`root_certificate`](Self::root_certificate).
    pub fn rpc_url(mut self, url: impl Into<String>) -> Self {
        self.rpc_url = Some(url.into());
        self
    }

    /// The network: sets the RPC URL (unless [`rpc_url`](Self::rpc_url) is given), the
    /// default currency, and the chain id the node must serve.
    pub fn chain(mut self, chain: TempoChain) -> Self {
        self.chain = Some(chain);
        self
    }

    /// Who gets paid (required): an [`Address`] or a `0x…` string.
    pub fn recipient(mut self, recipient: impl IntoAddress) -> Self {
        self.recipient = Some(recipient.into_address());
        self
    }

    /// The TIP-20 token charged (default: the chain's, see [`TempoChain::default_currency`];
    /// pathUSD on an unknown chain): an [`Address`] or a `0x…` string.
    pub fn currency(mut self, currency: impl IntoAddress) -> Self {
        self.currency = Some(currency.into_address());
        self
    }

    /// The token's decimals, for display prices (default 6).
    pub fn decimals(mut self, decimals: u8) -> Self {
        self.decimals = Some(decimals);
        self
    }

    /// The chain the node must serve; `build` fails if it serves another. Default: the
    /// chosen [`chain`](Self::chain)'s id, else whatever the node reports.
    pub fn chain_id(mut self, chain_id: u64) -> Self {
        self.chain_id = Some(chain_id);
        self
    }

    /// A fixed memo the primary transfer must carry (replaces the attribution memo rule).
    ///
    /// Without the attribution memo a mined transfer names no challenge, so whoever presents
    /// its hash first would be paid for (front-running): with a fixed memo, only pull
    /// credentials are offered unless [`supported_modes`](Self::supported_modes) says
    /// otherwise.
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

    /// Where replay keys are claimed. Default: the SQLite file [`DEFAULT_STORE_PATH`] (see
    /// the type's docs); required without the `sqlite` feature.
    pub fn store(mut self, store: Arc<dyn ReplayStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Also trusts the PEM certificate(s) in `pem` for an https node, besides the system
    /// roots: for a private CA or a self-signed node. May be called more than once.
    pub fn root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificates.push(pem.into());
        self
    }

    /// Timeout of each RPC call (default 5 s).
    pub fn rpc_timeout(mut self, timeout: Duration) -> Self {
        self.rpc_timeout = Some(timeout);
        self
    }

    /// Timeout of `eth_sendRawTransactionSync` (default 10 s). Past it, the transaction's
    /// outcome is looked up until it is mined or its `validBefore` passes.
    pub fn broadcast_timeout(mut self, timeout: Duration) -> Self {
        self.broadcast_timeout = Some(timeout);
        self
    }

    /// How often a background task resolves pending payments (sent transactions whose
    /// outcome was lost, also from before a restart) and purges expired claims (default
    /// [`DEFAULT_MAINTENANCE_INTERVAL`]; `Duration::ZERO` turns it off, e.g. when another
    /// process sharing the store does it). The task stops when the last clone of the
    /// [`Tempo`] is dropped.
    pub fn maintenance_interval(mut self, interval: Duration) -> Self {
        self.maintenance_interval = Some(interval);
        self
    }

    /// Checks the configuration, connects to the node and reads its chain id, once: every
    /// verification compares the request's chain with this one. Fails if the node serves
    /// another chain than the one configured. Opens the default store when none was given.
    pub async fn build(self) -> Result<Tempo, ChargeError> {
        let config = |what: String| ChargeError::Config(format!("Tempo::builder(): {what}"));
        let address = |field: &str, value: Option<Result<Address, AddressError>>| {
            value
                .transpose()
                .map_err(|e| config(format!("{field}: {e}")))
        };
        let recipient = address("recipient", self.recipient)?.ok_or_else(|| {
            config("recipient is required: .recipient(\"0x…\"), the address that gets paid".into())
        })?;
        let currency = address("currency", self.currency)?;
        let rpc_url = match (self.rpc_url, self.chain) {
            (Some(url), _) => url,
            (None, Some(chain)) => chain.rpc_url().to_owned(),
            (None, None) => {
                return Err(config(
                    "rpc_url is required: .rpc_url(\"https://…\"), or .chain(TempoChain::Moderato) \
                     for a known network's public RPC"
                        .into(),
                ));
            }
        };
        let roots: Vec<&[u8]> = self.root_certificates.iter().map(Vec::as_slice).collect();
        let chain = ChainClient::with_root_certificates(
            &rpc_url,
            self.rpc_timeout.unwrap_or(DEFAULT_RPC_TIMEOUT),
            &roots,
        )?;
        let node_chain_id = chain.chain_id().await?;
        let expected_chain_id = self.chain_id.or(self.chain.map(TempoChain::chain_id));
        if let Some(expected) = expected_chain_id
            && expected != node_chain_id
        {
            return Err(ChargeError::Config(format!(
                "the node at {rpc_url} serves chain {node_chain_id}, not {expected}"
            )));
        }
        let known_chain = self.chain.or(TempoChain::from_chain_id(node_chain_id));
        let currency = currency
            .or(known_chain.map(TempoChain::default_currency))
            .unwrap_or(PATH_USD);
        let (store, default_channels) = match self.store {
            Some(store) => (store, None),
            None => default_store().await?,
        };
        let supported_modes = self.supported_modes.or_else(|| {
            // The draft forbids hash credentials with feePayer, and a fixed memo makes a
            // pushed hash claimable by anyone: advertise pull only.
            (self.sponsor.is_some() || self.memo.is_some()).then(|| vec![ChargeMode::Pull])
        });
        tracing::info!(
            chain_id = node_chain_id,
            %recipient,
            %currency,
            "tempo method ready"
        );
        let tempo = Tempo {
            inner: Arc::new(Inner {
                chain,
                chain_id: node_chain_id,
                recipient,
                currency,
                decimals: self.decimals.unwrap_or(6),
                memo: self.memo,
                splits: self.splits,
                supported_modes,
                sponsor: self.sponsor,
                store,
                default_channels,
                broadcast_timeout: self.broadcast_timeout.unwrap_or(DEFAULT_BROADCAST_TIMEOUT),
                paid_for: PAID_CLAIM_RETENTION,
            }),
        };
        let interval = self
            .maintenance_interval
            .unwrap_or(DEFAULT_MAINTENANCE_INTERVAL);
        if !interval.is_zero() {
            spawn_maintenance(Arc::downgrade(&tempo.inner), interval);
        }
        Ok(tempo)
    }
}

/// How long the background resolver keeps a payment it settled redeemable: a day, far beyond
/// any challenge lifetime (the gate refuses the credential once its challenge has expired).
const PAID_CLAIM_RETENTION: time::Duration = time::Duration::days(1);

/// Resolves pending payments and purges expired claims every `interval`, until the method
/// is dropped.
fn spawn_maintenance(inner: std::sync::Weak<Inner>, interval: Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        // The first tick is immediate: pending payments from before a restart go first.
        loop {
            ticks.tick().await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            match resolve_pending(inner.store.as_ref(), &inner.chain, 256, inner.paid_for).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(resolved = n, "resolved pending payments"),
                Err(e) => tracing::warn!(reason = %e, "could not resolve pending payments"),
            }
            match inner.store.purge_expired().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(purged = n, "purged expired payment claims"),
                Err(e) => tracing::warn!(reason = %e, "could not purge expired payment claims"),
            }
        }
    });
}

/// The store used when none is configured: the SQLite file [`DEFAULT_STORE_PATH`].
#[cfg(feature = "sqlite")]
async fn default_store()
-> Result<(Arc<dyn ReplayStore>, Option<Arc<dyn ChannelStore>>), ChargeError> {
    let store = Arc::new(crate::store::SqliteStore::open(DEFAULT_STORE_PATH).await?);
    let shown = std::env::current_dir()
        .map(|dir| dir.join(DEFAULT_STORE_PATH))
        .unwrap_or_else(|_| DEFAULT_STORE_PATH.into());
    tracing::info!(
        path = %shown.display(),
        "tempo replay store: embedded SQLite (the default; set one with TempoBuilder::store)"
    );
    Ok((store.clone(), Some(store)))
}

/// Without the `sqlite` feature there is no embedded default.
#[cfg(not(feature = "sqlite"))]
async fn default_store()
-> Result<(Arc<dyn ReplayStore>, Option<Arc<dyn ChannelStore>>), ChargeError> {
    Err(ChargeError::Config(
        "Tempo::builder(): store is required: .store(..) (the embedded SQLite default needs \
         the `sqlite` feature)"
            .into(),
    ))
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
    /// The embedded default store, also a channel store (sessions use it unless given one).
    default_channels: Option<Arc<dyn ChannelStore>>,
    broadcast_timeout: Duration,
    /// How long a payment the resolver settled stays redeemable.
    paid_for: time::Duration,
}

/// The Tempo payment method (cheap to clone).
///
/// ```no_run
/// # async fn demo(store: std::sync::Arc<dyn mpp_tempo::store::ReplayStore>) -> Result<(), mpp_tempo::ChargeError> {
/// use mpp_tempo::Tempo;
/// let tempo = Tempo::builder()
///     .rpc_url("http://127.0.0.1:8545")
///     .recipient("0x742d35Cc6634C0532925a3b844Bc9e7595f8fE00")
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

    /// The fee payer, when sponsoring.
    pub(crate) fn sponsor(&self) -> Option<&Sponsor> {
        self.inner.sponsor.as_ref()
    }

    /// The replay store (also where sponsor budgets and leases live).
    pub(crate) fn replay_store(&self) -> Arc<dyn ReplayStore> {
        self.inner.store.clone()
    }

    /// The embedded default store as a channel store, when no store was configured.
    pub(crate) fn default_channel_store(&self) -> Option<Arc<dyn ChannelStore>> {
        self.inner.default_channels.clone()
    }

    /// How long a broadcast waits for the node's synchronous answer.
    pub(crate) fn broadcast_timeout(&self) -> Duration {
        self.inner.broadcast_timeout
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
    /// present) for `ctx`, and marks it used: the typed entry point for callers outside the
    /// payment gate. (Through the gate, [`Method::verify`] holds the payment and takes it only
    /// once the service has answered with success.)
    ///
    /// What the payment gate checks is not checked again: the challenge's HMAC binding, that
    /// `ctx.request` is this route's terms, and the challenge expiry. Payer faults and
    /// infrastructure faults are distinct [`ChargeError`]s; the payment is claimed before
    /// anything is broadcast.
    pub async fn verify_charge(
        &self,
        ctx: ChargeContext<'_>,
        source: Option<&str>,
        payload: &Value,
    ) -> Result<SettledCharge, ChargeError> {
        let (settled, mut settlement) = self.charge_verifier().verify(ctx, source, payload).await?;
        let taken = settlement.take().await;
        Settle::finish(Box::new(settlement), taken.is_ok()).await;
        taken.map(|()| settled)
    }

    fn charge_verifier(&self) -> ChargeVerifier<'_> {
        let i = &self.inner;
        ChargeVerifier {
            chain: &i.chain,
            chain_id: i.chain_id,
            store: &i.store,
            sponsor: i.sponsor.as_ref(),
            broadcast_timeout: i.broadcast_timeout,
        }
    }

    /// Resolves pending payments now (sent transactions whose outcome nobody learned, e.g.
    /// after a crash): mined → settled, so the same credential is served without a second
    /// charge; expired unmined or reverted → released. The method also does this in the
    /// background ([`TempoBuilder::maintenance_interval`]). Returns how many were resolved.
    pub async fn resolve_pending(&self) -> Result<usize, ChargeError> {
        let i = &self.inner;
        resolve_pending(i.store.as_ref(), &i.chain, 256, i.paid_for).await
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
            ChargeContext::new(&request, ChallengeView::from_verify_context(&ctx), ctx.now)
                .with_max_lifetime(ctx.max_lifetime);
        let (settled, settlement) = self
            .charge_verifier()
            .verify(charge, credential.source.as_deref(), &credential.payload)
            .await?;
        let mut receipt = Receipt::success(
            METHOD_NAME,
            settled.reference.clone(),
            format_timestamp(ctx.now),
        );
        receipt.external_id = settled.external_id.clone();
        Ok(Verified::serve(receipt)
            .with_payer(settled.payer_did().to_string())
            .with_amount(settled.amount)
            .with_decimals(self.inner.decimals)
            .settle_later(settlement))
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
            request.currency = parse_address(currency)
                .map_err(|e| MethodError::config(format!("currency: {e}")))?;
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
