//! TLS where a real deployment needs it: an `https://` Tempo RPC (a TLS proxy with a
//! throwaway CA in front of a local anvil node) and Postgres with `sslmode=verify-full`
//! (`tools/postgres/start.sh` turns TLS on and exports `MPP_TEST_DATABASE_TLS_URL`). Also the
//! errors a first deployment meets: an untrusted certificate, an RPC URL without a scheme, a
//! Postgres without TLS under `sslmode=require`.
//!
//! The node tests skip when anvil is not installed, the Postgres test when the variables are
//! unset; both fail instead when `CI` is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use mpp_core::expiry::{format_timestamp, parse_timestamp};
use mpp_tempo::client::{TempoPayer, TxOptions};
use mpp_tempo::store::{Claim, ClaimState, MemoryStore, NewClaim, PgStore, ReplayStore};
use mpp_tempo::testing::{ANVIL_CHAIN_ID, AnvilNode, DEV_ACCOUNTS, TlsProxy};
use mpp_tempo::{
    ChainClient, ChallengeView, ChargeContext, DEFAULT_RPC_TIMEOUT, PrivateKeySigner, Tempo,
};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REALM: &str = "api.example.com";
const RECIPIENT: &str = "0x742d35Cc6634C0532925a3b844Bc9e7595f8fE00";

fn payer_key(account: usize) -> PrivateKeySigner {
    DEV_ACCOUNTS[account].private_key.parse().unwrap()
}

#[tokio::test]
async fn https_rpc_with_an_added_root_verifies_a_real_charge() {
    let Some(node) = AnvilNode::start() else {
        return;
    };
    let proxy = TlsProxy::start(node.port()).await.unwrap();
    println!("TLS proxy at {} -> {}", proxy.url(), node.rpc_url());
    let tempo = Tempo::builder()
        .rpc_url(proxy.url())
        .root_certificate(proxy.ca_pem())
        .recipient(RECIPIENT)
        .store(Arc::new(MemoryStore::new()))
        .build()
        .await
        .unwrap();
    assert_eq!(tempo.chain_id(), ANVIL_CHAIN_ID);

    // The payer also talks https, through the same proxy.
    let chain = ChainClient::with_root_certificates(
        &proxy.url(),
        DEFAULT_RPC_TIMEOUT,
        &[proxy.ca_pem().as_bytes()],
    )
    .unwrap();
    let payer = TempoPayer::with_chain(payer_key(1), chain);

    let req = tempo.charge_request(10_000);
    let expires = format_timestamp(OffsetDateTime::now_utc() + Duration::from_secs(300));
    let id = format!("tls-{}", OffsetDateTime::now_utc().unix_timestamp_nanos());
    let challenge = mpp_core::Challenge::builder(REALM, "tempo", "charge", req.to_json())
        .unwrap()
        .expires(expires.clone())
        .with_id(id.clone());
    let credential = payer.pull(&challenge, &TxOptions::default()).await.unwrap();
    let view = ChallengeView::new(&id, REALM, parse_timestamp(&expires).unwrap());
    let ctx = ChargeContext::new(&req, view, OffsetDateTime::now_utc());
    let settled = tempo
        .verify_charge(ctx, Some(&credential.source), &credential.payload)
        .await
        .unwrap();
    assert_eq!(settled.amount, 10_000);
    println!("charge settled over https: {}", settled.reference);
}

#[tokio::test]
async fn https_rpc_without_the_root_says_the_certificate_is_not_trusted() {
    let Some(node) = AnvilNode::start() else {
        return;
    };
    let proxy = TlsProxy::start(node.port()).await.unwrap();
    let err = Tempo::builder()
        .rpc_url(proxy.url())
        .recipient(RECIPIENT)
        .store(Arc::new(MemoryStore::new()))
        .build()
        .await
        .unwrap_err();
    let text = err.to_string();
    println!("without the root: {text}");
    assert!(text.contains("invalid peer certificate"), "{text}");
    assert!(text.contains("not trusted"), "{text}");
    assert!(text.contains("root_certificate"), "{text}");
}

#[tokio::test]
async fn unreachable_node_names_the_cause() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let err = Tempo::builder()
        .rpc_url(format!("http://127.0.0.1:{port}"))
        .recipient(RECIPIENT)
        .store(Arc::new(MemoryStore::new()))
        .build()
        .await
        .unwrap_err();
    let text = err.to_string();
    println!("dead node: {text}");
    assert!(text.to_lowercase().contains("connection refused"), "{text}");
}

