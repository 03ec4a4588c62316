//! Load generator for sessions over real HTTP on loopback, in one run with a bare axum route:
//!
//! - the **voucher path**: every request carries a new voucher (pre-signed by the load
//!   generator before the clock starts), one channel per connection, each voucher accepted
//!   and one unit charged atomically in the channel store before the handler runs;
//! - **SSE billing**: one stream of many items, billed per item by `Meter::sse`, against the
//!   same items streamed by axum's `Sse` with no layer (both unpaced, one voucher covering
//!   the billed stream, so this measures metering, not voucher round trips).
//!
//! Channels are opened for real on a local Tempo node (`anvil`, the canonical v1 escrow), so
//! the server's on-chain state cache and store are those of production; no RPC is made per
//! voucher. The store is SQLite (a file, WAL, `synchronous = FULL`, as `SqliteStore` opens
//! it) and, when `MPP_TEST_DATABASE_URL` is set, Postgres (its `fsync` and
//! `synchronous_commit` are printed as measured).
//!
//! `ANVIL_BIN=… [MPP_TEST_DATABASE_URL=…] cargo bench -p mpp-e2e-tests --bench session`
//! (env `BENCH_CONNECTIONS`, default 32; `BENCH_REQUESTS` per connection, default 400;
//! `BENCH_SSE_ITEMS`, default 50000).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use axum::Router;
use axum::extract::Query;
use axum::response::IntoResponse;
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use futures_util::StreamExt as _;
use mpp_axum::{Meter, Mpp};
use mpp_core::{Challenge, Credential};
use mpp_tempo::session::client::{OpenParams, SessionChannel, SessionSigner, open_calls};
use mpp_tempo::session::store::ChannelStore;
use mpp_tempo::session::{SessionConfig, TempoSessionRequest};
use mpp_tempo::store::{ReplayStore, SqliteStore};
use mpp_tempo::testing::{AnvilNode, DEV_ACCOUNTS, PgSchema, anvil_binary, stream_channel, tokens};
use mpp_tempo::{PrivateKeySigner, Tempo};
use sqlx::AssertSqlSafe;

const TOKEN: Address = tokens::PATH_USD;
const FEE_TOKEN: Address = tokens::ALPHA_USD;
/// `session("0.000001")`: one base unit per request or item.
const PRICE: u128 = 1;
const DEPOSIT: u128 = 10_000_000;
const OPEN_GAS: u64 = 2_000_000;
const DEPLOYER: usize = 0;
const PAYER: usize = 1;
const PAYEE: usize = 2;

