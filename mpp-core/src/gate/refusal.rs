//! [`Refusal`]: every way a paid request can be turned away, as one neutral value that each
//! transport renders once (an HTTP problem response, a JSON-RPC error).

use crate::challenge::Challenge;
use crate::method::MethodError;
use crate::problem::{PROBLEM_BASE_URI, Problem, ProblemType};
use serde::Serialize;
use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalReason {
    /// The payer's side: no credential, a bad one, or a payment that does not pay. Answered
    /// with the problem's status (402, 400, 410) and, for 402/410, fresh challenges.
    Problem(ProblemType),
    /// Payment infrastructure (node, database) is down or slow: 503, this request took no
    /// money, the payer may retry.
    Unavailable,
    /// The server's own configuration cannot serve the request: 500.
    Misconfigured,
}

/// The public text of a 503: never the internal cause, which may name a node URL with its API
/// key or a database.
const UNAVAILABLE_DETAIL: &str = "Payment could not be verified right now; this request took no money. Retry later with \
     the same credential: a payment is charged at most once.";
/// The public text of a 503 for a payment that was sent and whose outcome is not known yet.
const PENDING_DETAIL: &str = "Your payment was submitted and its outcome is not known yet. \
     Send the same credential again to be served once it is confirmed; it is charged at most once.";
const MISCONFIGURED_DETAIL: &str = "The server's payment configuration cannot serve this request.";

/// A refused request: reason, public detail, and the fresh challenges to send with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    reason: RefusalReason,
    detail: Detail,
    challenges: Vec<Challenge>,
    /// Seconds, for the 503s.
    retry_after: u32,
}

/// A refusal's public text: fixed, written for this request, or shared with the offer that
/// keeps it (a route's "Payment is required: 0.01 ..." is written once, not per 402).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Detail {
    Text(Cow<'static, str>),
    Shared(Arc<str>),
}

impl Deref for Detail {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Self::Text(text) => text,
            Self::Shared(text) => text,
        }
    }
}

impl From<&'static str> for Detail {
    fn from(text: &'static str) -> Self {
        Self::Text(Cow::Borrowed(text))
    }
}

impl From<String> for Detail {
    fn from(text: String) -> Self {
        Self::Text(Cow::Owned(text))
    }
}

impl Refusal {
    /// A payer-side refusal of type `problem` with fresh `challenges` (ignored for problem
    /// types that carry none).
    pub fn problem(
        problem: ProblemType,
        detail: impl Into<Cow<'static, str>>,
        challenges: Vec<Challenge>,
    ) -> Self {
        Self::with_detail(problem, Detail::Text(detail.into()), challenges)
    }

    pub(crate) fn with_detail(
        problem: ProblemType,
        detail: Detail,
        challenges: Vec<Challenge>,
    ) -> Self {
        let challenges = if problem.carries_challenge() {
            challenges
        } else {
            Vec::new()
        };
        Self {
            reason: RefusalReason::Problem(problem),
            detail,
            challenges,
            retry_after: 0,
        }
    }

    /// Infrastructure down (503). The cause is for the log, not for the client.
    pub fn unavailable() -> Self {
        Self {
            reason: RefusalReason::Unavailable,
            detail: UNAVAILABLE_DETAIL.into(),
            challenges: Vec::new(),
            retry_after: 1,
        }
    }

    /// A payment was sent and its outcome is not known yet (503): the same credential is to
    /// be sent again, not a new payment.
    pub fn pending() -> Self {
        Self {
            reason: RefusalReason::Unavailable,
            detail: PENDING_DETAIL.into(),
            challenges: Vec::new(),
            retry_after: 1,
        }
    }

    /// The server's own limits defer the payment (503): `detail` is for the payer, and a
    /// retry after `retry_after` seconds can succeed.
    pub fn throttled(detail: impl Into<Cow<'static, str>>, retry_after: u32) -> Self {
        Self {
            reason: RefusalReason::Unavailable,
            detail: Detail::Text(detail.into()),
            challenges: Vec::new(),
            retry_after: retry_after.max(1),
        }
    }

    /// The server's configuration cannot serve the request (500).
    pub fn misconfigured() -> Self {
        Self {
            reason: RefusalReason::Misconfigured,
            detail: MISCONFIGURED_DETAIL.into(),
            challenges: Vec::new(),
            retry_after: 0,
        }
    }

    /// The one translation of a method's error into a refusal.
    pub(crate) fn from_method_error(error: &MethodError, challenges: Vec<Challenge>) -> Self {
        match error {
            MethodError::Rejected { problem, detail } => {
                Self::problem(*problem, detail.clone(), challenges)
            }
            MethodError::Unavailable(_) => Self::unavailable(),
            MethodError::Pending(_) => Self::pending(),
            MethodError::Throttled {
                detail,
                retry_after,
            } => Self::throttled(detail.clone(), *retry_after),
            MethodError::Config(_) => Self::misconfigured(),
        }
    }

    /// Why.
    pub fn reason(&self) -> RefusalReason {
        self.reason
    }

    /// The problem type, for payer-side refusals.
    pub fn problem_type(&self) -> Option<ProblemType> {
        match self.reason {
            RefusalReason::Problem(p) => Some(p),
            _ => None,
        }
    }

