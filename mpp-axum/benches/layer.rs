//! Criterion benchmarks of the layer in-process (no sockets): a bare axum route, the 402 path
//! and the verify path through `tower::ServiceExt::oneshot`, so the layer's own cost is seen
//! without the network's noise. `cargo bench -p mpp-axum --bench layer`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use mpp_axum::Mpp;
use mpp_core::testing::TestMethod;
use mpp_core::{Challenge, Credential};
use serde_json::json;
use tower::ServiceExt;

fn request(path: &str, authorization: Option<&str>) -> Request<Body> {
    let mut builder = Request::get(path).header("host", "127.0.0.1:3000");
    if let Some(a) = authorization {
        builder = builder.header("authorization", a);
    }
    builder.body(Body::empty()).unwrap()
}

fn layer(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mpp = Mpp::new("bench-secret-0123456789abcdef0123456789")
        .unwrap()
        .method(TestMethod::new("bench").accept_any());
    let app = Router::new()
        .route("/bare", get(|| async { "fortune" }))
        .route(
            "/paid",
            get(|| async { "fortune" })
                .layer(mpp.charge("0.01").unwrap().description("One fortune")),
        )
        .layer(mpp.layer());
    let first = runtime
        .block_on(app.clone().oneshot(request("/paid", None)))
        .unwrap();
    let header = first.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    let challenge = Challenge::parse_all(&header).unwrap().remove(0);
    let authorization = Credential::new(challenge, json!({"type": "bench"})).to_authorization();

    for (name, path, auth, status) in [
        ("bare axum route", "/bare", None, 200),
        ("402 path (challenge issued)", "/paid", None, 402),
        (
            "verify path (credential checked, handler runs)",
            "/paid",
            Some(authorization.as_str()),
            200,
        ),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                let response = runtime
                    .block_on(app.clone().oneshot(request(path, auth)))
                    .unwrap();
                assert_eq!(response.status().as_u16(), status);
                response
            })
        });
    }
}

criterion_group!(benches, layer);
criterion_main!(benches);
