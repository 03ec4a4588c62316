//! The official Rust SDK's session client (`mpp` 0.18.2 `TempoSessionProvider`, from
//! crates.io) pays the `paid-api` binary's sessions on a real local Tempo node, with the
//! canonical v1 `TempoStreamChannel` escrow.
//!
//! The client talks to the binary through a recording loopback proxy, so the test sees every
//! exchange as the client did. What it proves, in one channel's life:
//! - the open on `GET /ping` (`Accept-Payment: tempo/session`, `send_with_payment`) is
//!   answered `200` with a session receipt carrying the open's `txHash`, and three more pings
//!   move `spent` by 1000 and `units` by one; every receipt parses as the SDK's own
//!   `SessionReceipt`;
//! - `GET /tokens?n=40`, driven by `TempoSessionProvider::stream_event` as the SDK documents,
//!   delivers all 40 words; each token after the first needs a `payment-need-voucher`, which
//!   the SDK answers with a voucher `POST` to the stream's URL (query string included),
//!   answered `204`; the final `payment-receipt` shows `spent` grown by exactly 40 × 100;
//! - `TempoSessionProvider::close` is answered `204` with the close transaction in its
//!   receipt, and the payee's pathUSD balance grows by what was consumed (the payee's server
//!   key pays its fees in AlphaUSD).
//!
//! The stream stays within the first deposit: mpp 0.18.2 tops up only v2 channels ("automatic
//! top-up requires the native TIP-1034 precompile"), so a v1 channel cannot grow mid-stream.
//!
//! Skips (with a message) when the node binary is missing, unless `CI` is set.
//! Run: `cargo test -p mpp-example-paid-api --test mpp_rs_session`

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::StreamExt as _;
use mpp::client::{Fetch as _, TempoSessionProvider};
use mpp::protocol::core::parse_receipt;
use mpp::protocol::methods::tempo::SessionReceipt;
use mpp_core::Credential;
use mpp_tempo::testing::{AnvilNode, DEV_ACCOUNTS, stream_channel, token_balance, tokens};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use support::{RECIPIENT, start_paid_api};

/// `session("0.001")` and `session("0.0001")` at 6 decimals.
const PING_PRICE: u128 = 1_000;
const TOKEN_PRICE: u128 = 100;
/// The open and three more.
const PINGS: u128 = 4;
/// 4 × 1000 + 40 × 100 = 8000, within the suggested deposit (10000).
const TOKENS: u128 = 40;
/// The escrow's deployer, the payer; the payee is `RECIPIENT` (dev account 3), whose key
/// the server holds.
const DEPLOYER: usize = 0;
const PAYER: usize = 5;
const PAYEE: usize = 3;

/// One request through the proxy, and its answer.
#[derive(Debug, Clone)]
struct Exchange {
    method: String,
    target: String,
    /// The session action of its `Authorization: Payment` credential.
    action: Option<String>,
    cumulative: Option<u128>,
    status: u16,
    /// The `Payment-Receipt` of the answer.
    receipt: Option<SessionReceipt>,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    client: reqwest::Client,
    seen: Arc<Mutex<Vec<Exchange>>>,
}

/// Forwards a request to the binary as it came (the answer's body streams through) and
/// records the exchange.
async fn forward(State(proxy): State<Proxy>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(String::new, |pq| pq.to_string());
    let credential = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Credential::from_authorization(v).ok());
    let payload = credential.as_ref().map(|c| &c.payload);
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let mut headers = parts.headers.clone();
    headers.remove(http::header::HOST);
    let answer = proxy
        .client
        .request(parts.method.clone(), format!("{}{target}", proxy.upstream))
        .headers(headers)
        .body(body)
        .send()
        .await
        .expect("the binary answers");
    let receipt = answer
        .headers()
        .get("payment-receipt")
        .map(|r| session_receipt(r.to_str().unwrap()));
    proxy.seen.lock().unwrap().push(Exchange {
        method: parts.method.to_string(),
        target,
        action: payload.and_then(|p| p["action"].as_str().map(str::to_owned)),
        cumulative: payload.and_then(|p| p["cumulativeAmount"].as_str().map(amount)),
        status: answer.status().as_u16(),
        receipt,
    });
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != http::header::TRANSFER_ENCODING && name != http::header::CONNECTION {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .unwrap()
}

/// Starts the recording proxy in front of `upstream`; returns its base URL and the record.
async fn start_proxy(upstream: &str) -> (String, Arc<Mutex<Vec<Exchange>>>) {
    let proxy = Proxy {
        upstream: upstream.to_owned(),
        client: reqwest::Client::new(),
        seen: Arc::default(),
    };
    let seen = proxy.seen.clone();
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, seen)
}

fn amount(value: &str) -> u128 {
    value.parse().unwrap()
}

/// A `Payment-Receipt` header, read by the SDK's parser and then as its session receipt
/// (the fields its session client reads).
fn session_receipt(header: &str) -> SessionReceipt {
    let receipt = parse_receipt(header).expect("the SDK parses the receipt");
    serde_json::from_value(serde_json::to_value(&receipt).unwrap())
        .expect("the receipt is a full session receipt")
}

