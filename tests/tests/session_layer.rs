//! The server's session layer (`mpp_axum::session`, `Meter`, `TempoSessions` as a method)
//! paid by our own session client (`mpp_reqwest::SessionClient` with
//! `mpp_tempo::session::TempoSessionPayer`), over real loopback HTTP, on a local Tempo node
//! with the canonical v1 `TempoStreamChannel` escrow.
//!
//! What it proves, in one channel's life:
//! - the open on `GET /ping` (an approve + open transaction, broadcast by the server) is
//!   served `200` with a session receipt (its `txHash`), and three more paid pings each move
//!   `spent` by the route price (1000 base units) and `units` by one;
//! - a metered stream of 20 tokens (`GET /tokens?n=20`, 100 base units a token) runs out of
//!   headroom mid-stream; the client answers every `payment-need-voucher` with a body-less
//!   `POST` to the stream's URL (query included), tops the deposit up on the way (the first
//!   deposit is only 5000), gets exactly 20 `message` events and a final `payment-receipt`
//!   whose `spent` grew by exactly 20 × 100;
//! - a bare voucher `POST` to `/tokens?n=20` echoing its `GET` challenge is answered `204`
//!   and never reaches the handler; a voucher below the accepted one is refused `402`
//!   problem+json with a fresh challenge; a voucher for an unknown channel gets `410`;
//! - the close is answered `204` with the close transaction in its receipt, and the payee's
//!   balance of the channel token grows by exactly what was consumed (the payee's server key
//!   pays its fees in another token).
//!
//! Also: two streams on one channel at once both get all their items (neither waits out its
//! voucher deadline), and the same life on v2 (the channel reserve precompile's stand-in,
//! `mpp_tempo::testing::channel_reserve`), whose close captures exactly what was spent.
//!
//! Skips (with a message) when the node binary is not installed, unless `CI` is set.
//! Run: `ANVIL_BIN=… cargo test -p mpp-e2e-tests --test session_layer`

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U256};
use axum::Router;
use axum::extract::{Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt as _;
use mpp_axum::{Meter, Mpp, PaymentReceipt};
use mpp_core::{Challenge, Credential};
use mpp_reqwest::SessionClient;
use mpp_tempo::session::abi::v1::ITempoStreamChannel;
use mpp_tempo::session::client::{SessionChannel, SessionSigner};
use mpp_tempo::session::{
    SessionConfig, SessionProtocol, SessionReceipt, TIP20_CHANNEL_RESERVE, TempoSessionPayer,
    VoucherDomain,
};
use mpp_tempo::store::SqliteStore;
use mpp_tempo::testing::{
    AnvilNode, DEV_ACCOUNTS, anvil_binary, channel_reserve, stream_channel, tokens,
};
use mpp_tempo::{ChainClient, PrivateKeySigner, Tempo};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};

/// The channel token. The payee's server key pays its fees in FEE_TOKEN, so the payee's
/// balance of TOKEN moves by exactly what the channel pays it.
const TOKEN: Address = tokens::PATH_USD;
const FEE_TOKEN: Address = tokens::ALPHA_USD;
/// `session("0.001")` and `session("0.0001")` at 6 decimals.
const PING_PRICE: u128 = 1_000;
const TOKEN_PRICE: u128 = 100;
const TOKENS: usize = 20;
/// Small on purpose: the stream needs a top-up before it ends.
const SUGGESTED_DEPOSIT: u128 = 5_000;
const MAX_DEPOSIT: u128 = 100_000;
/// anvil estimates only the last call of a batch: approve + open needs about 1.6 M gas.
const OPEN_GAS: u64 = 2_000_000;
const TOP_UP_GAS: u64 = 1_000_000;

const DEPLOYER: usize = 0;
const PAYER: usize = 1;
const PAYEE: usize = 2;

fn key(account: usize) -> PrivateKeySigner {
    DEV_ACCOUNTS[account].private_key.parse().unwrap()
}

fn addr(account: usize) -> Address {
    DEV_ACCOUNTS[account].address
}

/// The node, or `None` (skipped) when its binary is missing; under `CI` a missing binary
/// fails the test.
fn start_node() -> Option<AnvilNode> {
    let bin = anvil_binary();
    if !bin.is_file() {
        let message = format!(
            "the anvil binary is not at {} (set ANVIL_BIN, or install the pinned node from the \
             workspace root with `npm ci --prefix tools/devnet`)",
            bin.display()
        );
        if std::env::var_os("CI").is_some() {
            panic!("{message}");
        }
        eprintln!("skipping the session layer test: {message}");
        return None;
    }
    AnvilNode::start()
}

