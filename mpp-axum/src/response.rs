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

/// Makes the handler's `Cache-Control` private: adds `private` once, and drops `public` and
/// `s-maxage`, which contradict it and would let a lax shared cache serve paid content to
/// unpaid requests (RFC 9111 §3.5). Other directives (`max-age`, `no-store`, ...) stay.
fn merge_private(headers: &mut HeaderMap) {
    let mut directives: Vec<String> = Vec::new();
    for value in headers.get_all(CACHE_CONTROL).iter() {
        if let Ok(value) = value.to_str() {
            directives.extend(split_directives(value).map(str::to_owned));
        }
    }
    directives.retain(|d| !is_shared_cache_directive(d));
    if !directives.iter().any(|d| d.eq_ignore_ascii_case("private")) {
        directives.push("private".to_owned());
    }
    if let Ok(value) = HeaderValue::from_str(&directives.join(", ")) {
        headers.insert(CACHE_CONTROL, value);
    }
}

/// `public` and `s-maxage`: the directives that let a shared cache store the response.
fn is_shared_cache_directive(directive: &str) -> bool {
    let name = directive.split('=').next().unwrap_or_default().trim();
    name.eq_ignore_ascii_case("public") || name.eq_ignore_ascii_case("s-maxage")
}

/// The trimmed, non-empty directives of a `Cache-Control` value. Commas inside quoted
/// arguments (`no-cache="a, b"`) do not split.
fn split_directives(value: &str) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts.into_iter().map(str::trim).filter(|d| !d.is_empty())
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
    fn private_drops_what_lets_shared_caches_store() {
        let merged = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(CACHE_CONTROL, HeaderValue::from_static(v));
            }
            merge_private(&mut h);
            assert_eq!(h.get_all(CACHE_CONTROL).iter().count(), 1);
            h[CACHE_CONTROL].to_str().unwrap().to_owned()
        };
        assert_eq!(
            merged(&["public, max-age=60, s-maxage=120"]),
            "max-age=60, private"
        );
        assert_eq!(
            merged(&["Public", "S-MaxAge = 5, no-transform"]),
            "no-transform, private"
        );
        // Already private, but also public: still cleaned.
        assert_eq!(merged(&["public, private"]), "private");
        // A quoted argument is one directive, even with a comma (or `public`) inside.
        assert_eq!(
            merged(&[r#"no-cache="public, x", max-age=1"#]),
            r#"no-cache="public, x", max-age=1, private"#
        );
        // `private="field"` only hides that field: the response still needs `private`.
        assert_eq!(
            merged(&[r#"private="set-cookie""#]),
            r#"private="set-cookie", private"#
        );
    }

    #[test]
    fn unavailable_has_retry_after_and_no_challenge() {
        let response = refusal_response(&Refusal::unavailable());
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        assert!(response.headers().get(WWW_AUTHENTICATE).is_none());
    }
}
