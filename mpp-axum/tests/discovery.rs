//! Discovery (`openapi` feature): the document's offers are the 402's terms, route by route;
//! prices computed per request are `null`; sessions carry their unit; free routes carry no
//! payment info; utoipa-annotated handlers keep their schemas; `/openapi.json` and
//! `/llms.txt` are served free, with the cache header, as generated once.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::body::Body;
use axum::{Json, Router};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use mpp_axum::discovery::{self, Discovery, PaidRouter, PaymentInfo};
use mpp_axum::{Mpp, PriceError, PriceTerms, charge, session};
use mpp_core::testing::TestMethod;
use mpp_core::{Challenge, DecimalAmount};
use serde_json::{Value, json};
use tower::ServiceExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const SECRET: &str = "discovery-test-secret-0123456789abcdef";
const PATH_USD: &str = "0x20c0000000000000000000000000000000000000";

fn mpp() -> Mpp {
    Mpp::new(SECRET)
        .unwrap()
        .realm("api.example.com")
        .method(TestMethod::new("tempo").intents(&["charge", "session"]))
}

fn per_item(parts: &http::request::Parts) -> Result<PriceTerms, PriceError> {
    let items: u64 = parts
        .uri
        .query()
        .and_then(|q| q.strip_prefix("items="))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| PriceError::new("query `items=<count>` is required"))?;
    let amount = DecimalAmount::from_base_units(2, 3)
        .checked_mul(items)
        .ok_or_else(|| PriceError::new("too many items"))?;
    Ok(PriceTerms::charge(amount))
}

#[derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
struct Report {
    /// How many rows the report has.
    rows: u32,
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
struct ReportQuery {
    region: String,
}

/// A report, priced per request.
#[utoipa::path(
    post,
    path = "/report",
    request_body = ReportQuery,
    responses((status = 200, description = "The report", body = Report))
)]
async fn report(Json(query): Json<ReportQuery>) -> Json<Report> {
    Json(Report {
        rows: query.region.len() as u32,
    })
}

/// Free, and documented with its schema.
#[utoipa::path(get, path = "/catalog", responses((status = 200, body = Report)))]
async fn catalog() -> Json<Report> {
    Json(Report { rows: 0 })
}

/// Every kind of route: fixed charge (bound and unbound), dynamic charge, sessions, a
/// utoipa-annotated paid handler, a documented free route, an undocumented free route.
fn app(mpp: &Mpp) -> (Router, Discovery) {
    let (router, discovery) = PaidRouter::with_router(mpp, OpenApiRouter::default())
        .title("test api")
        .categories(["data"])
        .paid(
            discovery::get("/fortune", || async { "fortune" }).summary("A fortune"),
            mpp.charge("0.01").unwrap().description("One fortune"),
        )
        .unwrap()
        // Unbound: bound to the router's configuration (no `mpp.layer()` below).
        .paid(
            discovery::get("/quote", || async { "quote" }),
            charge("0.5"),
        )
        .unwrap()
        .paid(
            discovery::get("/items", || async { "items" }),
            mpp.charge_with(per_item)
                .unwrap()
                .description("0.002 per item"),
        )
        .unwrap()
        .paid(
            discovery::get("/tokens", || async { "tokens" }),
            session("0.0001").unit("token").description("Per token"),
        )
        .unwrap()
        .paid(
            discovery::get("/ping", || async { "pong" }),
            mpp.session("0.001").unwrap(),
        )
        .unwrap()
        .paid(routes!(report), mpp.charge("0.05").unwrap())
        .unwrap()
        .routes(routes!(catalog))
        .split();
    let router = router
        .merge(discovery.router())
        .route("/health", axum::routing::get(|| async { "ok" }));
    (router, discovery)
}

fn operation<'a>(doc: &'a Value, path: &str, method: &str) -> &'a Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "no {method} {path} in {doc:#}");
    op
}