fn assert_receipt(receipt: &SessionReceipt, channel_id: &str) {
    assert_eq!(receipt.method, "tempo");
    assert_eq!(receipt.intent, "session");
    assert_eq!(receipt.status, "success");
    assert_eq!(receipt.channel_id, channel_id);
    assert_eq!(receipt.reference, channel_id);
    assert!(!receipt.challenge_id.is_empty());
    assert!(amount(&receipt.spent) <= amount(&receipt.accepted_cumulative));
    if let Some(tx) = &receipt.tx_hash {
        assert_tx_hash(tx);
    }
}

fn assert_tx_hash(tx: &str) {
    assert!(
        tx.len() == 66 && tx.starts_with("0x") && tx[2..].bytes().all(|b| b.is_ascii_hexdigit()),
        "not a 32-byte hex hash: {tx}"
    );
}

async fn path_usd(rpc_url: &str, owner: Address) -> u128 {
    token_balance(rpc_url, tokens::PATH_USD, owner)
        .await
        .unwrap()
        .to::<u128>()
}

/// What a metered stream delivered, read as the SDK documents (`stream_event` for the
/// payment events).
#[derive(Default)]
struct StreamRead {
    messages: Vec<String>,
    need_voucher: usize,
    receipts: Vec<SessionReceipt>,
}

async fn read_stream(
    response: reqwest::Response,
    provider: &TempoSessionProvider,
    http: &reqwest::Client,
    url: &str,
) -> StreamRead {
    let mut read = StreamRead::default();
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    while let Some(chunk) = body.next().await {
        buffer.push_str(std::str::from_utf8(&chunk.expect("the stream goes on")).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let mut name = "message".to_owned();
            let mut data = Vec::new();
            for line in frame.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = value.trim().to_owned();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value));
                }
            }
            if data.is_empty() {
                continue; // a keep-alive comment
            }
            let data = data.join("\n");
            match name.as_str() {
                "payment-need-voucher" => read.need_voucher += 1,
                "payment-receipt" => read.receipts.push(serde_json::from_str(&data).unwrap()),
                _ => {}
            }
            match provider.stream_event(http, url, &name, &data) {
                Some(work) => work
                    .await
                    .unwrap_or_else(|e| panic!("the SDK handles `{name}` {data}: {e}")),
                None => read.messages.push(data),
            }
        }
    }
    read
}

