//! The paying client against paid tools, in process and over streamable HTTP (a tower service
//! nested in an axum router).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use mpp_core::payer::PayError;
use mpp_core::{BoxFuture, Challenge, Credential, Payer};
use mpp_mcp::client::{CallError, PaymentClient};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use support::{Api, paid, test_gate};

/// Pays `test` challenges with a fresh reference each time, or with `payload` when set.
#[derive(Clone, Default)]
struct TestPayer {
    paid: Arc<AtomicUsize>,
    payload: Option<serde_json::Value>,
}

impl Payer for TestPayer {
    fn supports(&self, challenge: &Challenge) -> bool {
        challenge.method == "test"
    }

    fn pay<'a>(&'a self, challenge: &'a Challenge) -> BoxFuture<'a, Result<Credential, PayError>> {
        Box::pin(async move {
            let n = self.paid.fetch_add(1, Ordering::SeqCst);
            let payload = self
                .payload
                .clone()
                .unwrap_or_else(|| json!({"pay": format!("client-{n}")}));
            Ok(Credential::new(challenge.clone(), payload))
        })
    }
}

fn search(q: &str) -> CallToolRequestParams {
    CallToolRequestParams::new("search")
        .with_arguments(json!({"q": q}).as_object().cloned().unwrap())
}

#[tokio::test]
async fn the_client_pays_a_paid_tool_and_not_a_free_one() {
    let (api, method) = (Api::default(), test_gate());
    let payer = TestPayer::default();
    let client = PaymentClient::new(
        support::start(&api, method.gate.clone()).await,
        payer.clone(),
    );

    let paid = client.call_tool(search("mcp")).await.unwrap();
    assert_eq!(
        support::text(&paid.result),
        "results for mcp (paid by did:test:payer, 10000)"
    );
    let payment = paid.payment.unwrap();
    let receipt = payment.receipt.unwrap();
    assert_eq!(receipt.reference, "client-0");
    assert_eq!(receipt.extra["challengeId"], payment.challenge.id.as_str());
    assert_eq!(payer.paid.load(Ordering::SeqCst), 1);

    let free = client
        .call_tool(CallToolRequestParams::new("status"))
        .await
        .unwrap();
    assert!(free.payment.is_none());
    assert_eq!(support::text(&free.result), "up");
    assert_eq!(
        (payer.paid.load(Ordering::SeqCst), method.test.charges()),
        (1, 1)
    );
}

#[tokio::test]
async fn a_refused_payment_is_reported_not_paid_again() {
    let (api, method) = (Api::default(), test_gate());
    let payer = TestPayer {
        payload: Some(json!({"fail": "insufficient funds"})),
        ..TestPayer::default()
    };
    let client = PaymentClient::new(
        support::start(&api, method.gate.clone()).await,
        payer.clone(),
    );
    let Err(CallError::Refused(error)) = client.call_tool(search("x")).await else {
        panic!("a refused payment is an error");
    };
    assert_eq!(error.code.0, -32043);
    assert_eq!(
        error.data.unwrap()["problem"]["detail"],
        "insufficient funds"
    );
    assert_eq!((payer.paid.load(Ordering::SeqCst), api.searches()), (1, 0));
}

#[tokio::test]
async fn a_payer_for_other_methods_pays_nothing() {
    struct Nobody;
    impl Payer for Nobody {
        fn supports(&self, _: &Challenge) -> bool {
            false
        }
        fn pay<'a>(&'a self, _: &'a Challenge) -> BoxFuture<'a, Result<Credential, PayError>> {
            Box::pin(async { Err(PayError::new("never")) })
        }
    }
    let (api, method) = (Api::default(), test_gate());
    let client = PaymentClient::new(support::start(&api, method.gate.clone()).await, Nobody);
    let error = client.call_tool(search("x")).await.unwrap_err();
    assert!(
        matches!(&error, CallError::Unsupported(offered) if offered == "test/charge"),
        "{error}"
    );
}

#[tokio::test]
async fn paid_tools_over_streamable_http() {
    let (api, method) = (Api::default(), test_gate());
    let mcp = paid(&api, method.gate.clone())
        .into_streamable_http_service(StreamableHttpServerConfig::default());
    let app = axum::Router::new().nest_service("/mcp", mcp);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let transport = StreamableHttpClientTransport::from_uri(url);
    let running = ClientConfig::default().serve(transport).await.unwrap();
    let capabilities = &running.peer_info().unwrap().capabilities;
    assert!(
        capabilities
            .experimental
            .as_ref()
            .unwrap()
            .contains_key("payment")
    );
    let client = PaymentClient::new(running, TestPayer::default());
    for q in ["one", "two"] {
        let paid = client.call_tool(search(q)).await.unwrap();
        assert!(paid.payment.and_then(|p| p.receipt).is_some());
    }
    assert_eq!((api.searches(), method.test.charges()), (2, 2));
}

#[tokio::test]
async fn a_tool_error_after_payment_is_the_tools_not_a_refusal() {
    let (api, method) = (Api::default(), test_gate());
    let payer = TestPayer::default();
    let client = PaymentClient::new(
        support::start(&api, method.gate.clone()).await,
        payer.clone(),
    );
    let error = client
        .call_tool(CallToolRequestParams::new("broken"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, CallError::Service(rmcp::ServiceError::McpError(e)) if e.message == "the index is down"),
        "{error}"
    );
    // Paid once, taken never.
    assert_eq!(
        (payer.paid.load(Ordering::SeqCst), method.test.charges()),
        (1, 0)
    );
}
