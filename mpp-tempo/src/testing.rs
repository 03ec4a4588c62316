//! Test support: a real local Tempo node (`anvil --network tempo`) per test or per test binary.
//!
//! ```no_run
//! # fn main() {
//! use mpp_tempo::testing::AnvilNode;
//! let Some(node) = AnvilNode::start() else { return }; // binary not installed: skipped
//! println!("RPC at {}", node.rpc_url());
//! # }
//! ```
//!
//! The binary comes from the pinned npm package in `tools/devnet` (install it with
//! [`INSTALL_HINT`]). `ANVIL_BIN` overrides its path. When it is missing, [`AnvilNode::start`]
//! returns `None` (the test is skipped) unless `CI` is set, where it panics: CI must never
//! silently skip the chain tests.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use alloy::primitives::{Address, address};

use crate::chain::{ChainClient, ChainError};

/// How to install the pinned node binary (run from the workspace root).
pub const INSTALL_HINT: &str =
    "npm install --prefix tools/devnet --no-audit --no-fund --ignore-scripts";

/// How long to wait for the node to print its listening address.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A funded anvil dev account (devnet.md §2.1): each holds `u64::MAX` base units of each of
/// the four genesis TIP-20 tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevAccount {
    /// The account address.
    pub address: Address,
    /// The account's secp256k1 private key, 0x-hex.
    pub private_key: &'static str,
}

