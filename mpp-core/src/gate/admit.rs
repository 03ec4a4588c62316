//! Issuing bound challenges and admitting credentials: the gate's two operations.

use super::refusal::{Detail, Loggable};
use super::{Offer, PaymentGate, Refusal};
use crate::accept_payment::AcceptPayment;
use crate::binding::BindingSlots;
use crate::challenge::Challenge;
use crate::credential::{Credential, CredentialError};
use crate::digest::{body_digest, verify_body_digest};
use crate::encoded_json::EncodedJson;
use crate::expiry::{format_timestamp, parse_timestamp};
use crate::method::{MethodError, PrepareContext, Verified, VerifyContext};
use crate::problem::ProblemType;
use time::OffsetDateTime;

/// What the transport knows about one request: the realm, the scope challenges are bound to
/// (HTTP: method and target; MCP: the tool), the bound body, the client's preferences, the
/// header the credential travels in (HTTP), and the time (read once from the gate's clock).
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    realm: &'a str,
    scope: Option<&'a EncodedJson>,
    body: Option<&'a [u8]>,
    accept: Option<&'a AcceptPayment>,
    credential_header: Option<&'a str>,
    content: bool,
    now: OffsetDateTime,
}

impl<'a> RequestContext<'a> {
    /// A request under `realm` at `now` (use [`PaymentGate::now`]).
    pub fn new(realm: &'a str, now: OffsetDateTime) -> Self {
        Self {
            realm,
            scope: None,
            body: None,
            accept: None,
            credential_header: None,
            content: true,
            now,
        }
    }

    /// Marks the request as management (`false`): it carries a credential to the server but
    /// asks for no content (see [`VerifyContext::content`]). Default `true`.
    #[must_use]
    pub fn content(mut self, content: bool) -> Self {
        self.content = content;
        self
    }

    /// The request header credentials must travel in (draft -01 `header` parameter, e.g.
    /// `Payment-Authorization`): challenges name it, and an echo must name it too.
    /// `Authorization` is the default and is never named.
    #[must_use]
    pub fn credential_header(mut self, header: &'a str) -> Self {
        self.credential_header = Some(header).filter(|h| !is_default_header(h));
        self
    }

    /// Binds challenges to `scope` (sent as `opaque`), and requires echoes to carry it.
    #[must_use]
    pub fn scope(mut self, scope: &'a EncodedJson) -> Self {
        self.scope = Some(scope);
        self
    }

    /// Binds challenges to this body (the `digest` parameter), and requires echoes to match it.
    #[must_use]
    pub fn body(mut self, body: &'a [u8]) -> Self {
        self.body = Some(body);
        self
    }

    /// Orders challenges by the client's `Accept-Payment`.
    #[must_use]
    pub fn accept(mut self, accept: Option<&'a AcceptPayment>) -> Self {
        self.accept = accept;
        self
    }

    /// The realm.
    pub fn realm(&self) -> &'a str {
        self.realm
    }

    /// The time of this request.
    pub fn now(&self) -> OffsetDateTime {
        self.now
    }
}

/// `Authorization`: the credential header a challenge names by naming none.
fn is_default_header(header: &str) -> bool {
    header.is_empty() || header.eq_ignore_ascii_case("Authorization")
}

/// A credential the gate checked and its method verified (and settled, unless the method
/// holds it for [`PaymentGate::settle`]).
#[derive(Debug)]
pub struct Admitted {
    /// What the method verified: receipt, payer, amount, whether to serve, and the held
    /// settlement if any.
    pub verified: Verified,
    /// The credential (its echoed challenge names the method and intent paid).
    pub credential: Credential,
}

