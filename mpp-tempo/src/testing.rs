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