/// The ten anvil dev accounts of the `test test … junk` mnemonic.
pub const DEV_ACCOUNTS: [DevAccount; 10] = [
    DevAccount {
        address: address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266"),
        private_key: "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    },
    DevAccount {
        address: address!("70997970C51812dc3A010C7d01b50e0d17dc79C8"),
        private_key: "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    },
    DevAccount {
        address: address!("3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"),
        private_key: "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    },
    DevAccount {
        address: address!("90F79bf6EB2c4f870365E785982E1f101E93b906"),
        private_key: "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    },
    DevAccount {
        address: address!("15d34AAf54267DB7D7c367839AAf71A00a2C6A65"),
        private_key: "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    },
    DevAccount {
        address: address!("9965507D1a55bcC2695C58ba16FB37d819B0A4dc"),
        private_key: "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    },
    DevAccount {
        address: address!("976EA74026E726554dB657fA54763abd0C3a0aa9"),
        private_key: "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    },
    DevAccount {
        address: address!("14dC79964da2C08b23698B3D3cc7Ca32193d9955"),
        private_key: "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    },
    DevAccount {
        address: address!("23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f"),
        private_key: "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    },
    DevAccount {
        address: address!("a0Ee7A142d267C1f36714E4a8F75612F20a79720"),
        private_key: "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
    },
];

pub mod channel_reserve;
#[cfg(feature = "postgres")]
mod pg_schema;
pub mod stream_channel;

#[cfg(feature = "postgres")]
pub use pg_schema::PgSchema;

/// The genesis TIP-20 tokens on anvil's Tempo network (6 decimals each).
pub mod tokens {
    use alloy::primitives::{Address, address};

    pub use crate::tokens::PATH_USD;
    /// AlphaUSD.
    pub const ALPHA_USD: Address = address!("20c0000000000000000000000000000000000001");
    /// BetaUSD.
    pub const BETA_USD: Address = address!("20c0000000000000000000000000000000000002");
    /// ThetaUSD.
    pub const THETA_USD: Address = address!("20c0000000000000000000000000000000000003");
}

/// The chain id anvil uses unless told otherwise.
pub const ANVIL_CHAIN_ID: u64 = 31337;

/// A running `anvil --network tempo --hardfork T4` child process, killed on drop.
#[derive(Debug)]
pub struct AnvilNode {
    child: Option<Child>,
    port: u16,
}

impl AnvilNode {
    /// Starts a node on a free loopback port and waits until it listens.
    ///
    /// Returns `None` (after printing how to install it) when the binary is missing and `CI`
    /// is unset. Panics when the binary is missing under `CI`, or when the node does not
    /// start: both are broken test environments, not test outcomes.
    #[allow(clippy::panic)]
    pub fn start() -> Option<Self> {
        let bin = anvil_binary();
        if !bin.is_file() {
            let message = format!(
                "anvil binary not found at {} (set ANVIL_BIN, or install it from the workspace root with `{INSTALL_HINT}`)",
                bin.display()
            );
            if std::env::var_os("CI").is_some() {
                panic!("{message}");
            }
            eprintln!("skipping chain test: {message}");
            return None;
        }
        match Self::spawn(&bin) {
            Ok(node) => Some(node),
            Err(e) => panic!("could not start anvil at {}: {e}", bin.display()),
        }
    }

    fn spawn(bin: &std::path::Path) -> Result<Self, String> {
        let mut child = Command::new(bin)
            .args([
                "--network",
                "tempo",
                "--hardfork",
                "T4",
                "--block-time",
                "1",
                "--mixed-mining",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn failed: {e}"))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            return Err("no stdout pipe".into());
        };
        let (port_tx, port_rx) = mpsc::channel::<u16>();
        // Anvil logs every RPC call to stdout; an undrained pipe would block the node, so this
        // thread keeps reading until the process exits.
        std::thread::Builder::new()
            .name(format!("anvil-stdout-{}", child.id()))
            .spawn(move || {
                let mut port_tx = Some(port_tx);
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.trim().strip_prefix("Listening on 127.0.0.1:")
                        && let Ok(port) = rest.trim().parse::<u16>()
                        && let Some(tx) = port_tx.take()
                    {
                        let _ = tx.send(port);
                    }
                }
            })
            .map_err(|e| format!("could not start the stdout reader: {e}"))?;
        match port_rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(port) => Ok(Self {
                child: Some(child),
                port,
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("no `Listening on` line within {STARTUP_TIMEOUT:?}"))
            }
        }
    }

    /// The HTTP JSON-RPC endpoint.
    pub fn rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port the node listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the node now (for "node down" tests). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the node process is still owned and running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for AnvilNode {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The anvil binary: `ANVIL_BIN`, else the platform binary of the pinned npm package.
pub fn anvil_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ANVIL_BIN") {
        return PathBuf::from(path);
    }
    workspace_root().join("tools/devnet/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
}

/// The workspace root (the parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The TIP-20 `token` balance of `owner` on the node at `rpc_url`, in base units.
pub async fn token_balance(
    rpc_url: &str,
    token: Address,
    owner: Address,
) -> Result<alloy::primitives::U256, ChainError> {
    let chain = ChainClient::new(rpc_url, Duration::from_secs(5))?;
    tempo_alloy::contracts::precompiles::ITIP20::new(token, chain.provider())
        .balanceOf(owner)
        .call()
        .await
        .map_err(|e| ChainError::Unavailable(e.to_string()))
}

/// The pinned `mppx` interop scripts (`tools/devnet/interop/*.mjs`), when the SDK is
/// installed. Like [`AnvilNode::start`]: `None` with a message when it is missing, a panic
/// when it is missing under `CI`.
#[allow(clippy::panic)]
pub fn mppx_interop_dir() -> Option<PathBuf> {
    let root = workspace_root();
    if root.join("tools/devnet/node_modules/mppx").is_dir() {
        return Some(root.join("tools/devnet/interop"));
    }
    let message = format!("mppx is not installed (run `{INSTALL_HINT}` from the workspace root)");
    if std::env::var_os("CI").is_some() {
        panic!("{message}");
    }
    eprintln!("skipping interop test: {message}");
    None
}

/// A TLS-terminating proxy on loopback in front of a plain-TCP upstream (an [`AnvilNode`]):
/// an `https://localhost:<port>` RPC with a certificate from a throwaway CA, made fresh for
/// each proxy. Stops when dropped.
#[derive(Debug)]
pub struct TlsProxy {
    port: u16,
    ca_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl TlsProxy {
    /// Generates a CA and a `localhost`/`127.0.0.1` server certificate signed by it, and
    /// forwards every TLS connection to `127.0.0.1:<upstream_port>`. Needs a tokio runtime.
    pub async fn start(upstream_port: u16) -> Result<Self, String> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        use tokio_rustls::rustls;

        let fail = |what: &str| {
            let what = what.to_owned();
            move |e: rcgen::Error| format!("{what}: {e}")
        };
        let ca_key = KeyPair::generate().map_err(fail("CA key"))?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(fail("CA"))?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mpp-tempo test CA");
        let ca_cert = ca_params.self_signed(&ca_key).map_err(fail("CA cert"))?;
        let ca = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().map_err(fail("server key"))?;
        let server_params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .map_err(fail("server"))?;
        let server_cert = server_params
            .signed_by(&server_key, &ca)
            .map_err(fail("server cert"))?;

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_no_client_auth()
            .with_single_cert(
                vec![server_cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            )
            .map_err(|e| format!("TLS config: {e}"))?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("bind: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("local addr: {e}"))?
            .port();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A failed handshake (e.g. a client that does not trust the CA) just
                    // closes this connection.
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    let Ok(mut upstream) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                });
            }
        });
        Ok(Self {
            port,
            ca_pem: ca_cert.pem(),
            task,
        })
    }

    /// The https URL (by host name, so the certificate's name is checked).
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// The CA certificate that signed the proxy's certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A plain-http JSON-RPC proxy on loopback in front of a node (an [`AnvilNode`]), with faults
/// switched at run time through its [`RpcFaultControl`]: lost or uncertain broadcast answers,
/// hidden receipts, a node that is down. Without a fault it forwards every request unchanged
/// (batches included). Stops when dropped.
///
/// It speaks just enough HTTP/1.1 for JSON-RPC clients: one request per connection,
/// `Content-Length` bodies, every answer with `Connection: close`.
///
/// ```no_run
/// # async fn demo() -> Result<(), String> {
/// use std::time::Duration;
/// use mpp_tempo::testing::{AnvilNode, RpcFaultProxy};
/// let Some(node) = AnvilNode::start() else { return Ok(()) };
/// let proxy = RpcFaultProxy::start(&node.rpc_url()).await?;
/// let faults = proxy.control();
/// faults.hold_sync_send(Duration::from_secs(15)); // the broadcast's answer is lost
/// faults.hide_receipts_for(Duration::from_secs(5));
/// // ... point the code under test at proxy.url() ...
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RpcFaultProxy {
    port: u16,
    control: RpcFaultControl,
    task: tokio::task::JoinHandle<()>,
}

/// The switches and counters of an [`RpcFaultProxy`]. Clones control the same proxy.
#[derive(Debug, Clone)]
pub struct RpcFaultControl {
    shared: Arc<ProxyShared>,
}

#[derive(Debug)]
struct ProxyShared {
    faults: std::sync::Mutex<Faults>,
    /// Whether the proxy should refuse connections.
    down: tokio::sync::watch::Sender<bool>,
    /// Whether the proxy is listening (follows `down`).
    listening: tokio::sync::watch::Sender<bool>,
    /// Set when the proxy is dropped: connection tasks stop.
    stopped: tokio::sync::watch::Sender<bool>,
    sends_received: std::sync::atomic::AtomicU64,
    sends_forwarded: std::sync::atomic::AtomicU64,
    receipt_calls: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct Faults {
    sync_send: SyncSendFault,
    hide_receipts_until: Option<std::time::Instant>,
    http_status: Option<u16>,
}

/// What happens to `eth_sendRawTransactionSync`.
#[derive(Debug, Default, Clone, Copy)]
enum SyncSendFault {
    #[default]
    Forward,
    Hold(Duration),
    Eip7966,
    Drop,
}

/// The EIP-7966 error message for a transaction that is in the pool but not yet processed.
pub const EIP7966_TIMEOUT_MESSAGE: &str = "The transaction was added to the mempool but wasn't processed within the designated timeout interval.";

/// What anvil answers itself when `eth_sendRawTransactionSync` runs out of time (after 30 s):
/// the proxy's answer at the end of [`RpcFaultControl::hold_sync_send`].
pub const ANVIL_SYNC_TIMEOUT_MESSAGE: &str = "Transaction confirmation timeout";

impl RpcFaultProxy {
    /// Listens on a free loopback port and forwards to `upstream_rpc_url` (an `http://` URL).
    /// Needs a tokio runtime.
    pub async fn start(upstream_rpc_url: &str) -> Result<Self, String> {
        let upstream = reqwest::Url::parse(upstream_rpc_url)
            .map_err(|e| format!("upstream url `{upstream_rpc_url}`: {e}"))?;
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("bind: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("local addr: {e}"))?
            .port();
        let shared = Arc::new(ProxyShared {
            faults: Default::default(),
            down: tokio::sync::watch::Sender::new(false),
            listening: tokio::sync::watch::Sender::new(true),
            stopped: tokio::sync::watch::Sender::new(false),
            sends_received: Default::default(),
            sends_forwarded: Default::default(),
            receipt_calls: Default::default(),
        });
        let forward = Forwarder {
            shared: shared.clone(),
            upstream,
            http,
        };
        let task = tokio::spawn(proxy::accept_loop(listener, port, forward));
        Ok(Self {
            port,
            control: RpcFaultControl { shared },
            task,
        })
    }

    /// The proxy's RPC URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port the proxy listens on (while it is not [`RpcFaultControl::down`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to switch faults and read the counters (cloneable, usable from any task).
    pub fn control(&self) -> RpcFaultControl {
        self.control.clone()
    }
}

impl Drop for RpcFaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.control.shared.stopped.send_replace(true);
    }
}

impl RpcFaultControl {
    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `eth_sendRawTransactionSync` is forwarded as `eth_sendRawTransaction` (so the
    /// transaction enters the pool and is mined), and its answer is held for `hold`, then
    /// answered with anvil's own timeout error (`-32603`, [`ANVIL_SYNC_TIMEOUT_MESSAGE`]).
    /// A node refusal is passed on at once.
    pub fn hold_sync_send(&self, hold: Duration) {
        self.faults().sync_send = SyncSendFault::Hold(hold);
    }

    /// `eth_sendRawTransactionSync` is forwarded as `eth_sendRawTransaction`, then answered at
    /// once with the EIP-7966 timeout error: code 4, [`EIP7966_TIMEOUT_MESSAGE`], and the
    /// transaction hash as `data`. A node refusal is passed on as is.
    pub fn sync_send_error_eip7966(&self) {
        self.faults().sync_send = SyncSendFault::Eip7966;
    }

    /// `eth_sendRawTransactionSync` is *not* forwarded (the transaction never reaches the
    /// node) and is answered with the EIP-7966 error, as [`Self::sync_send_error_eip7966`].
    pub fn drop_sync_send(&self) {
        self.faults().sync_send = SyncSendFault::Drop;
    }

    /// `eth_sendRawTransactionSync` is forwarded unchanged again (the default).
    pub fn forward_sync_send(&self) {
        self.faults().sync_send = SyncSendFault::Forward;
    }

    /// `eth_getTransactionReceipt` answers `null` (unknown transaction) for `window`, starting
    /// now.
    pub fn hide_receipts_for(&self, window: Duration) {
        self.faults().hide_receipts_until = Some(std::time::Instant::now() + window);
    }

    /// Answers every request with HTTP `status` (e.g. 502) and a text body, without
    /// forwarding it; `None` turns this off. The client sees a transport error after its
    /// request was sent.
    pub fn http_error(&self, status: Option<u16>) {
        self.faults().http_status = status;
    }

    /// `true`: stops listening, so new connections are refused (the client sees a connection
    /// error; nothing is sent). `false`: listens again on the same port. Returns once the
    /// listener is in the new state, or an error when the port cannot be bound again.
    pub async fn down(&self, down: bool) -> Result<(), String> {
        self.shared.down.send_replace(down);
        let mut listening = self.shared.listening.subscribe();
        let wait = listening.wait_for(|listening| *listening != down);
        match tokio::time::timeout(Duration::from_secs(5), wait).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(format!(
                "the proxy did not {} within 5 s",
                if down {
                    "stop listening"
                } else {
                    "listen again"
                }
            )),
        }
    }

    /// Turns every fault off (the counters stay).
    pub fn reset(&self) {
        *self.faults() = Faults::default();
    }

    /// How many `eth_sendRawTransaction` and `eth_sendRawTransactionSync` calls arrived
    /// (batches not counted).
    pub fn send_calls(&self) -> u64 {
        self.shared
            .sends_received
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many of those were forwarded to the node.
    pub fn sends_forwarded(&self) -> u64 {
        self.shared
            .sends_forwarded
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many `eth_getTransactionReceipt` calls arrived (hidden ones included).
    pub fn receipt_calls(&self) -> u64 {
        self.shared
            .receipt_calls
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Everything a connection needs to answer a request.
#[derive(Debug, Clone)]
struct Forwarder {
    shared: Arc<ProxyShared>,
    upstream: reqwest::Url,
    http: reqwest::Client,
}

mod proxy {
    //! The proxy's HTTP and JSON-RPC plumbing.

    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use alloy::primitives::keccak256;
    use serde_json::{Value, json};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::{ANVIL_SYNC_TIMEOUT_MESSAGE, EIP7966_TIMEOUT_MESSAGE, Forwarder, SyncSendFault};

    /// Largest request accepted (headers plus body).
    const MAX_REQUEST: usize = 8 << 20;

    /// An HTTP answer: status and JSON (or text) body.
    type Answer = (u16, Vec<u8>);

    pub(super) async fn accept_loop(listener: TcpListener, port: u16, forward: Forwarder) {
        let mut listener = Some(listener);
        let mut down = forward.shared.down.subscribe();
        loop {
            let want_down = *down.borrow_and_update();
            if want_down {
                listener = None;
            } else if listener.is_none() {
                listener = rebind(port).await;
            }
            forward.shared.listening.send_replace(listener.is_some());
            let accepted = async {
                match &listener {
                    Some(l) => l.accept().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = down.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                accepted = accepted => {
                    if let Ok((stream, _)) = accepted {
                        let forward = forward.clone();
                        let mut stopped = forward.shared.stopped.subscribe();
                        tokio::spawn(async move {
                            tokio::select! {
                                () = serve(stream, &forward) => {}
                                _ = stopped.wait_for(|s| *s) => {}
                            }
                        });
                    }
                }
            }
        }
    }

    async fn rebind(port: u16) -> Option<TcpListener> {
        for _ in 0..50 {
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await {
                return Some(listener);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("RpcFaultProxy: could not listen on port {port} again");
        None
    }

    async fn serve(mut stream: TcpStream, forward: &Forwarder) {
        let Some(body) = read_request(&mut stream).await else {
            return;
        };
        if *forward.shared.down.borrow() {
            return; // went down meanwhile: close without answering
        }
        let injected = forward.control_faults(|f| f.http_status);
        let (status, body) = match injected {
            Some(status) => (status, b"RpcFaultProxy: injected HTTP error".to_vec()),
            None => forward.answer(body).await,
        };
        let reason = match status {
            200 => "OK",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            _ => "Error",
        };
        let content_type = if injected.is_some() {
            "text/plain"
        } else {
            "application/json"
        };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(&body).await;
        let _ = stream.shutdown().await;
    }

    /// The body of one HTTP/1.1 request with a `Content-Length`; `None` on anything else.
    async fn read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 8192];
        let header_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_REQUEST {
                return None;
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&buf[..header_end]).ok()?;
        let length: usize = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })?;
        if length > MAX_REQUEST {
            return None;
        }
        let mut body = buf.split_off(header_end);
        while body.len() < length {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(length);
        Some(body)
    }

    impl Forwarder {
        fn control_faults<T>(&self, f: impl FnOnce(&mut super::Faults) -> T) -> T {
            let mut faults = self
                .shared
                .faults
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut faults)
        }

        /// Forwards `body` as is: the node's status and body, or 502 when it cannot be reached.
        async fn forward(&self, body: Vec<u8>) -> Answer {
            let sent = self
                .http
                .post(self.upstream.clone())
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            match sent {
                Ok(response) => {
                    let status = response.status().as_u16();
                    match response.bytes().await {
                        Ok(bytes) => (status, bytes.to_vec()),
                        Err(_) => (502, b"RpcFaultProxy: upstream body lost".to_vec()),
                    }
                }
                Err(_) => (502, b"RpcFaultProxy: upstream unreachable".to_vec()),
            }
        }

        async fn answer(&self, body: Vec<u8>) -> Answer {
            let request: Value = match serde_json::from_slice(&body) {
                Ok(Value::Object(request)) => Value::Object(request),
                // Batches (and anything unparsable) pass unchanged.
                _ => return self.forward(body).await,
            };
            let id = request.get("id").cloned().unwrap_or(Value::Null);
            let method = request.get("method").and_then(Value::as_str).unwrap_or("");
            match method {
                "eth_sendRawTransaction" => {
                    self.shared.sends_received.fetch_add(1, Ordering::SeqCst);
                    self.shared.sends_forwarded.fetch_add(1, Ordering::SeqCst);
                    self.forward(body).await
                }
                "eth_sendRawTransactionSync" => {
                    self.shared.sends_received.fetch_add(1, Ordering::SeqCst);
                    let raw = request
                        .pointer("/params/0")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    let fault = self.control_faults(|f| f.sync_send);
                    match fault {
                        SyncSendFault::Forward => {
                            self.shared.sends_forwarded.fetch_add(1, Ordering::SeqCst);
                            self.forward(body).await
                        }
                        SyncSendFault::Drop => {
                            let hash = alloy::hex::decode(&raw)
                                .map(|bytes| keccak256(bytes).to_string())
                                .unwrap_or_default();
                            json_answer(eip7966_error(&id, &hash))
                        }
                        SyncSendFault::Hold(hold) => match self.send_async(&id, &raw).await {
                            Ok(_) => {
                                tokio::time::sleep(hold).await;
                                json_answer(json!({
                                    "jsonrpc": "2.0",
                                    "id": id,
                                    "error": {"code": -32603, "message": ANVIL_SYNC_TIMEOUT_MESSAGE},
                                }))
                            }
                            Err(answer) => answer,
                        },
                        SyncSendFault::Eip7966 => match self.send_async(&id, &raw).await {
                            Ok(hash) => json_answer(eip7966_error(&id, &hash)),
                            Err(answer) => answer,
                        },
                    }
                }
                "eth_getTransactionReceipt" => {
                    self.shared.receipt_calls.fetch_add(1, Ordering::SeqCst);
                    let hidden = self.control_faults(|f| {
                        f.hide_receipts_until
                            .is_some_and(|until| std::time::Instant::now() < until)
                    });
                    if hidden {
                        json_answer(json!({"jsonrpc": "2.0", "id": id, "result": null}))
                    } else {
                        self.forward(body).await
                    }
                }
                _ => self.forward(body).await,
            }
        }

        /// Forwards `raw` as `eth_sendRawTransaction`: the hash the node accepted, or the
        /// node's answer to pass on (a refusal, an upstream failure).
        async fn send_async(&self, id: &Value, raw: &str) -> Result<String, Answer> {
            self.shared.sends_forwarded.fetch_add(1, Ordering::SeqCst);
            let request = json!({
                "jsonrpc": "2.0",
                "id": id,
                "method": "eth_sendRawTransaction",
                "params": [raw],
            });
            let (status, body) = self.forward(request.to_string().into_bytes()).await;
            let hash = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|answer| answer.get("result")?.as_str().map(str::to_owned));
            match hash {
                Some(hash) if status == 200 => Ok(hash),
                _ => Err((status, body)),
            }
        }
    }

    fn eip7966_error(id: &Value, hash: &str) -> Value {
        json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": 4, "message": EIP7966_TIMEOUT_MESSAGE, "data": hash},
        })
    }

    fn json_answer(answer: Value) -> Answer {
        (200, answer.to_string().into_bytes())
    }
}
