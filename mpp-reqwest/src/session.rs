//! [`SessionClient`]: pay-as-you-go over payment channels (the `session` intent), with any
//! [`SessionPayer`] (the Tempo one is `mpp_tempo::session::TempoSessionPayer`).
//!
//! - [`get`](SessionClient::get) / [`send`](SessionClient::send) pay a `402` as
//!   [`PaymentClient`] does (the payer opens a channel, then pays each request with a
//!   voucher), and hand every `Payment-Receipt` to the payer;
//! - [`sse`](SessionClient::sse) reads a metered Server-Sent Events stream: it yields the
//!   `message` data, answers each `payment-need-voucher` event with a voucher (and a top-up
//!   first when the payer needs one) `POST`ed to the stream's URL, and records the
//!   `payment-receipt` events;
//! - [`close`](SessionClient::close) closes the channel and returns the server's receipt.
//!
//! Management credentials (vouchers, top-ups, closes) are sent as the official clients send
//! them: a `POST` without a body to the same URL, query string included, carrying only the
//! credential header, answering the challenge the stream or request was paid with. A `402`
//! to one is answered once more: signed again (from the payer's highest voucher) for the
//! fresh challenge it carries.
//!
//! ```no_run
//! # async fn demo(payer: impl mpp_core::payer::SessionPayer + 'static) -> Result<(), mpp_reqwest::PayError> {
//! use futures_util::StreamExt as _;
//! use mpp_reqwest::SessionClient;
//!
//! let client = SessionClient::new(reqwest::Client::new(), payer);
//! let paid = client.get("http://127.0.0.1:3000/ping").await?; // opens a channel
//! println!("{}", paid.response.status());
//! let mut tokens = client.sse("http://127.0.0.1:3000/tokens?n=20"); // vouchers as asked
//! while let Some(token) = tokens.next().await {
//!     print!("{} ", token?);
//! }
//! println!("\nfinal receipt: {:?}", tokens.receipt());
//! let receipt = client.close("http://127.0.0.1:3000/ping").await?; // 204 + receipt
//! println!("closed: {}", receipt.to_json());
//! # Ok(()) }
//! ```

use crate::{PaidResponse, PayError, PaymentClient, challenges, credential_header, receipt_of};
use futures_util::Stream;
use mpp_core::payer::{Payer, SessionPayer};
use mpp_core::{Challenge, Credential, Receipt};
use reqwest::header::ACCEPT;
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// The intent this client handles.
const SESSION: &str = "session";

/// The longest SSE line (or unterminated tail) accepted from a server.
const MAX_LINE: usize = 4 << 20;

/// How much of a refusal's body goes into an error message.
const MAX_DETAIL: usize = 512;

/// An HTTP client that pays sessions: requests, metered SSE streams and the close. Cheap to
/// clone (clones share the payer and what was paid). See the [module docs](self).
#[derive(Clone)]
pub struct SessionClient {
    client: PaymentClient,
    payer: Arc<dyn SessionPayer>,
    /// The session challenge each URL was last paid with (what its vouchers and close
    /// answer).
    paid: Arc<Mutex<HashMap<String, Challenge>>>,
    /// Taken while a stream's vouchers are signed and sent.
    turn: Arc<futures_util::lock::Mutex<()>>,
}

/// What a management `POST` came to.
enum Posted {
    /// Accepted (`2xx`), with its receipt.
    Accepted(Option<Receipt>),
    /// Refused with `402`: the fresh session challenge it carries, and the error to report
    /// if it is not retried.
    Refused { fresh: Challenge, error: PayError },
}

impl std::fmt::Debug for SessionClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionClient").finish_non_exhaustive()
    }
}

impl SessionClient {
    /// A client that pays with `payer`.
    pub fn new(http: reqwest::Client, payer: impl SessionPayer + 'static) -> Self {
        Self::with_payer(http, Arc::new(payer))
    }

