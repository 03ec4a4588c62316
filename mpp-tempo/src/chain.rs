//! Access to a Tempo node over JSON-RPC, with a timeout on every call and the chain id cached.
//!
//! This sits below the intents: charge verification (and later sessions) call it and turn
//! its [`ChainError`] into their own errors. Errors are classified once, here.
//!
//! Reads (receipts, blocks, the chain id): a JSON-RPC error or a transport failure is
//! [`ChainError::Unavailable`], running out of time is [`ChainError::Timeout`].
//!
//! Simulations and estimates: a JSON-RPC error *response* means the node looked at the
//! transaction and would not run it ([`ChainError::Refused`]).
//!
//! Broadcasts ([`ChainClient::send_raw_sync`], [`ChainClient::send_raw`]): once the bytes may
//! have reached the node, only a definite refusal is [`ChainError::Refused`]; an answer that
//! leaves the transaction possibly in the pool is [`ChainError::Uncertain`]:
//!
//! | the node's (or the network's) answer | result |
//! |---|---|
//! | a receipt (sync) / the hash (async) | `Ok` |
//! | JSON-RPC error code 4 (EIP-7966: in the mempool, not processed in time) | `Uncertain` |
//! | JSON-RPC error saying "added to the mempool", "already known", "known transaction", "already imported", "timeout"/"timed out", or code -32603 (internal error) | `Uncertain` (async send: "already known"-like answers are `Ok`) |
//! | JSON-RPC error -32601 (method not found), -32005 or a "rate limit"/"too many requests" message: the request was not processed | `Unavailable` |
//! | any other JSON-RPC error (nonce too low, insufficient funds, invalid signature, intrinsic gas too low, expired `validBefore`, …) | `Refused` |
//! | the connection could not be opened (refused, DNS, TLS handshake): nothing was sent | `Unavailable` |
//! | our own timeout, a dropped connection, an HTTP error status, an unreadable answer | `Uncertain` |
//!
//! Error texts never contain the RPC URL (which may carry an API key): reqwest's
//! `for url (…)` suffix is removed.

use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use alloy::consensus::BlockHeader;
use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::client::RpcClient;
use alloy::transports::{RpcError, TransportError};
use serde_json::{Value, json};
use tempo_alloy::TempoNetwork;
use tempo_alloy::rpc::{TempoTransactionReceipt, TempoTransactionRequest};
use tempo_primitives::transaction::TempoTransaction;
use tokio::sync::OnceCell;

/// Default timeout of one RPC call.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// Default timeout of `eth_sendRawTransactionSync` (Tempo finality is about 0.5 s).
pub const DEFAULT_BROADCAST_TIMEOUT: Duration = Duration::from_secs(10);

/// A JSON-RPC client for one Tempo node, over http or https (rustls).
#[derive(Debug, Clone)]
pub struct ChainClient {
    provider: RootProvider<TempoNetwork>,
    rpc_timeout: Duration,
    chain_id: Arc<OnceCell<u64>>,
    /// Set once the node answered `tempo_simulateV1` with "method not found".
    no_tempo_simulate: Arc<AtomicBool>,
}

/// Why a call to the node failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The node could not be reached, or answered with a transport error or an unexpected
    /// shape (an infrastructure fault).
    #[error("tempo node unavailable: {0}")]
    Unavailable(String),
    /// A read or a simulation did not finish in time (an infrastructure fault). A broadcast
    /// that runs out of time is [`ChainError::Uncertain`] instead.
    #[error("tempo node timed out: {0}")]
    Timeout(String),
    /// The node looked at a transaction we simulated or sent and refused it (it is invalid or
    /// reverts): the node's message. A refused broadcast is not in the node's pool.
    #[error("the tempo node refused the transaction: {0}")]
    Refused(String),
    /// A transaction was (or may have been) handed to the node, and the outcome is unknown:
    /// the answer was lost (timeout, dropped connection, an HTTP error from a proxy, an
    /// unreadable answer), or the node said it holds the transaction without having mined it
    /// (EIP-7966 code 4, "already known").
    ///
    /// The transaction may be in the pool and may still be mined, until its `validBefore`
    /// (with no limit when it has none). Treat it as pending: look for its receipt, or
    /// rebroadcast the same bytes with [`ChainClient::send_raw`]; never as refused, and never
    /// as "nothing was charged".
    #[error("tempo node: the broadcast outcome is unknown: {0}")]
    Uncertain(String),
    /// The client's own configuration is unusable (e.g. a malformed RPC URL).
    #[error("tempo node misconfigured: {0}")]
    Config(String),
}

impl ChainClient {
    /// A client for `rpc_url` (`http://` or `https://`). An https node's certificate must
    /// chain to a system root (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured).
    pub fn new(rpc_url: &str, rpc_timeout: Duration) -> Result<Self, ChainError> {
        Self::with_root_certificates(rpc_url, rpc_timeout, &[])
    }