/// A refusal found while checking the echo, before any method work.
type Rejection = (ProblemType, &'static str);

impl PaymentGate {
    /// Fresh challenges for every offer, in the client's `Accept-Payment` order. Fails only
    /// when a method that prepares challenges (see [`crate::Method::prepare_challenge`])
    /// cannot.
    pub async fn challenges(
        &self,
        offers: &[Offer],
        cx: &RequestContext<'_>,
    ) -> Result<Vec<Challenge>, Refusal> {
        let expires_at = cx.now + self.ttl();
        let expires = format_timestamp(expires_at);
        let digest = cx.body.map(body_digest);
        let mut challenges = Vec::with_capacity(offers.len());
        for offer in ranked(offers, cx.accept) {
            let prepare = offer.method().prepare_challenge(PrepareContext {
                offered: offer.request(),
                intent: offer.intent(),
                realm: cx.realm,
                expires: expires_at,
                now: cx.now,
            });
            let challenge = match prepare {
                None => self.sign(
                    offer,
                    offer.request().clone(),
                    &expires,
                    digest.as_deref(),
                    cx,
                ),
                Some(prepared) => match prepared.await {
                    Ok(prepared) => {
                        let expires = match prepared.expires {
                            Some(at) if at < expires_at => format_timestamp(at),
                            _ => expires.clone(),
                        };
                        self.sign(offer, prepared.request, &expires, digest.as_deref(), cx)
                    }
                    Err(error) => {
                        log_method_error(offer.method_name(), None, &error);
                        return Err(Refusal::from_method_error(&error, Vec::new()));
                    }
                },
            };
            challenges.push(challenge);
        }
        Ok(challenges)
    }

    fn sign(
        &self,
        offer: &Offer,
        request: EncodedJson,
        expires: &str,
        digest: Option<&str>,
        cx: &RequestContext<'_>,
    ) -> Challenge {
        let mut builder =
            Challenge::builder_encoded(cx.realm, offer.method_name(), offer.intent(), request)
                .expires(expires);
        if let Some(scope) = cx.scope {
            builder = builder.opaque(scope.clone());
        }
        if let Some(digest) = digest {
            builder = builder.digest(digest);
        }
        if let Some(description) = offer.description() {
            builder = builder.description(description);
        }
        if let Some(header) = cx.credential_header {
            builder = builder.header(header);
        }
        builder.sign(self.secret())
    }

    /// Admits a request: `credential` is what the transport found (`None`: none was sent;
    /// `Some(Err)`: one that cannot be decoded). A credential is checked against the offers
    /// (method and intent offered, HMAC binding under this realm, pinned terms, scope, expiry,
    /// body digest) and then verified and settled by its method.
    ///
    /// Every refusal carries fresh challenges where its problem type calls for them, and every
    /// outcome is logged here, once.
    pub async fn admit(
        &self,
        offers: &[Offer],
        credential: Option<Result<Credential, CredentialError>>,
        cx: &RequestContext<'_>,
    ) -> Result<Admitted, Refusal> {
        let credential = match credential {
            None => {
                tracing::trace!("no credential: issuing challenges");
                // One offer: name its price, so a person reading the 402 sees it.
                let detail = match offers {
                    [offer] => offer.payment_required_detail(),
                    _ => None,
                }
                .map_or(Detail::from("Payment is required."), |d| {
                    Detail::Shared(d.clone())
                });
                return Err(self
                    .refuse(offers, cx, ProblemType::PaymentRequired, detail)
                    .await);
            }
            Some(Err(error)) => {
                tracing::info!(problem = "malformed-credential", reason = %error, "payment refused");
                return Err(self
                    .refuse(
                        offers,
                        cx,
                        ProblemType::MalformedCredential,
                        error.to_string(),
                    )
                    .await);
            }
            Some(Ok(credential)) => credential,
        };
        let echo = &credential.challenge;
        let (offer, expires) = match self.check(offers, &credential, cx) {
            Ok(checked) => checked,
            Err((problem, detail)) => {
                tracing::info!(
                    problem = problem.code(),
                    reason = detail,
                    challenge_id = %Loggable(&echo.id),
                    method = %Loggable(&echo.method),
                    "payment refused"
                );
                return Err(self.refuse(offers, cx, problem, detail).await);
            }
        };
        let ctx = VerifyContext::new(&credential, cx.realm, expires, cx.now)
            .with_max_lifetime(self.max_lifetime())
            .with_content(cx.content);
        match offer.method().verify(ctx).await {
            Ok(verified) => {
                tracing::info!(
                    method = offer.method_name(),
                    intent = offer.intent(),
                    reference = %Loggable(&verified.receipt.reference),
                    amount = verified.amount,
                    "payment accepted"
                );
                Ok(Admitted {
                    verified,
                    credential,
                })
            }
            Err(error) => Err(self
                .method_refusal(offers, cx, offer.method_name(), &echo.id, &error)
                .await),
        }
    }

    /// The refusal of a method's error (logged here): a payer fault carries fresh
    /// challenges where its problem type calls for them.
    pub(super) async fn method_refusal(
        &self,
        offers: &[Offer],
        cx: &RequestContext<'_>,
        method: &str,
        challenge_id: &str,
        error: &MethodError,
    ) -> Refusal {
        log_method_error(method, Some(challenge_id), error);
        let challenges = match error {
            MethodError::Rejected { problem, .. } if problem.carries_challenge() => {
                self.challenges(offers, cx).await.unwrap_or_default()
            }
            _ => Vec::new(),
        };
        Refusal::from_method_error(error, challenges)
    }

    /// A payer-side refusal with fresh challenges (none if preparing them failed: the
    /// refusal still stands, and the failure was logged).
    async fn refuse(
        &self,
        offers: &[Offer],
        cx: &RequestContext<'_>,
        problem: ProblemType,
        detail: impl Into<Detail>,
    ) -> Refusal {
        let challenges = if problem.carries_challenge() {
            match self.challenges(offers, cx).await {
                Ok(challenges) => challenges,
                Err(refusal) => return refusal,
            }
        } else {
            Vec::new()
        };
        Refusal::with_detail(problem, detail.into(), challenges)
    }

    /// The checks that need no method work. Order matters for the problem type reported.
    fn check<'o>(
        &self,
        offers: &'o [Offer],
        credential: &Credential,
        cx: &RequestContext<'_>,
    ) -> Result<(&'o Offer, OffsetDateTime), Rejection> {
        let invalid = ProblemType::InvalidChallenge;
        let echo = &credential.challenge;
        let mut candidates = offers
            .iter()
            .filter(|o| o.method_name() == echo.method && o.intent() == echo.intent)
            .peekable();
        if candidates.peek().is_none() {
            return Err((
                invalid,
                "the credential answers a method or intent this route does not offer",
            ));
        }
        if !self.binding_holds(credential, cx.realm, cx.now) {
            return Err((
                invalid,
                "the challenge was not issued by this server, or was altered",
            ));
        }
        // The HMAC binds the `header` the challenge named; this holds the echo to the header
        // the credential must come in here (the transport read it from that one).
        let echoed_header = echo.header.as_deref().filter(|h| !is_default_header(h));
        let same_header = match (echoed_header, cx.credential_header) {
            (None, None) => true,
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        };
        if !same_header {
            return Err((
                invalid,
                "the challenge names another credential header than this route reads",
            ));
        }
        // Pinning: the HMAC proves we issued the echo; this proves we issued it for these
        // terms, so a challenge from a cheaper route cannot be spent here.
        let Some(offer) = candidates.find(|o| {
            o.method()
                .matches_offer(o.request().value(), echo.request.value())
        }) else {
            return Err((
                invalid,
                "the challenge does not match this route's payment terms",
            ));
        };
        if echo.opaque.as_ref().map(EncodedJson::value) != cx.scope.map(EncodedJson::value) {
            return Err((invalid, "the challenge was issued for another route"));
        }
        let Some(expires) = echo.expires.as_deref() else {
            return Err((invalid, "the challenge has no expiry"));
        };
        let Ok(expires) = parse_timestamp(expires) else {
            return Err((invalid, "the challenge expiry is not an RFC 3339 timestamp"));
        };
        if cx.now >= expires && !offer.method().accepts_expired(credential) {
            return Err((ProblemType::PaymentExpired, "the challenge has expired"));
        }
        // We never issue a challenge living longer than this: a later `expires` was minted
        // with a leaked secret. (A cap too large for the calendar is no cap.)
        let latest = time::Duration::try_from(self.max_lifetime())
            .ok()
            .and_then(|max| cx.now.checked_add(max));
        if latest.is_some_and(|latest| expires > latest) {
            return Err((
                invalid,
                "the challenge expires later than this server allows",
            ));
        }
        if let Some(body) = cx.body {
            let matches = echo
                .digest
                .as_deref()
                .is_some_and(|d| verify_body_digest(d, body));
            if !matches {
                return Err((
                    invalid,
                    "the request body does not match the challenge's digest",
                ));
            }
        }
        Ok((offer, expires))
    }

    /// The HMAC over the echo, under this server's realm; also over the canonical re-encoding
    /// of `request`/`opaque`, for clients that re-serialize them (mppx accepts those too).
    fn binding_holds(&self, credential: &Credential, realm: &str, now: OffsetDateTime) -> bool {
        let echo = &credential.challenge;
        let secret = self.secret();
        if secret.verify(&echo.id, &echo.binding_slots_for_realm(realm), now) {
            return true;
        }
        let Ok(request) = echo.request.canonical_wire() else {
            return false;
        };
        let opaque = match &echo.opaque {
            Some(o) => match o.canonical_wire() {
                Ok(w) => Some(w),
                Err(_) => return false,
            },
            None => None,
        };
        let slots = BindingSlots {
            request: &request,
            opaque: opaque.as_deref(),
            ..echo.binding_slots_for_realm(realm)
        };
        secret.verify(&echo.id, &slots, now)
    }
}

