//! The responses a payment layer writes itself: 402 with fresh challenges and a problem body,
//! 503 when payment infrastructure is down, and the receipt headers of a paid response.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use mpp_core::problem::PROBLEM_CONTENT_TYPE;
use mpp_core::{Challenge, Problem, Receipt};

/// The `Payment-Receipt` header.
pub const PAYMENT_RECEIPT: http::HeaderName = http::HeaderName::from_static("payment-receipt");

/// A problem response. 402 and 410 carry one `WWW-Authenticate` line per challenge.
pub(crate) fn problem_response(
    problem: &Problem,
    challenges: &[Challenge],
) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::PAYMENT_REQUIRED);
    let mut response = Response::new(Full::new(Bytes::from(problem.to_json())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for challenge in challenges {
        match challenge
            .to_header_value()
            .ok()
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            Some(value) => {
                headers.append(WWW_AUTHENTICATE, value);
            }
            None => tracing::error!(
                method = %challenge.method,
                "challenge cannot be written as a header (control characters in realm or description?)"
            ),
        }
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
    response
}

/// 503: a node or database is unreachable. Nothing was charged; the client may retry.
pub(crate) fn unavailable(detail: &str) -> Response<Full<Bytes>> {
    let problem = Problem {
        type_uri: "about:blank".into(),
        title: "Service Unavailable".into(),
        status: 503,
        detail: Some(format!(
            "Payment could not be verified right now; nothing was charged. Retry later. ({detail})"
        )),
        challenge_id: None,
        hint: None,
    };
    let mut response = problem_response(&problem, &[]);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// A plain problem without challenges (400 for a bad request, 500 for a misconfiguration).
pub(crate) fn plain_problem(
    status: StatusCode,
    title: &str,
    detail: &str,
) -> Response<Full<Bytes>> {
    let problem = Problem {
        type_uri: "about:blank".into(),
        title: title.into(),
        status: status.as_u16(),
        detail: Some(detail.into()),
        challenge_id: None,
        hint: None,
    };
    let mut response = problem_response(&problem, &[]);
    response.headers_mut().remove(CACHE_CONTROL);
    response
}

/// 500: the server's payment configuration cannot serve this route (logged where it happens).
pub(crate) fn misconfigured(detail: &str) -> Response<Full<Bytes>> {
    plain_problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Payment Misconfigured",
        detail,
    )
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
}
