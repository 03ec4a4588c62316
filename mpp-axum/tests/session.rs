//! The `session` layer and the metered SSE stream, over real HTTP on loopback, with an
//! in-process session method whose channel is a counter of units (the Tempo method, on a
//! real node, is exercised by the end-to-end tests). What is checked here is the layer's
//! side of the contract: content or management, the scope of a voucher `POST`ed to a `GET`
//! stream, charge on success, and the stream's billing, events, framing, deadline and
//! disconnects.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::Router;
use axum::extract::Query;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt as _;
use http::StatusCode;
use mpp_axum::{Meter, MeteredEvent, Mpp, PaymentReceipt};
use mpp_core::metering::{MeterError, Metering, Reserve};
use mpp_core::method::{Method, MethodError, PriceTerms, Settle, Verified, VerifyContext};
use mpp_core::{BoxFuture, Challenge, Credential, Receipt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

const SECRET: &str = "session-layer-test-secret-0123456789";

/// One channel, counted in units.
#[derive(Debug, Default)]
struct Ledger {
    /// Units the payer's vouchers cover.
    accepted: u64,
    spent: u64,
    holds: HashMap<String, u64>,
    /// Units committed by streams that were dropped (the client went away).
    detached: u64,
}

impl Ledger {
    fn free(&self) -> u64 {
        self.accepted - self.spent - self.holds.values().sum::<u64>()
    }
}

#[derive(Clone, Default)]
struct Channel {
    ledger: Arc<Mutex<Ledger>>,
    changed: Arc<Notify>,
    next_hold: Arc<AtomicUsize>,
}

impl Channel {
    fn with_accepted(units: u64) -> Self {
        let channel = Self::default();
        channel.ledger.lock().unwrap().accepted = units;
        channel
    }

    fn snapshot(&self) -> (u64, u64, u64) {
        let l = self.ledger.lock().unwrap();
        (l.accepted, l.spent, l.holds.values().sum())
    }

    fn hold(&self, units: u64) -> Option<String> {
        let mut l = self.ledger.lock().unwrap();
        if l.free() < units {
            return None;
        }
        let id = format!("h{}", self.next_hold.fetch_add(1, Ordering::SeqCst));
        l.holds.insert(id.clone(), units);
        Some(id)
    }

    fn receipt(&self) -> Receipt {
        let l = self.ledger.lock().unwrap();
        Receipt::success("test", "channel-1", "2026-01-01T00:00:00Z")
            .with_extra("acceptedCumulative", l.accepted.to_string())
            .with_extra("spent", l.spent.to_string())
    }
}

/// The `session` method: a voucher payload `{"action": "voucher", "units": N}` raises the
/// accepted units to N.
struct TestSessions {
    channel: Channel,
}

impl Method for TestSessions {
    fn name(&self) -> &str {
        "test"
    }

    fn supports_intent(&self, intent: &str) -> bool {
        intent == "session"
    }

    fn request(&self, terms: &PriceTerms) -> Result<Value, MethodError> {
        Ok(json!({
            "amount": terms.amount.to_base_units(6)?.to_string(),
            "currency": "usd",
            "unitType": terms.unit_type.as_deref().unwrap_or("request"),
        }))
    }

    fn accepts_expired(&self, credential: &Credential) -> bool {
        credential.payload["action"] == "voucher"
    }

    fn verify<'a>(
        &'a self,
        ctx: VerifyContext<'a>,
    ) -> BoxFuture<'a, Result<Verified, MethodError>> {
        Box::pin(async move {
            let units = ctx.credential.payload["units"]
                .as_u64()
                .ok_or_else(|| MethodError::invalid_payload("units"))?;
            {
                let mut l = self.channel.ledger.lock().unwrap();
                if units < l.accepted {
                    return Err(MethodError::verification_failed(
                        "below the highest voucher",
                    ));
                }
                l.accepted = units;
            }
            self.channel.changed.notify_waiters();
            if !ctx.content {
                return Ok(Verified::respond(204, self.channel.receipt()));
            }
            let hold = self.channel.hold(1).ok_or_else(|| {
                MethodError::rejected(
                    mpp_core::ProblemType::SessionInsufficientBalance,
                    "no headroom",
                )
            })?;
            let meter = TestMeter {
                channel: self.channel.clone(),
                hold: format!("stream-{hold}"),
            };
            Ok(Verified::serve(self.channel.receipt())
                .settle_later(AdmissionHold {
                    channel: self.channel.clone(),
                    hold,
                })
                .with_metering(Arc::new(meter)))
        })
    }
}