/// The offers in the client's `Accept-Payment` order (offer order without the header).
fn ranked<'o>(
    offers: &'o [Offer],
    accept: Option<&AcceptPayment>,
) -> impl Iterator<Item = &'o Offer> {
    let order: Option<Vec<usize>> =
        accept.map(|a| a.rank(offers.iter().map(|o| (o.method_name(), o.intent()))));
    let count = order.as_ref().map_or(offers.len(), Vec::len);
    (0..count).filter_map(move |i| match &order {
        Some(order) => order.get(i).and_then(|&j| offers.get(j)),
        None => offers.get(i),
    })
}

/// The one log line of a method's failure.
fn log_method_error(method: &str, challenge_id: Option<&str>, error: &MethodError) {
    let challenge_id = challenge_id.map(Loggable);
    match error {
        MethodError::Rejected { problem, detail } => tracing::info!(
            method,
            challenge_id = challenge_id.as_ref().map(tracing::field::display),
            problem = problem.code(),
            reason = %Loggable(detail),
            "payment refused"
        ),
        MethodError::Unavailable(cause) => tracing::warn!(
            method,
            challenge_id = challenge_id.as_ref().map(tracing::field::display),
            cause = %cause,
            "payment infrastructure unavailable"
        ),
        MethodError::Pending(cause) => tracing::warn!(
            method,
            challenge_id = challenge_id.as_ref().map(tracing::field::display),
            cause = %cause,
            "payment sent, outcome not known yet"
        ),
        MethodError::Throttled {
            detail,
            retry_after,
        } => tracing::info!(
            method,
            challenge_id = challenge_id.as_ref().map(tracing::field::display),
            reason = %Loggable(detail),
            retry_after,
            "payment deferred by the server's limits"
        ),
        MethodError::Config(cause) => tracing::error!(
            method,
            challenge_id = challenge_id.as_ref().map(tracing::field::display),
            cause = %cause,
            "payment method misconfigured"
        ),
    }
}
