//! The paying client against a real axum server on loopback, with the in-process test method:
//! GET and POST (with a body bound by digest) are paid and retried once; free routes and
//! unpayable offers are told apart.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::routing::{get, post};
use mpp_axum::{Mpp, PaymentReceipt};
use mpp_core::payer::PayError as PayerError;
use mpp_core::testing::TestMethod;
use mpp_core::{BoxFuture, Challenge, Credential, Payer};
use mpp_reqwest::{PayError, PaymentClient};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Pays `test` challenges with a fresh reference each time.
#[derive(Default)]
struct TestPayer {
    paid: AtomicUsize,
}

impl Payer for TestPayer {
    fn supports(&self, challenge: &Challenge) -> bool {
        challenge.method == "test"
    }
    fn pay<'a>(
        &'a self,
        challenge: &'a Challenge,
    ) -> BoxFuture<'a, Result<Credential, PayerError>> {
        let n = self.paid.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            Ok(Credential::new(
                challenge.clone(),
                json!({"pay": format!("ref-{n}")}),
            ))
        })
    }
}

async fn serve(mpp: &Mpp) -> String {
    let app = Router::new()
        .route(
            "/fortune",
            get(|p: PaymentReceipt| async move { p.reference().to_owned() })
                .layer(mpp.charge("0.01").unwrap()),
        )
        .route(
            "/echo",
            post(|body: String| async move { body })
                .layer(mpp.charge("0.02").unwrap().bind_body(1024)),
        )
        .route("/free", get(|| async { "free" }))
        .layer(mpp.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[tokio::test]
async fn pays_get_and_post_and_leaves_free_routes_alone() {
    let mpp = Mpp::new("client-test-secret-0123456789abcdef")
        .unwrap()
        .method(TestMethod::new("test"));
    let base = serve(&mpp).await;
    let client = PaymentClient::new(reqwest::Client::new(), TestPayer::default());

    let paid = client.get(&format!("{base}/fortune")).await.unwrap();
    assert_eq!(paid.response.status(), 200);
    let payment = paid.payment.expect("a payment was made");
    assert_eq!(payment.challenge.request.value()["amount"], "10000");
    assert_eq!(payment.receipt.expect("receipt").reference, "ref-0");

    let paid = client
        .send(client.http().post(format!("{base}/echo")).body("hello"))
        .await
        .unwrap();
    assert_eq!(paid.response.status(), 200);
    assert!(paid.payment.is_some());
    assert_eq!(paid.response.text().await.unwrap(), "hello");

    let free = client.get(&format!("{base}/free")).await.unwrap();
    assert_eq!(free.response.status(), 200);
    assert!(free.payment.is_none());
}

#[tokio::test]
async fn an_offer_the_payer_cannot_pay_is_an_error() {
    let mpp = Mpp::new("client-test-secret-0123456789abcdef")
        .unwrap()
        .method(TestMethod::new("card"));
    let base = serve(&mpp).await;
    let client = PaymentClient::new(reqwest::Client::new(), TestPayer::default());
    match client.get(&format!("{base}/fortune")).await {
        Err(PayError::Unsupported(offered)) => assert_eq!(offered, "card/charge"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
}
