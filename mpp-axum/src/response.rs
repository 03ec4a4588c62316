//! The responses a payment layer writes itself, rendered here once: a [`Refusal`] as a
//! problem response (402 with fresh challenges, 503 with `Retry-After`, ...), a plain HTTP
//! problem (400, 413), and the receipt headers of a paid response.

use crate::headers::PAYMENT_RECEIPT;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use mpp_core::gate::Refusal;
use mpp_core::problem::PROBLEM_CONTENT_TYPE;
use mpp_core::{Problem, Receipt};

/// A refusal as an HTTP response: the problem body, one `WWW-Authenticate` line per fresh
/// challenge, `Cache-Control: no-store`, and `Retry-After` where a retry makes sense.
pub(crate) fn refusal_response(refusal: &Refusal) -> Response<Full<Bytes>> {
    let mut response = json_problem(refusal.status(), refusal.problem_json());
    let headers = response.headers_mut();
    for challenge in refusal.challenges() {
        // Offers refuse descriptions with control characters, so this cannot fail for a
        // challenge the gate issued; a header is never half-written either way. The value's
        // string becomes the header's bytes without a copy.
        match challenge
            .to_header_value()
            .ok()
            .and_then(|v| HeaderValue::from_maybe_shared(Bytes::from(v)).ok())
        {
            Some(value) => {
                headers.append(WWW_AUTHENTICATE, value);
            }
            None => {
                tracing::error!(method = %challenge.method, "challenge cannot be written as a header")
            }
        }
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(seconds) = refusal.retry_after() {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// A problem outside the payment flow (400 for a body that cannot be read or a price the
/// request does not allow, 413 for a body over the limit).
pub(crate) fn plain_problem(
    status: StatusCode,
    title: &str,
    detail: &str,
) -> Response<Full<Bytes>> {
    problem_response(&Problem {
        type_uri: "about:blank".into(),
        title: title.into(),
        status: status.as_u16(),
        detail: Some(detail.into()),
        challenge_id: None,
        hint: None,
    })
}

fn problem_response(problem: &Problem) -> Response<Full<Bytes>> {
    json_problem(problem.status, problem.to_json())
}

fn json_problem(status: u16, json: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(json)));
    // Room for what a refusal adds (type, cache, retry, a few challenges): no rehash.
    *response.headers_mut() = HeaderMap::with_capacity(8);
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
    response
}

/// Adds `Payment-Receipt` and merges `private` into `Cache-Control`.
pub(crate) fn attach_receipt(headers: &mut HeaderMap, receipt: &Receipt) {
    if let Ok(value) = HeaderValue::from_str(&receipt.to_header_value()) {
        headers.insert(PAYMENT_RECEIPT, value);
    }
    merge_private(headers);
}

fn merge_private(headers: &mut HeaderMap) {
    let existing: Vec<String> = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    let already_private = existing.iter().any(|v| {
        v.split(',')
            .any(|d| d.trim().eq_ignore_ascii_case("private"))
    });
    if already_private {
        return;
    }
    let merged = if existing.is_empty() {
        "private".to_owned()
    } else {
        format!("{}, private", existing.join(", "))
    };
    if let Ok(value) = HeaderValue::from_str(&merged) {
        headers.insert(CACHE_CONTROL, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_is_merged_once() {
        let mut h = HeaderMap::new();
        merge_private(&mut h);
        assert_eq!(h[CACHE_CONTROL], "private");
        merge_private(&mut h);
        assert_eq!(h[CACHE_CONTROL], "private");
        let mut h = HeaderMap::new();
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        merge_private(&mut h);
        assert_eq!(h[CACHE_CONTROL], "no-store, private");
    }

    #[test]
    fn unavailable_has_retry_after_and_no_challenge() {
        let response = refusal_response(&Refusal::unavailable());
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        assert!(response.headers().get(WWW_AUTHENTICATE).is_none());
    }
}
