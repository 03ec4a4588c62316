//! Two instances of one session API on one Postgres, behind a load balancer that sends every
//! `GET` to instance A and every `POST` to instance B: a metered stream served by A runs out
//! of vouchers again and again, each voucher that unblocks it is `POST`ed to (and accepted
//! by) B, and A's stream resumes within a second every time.
//!
//! A has no other way to learn of B's vouchers than the database: its fallback poll is set to
//! 10 s, so only Postgres `LISTEN/NOTIFY` (the channel store's change watch) can wake it that
//! fast. The channel is opened on A, the close goes to B, and the payee is paid on chain
//! exactly what the stream and the request consumed.
//!
//! Needs the local node and Postgres (`MPP_TEST_DATABASE_URL`): skips with a message when
//! either is missing, unless `CI` is set. Run:
//! `ANVIL_BIN=… MPP_TEST_DATABASE_URL=… cargo test -p mpp-e2e-tests --test session_two_instances`

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt as _;
use mpp_axum::{Meter, Mpp, PaymentReceipt};
use mpp_reqwest::SessionClient;
use mpp_tempo::session::{SessionConfig, SessionReceipt, TempoSessionPayer};
use mpp_tempo::testing::{AnvilNode, DEV_ACCOUNTS, PgSchema, anvil_binary, stream_channel, tokens};
use mpp_tempo::{ChainClient, PrivateKeySigner, Tempo};

const TOKEN: Address = tokens::PATH_USD;
/// The payee's server key pays its fees in another token, so its balance of TOKEN moves by
/// exactly what the channel pays it.
const FEE_TOKEN: Address = tokens::ALPHA_USD;
/// `session("0.001")` and `session("0.0001")` at 6 decimals.
const PING_PRICE: u128 = 1_000;
const TOKEN_PRICE: u128 = 100;
/// The stream's length: each item after the first needs a voucher (the payer signs only what
/// is asked for), so this is also about how many times A must be woken by B.
const TOKENS: usize = 25;
const SUGGESTED_DEPOSIT: u128 = 100_000;
const MAX_DEPOSIT: u128 = 100_000;
/// anvil estimates only the last call of a batch: approve + open needs about 1.6 M gas.
const OPEN_GAS: u64 = 2_000_000;
/// How long A's stream may wait between two items once the voucher is on its way.
const RESUME_WITHIN: Duration = Duration::from_secs(1);
/// A's fallback poll: far longer than RESUME_WITHIN, so a timely resume proves the wake-up.
const SLOW_POLL: Duration = Duration::from_secs(10);

const DEPLOYER: usize = 0;
const PAYER: usize = 1;
const PAYEE: usize = 2;

const SECRET: &str = "two-instances-e2e-secret-0123456789abcdef";
/// Both instances answer for one service, whichever host the balancer reached.
const REALM: &str = "api.two-instances.test";

fn key(account: usize) -> PrivateKeySigner {
    DEV_ACCOUNTS[account].private_key.parse().unwrap()
}

fn addr(account: usize) -> Address {
    DEV_ACCOUNTS[account].address
}

/// Fails under `CI`, otherwise skips with `message`.
fn missing(message: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{message}");
    }
    eprintln!("skipping the two-instance session test: {message}");
}

fn pg_url() -> Option<String> {
    match std::env::var("MPP_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            missing(
                "MPP_TEST_DATABASE_URL is not set: run `tools/postgres/start.sh` and source the \
                 env file it prints (or run `scripts/test.sh`, which does both)",
            );
            None
        }
    }
}

fn start_node() -> Option<AnvilNode> {
    let bin = anvil_binary();
    if !bin.is_file() {
        missing(&format!(
            "the anvil binary is not at {} (set ANVIL_BIN, or run scripts/devnet-install.sh)",
            bin.display()
        ));
        return None;
    }
    AnvilNode::start()
}

/// How often each instance's stream handler ran.
#[derive(Clone, Default)]
struct Streams(Arc<AtomicUsize>);

async fn ping(paid: PaymentReceipt) -> String {
    format!("pong {}", paid.reference())
}

async fn words(
    State(streams): State<Streams>,
    meter: Meter,
    Query(query): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    streams.0.fetch_add(1, Ordering::SeqCst);
    let n: usize = query.get("n").and_then(|n| n.parse().ok()).unwrap_or(0);
    meter.sse(futures_util::stream::iter(
        (0..n).map(|i| format!("word{i}")),
    ))
}

/// One instance: its own pool on the shared schema, its own method and wake-ups; the same
/// secret and realm as the other.
async fn instance(rpc: &str, escrow: Address, schema: &PgSchema) -> (String, Streams) {
    let store = Arc::new(schema.store().await.unwrap());
    let tempo = Tempo::builder()
        .rpc_url(rpc)
        .recipient(addr(PAYEE))
        .currency(TOKEN)
        .store(store.clone())
        .maintenance_interval(Duration::ZERO)
        .build()
        .await
        .unwrap();
    let sessions = SessionConfig::v1(escrow)
        .server_key(key(PAYEE), FEE_TOKEN)
        .channel_store(store)
        .suggested_deposit(SUGGESTED_DEPOSIT)
        .poll_interval(SLOW_POLL)
        .build(&tempo)
        .await
        .unwrap();
    let mpp = Mpp::new(SECRET).unwrap().realm(REALM).method(sessions);
    let streams = Streams::default();
    let app = Router::new()
        .route("/ping", get(ping).layer(mpp.session("0.001").unwrap()))
        .route(
            "/tokens",
            get(words).layer(
                mpp.session("0.0001")
                    .unwrap()
                    .unit("token")
                    .voucher_wait(Duration::from_secs(20)),
            ),
        )
        .layer(mpp.layer())
        .with_state(streams.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, streams)
}