struct AdmissionHold {
    channel: Channel,
    hold: String,
}

impl Settle for AdmissionHold {
    fn settle(&mut self) -> BoxFuture<'_, Result<(), MethodError>> {
        Box::pin(async move {
            let mut l = self.channel.ledger.lock().unwrap();
            let units = l.holds.remove(&self.hold).unwrap_or(0);
            l.spent += units;
            Ok(())
        })
    }

    fn finish(self: Box<Self>, _served: bool) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            // Released if not taken.
            self.channel.ledger.lock().unwrap().holds.remove(&self.hold);
        })
    }
}

struct TestMeter {
    channel: Channel,
    hold: String,
}

impl TestMeter {
    fn commit_now(&self, units: u64, end: bool) {
        let mut l = self.channel.ledger.lock().unwrap();
        let held = l.holds.get(&self.hold).copied().unwrap_or(0);
        assert!(units <= held, "committed {units} with {held} held");
        l.spent += units;
        if end || held == units {
            l.holds.remove(&self.hold);
        } else {
            l.holds.insert(self.hold.clone(), held - units);
        }
    }
}

impl Metering for TestMeter {
    fn unit_price(&self) -> u128 {
        100
    }

    fn prepaid_units(&self) -> u64 {
        1
    }

    fn reserve(&self, min: u64, want: u64) -> BoxFuture<'_, Result<Reserve, MeterError>> {
        Box::pin(async move {
            let mut l = self.channel.ledger.lock().unwrap();
            let free = l.free();
            if free < min {
                let required = l.spent + l.holds.values().sum::<u64>() + min;
                return Ok(Reserve::NeedVoucher(
                    json!({"requiredUnits": required}).to_string(),
                ));
            }
            let units = want.min(free);
            *l.holds.entry(self.hold.clone()).or_default() += units;
            Ok(Reserve::Held(units))
        })
    }

    fn commit(&self, units: u64, end: bool) -> BoxFuture<'_, Result<(), MeterError>> {
        self.commit_now(units, end);
        Box::pin(async { Ok(()) })
    }

    fn changed(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), self.channel.changed.notified()).await;
        })
    }

    fn receipt(&self) -> BoxFuture<'_, Result<String, MeterError>> {
        Box::pin(async move { Ok(self.channel.receipt().to_json()) })
    }

    fn end_detached(&self, units: u64) {
        self.commit_now(units, true);
        self.channel.ledger.lock().unwrap().detached += units;
    }
}

#[derive(serde::Deserialize)]
struct N {
    n: usize,
    #[serde(default)]
    pace_ms: u64,
}

async fn tokens(meter: Meter, Query(q): Query<N>) -> Response {
    let pace = Duration::from_millis(q.pace_ms);
    let items = futures_util::stream::iter(0..q.n).then(move |i| async move {
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
        format!("t{i}")
    });
    meter.sse(items).into_response()
}

struct Server {
    base: String,
    channel: Channel,
    handler_calls: Arc<AtomicUsize>,
    http: reqwest::Client,
}

async fn server(accepted: u64, voucher_wait: Duration) -> Server {
    let channel = Channel::with_accepted(accepted);
    let mpp = Mpp::new(SECRET).unwrap().method(TestSessions {
        channel: channel.clone(),
    });
    let handler_calls = Arc::new(AtomicUsize::new(0));
    let counted = handler_calls.clone();
    let per_token = mpp
        .session("0.0001")
        .unwrap()
        .unit("token")
        .voucher_wait(voucher_wait)
        .keep_alive(Duration::from_millis(100));
    let app = Router::new()
        .route("/tokens", get(tokens).layer(per_token))
        .route(
            "/ping",
            get(move |paid: PaymentReceipt| {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    format!("pong {}", paid.reference())
                }
            })
            .layer(mpp.session("0.001").unwrap()),
        )
        .route(
            "/chat",
            post(|body: String| async move { format!("echo {body}") })
                .layer(mpp.session("0.001").unwrap()),
        )
        .route(
            "/broken",
            get(|| async { StatusCode::INTERNAL_SERVER_ERROR })
                .layer(mpp.session("0.001").unwrap()),
        )
        .layer(mpp.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        base,
        channel,
        handler_calls,
        http: reqwest::Client::new(),
    }
}

