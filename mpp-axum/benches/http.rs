//! Load generator: throughput and p50/p99 latency over real HTTP on loopback, for a bare axum
//! route, the 402 path (challenge issuance) and the verify path (a valid credential checked by
//! an in-process method), all in the same run.
//!
//! `cargo bench -p mpp-axum --bench http` (env `BENCH_SECS` per route, default 5;
//! `BENCH_CONNECTIONS`, default 32).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::Router;
use axum::routing::get;
use mpp_axum::Mpp;
use mpp_core::testing::TestMethod;
use mpp_core::{Challenge, Credential};
use serde_json::json;
use std::time::{Duration, Instant};

struct Figures {
    requests: usize,
    rps: f64,
    p50: Duration,
    p99: Duration,
}

async fn load(
    url: &str,
    authorization: Option<String>,
    expect: u16,
    secs: u64,
    connections: usize,
) -> Figures {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let client = client.clone();
        let url = url.to_owned();
        let authorization = authorization.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            while Instant::now() < deadline {
                let t = Instant::now();
                let mut req = client.get(&url);
                if let Some(a) = &authorization {
                    req = req.header("authorization", a);
                }
                let response = req.send().await.unwrap();
                assert_eq!(response.status().as_u16(), expect);
                let _ = response.bytes().await.unwrap();
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Figures {
        requests: all.len(),
        rps: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

fn main() {
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let connections: usize = std::env::var("BENCH_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mpp = Mpp::new("bench-secret-0123456789abcdef0123456789")
            .unwrap()
            // Accepts any payload, repeatedly: measures the layer, not a payment network.
            .method(TestMethod::new("bench").accept_any());
        let app = Router::new()
            .route("/bare", get(|| async { "fortune" }))
            .route(
                "/paid",
                get(|| async { "fortune" }).layer(mpp.charge("0.01").unwrap()),
            )
            .layer(mpp.layer());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        // One valid credential, reused: the method accepts it every time.
        let first = reqwest::get(format!("{base}/paid")).await.unwrap();
        let header = first.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        let challenge = Challenge::parse_all(&header).unwrap().remove(0);
        let authorization =
            Credential::new(challenge.clone(), json!({"type": "bench"})).to_authorization();

        println!("{connections} connections, {secs} s per route, loopback, same process");
        println!("| route | requests | req/s | p50 | p99 |");
        println!("|---|---|---|---|---|");
        for (name, path, auth, status) in [
            ("bare axum route", "/bare", None, 200),
            ("402 path (challenge issued)", "/paid", None, 402),
            (
                "verify path (credential checked, handler runs)",
                "/paid",
                Some(authorization),
                200,
            ),
        ] {
            let f = load(&format!("{base}{path}"), auth, status, secs, connections).await;
            println!(
                "| {name} | {} | {:.0} | {:?} | {:?} |",
                f.requests, f.rps, f.p50, f.p99
            );
        }
    });
}