/// The load balancer: `GET` to A, everything else to B; counts what went where.
#[derive(Clone)]
struct Balancer {
    a: String,
    b: String,
    http: reqwest::Client,
    to_a: Arc<AtomicUsize>,
    to_b: Arc<AtomicUsize>,
}

async fn forward(State(lb): State<Balancer>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let upstream = if parts.method == axum::http::Method::GET {
        lb.to_a.fetch_add(1, Ordering::SeqCst);
        &lb.a
    } else {
        lb.to_b.fetch_add(1, Ordering::SeqCst);
        &lb.b
    };
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = parts.headers;
    headers.remove(axum::http::header::HOST);
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let answer = lb
        .http
        .request(parts.method, format!("{upstream}{target}"))
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        response = response.header(name, value);
    }
    // Streamed through as it comes, so SSE items are not held back.
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .unwrap()
}

async fn start_balancer(a: String, b: String) -> (String, Balancer) {
    let lb = Balancer {
        a,
        b,
        http: reqwest::Client::new(),
        to_a: Arc::default(),
        to_b: Arc::default(),
    };
    let app = Router::new().fallback(forward).with_state(lb.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, lb)
}

fn to_session_receipt(receipt: &mpp_core::Receipt) -> SessionReceipt {
    SessionReceipt::from_json(&serde_json::to_value(receipt).unwrap()).unwrap()
}

#[tokio::test]
async fn a_stream_on_one_instance_resumes_within_a_second_of_a_voucher_posted_to_the_other() {
    let Some(url) = pg_url() else {
        return;
    };
    let Some(node) = start_node() else {
        return;
    };
    let rpc = node.rpc_url();
    let escrow = stream_channel::deploy(&rpc, &key(DEPLOYER)).await.unwrap();
    let chain = ChainClient::new(&rpc, Duration::from_secs(5)).unwrap();
    let balance = async |who: Address| chain.token_balance(TOKEN, who).await.unwrap().to::<u128>();
    // A schema of the test's own: nothing of other tests' channels shows.
    let schema = PgSchema::create(&url, "two_instances").await.unwrap();
    let (a, streams_a) = instance(&rpc, escrow, &schema).await;
    let (b, streams_b) = instance(&rpc, escrow, &schema).await;
    let (base, lb) = start_balancer(a, b).await;
    let payee_before = balance(addr(PAYEE)).await;

    let payer = Arc::new(
        TempoSessionPayer::new(key(PAYER), &rpc, MAX_DEPOSIT)
            .unwrap()
            .escrow(escrow)
            .open_gas_limit(OPEN_GAS),
    );
    let client = SessionClient::with_payer(reqwest::Client::new(), payer);
    // The open, on A.
    let opened = client.get(&format!("{base}/ping")).await.unwrap();
    assert_eq!(opened.response.status(), 200);
    let posts_before = lb.to_b.load(Ordering::SeqCst);

    // The stream, on A; every voucher it asks for goes to B.
    let mut events = client.sse(&format!("{base}/tokens?n={TOKENS}"));
    let mut items = Vec::new();
    let mut last = Instant::now();
    let mut slowest = Duration::ZERO;
    while let Some(item) = events.next().await {
        let now = Instant::now();
        // The first item needs no voucher (the admission paid for it): time the rest.
        if !items.is_empty() {
            slowest = slowest.max(now - last);
        }
        last = now;
        items.push(item.unwrap());
    }
    let vouchers = events.vouchers();
    let receipt = to_session_receipt(&events.receipt().expect("the stream's final receipt"));
    let posts = lb.to_b.load(Ordering::SeqCst) - posts_before;
    eprintln!(
        "{} items, {vouchers} vouchers posted to B, slowest resume {slowest:?}",
        items.len()
    );
    assert_eq!(items.len(), TOKENS);
    assert!(
        vouchers as usize >= TOKENS / 2,
        "the stream was to need many vouchers, it needed {vouchers}"
    );
    assert_eq!(posts, vouchers as usize, "every voucher went to B");
    assert_eq!(streams_a.0.load(Ordering::SeqCst), 1, "A served the stream");
    assert_eq!(streams_b.0.load(Ordering::SeqCst), 0, "B never did");
    assert!(
        slowest < RESUME_WITHIN,
        "A resumed {slowest:?} after a voucher accepted by B (more than {RESUME_WITHIN:?})"
    );
    let consumed = PING_PRICE + TOKEN_PRICE * TOKENS as u128;
    assert_eq!(receipt.spent, consumed);

    // The close, on B: the payee is paid what was consumed.
    let closed = client
        .close(&format!("{base}/tokens?n={TOKENS}"))
        .await
        .unwrap();
    assert!(to_session_receipt(&closed).tx_hash.is_some());
    assert_eq!(balance(addr(PAYEE)).await - payee_before, consumed);
    schema.drop().await;
}