    /// A client that pays with a shared payer (keep a handle to read its channels).
    pub fn with_payer(http: reqwest::Client, payer: Arc<dyn SessionPayer>) -> Self {
        let as_payer: Arc<dyn Payer> = payer.clone();
        Self {
            client: PaymentClient::with_payer(http, as_payer),
            payer,
            paid: Arc::default(),
            turn: Arc::default(),
        }
    }

    /// The underlying client, to build requests with.
    pub fn http(&self) -> &reqwest::Client {
        self.client.http()
    }

    /// `GET url`, paying if asked to.
    pub async fn get(&self, url: &str) -> Result<PaidResponse, PayError> {
        self.send(self.http().get(url)).await
    }

    /// Sends `request`, paying a `402` as [`PaymentClient::send`] does; the receipt of a
    /// session payment is recorded by the payer (an error if the payer distrusts it), and a
    /// `402` or `410` refusal of the credential is reported to it. A payment refused with
    /// `402` (its voucher overtaken by a concurrent request's) is made once more.
    pub async fn send(&self, request: RequestBuilder) -> Result<PaidResponse, PayError> {
        let again = request.try_clone();
        let paid = self.send_once(request).await?;
        let refused = paid.response.status() == StatusCode::PAYMENT_REQUIRED
            && paid
                .payment
                .as_ref()
                .is_some_and(|p| p.challenge.intent == SESSION);
        match again {
            // A voucher overtaken by another request's (refused as below the accepted one),
            // or headroom taken by a concurrent stream: once more, with a new voucher.
            Some(again) if refused => {
                tracing::debug!("session payment refused; paying once more");
                self.send_once(again).await
            }
            _ => Ok(paid),
        }
    }

    async fn send_once(&self, request: RequestBuilder) -> Result<PaidResponse, PayError> {
        let paid = self.client.send(request).await?;
        if let Some(payment) = &paid.payment
            && payment.challenge.intent == SESSION
        {
            let status = paid.response.status();
            if let Some(receipt) = &payment.receipt {
                self.payer.record_receipt(&payment.challenge, receipt)?;
            }
            if is_refusal(status) {
                self.payer.refused(&payment.challenge, status.as_u16());
            } else {
                self.remember(paid.response.url(), &payment.challenge);
            }
        }
        Ok(paid)
    }

    /// The `message` data of the SSE stream at `url` (`GET`, `Accept: text/event-stream`),
    /// paying as it goes: see the [module docs](self). The request is sent when the stream
    /// is first polled. The stream ends after the server's last event, or after its first
    /// error (the request or a voucher failed, the server sent more than 4 MiB in a line).
    /// Frames may end lines with LF, CRLF or CR; comments are skipped; events of other
    /// names than the payment ones are data.
    pub fn sse(&self, url: &str) -> SessionEvents {
        let stats = Arc::new(Mutex::new(Stats::default()));
        let run = Run {
            client: self.clone(),
            url: url.to_owned(),
            challenge: None,
            response: None,
            parser: Parser::default(),
            stats: stats.clone(),
            done: false,
        };
        SessionEvents {
            inner: Box::pin(futures_util::stream::unfold(run, Run::next)),
            stats,
        }
    }

    /// Closes the channel `url` was paid through: `POST`s a `close` credential (answering
    /// the challenge `url` was last paid with, or a fresh one asked for with a `GET`) and
    /// returns the server's receipt (its `txHash` is the close transaction). Fails unless
    /// the answer is a success carrying a `Payment-Receipt`.
    pub async fn close(&self, url: &str) -> Result<Receipt, PayError> {
        let parsed = Url::parse(url).map_err(|e| PayError::Session(format!("url {url}: {e}")))?;
        let challenge = match self.remembered(&parsed) {
            Some(challenge) => challenge,
            None => self.fresh_challenge(url).await?,
        };
        let mut challenge = challenge;
        let mut retried = false;
        let receipt = loop {
            let credential = self.payer.close(&challenge).await?;
            match self.post_credential(url, &credential, "close").await? {
                Posted::Accepted(receipt) => break receipt,
                // Once more, for the fresh challenge.
                Posted::Refused { fresh, .. } if !retried => {
                    retried = true;
                    challenge = fresh;
                }
                Posted::Refused { error, .. } => return Err(error),
            }
        };
        let receipt = receipt.ok_or_else(|| {
            PayError::Session("the close was answered without a Payment-Receipt".into())
        })?;
        if let Ok(mut paid) = self.paid.lock() {
            paid.remove(parsed.as_str());
        }
        Ok(receipt)
    }