    /// Like [`ChainClient::new`], also trusting the PEM certificates in `extra_roots_pem`
    /// (each entry one or more `-----BEGIN CERTIFICATE-----` blocks): for a node behind a
    /// private CA or a self-signed certificate.
    pub fn with_root_certificates(
        rpc_url: &str,
        rpc_timeout: Duration,
        extra_roots_pem: &[&[u8]],
    ) -> Result<Self, ChainError> {
        let url = parse_rpc_url(rpc_url)?;
        let mut roots = Vec::new();
        for (i, pem) in extra_roots_pem.iter().enumerate() {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                ChainError::Config(format!(
                    "root certificate {i}: expected PEM certificates: {}",
                    error_chain(&e)
                ))
            })?;
            if certs.is_empty() {
                return Err(ChainError::Config(format!(
                    "root certificate {i}: no `-----BEGIN CERTIFICATE-----` block found"
                )));
            }
            roots.extend(certs);
        }
        // Our own reqwest client (not alloy's default) so that the extra roots are used; the
        // system roots stay trusted as well.
        let http = reqwest::Client::builder()
            .tls_certs_merge(roots)
            .build()
            .map_err(|e| {
                ChainError::Config(format!(
                    "cannot set up the HTTP client: {}",
                    error_chain(&e)
                ))
            })?;
        let client = RpcClient::new_http_with_client(http, url);
        Ok(Self {
            provider: RootProvider::<TempoNetwork>::new(client),
            rpc_timeout,
            chain_id: Default::default(),
            no_tempo_simulate: Default::default(),
        })
    }

    /// The underlying alloy provider (for callers that need more than this wrapper offers).
    pub fn provider(&self) -> &RootProvider<TempoNetwork> {
        &self.provider
    }

    /// The per-call timeout.
    pub fn rpc_timeout(&self) -> Duration {
        self.rpc_timeout
    }

    async fn timed<T>(
        &self,
        what: &str,
        timeout: Duration,
        fut: impl IntoFuture<Output = Result<T, TransportError>>,
    ) -> Result<Result<T, TransportError>, ChainError> {
        tokio::time::timeout(timeout, fut.into_future())
            .await
            .map_err(|_| ChainError::Timeout(format!("{what} took longer than {timeout:?}")))
    }

    /// `eth_chainId`, fetched once and cached (a node does not change chains).
    pub async fn chain_id(&self) -> Result<u64, ChainError> {
        self.chain_id
            .get_or_try_init(|| async {
                self.timed(
                    "eth_chainId",
                    self.rpc_timeout,
                    self.provider.get_chain_id(),
                )
                .await?
                .map_err(|e| unavailable("eth_chainId", e))
            })
            .await
            .copied()
    }

    /// `eth_getTransactionReceipt`; `None` when the node does not know the transaction.
    pub async fn receipt(&self, hash: B256) -> Result<Option<TempoTransactionReceipt>, ChainError> {
        self.timed(
            "eth_getTransactionReceipt",
            self.rpc_timeout,
            self.provider.get_transaction_receipt(hash),
        )
        .await?
        .map_err(|e| unavailable("eth_getTransactionReceipt", e))
    }

    /// Simulates the calls of a Tempo transaction from `from`, in order, on top of the latest
    /// block: [`ChainError::Refused`] when any call would revert; `Ok` is the gas the calls
    /// used together (0 when only `eth_call` was available), without the transaction's
    /// intrinsic cost.
    ///
    /// Uses `eth_simulateV1` with one call per batch entry (state carries over between
    /// them), because anvil's `eth_call` ignores the `calls` of a Tempo request and reports
    /// success for anything. A node without `eth_simulateV1` gets `eth_call` of the whole
    /// transaction instead (what mppx does).
    pub(crate) async fn simulate(
        &self,
        from: Address,
        tx: &TempoTransaction,
    ) -> Result<u64, ChainError> {
        let calls: Vec<Value> = tx
            .calls
            .iter()
            .map(|c| {
                json!({
                    "from": from,
                    "to": c.to.to(),
                    "input": c.input,
                    "value": c.value,
                })
            })
            .collect();
        let payload = json!({"blockStateCalls": [{"calls": calls}]});
        let simulated = self
            .timed(
                "eth_simulateV1",
                self.rpc_timeout,
                self.provider
                    .raw_request::<_, Value>("eth_simulateV1".into(), (payload, "latest")),
            )
            .await?;
        match simulated {
            Ok(result) => {
                let Some(results) = result.pointer("/0/calls").and_then(Value::as_array) else {
                    return Err(ChainError::Unavailable(
                        "eth_simulateV1 returned an unexpected shape".into(),
                    ));
                };
                if results.len() != tx.calls.len() {
                    return Err(ChainError::Unavailable(
                        "eth_simulateV1 returned the wrong number of results".into(),
                    ));
                }
                for (i, call) in results.iter().enumerate() {
                    if call.get("status").and_then(Value::as_str) != Some("0x1") {
                        let why = call
                            .pointer("/error/message")
                            .and_then(Value::as_str)
                            .unwrap_or("reverted");
                        let data = call.get("returnData").and_then(Value::as_str).unwrap_or("");
                        return Err(ChainError::Refused(format!("call {i}: {why} {data}")));
                    }
                }
                Ok(results
                    .iter()
                    .filter_map(|call| call.get("gasUsed").and_then(Value::as_str))
                    .filter_map(|gas| u64::from_str_radix(gas.trim_start_matches("0x"), 16).ok())
                    .fold(0u64, u64::saturating_add))
            }
            Err(RpcError::ErrorResp(e)) => {
                tracing::debug!(reason = %e.message, "eth_simulateV1 unavailable; using eth_call");
                let mut request = TempoTransactionRequest::from(tx.clone());
                request.inner.from = Some(from);
                match self
                    .timed("eth_call", self.rpc_timeout, self.provider.call(request))
                    .await?
                {
                    Ok(_) => Ok(0),
                    Err(e) => Err(refusal("eth_call", e)),
                }
            }
            Err(e) => Err(unavailable("eth_simulateV1", e)),
        }
    }

    /// Broadcasts a signed transaction (its EIP-2718 bytes) with `eth_sendRawTransactionSync`
    /// and waits at most `timeout` for its receipt (Tempo finality is about 0.5 s).
    ///
    /// `Ok` is the receipt of the mined transaction, which may have reverted (check its
    /// status). [`ChainError::Refused`] is a definite refusal (the transaction is not in the
    /// pool). Every other failure after the request may have left this process is
    /// [`ChainError::Uncertain`]: no answer within `timeout`, the node's EIP-7966 timeout error
    /// (code 4), "already known", a lost connection, an HTTP error. Only a connection that
    /// could not be opened at all is [`ChainError::Unavailable`]. The module docs have the
    /// whole table.
    pub async fn send_raw_sync(
        &self,
        raw: &[u8],
        timeout: Duration,
    ) -> Result<TempoTransactionReceipt, ChainError> {
        const WHAT: &str = "eth_sendRawTransactionSync";
        let hash = keccak256(raw);
        match tokio::time::timeout(timeout, self.provider.send_raw_transaction_sync(raw)).await {
            Err(_) => Err(ChainError::Uncertain(format!(
                "{WHAT} of {hash}: no answer within {timeout:?}"
            ))),
            Ok(Ok(receipt)) => Ok(receipt),
            Ok(Err(e)) => Err(broadcast_failure(WHAT, hash, e)),
        }
    }

    /// Broadcasts a signed transaction with `eth_sendRawTransaction` and returns its hash at
    /// once, without waiting for it to be mined: to rebroadcast the identical bytes of a
    /// transaction whose earlier broadcast was [`ChainError::Uncertain`].
    ///
    /// A node that already holds the transaction ("already known", "known transaction",
    /// "already imported") counts as success. A node that has already *mined* it may answer
    /// with the hash (anvil does) or refuse it as a used nonce: look for the receipt before
    /// concluding anything from a refusal. Failures are classified like
    /// [`ChainClient::send_raw_sync`]'s, with the client's RPC timeout.
    pub async fn send_raw(&self, raw: &[u8]) -> Result<B256, ChainError> {
        const WHAT: &str = "eth_sendRawTransaction";
        let hash = keccak256(raw);
        let sent = self
            .provider
            .raw_request::<_, B256>(WHAT.into(), (alloy::hex::encode_prefixed(raw),));
        match tokio::time::timeout(self.rpc_timeout, sent).await {
            Err(_) => Err(ChainError::Uncertain(format!(
                "{WHAT} of {hash}: no answer within {:?}",
                self.rpc_timeout
            ))),
            Ok(Ok(node_hash)) => Ok(node_hash),
            Ok(Err(RpcError::ErrorResp(e))) if already_known(&e.message) => Ok(hash),
            Ok(Err(e)) => Err(broadcast_failure(WHAT, hash, e)),
        }
    }

    /// The gas `tx`, sent by `from`, needs on top of the latest block: the very transaction
    /// (its calls in order, fee token, nonce key and nonce, `validBefore`/`validAfter`, fee
    /// payer signature), not only its calls. A sponsor compares the answer with
    /// `tx.gas_limit` to turn away a transaction signed with too little gas, which would be
    /// mined, revert, and still cost the fee payer its fee.
    ///
    /// `fee_payer` says who pays the fee. `None`: the sender; the fee fields stay in the
    /// request, and `eth_estimateGas` also checks that the sender can pay
    /// `gas × maxFeePerGas` in its fee token. `Some(sponsor)`: the fee fields are left out, so
    /// the sender's fee balance is not checked (the sponsor's budget is the caller's
    /// business; a co-signed transaction's fee payer signature stays in the request).
    ///
    /// Asks `tempo_simulateV1` first (`validation: false`, so no fee balance check): the
    /// transaction runs with its own gas limit (when set), a failing run (out of gas
    /// included) is [`ChainError::Refused`], and the answer is the gas it used. When the node lacks that method (anvil: -32601, remembered) or answers it
    /// with an error, `eth_estimateGas` decides, with no gas cap, so its answer can exceed
    /// `tx.gas_limit`; any JSON-RPC error answer to it (it would revert, the sender cannot
    /// pay, `validBefore` too far) is [`ChainError::Refused`].
    ///
    /// anvil 1.7.1 estimates only the *last* call of a batch (it ignores `calls` and runs the
    /// request's `to`/`input`, where the last call is placed), so on anvil a batch of several
    /// calls is underestimated, or refused when an earlier call prepares the last (approve,
    /// then open); a Tempo node runs the whole batch. Whether a sponsored transaction's gas
    /// limit covers all its calls is `gas_check`'s question, not this one's.
    pub async fn estimate_gas(
        &self,
        from: Address,
        tx: &TempoTransaction,
        fee_payer: Option<Address>,
    ) -> Result<u64, ChainError> {
        let mut request = estimate_request(from, tx, fee_payer)?;
        request.inner.gas = (tx.gas_limit > 0).then_some(tx.gas_limit);
        if let Some(gas) = self.tempo_simulate_gas(&request).await? {
            return Ok(gas);
        }
        request.inner.gas = None;
        self.eth_estimate_gas(request).await
    }

    /// `eth_estimateGas` of `request` (no gas cap): any JSON-RPC error answer is
    /// [`ChainError::Refused`].
    async fn eth_estimate_gas(&self, request: TempoTransactionRequest) -> Result<u64, ChainError> {
        match self
            .timed(
                "eth_estimateGas",
                self.rpc_timeout,
                self.provider.estimate_gas(request),
            )
            .await?
        {
            Ok(gas) => Ok(gas),
            Err(e) => Err(refusal("eth_estimateGas", e)),
        }
    }

    /// Whether `tx`, sent by `from` (with `fee_payer` paying the fee, as in
    /// [`ChainClient::estimate_gas`]), runs all its calls within its own gas limit on top of
    /// the latest block. A sponsor co-signs only on [`GasCheck::Covered`]: a transaction that
    /// runs out of gas is mined, reverts, and still costs the fee payer its fee.
    ///
    /// * One call: the estimate of the very transaction ([`ChainClient::estimate_gas`])
    ///   against its gas limit.
    /// * Several calls, on a node with `tempo_simulateV1`: the very transaction run with its
    ///   own gas limit; success is [`GasCheck::Covered`], a failing run (out of gas included)
    ///   [`ChainError::Refused`].
    /// * Several calls, without it (anvil, whose `eth_estimateGas` runs only the *last* call of
    ///   a batch, so its estimate is no bound): the bound is built from parts that each ran
    ///   with a gas limit, see [`ChainClient::batch_gas_check`]. When they cannot show that the
    ///   gas limit covers the batch, the answer is [`GasCheck::Unproven`]; never a check
    ///   without the gas limit.
    ///
    /// [`ChainError::Refused`] when a call would fail whatever its gas (the node's text).
    pub(crate) async fn gas_check(
        &self,
        from: Address,
        tx: &TempoTransaction,
        fee_payer: Option<Address>,
    ) -> Result<GasCheck, ChainError> {
        if tx.calls.len() <= 1 {
            let needed = self.estimate_gas(from, tx, fee_payer).await?;
            return Ok(if tx.gas_limit >= needed {
                GasCheck::Covered { needed }
            } else {
                GasCheck::Short { needed }
            });
        }
        let mut request = estimate_request(from, tx, fee_payer)?;
        request.inner.gas = Some(tx.gas_limit);
        if let Some(used) = self.tempo_simulate_gas(&request).await? {
            return Ok(GasCheck::Covered { needed: used });
        }
        self.batch_gas_check(from, tx, fee_payer).await
    }

    /// Test support: [`ChainClient::gas_check`] as public types. `Ok(Ok(needed))`: the
    /// transaction's gas limit is proven to cover all its calls (`needed` is what it is
    /// estimated to use); `Ok(Err(Some(needed)))`: its gas limit is below the `needed` it is
    /// estimated to need; `Ok(Err(None))`: it could not be proven either way.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub async fn sponsored_gas_check(
        &self,
        from: Address,
        tx: &TempoTransaction,
        fee_payer: Address,
    ) -> Result<Result<u64, Option<u64>>, ChainError> {
        Ok(match self.gas_check(from, tx, Some(fee_payer)).await? {
            GasCheck::Covered { needed } => Ok(needed),
            GasCheck::Short { needed } => Err(Some(needed)),
            GasCheck::Unproven => Err(None),
        })
    }

    /// [`ChainClient::gas_check`] of a batch on a node without `tempo_simulateV1`, from parts
    /// that each ran with a gas limit:
    ///
    /// 1. `first`: `eth_estimateGas` of the very transaction cut down to its first call. It
    ///    covers what the whole transaction pays once (the 21,000 base, the signatures, the
    ///    nonce, new-account costs) and the first call, which runs on the latest state
    ///    exactly as in the batch. (An estimate is the least gas limit the node found to
    ///    succeed, not gas used.)
    /// 2. The calls run in order with `eth_simulateV1` (each a transaction of its own from
    ///    `from`, state carried over), followed by an empty call to an address without code:
    ///    every call must succeed, and the empty call's gas is what a lone transaction pays
    ///    before it runs anything, beyond calldata (271,000 on anvil 1.7.1, T4, whatever the
    ///    sender's nonce). It comes last, so a cost that falls as the sender's transactions
    ///    add up is at its lowest there. Call `i` (from the second on) is counted as its gas
    ///    used less that overhead over 21,000 (`extra`), so what it keeps is at least 21,000
    ///    (more than the 2,600 account access a batch charges per call) plus its calldata and
    ///    its execution. `needed = first + Σ (usedᵢ − extra)`, and `gasLimit < needed` is
    ///    [`GasCheck::Short`].
    /// 3. Gas used is not a gas limit (refunds, the 63/64 rule in nested calls), so the calls
    ///    run in order once more, each from the second on with a gas limit `gᵢ`: its gas used
    ///    plus a share of the slack `gasLimit − needed`, so that
    ///    `first + Σ (gᵢ − extra) ≤ gasLimit`. If they all succeed, each call `i` runs within
    ///    `gᵢ − extra` beyond the overhead a batch also pays, and in a batch a call gets all
    ///    the gas the calls before it left (it runs at least as cheaply there: the accounts
    ///    and slots earlier calls touched are warm): [`GasCheck::Covered`]. If one runs out,
    ///    [`GasCheck::Unproven`].
    async fn batch_gas_check(
        &self,
        from: Address,
        tx: &TempoTransaction,
        fee_payer: Option<Address>,
    ) -> Result<GasCheck, ChainError> {
        let mut first_only = tx.clone();
        first_only.calls.truncate(1);
        let mut request = estimate_request(from, &first_only, fee_payer)?;
        request.inner.gas = None;
        let first = self.eth_estimate_gas(request).await?;

        let unlimited = vec![None; tx.calls.len()];
        let Some(used) = self.simulate_in_order(from, tx, &unlimited, true).await? else {
            return Ok(GasCheck::Unproven);
        };
        let (calls_used, overhead) = used.split_at(tx.calls.len());
        if let Some((i, Err(why))) = calls_used.iter().enumerate().find(|(_, c)| c.is_err()) {
            return Err(ChainError::Refused(format!("call {i}: {why}")));
        }
        let Some(Ok(overhead)) = overhead.first().cloned() else {
            // The empty call failed: there is nothing to measure the overhead with.
            tracing::debug!("eth_simulateV1 of an empty call failed; the batch's gas is unproven");
            return Ok(GasCheck::Unproven);
        };
        let extra = overhead.saturating_sub(TX_BASE_GAS);
        let used: Vec<u64> = calls_used.iter().filter_map(|c| c.clone().ok()).collect();
        let rest = &used[1..];
        let needed = rest
            .iter()
            .map(|u| u.saturating_sub(extra))
            .fold(first, u64::saturating_add);
        if tx.gas_limit < needed {
            return Ok(GasCheck::Short { needed });
        }
        let slack = u128::from(tx.gas_limit - needed);
        let rest_total: u128 = rest.iter().map(|u| u128::from(*u)).sum::<u128>().max(1);
        let mut limits = vec![None];
        for u in rest {
            // Each call's share of the slack, proportional to its gas (Σ shares ≤ slack).
            let share = slack * u128::from(*u) / rest_total;
            limits.push(Some(
                u.saturating_add(u64::try_from(share).unwrap_or(u64::MAX)),
            ));
        }
        let Some(proof) = self.simulate_in_order(from, tx, &limits, false).await? else {
            return Ok(GasCheck::Unproven);
        };
        if let Some((i, Err(why))) = proof.iter().enumerate().find(|(_, c)| c.is_err()) {
            tracing::info!(
                call = i,
                reason = %why,
                gas_limit = tx.gas_limit,
                needed,
                "a batch call failed within its share of the gas limit; its gas is unproven"
            );
            return Ok(GasCheck::Unproven);
        }
        Ok(GasCheck::Covered { needed })
    }

    /// `eth_simulateV1` of `tx`'s calls from `from`, in order on top of the latest block,
    /// call `i` with gas limit `gas[i]` (`None`: the node's default), and with
    /// `empty_call`, one more call with no data to an address without code. `Ok(None)` when
    /// the node does not have the method; else per call its gas used, or why it failed.
    async fn simulate_in_order(
        &self,
        from: Address,
        tx: &TempoTransaction,
        gas: &[Option<u64>],
        empty_call: bool,
    ) -> Result<Option<Vec<Result<u64, String>>>, ChainError> {
        const WHAT: &str = "eth_simulateV1";
        let mut calls: Vec<Value> = tx
            .calls
            .iter()
            .zip(gas)
            .map(|(c, gas)| {
                let mut call = json!({
                    "from": from,
                    "to": c.to.to(),
                    "input": c.input,
                    "value": c.value,
                });
                if let Some(gas) = gas {
                    call["gas"] = json!(format!("{gas:#x}"));
                }
                call
            })
            .collect();
        let mut block = json!({});
        if empty_call {
            calls.push(json!({"from": from, "to": EMPTY_ACCOUNT, "input": "0x"}));
            // Whatever the chain holds there, the empty call runs no code.
            block["stateOverrides"] = json!({ EMPTY_ACCOUNT.to_string(): {"code": "0x"} });
        }
        let expected = calls.len();
        block["calls"] = Value::Array(calls);
        let payload = json!({"blockStateCalls": [block]});
        let answer = self
            .timed(
                WHAT,
                self.rpc_timeout,
                self.provider
                    .raw_request::<_, Value>(WHAT.into(), (payload, "latest")),
            )
            .await?;
        let result = match answer {
            Ok(result) => result,
            Err(RpcError::ErrorResp(e)) => {
                tracing::debug!(code = e.code, reason = %e.message, "{WHAT} unavailable");
                return Ok(None);
            }
            Err(e) => return Err(unavailable(WHAT, e)),
        };
        let shape = || ChainError::Unavailable(format!("{WHAT} returned an unexpected shape"));
        let results = result
            .pointer("/0/calls")
            .and_then(Value::as_array)
            .ok_or_else(shape)?;
        if results.len() != expected {
            return Err(shape());
        }
        results
            .iter()
            .map(|call| {
                if call.get("status").and_then(Value::as_str) == Some("0x1") {
                    call.get("gasUsed")
                        .and_then(Value::as_str)
                        .and_then(|g| u64::from_str_radix(g.trim_start_matches("0x"), 16).ok())
                        .map(Ok)
                        .ok_or_else(shape)
                } else {
                    let why = call
                        .pointer("/error/message")
                        .and_then(Value::as_str)
                        .unwrap_or("reverted");
                    let data = call.get("returnData").and_then(Value::as_str).unwrap_or("");
                    Ok(Err(format!("{why} {data}").trim_end().to_owned()))
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// `tempo_simulateV1` of one request: `Ok(None)` when the node does not have the method.
    async fn tempo_simulate_gas(
        &self,
        request: &TempoTransactionRequest,
    ) -> Result<Option<u64>, ChainError> {
        const WHAT: &str = "tempo_simulateV1";
        /// JSON-RPC "method not found".
        const METHOD_NOT_FOUND: i64 = -32601;
        if self.no_tempo_simulate.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let payload = json!({
            "blockStateCalls": [{"calls": [request]}],
            "validation": false,
            "traceTransfers": false,
            "returnFullTransactions": false,
        });
        let answer = self
            .timed(
                WHAT,
                self.rpc_timeout,
                self.provider
                    .raw_request::<_, Value>(WHAT.into(), (payload,)),
            )
            .await?;
        match answer {
            Ok(result) => simulated_gas(&result).map(Some),
            Err(RpcError::ErrorResp(e)) => {
                // Not a verdict: the node may lack the method, or read the request otherwise.
                // eth_estimateGas decides.
                tracing::debug!(code = e.code, reason = %e.message, "{WHAT} failed; using eth_estimateGas");
                if e.code == METHOD_NOT_FOUND {
                    self.no_tempo_simulate.store(true, Ordering::Relaxed);
                }
                Ok(None)
            }
            Err(e) => Err(unavailable(WHAT, e)),
        }
    }

    /// The TIP-20 `token` balance of `owner`, in base units.
    pub async fn token_balance(&self, token: Address, owner: Address) -> Result<U256, ChainError> {
        let contract = tempo_alloy::contracts::precompiles::ITIP20::new(token, &self.provider);
        let timeout = self.rpc_timeout;
        match tokio::time::timeout(timeout, contract.balanceOf(owner).call()).await {
            Ok(Ok(balance)) => Ok(balance),
            Ok(Err(e)) => Err(ChainError::Unavailable(format!(
                "balanceOf: {}",
                error_chain(&e)
            ))),
            Err(_) => Err(ChainError::Timeout(format!(
                "balanceOf took longer than {timeout:?}"
            ))),
        }
    }

    /// `eth_call` of `input` on `to` at the latest block: the returned bytes. A revert is
    /// [`ChainError::Refused`] (with the node's message); anything else that fails is an
    /// infrastructure fault.
    pub async fn call(&self, to: Address, input: Bytes) -> Result<Bytes, ChainError> {
        let mut request = TempoTransactionRequest::default();
        request.inner.to = Some(alloy::primitives::TxKind::Call(to));
        request.inner.input = input.into();
        match self
            .timed("eth_call", self.rpc_timeout, self.provider.call(request))
            .await?
        {
            Ok(output) => Ok(output),
            Err(e) => Err(refusal("eth_call", e)),
        }
    }

    /// `eth_getCode`: the runtime code at `address` (empty for an account without code).
    pub async fn code(&self, address: Address) -> Result<Bytes, ChainError> {
        self.timed(
            "eth_getCode",
            self.rpc_timeout,
            self.provider.get_code_at(address),
        )
        .await?
        .map_err(|e| unavailable("eth_getCode", e))
    }

    /// `eth_blockNumber`.
    pub async fn block_number(&self) -> Result<u64, ChainError> {
        self.timed(
            "eth_blockNumber",
            self.rpc_timeout,
            self.provider.get_block_number(),
        )
        .await?
        .map_err(|e| unavailable("eth_blockNumber", e))
    }

    /// `eth_getLogs` of `address` with first topic `topic0`, blocks `from..=to`.
    pub async fn logs(
        &self,
        address: Address,
        topic0: B256,
        from: u64,
        to: u64,
    ) -> Result<Vec<alloy::rpc::types::Log>, ChainError> {
        let filter = alloy::rpc::types::Filter::new()
            .address(address)
            .event_signature(topic0)
            .from_block(from)
            .to_block(to);
        self.timed(
            "eth_getLogs",
            self.rpc_timeout,
            self.provider.get_logs(&filter),
        )
        .await?
        .map_err(|e| unavailable("eth_getLogs", e))
    }

    /// A `maxFeePerGas` for a transaction sent now: 20 % over `eth_gasPrice` (as viem does:
    /// enough for the next block, small enough for a sponsor's gas budget), at least 1 gwei.
    pub async fn suggested_max_fee_per_gas(&self) -> Result<u128, ChainError> {
        Ok((self.gas_price().await?.saturating_mul(6) / 5).max(1_000_000_000))
    }

    /// `eth_gasPrice`, in attodollars per gas.
    pub async fn gas_price(&self) -> Result<u128, ChainError> {
        self.timed(
            "eth_gasPrice",
            self.rpc_timeout,
            self.provider.get_gas_price(),
        )
        .await?
        .map_err(|e| unavailable("eth_gasPrice", e))
    }

    /// The timestamp (unix seconds) of the latest block: the node's clock, which decides
    /// whether a `validBefore` has passed.
    pub async fn latest_block_timestamp(&self) -> Result<u64, ChainError> {
        self.block_timestamp_at(BlockNumberOrTag::Latest).await
    }

    /// The timestamp (unix seconds) of block `number`; [`ChainError::Unavailable`] when the
    /// node does not know that block (yet).
    pub async fn block_timestamp(&self, number: u64) -> Result<u64, ChainError> {
        self.block_timestamp_at(BlockNumberOrTag::Number(number))
            .await
    }

    async fn block_timestamp_at(&self, block: BlockNumberOrTag) -> Result<u64, ChainError> {
        const WHAT: &str = "eth_getBlockByNumber";
        let found = self
            .timed(
                WHAT,
                self.rpc_timeout,
                self.provider.get_block_by_number(block),
            )
            .await?
            .map_err(|e| unavailable(WHAT, e))?;
        match found {
            Some(found) => Ok(found.header.timestamp()),
            None => Err(ChainError::Unavailable(match block {
                BlockNumberOrTag::Number(n) => format!("{WHAT}: the node does not know block {n}"),
                other => format!("{WHAT}: the node has no `{other}` block"),
            })),
        }
    }
}

/// What [`ChainClient::gas_check`] found about a transaction's gas limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GasCheck {
    /// Its gas limit is proven to cover all its calls; `needed` is what it is estimated to
    /// use.
    Covered {
        /// The estimate.
        needed: u64,
    },
    /// Its gas limit is below the `needed` it is estimated to need.
    Short {
        /// The estimate.
        needed: u64,
    },
    /// Its calls succeed, but they could not be shown to fit in its gas limit (a batch on a
    /// node without `tempo_simulateV1`).
    Unproven,
}

/// What every transaction pays before it runs (the yellow paper's `G_transaction`).
const TX_BASE_GAS: u64 = 21_000;

/// An address used as the target of an empty call, its code overridden to none.
const EMPTY_ACCOUNT: Address =
    alloy::primitives::address!("00000000000000000000000000000000000e0e0e");

/// The request [`ChainClient::estimate_gas`] asks about: `tx` from `from`, the last call in
/// `to`/`value`/`input` (a node builds the batch as `calls ++ [to call]`, and reads a
/// request without `to` as a contract creation), and without fee fields when `fee_payer`
/// pays. The gas limit is the caller's to set.
fn estimate_request(
    from: Address,
    tx: &TempoTransaction,
    fee_payer: Option<Address>,
) -> Result<TempoTransactionRequest, ChainError> {
    let mut request = TempoTransactionRequest::from(tx.clone());
    request.inner.from = Some(from);
    let Some(last) = request.calls.pop() else {
        return Err(ChainError::Refused("the transaction has no calls".into()));
    };
    request.inner.to = Some(last.to);
    request.inner.value = Some(last.value);
    request.inner.input = last.input.into();
    if fee_payer.is_some() {
        request.inner.max_fee_per_gas = None;
        request.inner.max_priority_fee_per_gas = None;
        request.inner.gas_price = None;
    }
    Ok(request)
}

/// The gas used by the one call of a `tempo_simulateV1` answer, or why it would fail.
fn simulated_gas(result: &Value) -> Result<u64, ChainError> {
    let shape = || ChainError::Unavailable("tempo_simulateV1 returned an unexpected shape".into());
    let call = result.pointer("/blocks/0/calls/0").ok_or_else(shape)?;
    let succeeded = match call.get("status") {
        Some(Value::String(s)) => s == "0x1",
        Some(Value::Bool(b)) => *b,
        _ => return Err(shape()),
    };
    if !succeeded {
        let why = call
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("reverted");
        let data = call.get("returnData").and_then(Value::as_str).unwrap_or("");
        return Err(ChainError::Refused(
            format!("{why} {data}").trim_end().to_owned(),
        ));
    }
    call.get("gasUsed")
        .and_then(Value::as_str)
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .ok_or_else(shape)
}

/// What a JSON-RPC error answer to a broadcast says about the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BroadcastVerdict {
    /// The node may hold it (and may mine it).
    Pending,
    /// The request was not processed (no such method, rate limited): nothing was decided.
    NotProcessed,
    /// The node refused the transaction.
    Refused,
}

/// Classifies a JSON-RPC error answer to `eth_sendRawTransaction[Sync]` (see the module docs).
fn broadcast_verdict(code: i64, message: &str) -> BroadcastVerdict {
    /// EIP-7966: "added to the mempool but not processed within the timeout".
    const EIP7966_TIMEOUT: i64 = 4;
    const INTERNAL_ERROR: i64 = -32603;
    const METHOD_NOT_FOUND: i64 = -32601;
    /// EIP-1474 "limit exceeded" (rate limits at providers).
    const LIMIT_EXCEEDED: i64 = -32005;
    let message = message.to_ascii_lowercase();
    let says = |needles: &[&str]| needles.iter().any(|n| message.contains(n));
    if code == EIP7966_TIMEOUT
        || code == INTERNAL_ERROR
        || already_known(&message)
        || says(&["added to the mempool", "timeout", "timed out"])
    {
        BroadcastVerdict::Pending
    } else if code == METHOD_NOT_FOUND
        || code == LIMIT_EXCEEDED
        || says(&["rate limit", "too many requests"])
    {
        BroadcastVerdict::NotProcessed
    } else {
        BroadcastVerdict::Refused
    }
}

/// The node already holds this very transaction (geth/reth "already known", older geth
/// "known transaction", anvil "transaction already imported").
fn already_known(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    // "known transaction" as a phrase of its own: not "unknown transaction type".
    let known_transaction = message.match_indices("known transaction").any(|(i, _)| {
        !message[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphabetic())
    });
    known_transaction || message.contains("already known") || message.contains("already imported")
}

/// A failed broadcast of the transaction `hash` (see the module docs' table).
fn broadcast_failure(what: &str, hash: B256, e: TransportError) -> ChainError {
    match e {
        RpcError::ErrorResp(payload) => {
            let answer = format!("code {}: {}", payload.code, payload.message);
            match broadcast_verdict(payload.code, &payload.message) {
                BroadcastVerdict::Pending => ChainError::Uncertain(format!(
                    "{what} of {hash}: the node may hold the transaction: {answer}"
                )),
                BroadcastVerdict::NotProcessed => {
                    ChainError::Unavailable(format!("{what}: {answer}"))
                }
                BroadcastVerdict::Refused => ChainError::Refused(payload.message.to_string()),
            }
        }
        other if never_sent(&other) => unavailable(what, other),
        other => ChainError::Uncertain(format!("{what} of {hash}: {}", error_chain(&other))),
    }
}

/// Whether the request certainly never left this process: the connection to the node could
/// not be opened (refused, DNS, TLS handshake).
fn never_sent(e: &TransportError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_connect)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// A JSON-RPC error response is the node's verdict on the transaction; anything else is an
/// infrastructure fault.
fn refusal(what: &str, e: TransportError) -> ChainError {
    match e {
        RpcError::ErrorResp(payload) => ChainError::Refused(payload.message.to_string()),
        other => unavailable(what, other),
    }
}

fn unavailable(what: &str, e: TransportError) -> ChainError {
    ChainError::Unavailable(format!("{what}: {}", error_chain(&e)))
}

/// Parses an RPC URL, insisting on `http://` or `https://`: without a scheme, `host:port`
/// would parse with `host` as the scheme and fail later with an opaque "builder error".
fn parse_rpc_url(rpc_url: &str) -> Result<reqwest::Url, ChainError> {
    let expected = "expected an http:// or https:// URL, such as https://rpc.moderato.tempo.xyz";
    let url = reqwest::Url::parse(rpc_url)
        .map_err(|e| ChainError::Config(format!("rpc url `{rpc_url}`: {expected} ({e})")))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        _ if !rpc_url.contains("://") => Err(ChainError::Config(format!(
            "rpc url `{rpc_url}` has no scheme: {expected} (e.g. http://{rpc_url})"
        ))),
        other => Err(ChainError::Config(format!(
            "rpc url `{rpc_url}`: unsupported scheme `{other}`; {expected}"
        ))),
    }
}