impl Server {
    /// The challenge of a `GET` to `path`.
    async fn challenge(&self, path: &str) -> Challenge {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
        let header = resp.headers()["www-authenticate"].to_str().unwrap();
        Challenge::parse_all(header).unwrap().remove(0)
    }

    fn voucher(challenge: &Challenge, units: u64) -> String {
        Credential::new(
            challenge.clone(),
            json!({"action": "voucher", "units": units}),
        )
        .to_authorization()
    }
}

/// The events of an SSE body: (name, data), comments as ("comment", text).
fn parse_events(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|frame| {
            if let Some(comment) = frame.strip_prefix(':') {
                return ("comment".to_owned(), comment.trim().to_owned());
            }
            let mut name = "message".to_owned();
            let mut data = Vec::new();
            for line in frame.split('\n') {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push(v.to_owned());
                }
            }
            (name, data.join("\n"))
        })
        .collect()
}

#[tokio::test]
async fn a_bare_post_voucher_to_a_get_stream_is_management() {
    let s = server(5, Duration::from_secs(5)).await;
    let challenge = s.challenge("/tokens?n=3").await;
    // The voucher POSTed to the stream's URL, query included, echoing the GET's challenge.
    let resp = s
        .http
        .post(format!("{}/tokens?n=3", s.base))
        .header("authorization", Server::voucher(&challenge, 9))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(resp.headers().contains_key("payment-receipt"));
    assert!(
        resp.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("private")
    );
    // Accepted, nothing charged, no stream started.
    assert_eq!(s.channel.snapshot(), (9, 0, 0));

    // A HEAD is management too.
    let resp = s
        .http
        .head(format!("{}/ping", s.base))
        .header(
            "authorization",
            Server::voucher(&s.challenge("/ping").await, 10),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(s.handler_calls.load(Ordering::SeqCst), 0);
    assert_eq!(s.channel.snapshot(), (10, 0, 0));
}

#[tokio::test]
async fn a_voucher_for_another_target_is_refused_with_a_fresh_challenge() {
    let s = server(5, Duration::from_secs(5)).await;
    let challenge = s.challenge("/tokens?n=3").await;
    let resp = s
        .http
        .post(format!("{}/tokens?n=4", s.base))
        .header("authorization", Server::voucher(&challenge, 9))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    assert!(resp.headers().contains_key("www-authenticate"));
    let problem: Value = resp.json().await.unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("invalid-challenge"),
        "{problem}"
    );
    assert_eq!(s.channel.snapshot(), (5, 0, 0));
}

#[tokio::test]
async fn content_is_charged_one_unit_on_success_only() {
    let s = server(5, Duration::from_secs(5)).await;
    let challenge = s.challenge("/ping").await;
    let resp = s
        .http
        .get(format!("{}/ping", s.base))
        .header("authorization", Server::voucher(&challenge, 5))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().contains_key("payment-receipt"));
    assert_eq!(s.channel.snapshot(), (5, 1, 0));

    // A POST with a body to a POST route is content: the handler runs and a unit is taken.
    let resp = s
        .http
        .post(format!("{}/chat", s.base))
        .header(
            "authorization",
            Server::voucher(&s.challenge_post("/chat").await, 5),
        )
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "echo hello");
    assert_eq!(s.channel.snapshot(), (5, 2, 0));

    // A handler that fails takes nothing, and its hold is released.
    let challenge = s.challenge("/broken").await;
    let resp = s
        .http
        .get(format!("{}/broken", s.base))
        .header("authorization", Server::voucher(&challenge, 5))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!resp.headers().contains_key("payment-receipt"));
    assert_eq!(s.channel.snapshot(), (5, 2, 0));
}

impl Server {
    /// The challenge of a `POST` with a body to `path`.
    async fn challenge_post(&self, path: &str) -> Challenge {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .body("hello")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
        let header = resp.headers()["www-authenticate"].to_str().unwrap();
        Challenge::parse_all(header).unwrap().remove(0)
    }
}

