//! The `paid-api` binary's discovery documents, on a real local Tempo node with sessions on
//! (a v1 escrow deployed for the run):
//!
//! - `GET /openapi.json` is free, `application/json`, `Cache-Control: public, max-age=300`;
//! - the official validator (`mppx discover validate`, mppx 0.11.0 from npm) passes it with
//!   no error and no warning, and so does an OpenAPI 3.1 schema validator
//!   (`@seriousme/openapi-schema-validator` 2.11.0, its `validate-api` bin);
//! - route by route, every documented offer is exactly what the route's live 402 challenge
//!   says (intent, method, amount, currency, description, unitType); every paid route is
//!   documented, and `/health`, `/openapi.json`, `/llms.txt`, `/mcp` carry no payment info;
//! - `GET /llms.txt` lists every paid route with its prices.
//!
//! Skips (with a message) when the node binary, Node.js or the npm tools are missing, unless
//! `CI` is set. Run: `cargo test -p mpp-example-paid-api --test discovery`

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use alloy::signers::local::PrivateKeySigner;
use mpp_core::Challenge;
use mpp_tempo::testing::{AnvilNode, DEV_ACCOUNTS, stream_channel, tokens, workspace_root};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Command, Output};
use support::start_paid_api;

/// Every paid route of `paid-api` with sessions on: each must be documented.
const PAID_ROUTES: [(&str, &str); 3] = [("get", "/fortune"), ("get", "/ping"), ("get", "/tokens")];
/// Free routes: served without payment, never documented as paid.
const FREE_ROUTES: [&str; 3] = ["/health", "/openapi.json", "/llms.txt"];
/// The escrow's deployer; the payee is `support::RECIPIENT` (dev account 3), whose key the
/// server holds.
const DEPLOYER: usize = 0;
const PAYEE: usize = 3;

/// The pinned npm validators, run with Node.js.
struct Validators {
    mppx: PathBuf,
    openapi: PathBuf,
}

/// The validators, or `None` (skip) when they are missing outside CI; under `CI` a missing
/// one fails the test.
fn validators() -> Option<Validators> {
    let bin = workspace_root().join("tools/devnet/node_modules/.bin");
    let tools = Validators {
        mppx: bin.join("mppx"),
        openapi: bin.join("validate-api"),
    };
    let node = Command::new("node").arg("--version").output().is_ok();
    let missing = if !node {
        Some("Node.js 20+ (`node`) is not on PATH".to_owned())
    } else {
        [&tools.mppx, &tools.openapi]
            .into_iter()
            .find(|path| !path.is_file())
            .map(|path| format!("{} is missing", path.display()))
    };
    let Some(missing) = missing else {
        return Some(tools);
    };
    let message = format!(
        "{missing}: install Node.js, then the pinned npm tools with `scripts/devnet-install.sh` \
         from the workspace root"
    );
    if std::env::var_os("CI").is_some() {
        panic!("{message}");
    }
    eprintln!("skipping discovery validation: {message}");
    None
}

fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every `WWW-Authenticate: Payment` challenge of an unpaid request to `url`.
async fn live_challenges(http: &reqwest::Client, method: &str, url: &str) -> Vec<Challenge> {
    let reply = http
        .request(method.to_uppercase().parse().unwrap(), url)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 402, "{method} {url} unpaid");
    reply
        .headers()
        .get_all("www-authenticate")
        .iter()
        .flat_map(|v| Challenge::parse_all(v.to_str().unwrap()).unwrap())
        .collect()
}

/// What a documented offer must say for `challenge`: the discovery draft's fields and
/// `unitType`, read from the challenge itself.
fn offer_for(challenge: &Challenge) -> Value {
    let request = challenge.request.value();
    let mut offer = json!({
        "intent": challenge.intent,
        "method": challenge.method,
        "amount": request["amount"],
        "currency": request["currency"],
    });
    if let Some(description) = &challenge.description {
        offer["description"] = json!(description);
    }
    if let Some(unit) = request.get("unitType") {
        offer["unitType"] = unit.clone();
    }
    offer
}

