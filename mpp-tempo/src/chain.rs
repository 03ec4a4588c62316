//! Access to a Tempo node over JSON-RPC, with a timeout on every call and the chain id cached.
//!
//! This sits below the intents: charge verification (and later sessions) call it and turn
//! its [`ChainError`] into their own errors. Errors are classified once, here: a JSON-RPC
//! error *response* to a transaction we simulate or send means the node looked at it and
//! refused it ([`ChainError::Refused`], a payer fault when the payer supplied it); anything
//! else (connection refused, timeout, garbage) is an infrastructure fault.

use std::future::IntoFuture;
use std::time::Duration;

use alloy::primitives::{Address, B256};
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
    chain_id: std::sync::Arc<OnceCell<u64>>,
}

/// Why a call to the node failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The node could not be reached, or answered with a transport error or an unexpected
    /// shape (an infrastructure fault).
    #[error("tempo node unavailable: {0}")]
    Unavailable(String),
    /// A call did not finish in time (an infrastructure fault). When it was a broadcast, the
    /// outcome is unknown.
    #[error("tempo node timed out: {0}")]
    Timeout(String),
    /// The node looked at a transaction we simulated or sent and refused it (it is invalid or
    /// reverts): the node's message.
    #[error("the tempo node refused the transaction: {0}")]
    Refused(String),
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
    /// block: [`ChainError::Refused`] when any call would revert.
    ///
    /// Uses `eth_simulateV1` with one call per batch entry (state carries over between
    /// them), because anvil's `eth_call` ignores the `calls` of a Tempo request and reports
    /// success for anything. A node without `eth_simulateV1` gets `eth_call` of the whole
    /// transaction instead (what mppx does).
    pub(crate) async fn simulate(
        &self,
        from: Address,
        tx: &TempoTransaction,
    ) -> Result<(), ChainError> {
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
                Ok(())
            }
            Err(RpcError::ErrorResp(e)) => {
                tracing::debug!(reason = %e.message, "eth_simulateV1 unavailable; using eth_call");
                let mut request = TempoTransactionRequest::from(tx.clone());
                request.inner.from = Some(from);
                match self
                    .timed("eth_call", self.rpc_timeout, self.provider.call(request))
                    .await?
                {
                    Ok(_) => Ok(()),
                    Err(e) => Err(refusal("eth_call", e)),
                }
            }
            Err(e) => Err(unavailable("eth_simulateV1", e)),
        }
    }

    /// `eth_sendRawTransactionSync` with `timeout`: the receipt once the transaction is mined.
    /// [`ChainError::Refused`] when the node rejects it; on a timeout or transport error the
    /// transaction may or may not have been accepted.
    pub(crate) async fn send_raw_sync(
        &self,
        raw: &[u8],
        timeout: Duration,
    ) -> Result<TempoTransactionReceipt, ChainError> {
        self.timed(
            "eth_sendRawTransactionSync",
            timeout,
            self.provider.send_raw_transaction_sync(raw),
        )
        .await?
        .map_err(|e| refusal("eth_sendRawTransactionSync", e))
    }
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
/// An untrusted certificate gets a hint on how to trust it.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    if text.contains("invalid peer certificate") {
        text.push_str(
            " (the server's TLS certificate is not trusted: add its CA with \
             `TempoBuilder::root_certificate`, or to the system roots, e.g. via SSL_CERT_FILE)",
        );
    }
    text
}