    /// The HTTP status (also sent as `httpStatus` over MCP).
    pub fn status(&self) -> u16 {
        match self.reason {
            RefusalReason::Problem(p) => p.status(),
            RefusalReason::Unavailable => 503,
            RefusalReason::Misconfigured => 500,
        }
    }

    /// What the client is told.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The fresh challenges to send (in the client's preferred order).
    pub fn challenges(&self) -> &[Challenge] {
        &self.challenges
    }

    /// Seconds after which a retry makes sense, for refusals that are worth retrying as they
    /// are (503).
    pub fn retry_after(&self) -> Option<u32> {
        matches!(self.reason, RefusalReason::Unavailable).then_some(self.retry_after)
    }

    /// The RFC 9457 problem, with the id of the first fresh challenge.
    pub fn to_problem(&self) -> Problem {
        let body = self.body();
        Problem {
            type_uri: body.type_uri.to_string(),
            title: body.title.to_owned(),
            status: body.status,
            detail: Some(body.detail.to_owned()),
            challenge_id: body.challenge_id.map(str::to_owned),
            hint: None,
        }
    }

    /// The problem as JSON (what [`Refusal::to_problem`] serializes to), written in one
    /// pass: this is the body of every 402.
    pub fn problem_json(&self) -> String {
        // Strings, integers and a `Display` URI always serialize. Sized for a typical body so
        // the buffer is not regrown.
        let mut json = Vec::with_capacity(192 + self.detail.len());
        if serde_json::to_writer(&mut json, &self.body()).is_err() {
            return String::new();
        }
        String::from_utf8(json).unwrap_or_default()
    }

    fn body(&self) -> ProblemBody<'_> {
        let (type_uri, title) = match self.reason {
            RefusalReason::Problem(p) => (TypeUri::Problem(p), p.title()),
            RefusalReason::Unavailable => (TypeUri::Blank, "Service Unavailable"),
            RefusalReason::Misconfigured => (TypeUri::Blank, "Payment Misconfigured"),
        };
        ProblemBody {
            type_uri,
            title,
            status: self.status(),
            detail: &self.detail,
            challenge_id: self.challenges.first().map(|c| c.id.as_str()),
        }
    }
}

/// The problem body, borrowed; fields in the order [`Problem`] serializes them.
#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    type_uri: TypeUri,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(rename = "challengeId", skip_serializing_if = "Option::is_none")]
    challenge_id: Option<&'a str>,
}

/// A problem type URI, written without building it first.
enum TypeUri {
    Problem(ProblemType),
    Blank,
}

impl fmt::Display for TypeUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Problem(ProblemType::Custom(custom)) => f.write_str(custom.uri),
            Self::Problem(p) => {
                f.write_str(PROBLEM_BASE_URI)?;
                f.write_str(p.code())
            }
            Self::Blank => f.write_str("about:blank"),
        }
    }
}

impl Serialize for TypeUri {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A client-controlled string made safe for a log line: control characters escaped, cut to
/// [`Loggable::MAX`] characters.
pub(crate) struct Loggable<'a>(pub(crate) &'a str);

impl Loggable<'_> {
    const MAX: usize = 120;
}

impl fmt::Display for Loggable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.chars().enumerate() {
            if i == Self::MAX {
                return f.write_str("…");
            }
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loggable_escapes_and_truncates() {
        assert_eq!(Loggable("a\nb\u{1b}[31m").to_string(), "a\\nb\\u{1b}[31m");
        let long = "x".repeat(500);
        let shown = Loggable(&long).to_string();
        assert_eq!(shown.chars().count(), Loggable::MAX + 1);
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn infrastructure_detail_never_reaches_the_client() {
        let error = MethodError::unavailable("http://user:key@node.internal:8545 refused");
        let refusal = Refusal::from_method_error(&error, Vec::new());
        assert_eq!(refusal.status(), 503);
        assert!(!refusal.to_problem().to_json().contains("node.internal"));
        let error = MethodError::config("postgres://db.internal failed");
        let refusal = Refusal::from_method_error(&error, Vec::new());
        assert_eq!(refusal.status(), 500);
        assert!(!refusal.to_problem().to_json().contains("db.internal"));
    }

    #[test]
    fn challenges_only_where_the_problem_carries_them() {
        let c = Challenge::builder_encoded(
            "r",
            "m",
            "charge",
            crate::EncodedJson::from_value(serde_json::json!({}))
                .unwrap_or_else(|_| unreachable!()),
        )
        .with_id("id1");
        let r = Refusal::problem(ProblemType::BadRequest, "bad", vec![c.clone()]);
        assert!(r.challenges().is_empty());
        let r = Refusal::problem(ProblemType::VerificationFailed, "no", vec![c]);
        assert_eq!(r.to_problem().challenge_id.as_deref(), Some("id1"));
        // The one-pass JSON is the problem's own serialization.
        for r in [r, Refusal::unavailable(), Refusal::misconfigured()] {
            assert_eq!(r.problem_json(), r.to_problem().to_json());
        }
    }
}