#[tokio::test]
async fn paid_api_documents_every_paid_route_as_its_402_says_and_validates() {
    let Some(node) = AnvilNode::start() else {
        return;
    };
    let Some(validators) = validators() else {
        return;
    };
    let rpc = node.rpc_url();
    let deployer: PrivateKeySigner = DEV_ACCOUNTS[DEPLOYER].private_key.parse().unwrap();
    let escrow = format!(
        "{:#x}",
        stream_channel::deploy(&rpc, &deployer).await.unwrap()
    );
    let db = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", db.path().join("discovery.db").display());
    let payee_fee_token = format!("{:#x}", tokens::ALPHA_USD);
    let api = start_paid_api(
        &rpc,
        &database_url,
        &[
            ("MPP_ESCROW", &escrow),
            ("MPP_PAYEE_KEY", DEV_ACCOUNTS[PAYEE].private_key),
            ("MPP_PAYEE_FEE_TOKEN", &payee_fee_token),
        ],
    )
    .await;
    let http = reqwest::Client::new();

    // Served free, with the cache header.
    let reply = http
        .get(format!("{}/openapi.json", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.headers()["content-type"], "application/json");
    assert_eq!(reply.headers()["cache-control"], "public, max-age=300");
    let raw = reply.text().await.unwrap();
    let doc: Value = serde_json::from_str(&raw).unwrap();

    // The official validator: valid, with no warning.
    let file = db.path().join("openapi.json");
    std::fs::write(&file, &raw).unwrap();
    let output = Command::new(&validators.mppx)
        .args(["discover", "validate"])
        .arg(&file)
        .output()
        .expect("run mppx");
    let text = output_text(&output);
    eprintln!("mppx discover validate:\n{text}");
    assert!(output.status.success(), "{text}\n{doc:#}");
    assert!(
        !text.contains("[warning]") && !text.contains("[error]"),
        "{text}\n{doc:#}"
    );
    assert!(text.contains("Discovery document is valid."), "{text}");

    // OpenAPI 3.1 schema validation.
    let output = Command::new(&validators.openapi)
        .arg(&file)
        .output()
        .expect("run validate-api");
    let text = output_text(&output);
    assert!(output.status.success(), "{text}\n{doc:#}");
    let verdict: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(verdict["valid"], true, "{text}");
    assert_eq!(doc["openapi"], "3.1.0");

    // Route by route, the document says what the live 402 says.
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(info) = operation.get("x-payment-info") else {
                continue;
            };
            let url = format!("{}{path}", api.base);
            let live: Vec<Value> = live_challenges(&http, method, &url)
                .await
                .iter()
                .map(offer_for)
                .collect();
            assert_eq!(info["offers"].as_array().unwrap(), &live, "{method} {path}");
            assert_eq!(
                operation["responses"]["402"]["description"], "Payment Required",
                "{method} {path}"
            );
            documented.push((method.clone(), path.clone()));
        }
    }
    documented.sort();
    let mut paid: Vec<(String, String)> = PAID_ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    paid.sort();
    assert_eq!(documented, paid, "every paid route, and only those");

    // Free routes are served without payment and carry no payment info.
    for path in FREE_ROUTES {
        let reply = http
            .get(format!("{}{path}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "{path}");
        assert!(reply.headers().get("www-authenticate").is_none(), "{path}");
        assert!(doc["paths"].get(path).is_none(), "{path} is documented");
    }
    assert!(doc["paths"].get("/mcp").is_none(), "/mcp is documented");

    // `/llms.txt` lists every paid route with its price in display and base units.
    let reply = http
        .get(format!("{}/llms.txt", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(reply.headers()["cache-control"], "public, max-age=300");
    let llms = reply.text().await.unwrap();
    let path_usd = format!("{:#x}", tokens::PATH_USD);
    for expected in [
        "- GET /fortune: A fortune, paid per request".to_owned(),
        format!(
            "0.01 per request (10000 base units of {path_usd}); method `tempo`, intent `charge`"
        ),
        format!(
            "0.001 per request (1000 base units of {path_usd}); method `tempo`, intent `session`"
        ),
        format!(
            "0.0001 per token (100 base units of {path_usd}); method `tempo`, intent `session`"
        ),
        "Authorization: Payment <credential>".to_owned(),
    ] {
        assert!(
            llms.to_lowercase().contains(&expected.to_lowercase()),
            "{expected:?} not in\n{llms}"
        );
    }
}