/// One request as the server saw it (recorded around the paid routes).
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    /// `Authorization` is the only header a management `POST` needs.
    authorization: bool,
    /// Declared body length (`None`: no `Content-Length`).
    content_length: Option<String>,
    status: u16,
}

#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// How often the `/tokens` handler ran.
    token_handler: Arc<AtomicUsize>,
}

impl Recorder {
    fn since(&self, start: usize) -> Vec<Seen> {
        self.seen.lock().unwrap()[start..].to_vec()
    }

    fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn record(State(recorder): State<Recorder>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(String::new, |pq| pq.to_string());
    let authorization = req.headers().contains_key(AUTHORIZATION);
    let content_length = req
        .headers()
        .get(reqwest::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = next.run(req).await;
    recorder.seen.lock().unwrap().push(Seen {
        method,
        target,
        authorization,
        content_length,
        status: response.status().as_u16(),
    });
    response
}

async fn ping(paid: PaymentReceipt) -> String {
    format!("pong {}", paid.reference())
}

async fn words(
    State(recorder): State<Recorder>,
    meter: Meter,
    Query(query): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    recorder.token_handler.fetch_add(1, Ordering::SeqCst);
    let n: usize = query.get("n").and_then(|n| n.parse().ok()).unwrap_or(0);
    meter.sse(futures_util::stream::iter(
        (0..n).map(|i| format!("word{i}")),
    ))
}

struct Env {
    node: AnvilNode,
    chain: ChainClient,
    escrow: Address,
    base: String,
    recorder: Recorder,
    _dir: tempfile::TempDir,
}

impl Env {
    /// The node, the escrow and the app; the stream route waits `voucher_wait` for a voucher.
    ///
    /// v1: the canonical `TempoStreamChannel`, deployed. v2: the stand-in of the channel
    /// reserve precompile, installed at its address, which the payer approves (the stand-in
    /// pulls deposits with `transferFrom`).
    async fn start(protocol: SessionProtocol, voucher_wait: Duration) -> Option<Self> {
        let node = start_node()?;
        let rpc = node.rpc_url();
        let escrow = match protocol {
            SessionProtocol::V1 => stream_channel::deploy(&rpc, &key(DEPLOYER)).await.unwrap(),
            SessionProtocol::V2 => {
                channel_reserve::install(&rpc).await.unwrap();
                channel_reserve::approve(&rpc, &key(PAYER), TOKEN, U256::MAX)
                    .await
                    .unwrap();
                TIP20_CHANNEL_RESERVE
            }
        };
        let chain = ChainClient::new(&rpc, Duration::from_secs(5)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("mpp.db")).await.unwrap());
        let tempo = Tempo::builder()
            .rpc_url(&rpc)
            .recipient(addr(PAYEE))
            .currency(TOKEN)
            .store(store.clone())
            .maintenance_interval(Duration::ZERO)
            .build()
            .await
            .unwrap();
        let config = match protocol {
            SessionProtocol::V1 => SessionConfig::v1(escrow),
            SessionProtocol::V2 => SessionConfig::v2(),
        };
        let sessions = config
            .server_key(key(PAYEE), FEE_TOKEN)
            .channel_store(store)
            .suggested_deposit(SUGGESTED_DEPOSIT)
            .build(&tempo)
            .await
            .unwrap();
        let mpp = Mpp::new("session-layer-e2e-secret-0123456789abcdef")
            .unwrap()
            .method(sessions);
        let recorder = Recorder::default();
        let app = Router::new()
            .route("/ping", get(ping).layer(mpp.session("0.001").unwrap()))
            .route(
                "/tokens",
                get(words).layer(
                    mpp.session("0.0001")
                        .unwrap()
                        .unit("token")
                        .voucher_wait(voucher_wait),
                ),
            )
            .layer(axum::middleware::from_fn_with_state(
                recorder.clone(),
                record,
            ))
            .layer(mpp.layer())
            .with_state(recorder.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Some(Self {
            node,
            chain,
            escrow,
            base,
            recorder,
            _dir: dir,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn balance(&self, who: Address) -> u128 {
        self.chain
            .token_balance(TOKEN, who)
            .await
            .unwrap()
            .to::<u128>()
    }

    async fn on_chain(&self, id: B256) -> ITempoStreamChannel::Channel {
        ITempoStreamChannel::new(self.escrow, self.chain.provider())
            .getChannel(id)
            .call()
            .await
            .unwrap()
    }
}

/// The session receipt of a paid response.
fn session_receipt(response: &reqwest::Response) -> SessionReceipt {
    let value = response
        .headers()
        .get("payment-receipt")
        .unwrap_or_else(|| panic!("no Payment-Receipt on {}", response.status()))
        .to_str()
        .unwrap();
    SessionReceipt::from_header_value(value).unwrap()
}

fn to_session_receipt(receipt: &mpp_core::Receipt) -> SessionReceipt {
    SessionReceipt::from_json(&serde_json::to_value(receipt).unwrap()).unwrap()
}

fn challenges(response: &reqwest::Response) -> Vec<Challenge> {
    let lines = response
        .headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().unwrap());
    Challenge::parse_all_lines(lines).unwrap()
}

/// Checks a refusal: `status`, problem+json, and a fresh challenge (not `echoed`).
async fn assert_refusal(response: reqwest::Response, status: StatusCode, echoed: &str) -> String {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()[CONTENT_TYPE].to_str().unwrap(),
        "application/problem+json"
    );
    let fresh = challenges(&response);
    assert!(
        fresh
            .iter()
            .any(|c| c.intent == "session" && c.id != echoed),
        "{fresh:?}"
    );
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["status"], status.as_u16());
    problem["type"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn our_client_pays_the_session_layer_open_requests_stream_close() {
    let Some(env) = Env::start(SessionProtocol::V1, Duration::from_secs(30)).await else {
        return;
    };
    let started = Instant::now();
    let payer = Arc::new(
        TempoSessionPayer::new(key(PAYER), &env.node.rpc_url(), MAX_DEPOSIT)
            .unwrap()
            .escrow(env.escrow)
            .open_gas_limit(OPEN_GAS)
            .top_up_gas_limit(TOP_UP_GAS),
    );
    let client = SessionClient::with_payer(reqwest::Client::new(), payer.clone());
    let payee_before = env.balance(addr(PAYEE)).await;
    let ping_url = env.url("/ping");

    // Open on the first paid request: 200, content, and a receipt with the open tx.
    let paid = client.get(&ping_url).await.unwrap();
    assert_eq!(paid.response.status(), 200);
    let challenge = paid.payment.as_ref().unwrap().challenge.clone();
    let opened = session_receipt(&paid.response);
    let channel_id = opened.channel_id;
    assert!(opened.tx_hash.is_some(), "{opened:?}");
    assert_eq!(
        (opened.accepted_cumulative, opened.spent, opened.units),
        (PING_PRICE, PING_PRICE, Some(1))
    );
    assert_eq!(
        paid.response.text().await.unwrap(),
        format!("pong {channel_id:#x}")
    );
    let on_chain = env.on_chain(channel_id).await;
    assert_eq!(
        (
            on_chain.deposit,
            on_chain.payer,
            on_chain.payee,
            on_chain.token
        ),
        (SUGGESTED_DEPOSIT, addr(PAYER), addr(PAYEE), TOKEN)
    );

    // Three paid requests, one voucher each.
    for n in 2..=4u64 {
        let paid = client.get(&ping_url).await.unwrap();
        assert_eq!(paid.response.status(), 200);
        let receipt = session_receipt(&paid.response);
        assert_eq!(receipt.channel_id, channel_id);
        assert_eq!(
            (receipt.spent, receipt.units, receipt.tx_hash),
            (u128::from(n) * PING_PRICE, Some(n), None)
        );
    }
    let spent_before_stream = 4 * PING_PRICE;
    let mine = payer.channel(&challenge).unwrap();
    assert_eq!(
        (mine.channel_id, mine.spent, mine.accepted, mine.cumulative),
        (
            channel_id,
            spent_before_stream,
            spent_before_stream,
            spent_before_stream
        )
    );

    // A stream that outruns its vouchers (and the first deposit).
    let stream_url = env.url(&format!("/tokens?n={TOKENS}"));
    let posts_from = env.recorder.len();
    let mut events = client.sse(&stream_url);
    let mut data = Vec::new();
    while let Some(item) = events.next().await {
        data.push(item.unwrap());
    }
    let expected: Vec<String> = (0..TOKENS).map(|i| format!("word{i}")).collect();
    assert_eq!(data, expected);
    assert!(events.vouchers() >= 1, "no voucher was asked for");
    let last = to_session_receipt(&events.receipt().expect("a final payment-receipt event"));
    assert_eq!(last.channel_id, channel_id);
    assert_eq!(
        last.spent - spent_before_stream,
        TOKENS as u128 * TOKEN_PRICE
    );
    assert_eq!(last.units, Some(4 + TOKENS as u64));
    let spent = last.spent;
    // The vouchers went out as body-less POSTs to the stream's URL, query included, each
    // answered 204; the top-up too.
    let posts: Vec<Seen> = env
        .recorder
        .since(posts_from)
        .into_iter()
        .filter(|s| s.method == "POST")
        .collect();
    assert!(posts.len() as u64 > events.vouchers(), "{posts:?}"); // + the top-up
    for post in &posts {
        assert_eq!(post.target, format!("/tokens?n={TOKENS}"));
        assert!(post.authorization);
        assert!(
            matches!(post.content_length.as_deref(), None | Some("0")),
            "{post:?}"
        );
        assert_eq!(post.status, 204, "{post:?}");
    }
    // The top-up reached the chain and the payer's books.
    let mine = payer.channel(&challenge).unwrap();
    assert_eq!(mine.deposit, 2 * SUGGESTED_DEPOSIT);
    assert_eq!(
        env.on_chain(channel_id).await.deposit,
        2 * SUGGESTED_DEPOSIT
    );
    assert_eq!(
        (mine.spent, mine.accepted),
        (spent, last.accepted_cumulative)
    );
    assert_eq!(env.recorder.token_handler.load(Ordering::SeqCst), 1);

    // A bare voucher POST to the stream's URL, answering its GET challenge: management, 204,
    // and the handler never runs.
    let unpaid = client.http().get(&stream_url).send().await.unwrap();
    assert_eq!(unpaid.status(), 402);
    let get_challenge = challenges(&unpaid)
        .into_iter()
        .find(|c| c.intent == "session")
        .unwrap();
    let again = payer.voucher_for(&get_challenge, 0).await.unwrap();
    assert!(again.top_up.is_none());
    let response = client
        .http()
        .post(&stream_url)
        .header(AUTHORIZATION, again.voucher.to_authorization())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let receipt = session_receipt(&response);
    assert_eq!((receipt.channel_id, receipt.spent), (channel_id, spent));
    assert_eq!(receipt.challenge_id, get_challenge.id);
    assert_eq!(env.recorder.token_handler.load(Ordering::SeqCst), 1);

    // Refusals carry problem+json and a fresh challenge.
    let signer = SessionSigner::new(
        key(PAYER),
        VoucherDomain::new(
            SessionProtocol::V1,
            env.chain.chain_id().await.unwrap(),
            env.escrow,
        ),
    );
    let voucher = |channel_id: B256, amount: u128| {
        let channel = SessionChannel {
            channel_id,
            descriptor: None,
        };
        let payload = signer.voucher(&channel, amount).unwrap().to_json();
        Credential::new(challenge.clone(), payload)
            .with_source(signer.source())
            .to_authorization()
    };
    // A voucher POST below the accepted voucher: 402.
    let response = client
        .http()
        .post(&ping_url)
        .header(AUTHORIZATION, voucher(channel_id, PING_PRICE))
        .send()
        .await
        .unwrap();
    let kind = assert_refusal(response, StatusCode::PAYMENT_REQUIRED, &challenge.id).await;
    assert!(kind.ends_with("verification-failed"), "{kind}");
    // A channel the server does not know: 410.
    let response = client
        .http()
        .get(&ping_url)
        .header(AUTHORIZATION, voucher(B256::random(), PING_PRICE))
        .send()
        .await
        .unwrap();
    let kind = assert_refusal(response, StatusCode::GONE, &challenge.id).await;
    assert!(kind.ends_with("channel-not-found"), "{kind}");

    // Close: 204 with the close transaction; the payee got exactly what was consumed.
    let closes_from = env.recorder.len();
    let closed = to_session_receipt(&client.close(&ping_url).await.unwrap());
    assert_eq!(closed.channel_id, channel_id);
    assert!(closed.tx_hash.is_some(), "{closed:?}");
    assert_eq!(closed.accepted_cumulative, spent);
    let close_posts = env.recorder.since(closes_from);
    assert_eq!(close_posts.len(), 1, "{close_posts:?}");
    assert_eq!(
        (
            close_posts[0].method.as_str(),
            close_posts[0].target.as_str(),
            close_posts[0].status
        ),
        ("POST", "/ping", 204)
    );
    assert!(
        payer.channel(&challenge).is_none(),
        "the closed channel is forgotten"
    );
    let on_chain = env.on_chain(channel_id).await;
    assert!(on_chain.finalized);
    assert_eq!(env.balance(addr(PAYEE)).await - payee_before, spent);
    eprintln!(
        "session layer: open, 3 requests, {TOKENS}-token stream ({} vouchers, one top-up), \
         close in {:?}",
        events.vouchers(),
        started.elapsed()
    );
}

/// Two streams on one channel at once: each asks for vouchers while the other holds
/// headroom, and both must get all their items (not stall until the voucher deadline).
#[tokio::test]
async fn two_streams_on_one_channel_both_finish() {
    let Some(env) = Env::start(SessionProtocol::V1, Duration::from_secs(5)).await else {
        return;
    };
    let payer = Arc::new(
        TempoSessionPayer::new(key(PAYER), &env.node.rpc_url(), MAX_DEPOSIT)
            .unwrap()
            .escrow(env.escrow)
            .open_gas_limit(OPEN_GAS)
            .top_up_gas_limit(TOP_UP_GAS),
    );
    let client = SessionClient::with_payer(reqwest::Client::new(), payer.clone());
    let paid = client.get(&env.url("/ping")).await.unwrap();
    assert_eq!(paid.response.status(), 200);
    let started = Instant::now();
    let read = |n: usize| {
        let mut events = client.sse(&env.url(&format!("/tokens?n={n}")));
        async move {
            let mut data = Vec::new();
            while let Some(item) = events.next().await {
                data.push(item.unwrap());
            }
            (data.len(), to_session_receipt(&events.receipt().unwrap()))
        }
    };
    let ((a, _), (b, _)) = tokio::join!(read(TOKENS), read(TOKENS));
    eprintln!("two streams: {a} + {b} items in {:?}", started.elapsed());
    assert_eq!((a, b), (TOKENS, TOKENS));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a stream stalled"
    );
}

/// v2 (the channel reserve precompile's ABI, on its stand-in): the payer's descriptor-based
/// open, vouchers, a stream with a top-up, and a close that captures only what was spent.
#[tokio::test]
async fn v2_open_stream_close_on_the_precompile_stand_in() {
    let Some(env) = Env::start(SessionProtocol::V2, Duration::from_secs(30)).await else {
        return;
    };
    let rpc = env.node.rpc_url();
    // No escrow pinned: the precompile is v2's default on every chain.
    let payer = Arc::new(
        TempoSessionPayer::new(key(PAYER), &rpc, MAX_DEPOSIT)
            .unwrap()
            .open_gas_limit(OPEN_GAS)
            .top_up_gas_limit(TOP_UP_GAS),
    );
    let client = SessionClient::with_payer(reqwest::Client::new(), payer.clone());
    let payee_before = env.balance(addr(PAYEE)).await;
    let ping_url = env.url("/ping");

    // The open by hand: the stand-in must be told the open's expiring nonce hash first.
    let unpaid = client.http().get(&ping_url).send().await.unwrap();
    let offered = challenges(&unpaid);
    let challenge = mpp_core::Payer::choose(payer.as_ref(), &offered)
        .unwrap()
        .clone();
    let open = payer.pay_session(&challenge).await.unwrap();
    assert_eq!(open.payload["action"], "open");
    let nonce_hash: B256 = open.payload["descriptor"]["expiringNonceHash"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    channel_reserve::set_next_expiring_nonce_hash(&rpc, &key(PAYER), nonce_hash)
        .await
        .unwrap();
    let response = client
        .http()
        .get(&ping_url)
        .header(AUTHORIZATION, open.to_authorization())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let opened = session_receipt(&response);
    assert!(opened.tx_hash.is_some());
    payer.acknowledge(&opened).unwrap();
    let channel_id = opened.channel_id;

    // Requests and a stream through the client, as in v1.
    for n in 2..=4u64 {
        let paid = client.get(&ping_url).await.unwrap();
        assert_eq!(paid.response.status(), 200);
        let receipt = session_receipt(&paid.response);
        assert_eq!(
            (receipt.channel_id, receipt.spent),
            (channel_id, u128::from(n) * PING_PRICE)
        );
    }
    let mut events = client.sse(&env.url(&format!("/tokens?n={TOKENS}")));
    let mut count = 0;
    while let Some(item) = events.next().await {
        item.unwrap();
        count += 1;
    }
    assert_eq!(count, TOKENS);
    assert!(events.vouchers() >= 1);
    let last = to_session_receipt(&events.receipt().unwrap());
    let spent = 4 * PING_PRICE + TOKENS as u128 * TOKEN_PRICE;
    assert_eq!(last.spent, spent);
    assert_eq!(
        payer.channel(&challenge).unwrap().deposit,
        2 * SUGGESTED_DEPOSIT
    );

    // The close captures what was spent; the payee gets exactly that.
    let closed = to_session_receipt(&client.close(&ping_url).await.unwrap());
    assert_eq!(closed.channel_id, channel_id);
    assert!(closed.tx_hash.is_some());
    assert_eq!(env.balance(addr(PAYEE)).await - payee_before, spent);
    assert!(payer.channel(&challenge).is_none());
}