    /// `POST`s a management credential to `url` (no body, only the credential header). A
    /// `2xx` is accepted (its receipt recorded), a `402` refused with the fresh challenge it
    /// carries; anything else is an error.
    async fn post_credential(
        &self,
        url: &str,
        credential: &Credential,
        what: &str,
    ) -> Result<Posted, PayError> {
        let header = credential_header(&credential.challenge)?;
        let response = self
            .http()
            .post(url)
            .header(header, credential.to_authorization())
            .send()
            .await?;
        let status = response.status();
        if status.is_success() {
            let receipt = receipt_of(&response);
            if let Some(receipt) = &receipt {
                self.payer.record_receipt(&credential.challenge, receipt)?;
            }
            tracing::debug!(%status, what, "management credential accepted");
            return Ok(Posted::Accepted(receipt));
        }
        if is_refusal(status) {
            self.payer.refused(&credential.challenge, status.as_u16());
        }
        let fresh = (status == StatusCode::PAYMENT_REQUIRED)
            .then(|| self.session_challenge(&response))
            .flatten();
        let error = PayError::Session(format!(
            "the server answered the {what} credential with {status}: {}",
            detail(response).await
        ));
        match fresh {
            Some(fresh) => Ok(Posted::Refused { fresh, error }),
            None => Err(error),
        }
    }

    /// The first session challenge of a `402` this client's payer can answer.
    fn session_challenge(&self, response: &Response) -> Option<Challenge> {
        challenges(response).ok().and_then(|offered| {
            offered
                .iter()
                .find(|c| c.intent == SESSION && self.payer.supports(c))
                .cloned()
        })
    }

    /// A session challenge for `url`, from the `402` of an unpaid `GET`.
    async fn fresh_challenge(&self, url: &str) -> Result<Challenge, PayError> {
        let response = self.http().get(url).send().await?;
        if response.status() != StatusCode::PAYMENT_REQUIRED {
            return Err(PayError::Session(format!(
                "{url} answered {} to an unpaid request: no session challenge to answer",
                response.status()
            )));
        }
        let offered = challenges(&response)?;
        offered
            .iter()
            .find(|c| c.intent == SESSION && self.payer.supports(c))
            .cloned()
            .ok_or_else(|| {
                let names: Vec<String> = offered
                    .iter()
                    .map(|c| format!("{}/{}", c.method, c.intent))
                    .collect();
                PayError::Unsupported(names.join(", "))
            })
    }

    fn remember(&self, url: &Url, challenge: &Challenge) {
        if let Ok(mut paid) = self.paid.lock() {
            paid.insert(url.as_str().to_owned(), challenge.clone());
        }
    }

    fn remembered(&self, url: &Url) -> Option<Challenge> {
        self.paid.lock().ok()?.get(url.as_str()).cloned()
    }
}

/// A refusal of a payment: the payer may have to drop its channel.
fn is_refusal(status: StatusCode) -> bool {
    status == StatusCode::PAYMENT_REQUIRED || status == StatusCode::GONE
}

/// The start of a refusal's body (its problem `detail` when it is problem JSON).
async fn detail(response: Response) -> String {
    let text = response.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
        .unwrap_or(text);
    detail.chars().take(MAX_DETAIL).collect()
}

/// What a stream did, readable while and after it runs.
#[derive(Debug, Default)]
struct Stats {
    vouchers: u64,
    receipt: Option<Receipt>,
}

/// The `message` data of a paid SSE stream ([`SessionClient::sse`]), plus what it paid.
pub struct SessionEvents {
    inner: Pin<Box<dyn Stream<Item = Result<String, PayError>> + Send>>,
    stats: Arc<Mutex<Stats>>,
}