fn key(account: usize) -> PrivateKeySigner {
    DEV_ACCOUNTS[account].private_key.parse().unwrap()
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The `n` of `?n=`.
fn count(query: &HashMap<String, String>) -> usize {
    query.get("n").and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn items(n: usize) -> impl futures_util::Stream<Item = String> {
    futures_util::stream::iter((0..n).map(|i| format!("token{i}")))
}

/// The server: a bare route and an unbilled stream beside their paid twins.
async fn serve(rpc: &str, escrow: Address, store: Arc<dyn Stores>) -> String {
    let tempo = Tempo::builder()
        .rpc_url(rpc)
        .recipient(DEV_ACCOUNTS[PAYEE].address)
        .currency(TOKEN)
        .store(store.clone().replay())
        .maintenance_interval(Duration::ZERO)
        .build()
        .await
        .unwrap();
    let sessions = SessionConfig::v1(escrow)
        .server_key(key(PAYEE), FEE_TOKEN)
        .channel_store(store.channels())
        .suggested_deposit(DEPOSIT)
        .build(&tempo)
        .await
        .unwrap();
    let mpp = Mpp::new("session-bench-secret-0123456789abcdef")
        .unwrap()
        .method(sessions);
    let app = Router::new()
        .route("/bare", get(|| async { "ok" }))
        .route(
            "/paid",
            get(|| async { "ok" }).layer(mpp.session("0.000001").unwrap()),
        )
        .route(
            "/sse-bare",
            get(|Query(q): Query<HashMap<String, String>>| async move {
                Sse::new(
                    items(count(&q))
                        .map(|d| Ok::<_, std::convert::Infallible>(Event::default().data(d))),
                )
            }),
        )
        .route(
            "/sse-paid",
            get(
                |meter: Meter, Query(q): Query<HashMap<String, String>>| async move {
                    meter.sse(items(count(&q))).into_response()
                },
            )
            .layer(mpp.session("0.000001").unwrap().unit("token")),
        )
        .layer(mpp.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// A store that is both a replay store and a channel store (SQLite, Postgres).
trait Stores: Send + Sync {
    fn replay(self: Arc<Self>) -> Arc<dyn ReplayStore>;
    fn channels(self: Arc<Self>) -> Arc<dyn ChannelStore>;
}

impl<S: ReplayStore + ChannelStore + 'static> Stores for S {
    fn replay(self: Arc<Self>) -> Arc<dyn ReplayStore> {
        self
    }
    fn channels(self: Arc<Self>) -> Arc<dyn ChannelStore> {
        self
    }
}

/// A channel opened over HTTP (the server broadcasts the open), with its signer and the
/// challenge its vouchers answer.
struct Opened {
    channel: SessionChannel,
    signer: SessionSigner,
    challenge: Challenge,
    /// What the vouchers so far (the open's included) have covered.
    cumulative: u128,
}

async fn challenge(http: &reqwest::Client, url: &str) -> Challenge {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 402);
    let header = response.headers()["www-authenticate"].to_str().unwrap();
    Challenge::parse_all(header).unwrap().remove(0)
}

fn authorization(opened: &Opened, payload: serde_json::Value) -> String {
    Credential::new(opened.challenge.clone(), payload)
        .with_source(opened.signer.source())
        .to_authorization()
}

async fn open(http: &reqwest::Client, rpc: &str, url: &str) -> Opened {
    let challenge = challenge(http, url).await;
    let request = TempoSessionRequest::from_json(&serde_json::Value::Object(
        challenge.request.value().clone(),
    ))
    .unwrap();
    let signer = SessionSigner::new(key(PAYER), request.voucher_domain());
    let params = OpenParams {
        payee: request.recipient,
        operator: Address::ZERO,
        token: request.currency,
        deposit: DEPOSIT,
        salt: B256::random(),
        authorized_signer: signer.address(),
    };
    let calls = open_calls(signer.domain(), &params).unwrap();
    let tx = stream_channel::expiring_tx(rpc, calls, OPEN_GAS, None)
        .await
        .unwrap();
    let signed = signer.open(tx, &params, PRICE, false).unwrap();
    let opened = Opened {
        channel: signed.channel,
        signer,
        challenge,
        cumulative: PRICE,
    };
    let response = http
        .get(url)
        .header(
            "authorization",
            authorization(&opened, signed.payload.to_json()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    opened
}

/// `count` vouchers, each one unit above the previous: signed now, before any clock runs.
fn presign(opened: &mut Opened, count: usize) -> Vec<String> {
    (0..count)
        .map(|_| {
            opened.cumulative += PRICE;
            let payload = opened
                .signer
                .voucher(&opened.channel, opened.cumulative)
                .unwrap();
            authorization(opened, payload.to_json())
        })
        .collect()
}

struct Figures {
    requests: usize,
    rps: f64,
    p50: Duration,
    p99: Duration,
}

/// Each connection sends its list of `Authorization` values (or `count` bare requests) one
/// after the other on one keep-alive connection.
async fn load(url: &str, per_connection: Vec<Vec<Option<String>>>) -> Figures {
    let started = Instant::now();
    let tasks: Vec<_> = per_connection
        .into_iter()
        .map(|credentials| {
            let url = url.to_owned();
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .unwrap();
                let mut latencies = Vec::with_capacity(credentials.len());
                for credential in credentials {
                    let t = Instant::now();
                    let mut request = http.get(&url);
                    if let Some(credential) = credential {
                        request = request.header("authorization", credential);
                    }
                    let response = request.send().await.unwrap();
                    let status = response.status();
                    let body = response.bytes().await.unwrap();
                    assert_eq!(status, 200, "{body:?}");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Figures {
        requests: all.len(),
        rps: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

/// Reads a whole SSE response; returns its `message` events and items per second.
async fn read_stream(request: reqwest::RequestBuilder) -> (usize, f64) {
    let started = Instant::now();
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut messages = 0usize;
    let mut line = Vec::new();
    // Per event: its name (`None`: unnamed, a message) and whether it carried data.
    let mut name: Option<Vec<u8>> = None;
    let mut data = false;
    while let Some(chunk) = body.next().await {
        for &byte in chunk.unwrap().iter() {
            if byte != b'\n' {
                line.push(byte);
                continue;
            }
            if let Some(value) = line.strip_prefix(b"event:") {
                name = Some(value.trim_ascii().to_vec());
            } else if line.starts_with(b"data:") {
                data = true;
            } else if line.is_empty() {
                if data && name.as_deref().is_none_or(|n| n == b"message") {
                    messages += 1;
                }
                (name, data) = (None, false);
            }
            line.clear();
        }
    }
    (messages, messages as f64 / started.elapsed().as_secs_f64())
}

async fn run(name: &str, rpc: &str, escrow: Address, store: Arc<dyn Stores>) {
    let connections = env_or("BENCH_CONNECTIONS", 32);
    let requests = env_or("BENCH_REQUESTS", 400);
    let sse_items = env_or("BENCH_SSE_ITEMS", 50_000);
    let base = serve(rpc, escrow, store).await;
    let http = reqwest::Client::new();

    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(open(&http, rpc, &format!("{base}/paid")).await);
    }
    // A warm-up round (a tenth), then the measured one, each with vouchers of its own.
    let warm: Vec<Vec<Option<String>>> = channels
        .iter_mut()
        .map(|c| presign(c, requests / 10).into_iter().map(Some).collect())
        .collect();
    let measured: Vec<Vec<Option<String>>> = channels
        .iter_mut()
        .map(|c| presign(c, requests).into_iter().map(Some).collect())
        .collect();
    let bare = vec![vec![None; requests]; connections];
    load(
        &format!("{base}/bare"),
        vec![vec![None; requests / 10]; connections],
    )
    .await;
    let bare = load(&format!("{base}/bare"), bare).await;
    load(&format!("{base}/paid"), warm).await;
    let paid = load(&format!("{base}/paid"), measured).await;
    for (route, f) in [
        ("bare axum route", &bare),
        ("voucher path (new voucher, one unit charged)", &paid),
    ] {
        println!(
            "| {name} | {route} | {} | {:.0} | {:?} | {:?} |",
            f.requests, f.rps, f.p50, f.p99
        );
    }

    // SSE: one stream each way; the billed one is admitted with a voucher for all of it.
    let stream = &mut channels[0];
    stream.challenge = challenge(&http, &format!("{base}/sse-paid?n={sse_items}")).await;
    stream.cumulative += PRICE * sse_items as u128;
    let payload = stream
        .signer
        .voucher(&stream.channel, stream.cumulative)
        .unwrap();
    let credential = authorization(stream, payload.to_json());
    let (unbilled, unbilled_rate) =
        read_stream(http.get(format!("{base}/sse-bare?n={sse_items}"))).await;
    let (billed, billed_rate) = read_stream(
        http.get(format!("{base}/sse-paid?n={sse_items}"))
            .header("authorization", credential),
    )
    .await;
    assert_eq!((unbilled, billed), (sse_items, sse_items));
    println!(
        "| {name} | SSE unbilled (axum `Sse`) | {unbilled} items | {unbilled_rate:.0} items/s | | |"
    );
    println!(
        "| {name} | SSE billed (`Meter::sse`) | {billed} items | {billed_rate:.0} items/s ({:+.1}%) | | |",
        (billed_rate / unbilled_rate - 1.0) * 100.0
    );
}

async fn postgres_settings(admin: &sqlx::PgPool) -> String {
    let mut settings = Vec::new();
    for name in ["fsync", "synchronous_commit"] {
        let (value,): (String,) = sqlx::query_as(AssertSqlSafe(format!("SHOW {name}")))
            .fetch_one(admin)
            .await
            .unwrap();
        settings.push(format!("{name}={value}"));
    }
    settings.join(", ")
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if !anvil_binary().is_file() {
            panic!(
                "the anvil binary is not at {} (set ANVIL_BIN, or run scripts/devnet-install.sh)",
                anvil_binary().display()
            );
        }
        let node = AnvilNode::start().expect("start anvil");
        let rpc = node.rpc_url();
        let escrow = stream_channel::deploy(&rpc, &key(DEPLOYER)).await.unwrap();
        println!(
            "{} connections (one channel each), {} requests each, loopback, same process",
            env_or("BENCH_CONNECTIONS", 32),
            env_or("BENCH_REQUESTS", 400)
        );
        println!("| store | route | requests | req/s | p50 | p99 |");
        println!("|---|---|---|---|---|---|");

        let dir = tempfile::tempdir().unwrap();
        let sqlite = Arc::new(
            SqliteStore::open(dir.path().join("bench.db"))
                .await
                .unwrap(),
        );
        run("SQLite (WAL, synchronous=FULL)", &rpc, escrow, sqlite).await;

        match std::env::var("MPP_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => {
                let schema = PgSchema::create(&url, "bench").await.unwrap();
                let store = Arc::new(schema.store().await.unwrap());
                let name = format!("Postgres ({})", postgres_settings(schema.admin()).await);
                run(&name, &rpc, escrow, store).await;
                schema.drop().await;
            }
            _ => println!("MPP_TEST_DATABASE_URL is not set: no Postgres run"),
        }
    });
}