fn offers(doc: &Value, path: &str, method: &str) -> Vec<Value> {
    let info = &operation(doc, path, method)["x-payment-info"];
    PaymentInfo::from_json(info).unwrap();
    info["offers"].as_array().unwrap().clone()
}

async fn send(router: &Router, method: &str, uri: &str, body: Body) -> http::Response<Body> {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "api.example.com")
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    router.clone().oneshot(request).await.unwrap()
}

fn challenges(response: &http::Response<Body>) -> Vec<Challenge> {
    response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .flat_map(|v| Challenge::parse_all(v.to_str().unwrap()).unwrap())
        .collect()
}

/// The terms a documented offer states, read from a live challenge.
fn challenge_terms(challenge: &Challenge, dynamic: bool) -> Value {
    let request = challenge.request.value();
    let mut terms = json!({
        "intent": challenge.intent,
        "method": challenge.method,
        "amount": if dynamic { Value::Null } else { request["amount"].clone() },
        "currency": request["currency"],
    });
    if let Some(description) = &challenge.description {
        terms["description"] = json!(description);
    }
    if let Some(unit) = request.get("unitType") {
        terms["unitType"] = unit.clone();
    }
    terms
}

#[tokio::test]
async fn every_documented_offer_is_what_the_402_of_its_route_says() {
    let mpp = mpp();
    let (router, discovery) = app(&mpp);
    let doc = discovery.document();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(info) = op.get("x-payment-info") else {
                continue;
            };
            let offers = info["offers"].as_array().unwrap();
            let dynamic = offers[0]["amount"].is_null();
            let uri = if dynamic {
                format!("{path}?items=3")
            } else {
                path.clone()
            };
            let body = if method == "post" {
                Body::from(r#"{"region":"eu"}"#)
            } else {
                Body::empty()
            };
            let reply = send(&router, &method.to_uppercase(), &uri, body).await;
            assert_eq!(
                reply.status(),
                StatusCode::PAYMENT_REQUIRED,
                "{method} {path}"
            );
            let live: Vec<Value> = challenges(&reply)
                .iter()
                .map(|c| challenge_terms(c, dynamic))
                .collect();
            assert_eq!(offers, &live, "{method} {path}");
            assert!(op["responses"]["402"].is_object(), "{method} {path}");
            checked += 1;
        }
    }
    assert_eq!(checked, 6, "{doc:#}");
}

#[test]
fn a_price_computed_per_request_is_documented_with_a_null_amount() {
    let mpp = mpp();
    let (_, discovery) = app(&mpp);
    assert_eq!(
        offers(discovery.document(), "/items", "get"),
        [
            json!({"intent": "charge", "method": "tempo", "amount": null,
                "currency": PATH_USD, "description": "0.002 per item"})
        ]
    );
}

#[test]
fn a_session_documents_its_per_unit_price_and_unit() {
    let mpp = mpp();
    let (_, discovery) = app(&mpp);
    let doc = discovery.document();
    assert_eq!(
        offers(doc, "/tokens", "get"),
        [
            json!({"intent": "session", "method": "tempo", "amount": "100",
                "currency": PATH_USD, "description": "Per token", "unitType": "token"})
        ]
    );
    // A session's unit defaults to the request, as its challenge says.
    assert_eq!(offers(doc, "/ping", "get")[0]["amount"], "1000");
}

#[test]
fn free_routes_carry_no_payment_info_and_undocumented_ones_are_absent() {
    let mpp = mpp();
    let (_, discovery) = app(&mpp);
    let doc = discovery.document();
    let catalog = operation(doc, "/catalog", "get");
    assert!(catalog.get("x-payment-info").is_none(), "{catalog:#}");
    assert!(catalog["responses"].get("402").is_none(), "{catalog:#}");
    for absent in ["/health", "/openapi.json", "/llms.txt"] {
        assert!(doc["paths"].get(absent).is_none(), "{absent} in {doc:#}");
    }
}