impl std::fmt::Debug for SessionEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionEvents")
            .field("vouchers", &self.vouchers())
            .finish_non_exhaustive()
    }
}

impl SessionEvents {
    /// How many `payment-need-voucher` events were answered so far.
    pub fn vouchers(&self) -> u64 {
        self.stats.lock().map_or(0, |s| s.vouchers)
    }

    /// The last `payment-receipt` event (the final one once the stream has ended).
    pub fn receipt(&self) -> Option<Receipt> {
        self.stats.lock().ok()?.receipt.clone()
    }
}

impl Stream for SessionEvents {
    type Item = Result<String, PayError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// The state of one stream.
struct Run {
    client: SessionClient,
    url: String,
    /// The challenge the stream was paid with (`None`: it was free).
    challenge: Option<Challenge>,
    response: Option<Response>,
    parser: Parser,
    stats: Arc<Mutex<Stats>>,
    done: bool,
}

impl Run {
    async fn next(mut self) -> Option<(Result<String, PayError>, Self)> {
        if self.done {
            return None;
        }
        match self.step().await {
            Ok(Some(data)) => Some((Ok(data), self)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some((Err(e), self))
            }
        }
    }

    async fn step(&mut self) -> Result<Option<String>, PayError> {
        if self.response.is_none() {
            self.start().await?;
        }
        loop {
            while let Some(event) = self.parser.events.pop_front() {
                match event.name.as_deref() {
                    Some("payment-need-voucher") => self.need_voucher(&event.data).await?,
                    Some("payment-receipt") => self.receipt(&event.data)?,
                    _ => return Ok(Some(event.data)),
                }
            }
            let Some(response) = self.response.as_mut() else {
                return Ok(None);
            };
            match response.chunk().await? {
                Some(chunk) => self.parser.push(&chunk)?,
                None => {
                    // An event without its closing blank line is dropped (as browsers do).
                    self.done = true;
                    return Ok(None);
                }
            }
        }
    }

    async fn start(&mut self) -> Result<(), PayError> {
        let request = self
            .client
            .http()
            .get(&self.url)
            .header(ACCEPT, "text/event-stream");
        let paid = self.client.send(request).await?;
        let status = paid.response.status();
        if !status.is_success() {
            return Err(PayError::Session(format!(
                "the stream {} answered {status}: {}",
                self.url,
                detail(paid.response).await
            )));
        }
        self.challenge = paid
            .payment
            .map(|p| p.challenge)
            .filter(|c| c.intent == SESSION);
        self.response = Some(paid.response);
        Ok(())
    }

    async fn need_voucher(&mut self, data: &str) -> Result<(), PayError> {
        let Some(challenge) = &self.challenge else {
            return Err(PayError::Session(
                "the server asks for a voucher on a stream that was not paid with a session".into(),
            ));
        };
        let mut challenge = challenge.clone();
        // One stream's vouchers at a time: sent in the order they were signed, so a lower one
        // never arrives after a higher one.
        let _turn = self.client.turn.lock().await;
        let mut retried = false;
        'ask: loop {
            let credentials = self.client.payer.need_voucher(&challenge, data).await?;
            for credential in &credentials {
                let what = credential
                    .payload
                    .get("action")
                    .and_then(|a| a.as_str())
                    .unwrap_or("voucher");
                match self
                    .client
                    .post_credential(&self.url, credential, what)
                    .await?
                {
                    Posted::Accepted(_) => {}
                    // Overtaken by another request's voucher (refused as below the accepted
                    // one), or a stale challenge: signed again, from the payer's highest, for
                    // the fresh challenge.
                    Posted::Refused { fresh, .. } if !retried => {
                        retried = true;
                        challenge = fresh;
                        continue 'ask;
                    }
                    Posted::Refused { error, .. } => return Err(error),
                }
            }
            break;
        }
        if let Ok(mut stats) = self.stats.lock() {
            stats.vouchers += 1;
        }
        Ok(())
    }