#[tokio::test]
async fn mpp_rs_session_provider_pays_pings_a_stream_and_closes() {
    let Some(node) = AnvilNode::start() else {
        return;
    };
    let rpc = node.rpc_url();
    let started = Instant::now();
    let deployer: PrivateKeySigner = DEV_ACCOUNTS[DEPLOYER].private_key.parse().unwrap();
    let escrow = stream_channel::deploy(&rpc, &deployer).await.unwrap();
    let db = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", db.path().join("sessions.db").display());
    assert_eq!(
        DEV_ACCOUNTS[PAYEE].address,
        RECIPIENT.parse::<Address>().unwrap()
    );
    let api = start_paid_api(
        &rpc,
        &database_url,
        &[
            ("MPP_ESCROW", &format!("{escrow:#x}")),
            ("MPP_PAYEE_KEY", DEV_ACCOUNTS[PAYEE].private_key),
            // Not the channel token: the payee's pathUSD moves only by what channels pay.
            ("MPP_PAYEE_FEE_TOKEN", &format!("{:#x}", tokens::ALPHA_USD)),
        ],
    )
    .await;
    let (base, seen) = start_proxy(&api.base).await;
    eprintln!("node, escrow and paid-api: {:?}", started.elapsed());
    let payee_before = path_usd(&rpc, DEV_ACCOUNTS[PAYEE].address).await;

    let signer: PrivateKeySigner = DEV_ACCOUNTS[PAYER].private_key.parse().unwrap();
    let provider = TempoSessionProvider::new(signer, &rpc)
        .unwrap()
        .with_escrow_contract(escrow);
    let http = reqwest::Client::new();

    // The open, then paid pings.
    let started = Instant::now();
    let mut channel_id = String::new();
    for i in 0..PINGS {
        let response = http
            .get(format!("{base}/ping"))
            // The SDK pays only when the request opts in.
            .header("accept-payment", "tempo/session")
            .send_with_payment(&provider)
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let receipt = session_receipt(
            response
                .headers()
                .get("payment-receipt")
                .expect("a receipt")
                .to_str()
                .unwrap(),
        );
        if i == 0 {
            channel_id.clone_from(&receipt.channel_id);
        }
        assert_receipt(&receipt, &channel_id);
        assert_eq!(amount(&receipt.spent), (i + 1) * PING_PRICE);
        assert_eq!(amount(&receipt.accepted_cumulative), (i + 1) * PING_PRICE);
        assert_eq!(receipt.units, Some(i as u64 + 1));
        // Only the open carries a transaction.
        assert_eq!(receipt.tx_hash.is_some(), i == 0);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["pong"], true);
        assert_eq!(body["channel"], channel_id.as_str());
    }
    eprintln!("open + {} pings: {:?}", PINGS - 1, started.elapsed());

    // The stream, its vouchers answered by the SDK as the events come.
    let started = Instant::now();
    let stream_url = format!("{base}/tokens?n={TOKENS}");
    let response = http
        .get(&stream_url)
        .header("accept-payment", "tempo/session")
        .header("accept", "text/event-stream")
        .send_with_payment(&provider)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let admitted = session_receipt(
        response
            .headers()
            .get("payment-receipt")
            .expect("a receipt on the stream")
            .to_str()
            .unwrap(),
    );
    assert_receipt(&admitted, &channel_id);
    let first_voucher = PINGS * PING_PRICE + TOKEN_PRICE;
    assert_eq!(amount(&admitted.accepted_cumulative), first_voucher);
    let read = read_stream(response, &provider, &http, &stream_url).await;
    let stream_time = started.elapsed();
    assert_eq!(read.messages.len() as u128, TOKENS);
    assert_eq!(&read.messages[..4], ["Machine", "payments", "flow", "one"]);
    let consumed = PINGS * PING_PRICE + TOKENS * TOKEN_PRICE;
    let [last] = read.receipts.as_slice() else {
        panic!("one final receipt, not {}", read.receipts.len());
    };
    assert_receipt(last, &channel_id);
    assert_eq!(amount(&last.spent), consumed);
    assert_eq!(last.units, Some((PINGS + TOKENS) as u64));
    // Counted on the server's side: every accepted mid-stream voucher raised the accepted
    // total by one token, from the voucher the stream's request carried.
    let accepted_mid_stream = (amount(&last.accepted_cumulative) - first_voucher) / TOKEN_PRICE;
    assert!(read.need_voucher >= 1, "no mid-stream voucher was needed");
    assert_eq!(read.need_voucher as u128, TOKENS - 1);
    assert_eq!(accepted_mid_stream, read.need_voucher as u128);
    assert_eq!(provider.spend().spent, consumed);

    let exchanges = seen.lock().unwrap().clone();
    let target = format!("/tokens?n={TOKENS}");
    let vouchers: Vec<&Exchange> = exchanges
        .iter()
        .filter(|e| e.method == "POST" && e.action.as_deref() == Some("voucher"))
        .collect();
    assert_eq!(vouchers.len(), read.need_voucher);
    let mut last_cumulative = first_voucher;
    for voucher in &vouchers {
        assert_eq!(voucher.target, target, "{voucher:?}");
        assert_eq!(voucher.status, 204, "{voucher:?}");
        let receipt = voucher.receipt.as_ref().expect("a voucher receipt");
        assert_receipt(receipt, &channel_id);
        let cumulative = voucher.cumulative.unwrap();
        assert_eq!(
            cumulative,
            last_cumulative + TOKEN_PRICE,
            "one token per voucher"
        );
        assert_eq!(amount(&receipt.accepted_cumulative), cumulative);
        last_cumulative = cumulative;
    }
    assert!(
        !exchanges
            .iter()
            .any(|e| e.action.as_deref() == Some("topUp")),
        "no top-up: the first deposit covers it all"
    );
    eprintln!(
        "stream of {TOKENS} tokens: {stream_time:?}, {} vouchers",
        vouchers.len()
    );

    // The close: 204 with the close transaction; the payee paid what was consumed.
    let started = Instant::now();
    let closed = provider
        .close(&http, &stream_url)
        .await
        .unwrap()
        .expect("a close receipt");
    eprintln!("close: {:?}", started.elapsed());
    let close = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(close.method, "POST");
    assert_eq!(close.action.as_deref(), Some("close"));
    assert_eq!(close.target, target);
    assert_eq!(close.status, 204, "{close:?}");
    assert_eq!(close.cumulative, Some(consumed));
    let close_receipt = close.receipt.expect("a close receipt");
    assert_receipt(&close_receipt, &channel_id);
    let tx = close_receipt.tx_hash.as_deref().expect("the close txHash");
    assert_eq!(closed.reference, channel_id);
    assert_eq!(
        closed.extensions.get("txHash").and_then(|v| v.as_str()),
        Some(tx)
    );
    let spent = amount(&close_receipt.spent);
    assert_eq!(spent, consumed);
    let paid = path_usd(&rpc, DEV_ACCOUNTS[PAYEE].address).await - payee_before;
    eprintln!("consumed {consumed}, spent {spent}, the escrow paid the payee {paid}");
    // A v1 close pays the close voucher: at most one increment more than spent; exactly
    // spent here, as the SDK closes at its highest voucher, which equals spent.
    assert!(
        (spent..=spent + TOKEN_PRICE).contains(&paid),
        "paid {paid}, spent {spent}"
    );
    assert_eq!(paid, spent);
}