/// `e` and its sources, outermost first, joined with ": " (a source whose text its parent
/// already shows is skipped). reqwest and hyper keep the useful part (connection refused, DNS,
/// TLS certificate) in the sources, and `Display` alone says only "error sending request".
/// An untrusted certificate gets a hint on how to trust it. The URL a reqwest error names
/// (which may carry an API key) is left out.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut urls = Vec::new();
    let mut source = Some(e);
    let mut outermost = true;
    while let Some(cause) = source {
        if let Some(url) = cause
            .downcast_ref::<reqwest::Error>()
            .and_then(reqwest::Error::url)
        {
            urls.push(url.to_string());
        }
        let part = cause.to_string();
        if !outermost && !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        outermost = false;
        source = cause.source();
    }
    for url in urls {
        text = text
            .replace(&format!(" for url ({url})"), "")
            .replace(&url, "<rpc url>");
    }
    if text.contains("invalid peer certificate") {
        text.push_str(
            " (the server's TLS certificate is not trusted: add its CA with \
             `TempoBuilder::root_certificate`, or to the system roots, e.g. via SSL_CERT_FILE)",
        );
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn broadcast_answers_are_classified() {
        use BroadcastVerdict::*;
        let cases: &[(i64, &str, BroadcastVerdict)] = &[
            // EIP-7966, whatever the text.
            (
                4,
                "The transaction was added to the mempool but wasn't processed within the designated timeout interval.",
                Pending,
            ),
            (4, "wait timeout", Pending),
            // reth's sync timeout, with its older generic code.
            (
                -32000,
                "Transaction 0xab was added to the mempool but wasn't confirmed within 10s.",
                Pending,
            ),
            // anvil's own sync timeout.
            (-32603, "Transaction confirmation timeout", Pending),
            (-32603, "internal error", Pending),
            (-32000, "already known", Pending),
            (-32000, "known transaction: 0xab", Pending),
            (-32003, "transaction already imported", Pending),
            (-32000, "request timed out", Pending),
            (
                -32601,
                "the method eth_sendRawTransactionSync does not exist/is not available",
                NotProcessed,
            ),
            (-32005, "limit exceeded", NotProcessed),
            (-32000, "Rate limit reached, retry later", NotProcessed),
            (-32000, "nonce too low", Refused),
            (
                -32000,
                "insufficient funds for gas * price + value",
                Refused,
            ),
            (
                -32003,
                "Insufficient funds for gas * price + value",
                Refused,
            ),
            (-32000, "invalid signature", Refused),
            (-32000, "intrinsic gas too low", Refused),
            (
                -32000,
                "intrinsic gas too high -- tx.gas_limit > env.block.gas_limit",
                Refused,
            ),
            (-32003, "invalid chain id for signer", Refused),
            (
                -32003,
                "Tempo tx valid_before (1) must be > current time + 3s (5)",
                Refused,
            ),
            (-32602, "Failed to decode transaction", Refused),
            (-32000, "unknown transaction type", Refused),
        ];
        for (code, message, expected) in cases {
            assert_eq!(
                broadcast_verdict(*code, message),
                *expected,
                "{code} {message}"
            );
        }
        assert!(already_known("Transaction Already Imported"));
        assert!(!already_known("nonce too low"));
    }

    #[test]
    fn tempo_simulate_answers_are_read() {
        let ok = json!({"blocks": [{"calls": [{"status": "0x1", "gasUsed": "0x5208", "returnData": "0x", "logs": []}]}], "tokenMetadata": {}});
        assert_eq!(simulated_gas(&ok).unwrap(), 21_000);
        let reverted = json!({"blocks": [{"calls": [{"status": "0x0", "gasUsed": "0x5208", "returnData": "0x832f98b5", "error": {"code": -32000, "message": "out of gas"}}]}]});
        assert_eq!(
            simulated_gas(&reverted),
            Err(ChainError::Refused("out of gas 0x832f98b5".into()))
        );
        assert!(matches!(
            simulated_gas(&json!({"blocks": []})),
            Err(ChainError::Unavailable(_))
        ));
    }

    #[test]
    fn error_texts_leave_out_the_url() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let error = runtime.block_on(async {
            // A port nothing listens on (bound, then released).
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            reqwest::Client::new()
                .get(format!("http://127.0.0.1:{port}/?apikey=SECRET"))
                .send()
                .await
                .unwrap_err()
        });
        assert!(error.to_string().contains("SECRET"));
        let text = error_chain(&error);
        assert!(
            !text.contains("SECRET") && !text.contains("127.0.0.1"),
            "{text}"
        );
        assert!(text.contains("onnect"), "{text}");
    }
}