/// A stream of 12 tokens on a channel covering 5: 5 tokens, one need-voucher event, a voucher
/// POSTed mid-stream, the other 7, and a final receipt; exactly 12 units billed.
#[tokio::test]
async fn a_stream_bills_each_item_and_asks_for_a_voucher_once_per_exhaustion() {
    let s = server(5, Duration::from_secs(10)).await;
    let path = "/tokens?n=12&pace_ms=5";
    let challenge = s.challenge(path).await;
    let resp = s
        .http
        .get(format!("{}{path}", s.base))
        .header("authorization", Server::voucher(&challenge, 5))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().contains_key("payment-receipt"));
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let mut vouchers = 0;
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        let needs = text.matches("event: payment-need-voucher").count();
        if needs > vouchers {
            vouchers = needs;
            // The client signs for the rest of the stream, and POSTs it to the stream's URL.
            let resp = s
                .http
                .post(format!("{}{path}", s.base))
                .header("authorization", Server::voucher(&challenge, 12))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        }
    }
    assert!(!text.contains('\r'), "LF framing only");
    let events: Vec<_> = parse_events(&text)
        .into_iter()
        .filter(|(name, _)| name != "comment")
        .collect();
    let messages: Vec<_> = events.iter().filter(|(n, _)| n == "message").collect();
    assert_eq!(messages.len(), 12);
    assert_eq!(messages[11].1, "t11");
    let needs: Vec<_> = events
        .iter()
        .filter(|(n, _)| n == "payment-need-voucher")
        .collect();
    assert_eq!(needs.len(), 1, "{events:?}");
    // Asked after the 5 covered tokens: 5 spent or held, one more needed.
    let need: Value = serde_json::from_str(&needs[0].1).unwrap();
    assert_eq!(need["requiredUnits"], 6);
    let (name, receipt) = events.last().unwrap();
    assert_eq!(name, "payment-receipt");
    let receipt: Value = serde_json::from_str(receipt).unwrap();
    assert_eq!(receipt["spent"], "12");
    assert_eq!(s.channel.snapshot(), (12, 12, 0));
}

#[tokio::test]
async fn without_a_voucher_the_stream_ends_at_the_deadline_with_its_receipt() {
    let s = server(3, Duration::from_millis(300)).await;
    let path = "/tokens?n=10";
    let challenge = s.challenge(path).await;
    let text = s
        .http
        .get(format!("{}{path}", s.base))
        .header("authorization", Server::voucher(&challenge, 3))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = parse_events(&text);
    let messages = events.iter().filter(|(n, _)| n == "message").count();
    assert_eq!(messages, 3, "{events:?}");
    assert_eq!(events.last().unwrap().0, "payment-receipt");
    // Keep-alive comments while waiting (every 100 ms here, 300 ms of waiting).
    assert!(
        events
            .iter()
            .any(|(n, d)| n == "comment" && d == "keep-alive"),
        "{text}"
    );
    assert_eq!(s.channel.snapshot(), (3, 3, 0));
}

#[tokio::test]
async fn a_client_that_goes_away_is_billed_what_was_sent_and_nothing_is_left_held() {
    let s = server(50, Duration::from_secs(5)).await;
    let path = "/tokens?n=40&pace_ms=20";
    let challenge = s.challenge(path).await;
    let resp = s
        .http
        .get(format!("{}{path}", s.base))
        .header("authorization", Server::voucher(&challenge, 50))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while text.matches("event: message").count() < 5 {
        text.push_str(std::str::from_utf8(&body.next().await.unwrap().unwrap()).unwrap());
    }
    let received = text.matches("event: message").count() as u64;
    drop(body);
    // The server notices at its next write.
    let mut settled = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (_, spent, held) = s.channel.snapshot();
        if held == 0 {
            assert!(spent >= received, "spent {spent} < received {received}");
            assert!(spent < 40, "billed the whole stream: {spent}");
            settled = true;
            break;
        }
    }
    assert!(settled, "the reservation was never released");
    // The dropped stream committed what it had sent beyond the prepaid unit.
    let detached = s.channel.ledger.lock().unwrap().detached;
    assert_eq!(detached + 1, s.channel.snapshot().1);
}

#[tokio::test]
async fn event_data_lines_are_lf_framed_whatever_the_item_holds() {
    let event = MeteredEvent::data("a\r\nb\rc\nd");
    // axum writes the frame; read it back through a one-item SSE response.
    let sse = axum::response::sse::Sse::new(futures_util::stream::iter([Ok::<
        _,
        std::convert::Infallible,
    >(
        axum::response::sse::Event::from(event),
    )]));
    let body = axum::body::to_bytes(sse.into_response().into_body(), 1024)
        .await
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        "event: message\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
    );
}