#[test]
fn a_utoipa_annotated_handler_keeps_its_schemas() {
    let mpp = mpp();
    let (_, discovery) = app(&mpp);
    let doc = discovery.document();
    let report = operation(doc, "/report", "post");
    assert_eq!(
        report["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ReportQuery"
    );
    assert_eq!(report["responses"]["200"]["description"], "The report");
    assert_eq!(
        report["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Report"
    );
    assert_eq!(report["x-payment-info"]["offers"][0]["amount"], "50000");
    assert_eq!(
        doc["components"]["schemas"]["Report"]["properties"]["rows"]["type"],
        "integer"
    );
}

#[test]
fn the_root_says_what_the_service_is() {
    let mpp = mpp();
    let (_, discovery) = app(&mpp);
    let doc = discovery.document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "test api");
    assert_eq!(
        doc["x-service-info"],
        json!({"categories": ["data"], "docs": {"llms": "/llms.txt"}})
    );
}

#[test]
fn a_new_router_is_titled_by_the_realm() {
    let mpp = mpp();
    let (_, discovery) = PaidRouter::<()>::new(&mpp).split();
    let doc = discovery.document();
    assert_eq!(
        doc["info"],
        json!({"title": "api.example.com", "version": "1.0.0"})
    );
}

#[tokio::test]
async fn the_documents_are_served_free_with_the_cache_header() {
    let mpp = mpp();
    let (router, discovery) = app(&mpp);
    let reply = send(&router, "GET", "/openapi.json", Body::empty()).await;
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(reply.headers()["content-type"], "application/json");
    assert_eq!(reply.headers()["cache-control"], "public, max-age=300");
    let served: Value =
        serde_json::from_slice(&reply.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(&served, discovery.document());

    let reply = send(&router, "GET", "/llms.txt", Body::empty()).await;
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(reply.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(reply.headers()["cache-control"], "public, max-age=300");
    let text = String::from_utf8(
        reply
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert_eq!(text, discovery.llms_txt());
    assert!(text.contains("- GET /fortune: A fortune\n"), "{text}");
    assert!(
        text.contains(&format!(
            "0.01 per request (10000 base units of {PATH_USD})"
        )),
        "{text}"
    );
    assert!(text.contains("0.0001 per token (100 base units"), "{text}");
    assert!(!text.contains("/catalog"), "{text}");
}

#[tokio::test]
async fn a_charge_answers_other_methods_with_405_and_a_session_takes_voucher_posts() {
    let mpp = mpp();
    let (router, _) = app(&mpp);
    let reply = send(&router, "POST", "/fortune", Body::empty()).await;
    assert_eq!(reply.status(), StatusCode::METHOD_NOT_ALLOWED);
    // A voucher POSTed to a session stream's URL must reach the session layer.
    let reply = send(&router, "POST", "/tokens", Body::empty()).await;
    assert_eq!(reply.status(), StatusCode::PAYMENT_REQUIRED);
}

#[test]
fn nested_routers_are_documented_at_their_full_paths() {
    let mpp = mpp();
    let v1 = PaidRouter::<()>::new(&mpp)
        .paid(discovery::get("/fortune", || async { "f" }), charge("0.01"))
        .unwrap();
    let (_, discovery) = PaidRouter::new(&mpp).nest("/v1", v1).split();
    assert_eq!(
        offers(discovery.document(), "/v1/fortune", "get")[0]["amount"],
        "10000"
    );
    assert!(discovery.llms_txt().contains("- GET /v1/fortune"));
}

#[test]
fn a_price_the_methods_cannot_offer_is_an_error_at_start_up() {
    let mpp = mpp();
    let error = PaidRouter::<()>::new(&mpp)
        .paid(discovery::get("/x", || async { "x" }), charge("0.0000001"))
        .err()
        .expect("7 decimals cannot be offered at 6");
    assert!(error.to_string().contains("decimal"), "{error}");
}