    fn receipt(&mut self, data: &str) -> Result<(), PayError> {
        let receipt: Receipt = serde_json::from_str(data)
            .map_err(|e| PayError::Session(format!("malformed payment-receipt event: {e}")))?;
        if let Some(challenge) = &self.challenge {
            self.client.payer.record_receipt(challenge, &receipt)?;
        }
        if let Ok(mut stats) = self.stats.lock() {
            stats.receipt = Some(receipt);
        }
        Ok(())
    }
}

/// One dispatched SSE event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    /// The `event:` field (`None`: a `message`).
    name: Option<String>,
    data: String,
}

/// A lenient SSE parser: lines end with LF, CRLF or CR (also across chunks), `field:value`
/// with an optional space, comments skipped, an event dispatched on a blank line when it has
/// data.
#[derive(Debug, Default)]
struct Parser {
    buf: Vec<u8>,
    started: bool,
    name: Option<String>,
    data: Option<String>,
    events: VecDeque<Event>,
}

impl Parser {
    fn push(&mut self, chunk: &[u8]) -> Result<(), PayError> {
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(offset) = self.buf[start..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
        {
            let end = start + offset;
            let next = match self.buf.get(end) {
                Some(b'\r') => match self.buf.get(end + 1) {
                    Some(b'\n') => end + 2,
                    Some(_) => end + 1,
                    // A CR at the end of the chunk may be the first half of a CRLF.
                    None => break,
                },
                _ => end + 1,
            };
            let line = String::from_utf8_lossy(&self.buf[start..end]).into_owned();
            start = next;
            self.line(&line);
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_LINE {
            return Err(PayError::Session(format!(
                "the stream sent a line longer than {MAX_LINE} bytes"
            )));
        }
        Ok(())
    }

    fn line(&mut self, line: &str) {
        let line = if self.started {
            line
        } else {
            self.started = true;
            line.strip_prefix('\u{feff}').unwrap_or(line)
        };
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                self.events.push_back(Event {
                    name: self.name.take(),
                    data,
                });
            }
            self.name = None;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.name = Some(value.to_owned()).filter(|n| !n.is_empty()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {} // `id`, `retry`, unknown fields
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&[u8]]) -> Vec<Event> {
        let mut parser = Parser::default();
        for chunk in chunks {
            parser.push(chunk).unwrap();
        }
        parser.events.into_iter().collect()
    }

    fn event(name: Option<&str>, data: &str) -> Event {
        Event {
            name: name.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    #[test]
    fn frames_with_any_line_end_and_split_anywhere() {
        let text = "event: message\ndata: hello\n\n: keep-alive\n\nevent:payment-receipt\r\ndata:{\"a\":1}\r\n\r\ndata: multi\rdata: line\r\rid: 7\nretry: 10\nevent: message\ndata:\n\n";
        let expected = vec![
            event(Some("message"), "hello"),
            event(Some("payment-receipt"), "{\"a\":1}"),
            event(None, "multi\nline"),
            event(Some("message"), ""),
        ];
        assert_eq!(parse(&[text.as_bytes()]), expected);
        // Every split point, CRLF across chunks included, gives the same events.
        let bytes = text.as_bytes();
        for split in 0..bytes.len() {
            assert_eq!(
                parse(&[&bytes[..split], &bytes[split..]]),
                expected,
                "split at {split}"
            );
        }
    }

    #[test]
    fn events_without_data_and_unterminated_tails_are_not_dispatched() {
        assert!(parse(&[b"event: x\n\n\n\ndata: tail"]).is_empty());
        assert_eq!(
            parse(&["\u{feff}data: bom\n\n".as_bytes()]),
            vec![event(None, "bom")]
        );
        assert_eq!(
            parse(&[b"data: \xff\xfe\n\n"]),
            vec![event(None, "\u{fffd}\u{fffd}")]
        );
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut parser = Parser::default();
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..4 {
            parser.push(&chunk).unwrap();
        }
        assert!(parser.push(b"a").is_err());
    }
}