#[tokio::test]
async fn build_errors_name_the_field_and_the_expected_form() {
    let store = || Arc::new(MemoryStore::new());
    let err = Tempo::builder()
        .rpc_url("localhost:18645")
        .recipient(RECIPIENT)
        .store(store())
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no scheme"), "{err}");
    assert!(err.contains("http://localhost:18645"), "{err}");

    let err = Tempo::builder()
        .rpc_url("127.0.0.1:8545")
        .recipient(RECIPIENT)
        .store(store())
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected an http:// or https:// URL"), "{err}");

    let err = Tempo::builder()
        .rpc_url("http://127.0.0.1:1")
        .recipient("0x1234")
        .store(store())
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with(r#"recipient: expected a 0x-prefixed 20-byte hex address, got "0x1234""#),
        "{err}"
    );

    let err = Tempo::builder()
        .rpc_url("http://127.0.0.1:1")
        .recipient(RECIPIENT)
        .currency("pathUSD")
        .store(store())
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("currency: expected a 0x-prefixed"), "{err}");

    let err = Tempo::builder()
        .recipient(RECIPIENT)
        .store(store())
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("rpc_url is required"), "{err}");
}

/// The TLS Postgres URL and its CA, or `None` (skip) outside CI.
fn pg_tls() -> Option<(String, String)> {
    const HINT: &str = "MPP_TEST_DATABASE_TLS_URL / MPP_TEST_PG_CA_FILE are not set: run \
         `tools/postgres/start.sh` (needs openssl) and `source /tmp/mpp-postgres/env`";
    match (
        std::env::var("MPP_TEST_DATABASE_TLS_URL"),
        std::env::var("MPP_TEST_PG_CA_FILE"),
    ) {
        (Ok(url), Ok(ca)) if !url.is_empty() && !ca.is_empty() => Some((url, ca)),
        _ if std::env::var_os("CI").is_some() => panic!("{HINT}"),
        _ => {
            eprintln!("skipping Postgres TLS test: {HINT}");
            None
        }
    }
}

async fn ssl_in_use(store: &PgStore) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

fn unique(name: &str) -> String {
    format!(
        "tls-test:{name}:{}",
        OffsetDateTime::now_utc().unix_timestamp_nanos()
    )
}

#[tokio::test]
async fn postgres_verify_full_claims_a_key() {
    let Some((url, ca_file)) = pg_tls() else {
        return;
    };
    let in_a_minute = OffsetDateTime::now_utc() + Duration::from_secs(60);
    let claim = |key: &'static str| NewClaim {
        key,
        owner: "tls-test",
        state: ClaimState::Served,
        expires_at: in_a_minute,
        valid_before: None,
    };

    // The root from the URL (`sslrootcert=`).
    let store = PgStore::connect(&url).await.unwrap();
    assert!(ssl_in_use(&store).await, "the connection is not encrypted");
    let key: &'static str = unique("url-root").leak();
    assert_eq!(store.claim(claim(key)).await.unwrap(), Claim::Claimed);
    assert!(matches!(
        store.claim(claim(key)).await.unwrap(),
        Claim::Existing(_)
    ));

    // The root given in code.
    let bare_url = url.split('?').next().unwrap().to_owned() + "?sslmode=verify-full";
    let pem = std::fs::read(&ca_file).unwrap();
    let store = PgStore::connect_with_root_certificate(&bare_url, pem)
        .await
        .unwrap();
    assert!(ssl_in_use(&store).await, "the connection is not encrypted");
    let key: &'static str = unique("code-root").leak();
    assert_eq!(store.claim(claim(key)).await.unwrap(), Claim::Claimed);
    println!("claimed over TLS (verify-full) with the root from the URL and from code");

    // Without the root, verify-full refuses the server's certificate.
    let err = PgStore::connect(&bare_url).await.unwrap_err().to_string();
    println!("verify-full without the root: {err}");
    assert!(err.contains("TLS") || err.contains("certificate"), "{err}");
    assert!(
        !err.contains(url.split('@').next().unwrap()),
        "leaks the password: {err}"
    );
}

/// A server that answers Postgres's SSLRequest with `N` (what a server without TLS does).
async fn postgres_without_tls() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                if socket.read_exact(&mut request).await.is_ok() {
                    let _ = socket.write_all(b"N").await;
                    let mut rest = [0u8; 64];
                    let _ = socket.read(&mut rest).await;
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn postgres_require_against_a_server_without_tls_fails_clearly() {
    let port = postgres_without_tls().await;
    let url = format!("postgres://mpp:secret-password@127.0.0.1:{port}/db?sslmode=require");
    let err = tokio::time::timeout(Duration::from_secs(30), PgStore::connect(&url))
        .await
        .expect("connect did not give up")
        .unwrap_err()
        .to_string();
    println!("sslmode=require, no TLS: {err}");
    assert!(err.contains("does not support TLS"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}/db")), "{err}");
    assert!(!err.contains("secret-password"), "{err}");
}
