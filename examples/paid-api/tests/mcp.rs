//! Paid MCP tools on a real local Tempo node, with the official TypeScript SDKs as peers:
//!
//! - the TypeScript MCP SDK client, made payment-aware by mppx 0.11's `McpClient.wrap`, pays
//!   `search` on the `paid-api` binary over streamable HTTP;
//! - our client (`mpp-mcp`'s `PaymentClient` with mpp-tempo's payer) pays a TypeScript MCP SDK
//!   server that charges through mppx's `Transport.mcpSdk()`, over stdio;
//! - our server's refusals (unpaid, malformed, tampered, replayed, expired), its free tool,
//!   and charge on success: a tool that fails after payment takes no money.
//!
//! Without node and the devnet packages the tests are skipped (they fail under `CI`); get them
//! with `scripts/devnet-install.sh`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use alloy::primitives::Address;
use mpp_core::mcp::{META_CREDENTIAL, META_RECEIPT};
use mpp_core::{ChallengeSecret, Payer};
use mpp_mcp::client::{PaymentClient, credential_meta, payment_challenges};
use mpp_tempo::client::TempoPayer;
use mpp_tempo::testing::{
    AnvilNode, DEV_ACCOUNTS, anvil_binary, token_balance, tokens, workspace_root,
};
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig, RequestMetaObject};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ErrorData, ServiceError, ServiceExt};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;
use support::{RECIPIENT, start_paid_api};

/// The paid-api's challenge secret (see `support`), to forge an expired challenge with.
const SECRET: &str = "e2e-secret-0123456789abcdef0123456789";
/// The realm of paid-api's MCP tools when `MPP_REALM` is unset.
const REALM: &str = "localhost";
/// mcp-server.mjs's default recipient (dev account 2).
const MPPX_RECIPIENT: &str = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";

/// The interop scripts, when node, the MCP SDK, mppx and anvil are all there: otherwise a
/// failure under `CI` and a skip elsewhere, both saying how to get them.
fn interop_dir() -> Option<PathBuf> {
    let root = workspace_root();
    let modules = root.join("tools/devnet/node_modules");
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let ready = node
        && modules.join("mppx").is_dir()
        && modules.join("@modelcontextprotocol/sdk").is_dir()
        && anvil_binary().is_file();
    if ready {
        return Some(root.join("tools/devnet/interop"));
    }
    let message = "the MCP interop tests need node (Node.js 20+), the MCP TypeScript SDK, mppx \
                   and anvil: run scripts/devnet-install.sh from the workspace root";
    if std::env::var_os("CI").is_some() {
        panic!("{message}");
    }
    eprintln!("skipping: {message}");
    None
}

async fn balance(rpc_url: &str, owner: &str) -> u128 {
    let owner: Address = owner.parse().unwrap();
    token_balance(rpc_url, tokens::PATH_USD, owner)
        .await
        .unwrap()
        .to::<u128>()
}

fn payer(node: &AnvilNode, account: usize) -> TempoPayer {
    let key = DEV_ACCOUNTS[account].private_key.trim_start_matches("0x");
    TempoPayer::new(key.parse().unwrap(), &node.rpc_url()).unwrap()
}

type Client = RunningService<RoleClient, ClientConfig>;

async fn connect(url: &str) -> Client {
    let transport = StreamableHttpClientTransport::from_uri(url.to_owned());
    ClientConfig::default().serve(transport).await.unwrap()
}

fn params(tool: &'static str, arguments: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool).with_arguments(arguments.as_object().cloned().unwrap())
}

/// One raw call with an optional credential in `_meta`; a JSON-RPC error comes back as `Err`.
async fn call(
    client: &Client,
    tool: &'static str,
    arguments: Value,
    credential: Option<Value>,
) -> Result<CallToolResult, ErrorData> {
    let mut params = params(tool, arguments);
    if let Some(credential) = credential {
        let mut meta = RequestMetaObject::new();
        meta.insert(META_CREDENTIAL.into(), credential);
        params.meta = Some(meta);
    }
    match client.call_tool(params).await {
        Ok(result) => Ok(result),
        Err(ServiceError::McpError(error)) => Err(error),
        Err(other) => panic!("transport failure: {other}"),
    }
}

#[tokio::test]
async fn the_typescript_mcp_client_with_mppx_pays_search_over_streamable_http() {
    let Some(interop) = interop_dir() else { return };
    let node = AnvilNode::start().unwrap();
    let db = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", db.path().join("mcp.db").display());
    let api = start_paid_api(&node.rpc_url(), &database_url, &[]).await;
    let before = balance(&node.rpc_url(), RECIPIENT).await;

    let output = Command::new("node")
        .arg(interop.join("mcp-client-pay.mjs"))
        .args([
            &format!("{}/mcp", api.base),
            "search",
            r#"{"query":"tempo"}"#,
        ])
        .env("TEMPO_RPC_URL", node.rpc_url())
        .env("PAYER_KEY", DEV_ACCOUNTS[6].private_key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        out["capabilities"]["experimental"]["payment"],
        json!({"methods": {"tempo": {"intents": ["charge"]}}})
    );
    let receipt = &out["receipt"];
    assert_eq!(
        (&receipt["status"], &receipt["method"]),
        (&json!("success"), &json!("tempo"))
    );
    assert!(
        receipt["challengeId"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert_eq!(out["result"]["_meta"][META_RECEIPT], *receipt);
    let answer: Value =
        serde_json::from_str(out["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(answer["tx"], receipt["reference"]);
    assert_eq!(
        answer["results"][0],
        "A Tempo charge is a TIP-20 transfer, verified on the node."
    );
    assert_eq!(balance(&node.rpc_url(), RECIPIENT).await, before + 10_000);
}

#[tokio::test]
async fn our_client_pays_a_typescript_mcp_server_charging_through_mppx_over_stdio() {
    let Some(interop) = interop_dir() else { return };
    let node = AnvilNode::start().unwrap();
    let mut server = tokio::process::Command::new("node");
    server
        .arg(interop.join("mcp-server.mjs"))
        .env("TEMPO_RPC_URL", node.rpc_url())
        .kill_on_drop(true);
    let (transport, _stderr) = TokioChildProcess::builder(server)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let before = balance(&node.rpc_url(), MPPX_RECIPIENT).await;
    let client = PaymentClient::new(
        ClientConfig::default().serve(transport).await.unwrap(),
        payer(&node, 0),
    );

    let paid = client
        .call_tool(params("search", json!({"query": "mcp"})))
        .await
        .unwrap();
    assert_ne!(paid.result.is_error, Some(true));
    assert_eq!(
        paid.result.content[0].as_text().unwrap().text,
        "results for mcp"
    );
    let payment = paid.payment.expect("the server asked for payment");
    assert_eq!(payment.challenge.realm, "mcp.example.com");
    let receipt = payment.receipt.expect("mppx sends a receipt");
    assert_eq!(
        (receipt.status.as_str(), receipt.method.as_str()),
        ("success", "tempo")
    );
    assert_eq!(receipt.extra["challengeId"], payment.challenge.id.as_str());
    assert_eq!(
        balance(&node.rpc_url(), MPPX_RECIPIENT).await,
        before + 10_000
    );
}

#[tokio::test]
async fn our_server_refuses_what_does_not_pay_and_charges_only_on_success() {
    let Some(_) = interop_dir() else { return };
    let node = AnvilNode::start().unwrap();
    let db = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", db.path().join("mcp.db").display());
    let api = start_paid_api(&node.rpc_url(), &database_url, &[]).await;
    let url = format!("{}/mcp", api.base);
    let client = connect(&url).await;
    let rpc = node.rpc_url();
    let tempo = payer(&node, 4);
    let recipient_before = balance(&rpc, RECIPIENT).await;

    // Unpaid: -32042 with exactly {httpStatus, challenges, problem}.
    let error = call(&client, "search", json!({"query": "x"}), None)
        .await
        .unwrap_err();
    assert_eq!(
        (error.code.0, error.message.as_ref()),
        (-32042, "Payment Required")
    );
    let data = error.data.unwrap();
    let mut keys: Vec<&str> = data
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["challenges", "httpStatus", "problem"]);
    assert_eq!(data["httpStatus"], 402);
    let challenge = data["challenges"][0].clone();
    assert_eq!(data["challenges"].as_array().unwrap().len(), 1);
    assert_eq!(
        (
            &challenge["realm"],
            &challenge["method"],
            &challenge["intent"]
        ),
        (&json!(REALM), &json!("tempo"), &json!("charge"))
    );
    assert_eq!(challenge["request"]["amount"], "10000");
    assert!(
        challenge["request"]["recipient"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case(RECIPIENT)
    );
    assert_eq!(
        data["problem"]["type"],
        "https://paymentauth.org/problems/payment-required"
    );
    assert_eq!(data["problem"]["status"], 402);
    assert_eq!(data["problem"]["challengeId"], challenge["id"]);

    // The free tool: with or without a credential, nothing asked, nothing read.
    for credential in [None, Some(json!("Payment junk"))] {
        let result = call(&client, "status", json!({}), credential)
            .await
            .unwrap();
        assert_eq!(result.content[0].as_text().unwrap().text, "ok");
        assert!(result.meta.is_none());
    }

    // Malformed: invalid params.
    let error = call(
        &client,
        "search",
        json!({"query": "x"}),
        Some(json!({"payload": 1})),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code.0, -32602);

    // Tampered: a genuine payment for a challenge whose price was lowered afterwards.
    let offered = payment_challenges(&data).remove(0);
    let mut tampered = credential_meta(&tempo.pay(&offered).await.unwrap());
    tampered["challenge"]["request"]["amount"] = json!("1");
    let error = call(&client, "search", json!({"query": "x"}), Some(tampered))
        .await
        .unwrap_err();
    assert_eq!(error.code.0, -32043);
    let data = error.data.unwrap();
    assert_eq!(data["failure"]["reason"], "invalid-challenge");
    assert_eq!(
        data["problem"]["type"],
        "https://paymentauth.org/problems/invalid-challenge"
    );

    // Expired: a challenge bound by this server's own secret, past its `expires` (refused
    // before any payment is looked at).
    let mut expired =
        mpp_core::Challenge::builder_encoded(REALM, "tempo", "charge", offered.request.clone())
            .expires("2020-01-01T00:00:00.000Z");
    if let Some(scope) = offered.opaque.clone() {
        expired = expired.opaque(scope);
    }
    let expired = expired.sign(&ChallengeSecret::new(SECRET).unwrap());
    let credential = credential_meta(&mpp_core::Credential::new(
        expired,
        json!({"type": "hash", "hash": format!("0x{}", "00".repeat(32))}),
    ));
    let error = call(&client, "search", json!({"query": "x"}), Some(credential))
        .await
        .unwrap_err();
    assert_eq!(error.code.0, -32043);
    assert_eq!(error.data.unwrap()["failure"]["reason"], "payment-expired");
    assert_eq!(
        balance(&rpc, RECIPIENT).await,
        recipient_before,
        "nothing refused was charged"
    );

    // Paid: the tool runs and the result carries the receipt; the same credential again is
    // refused.
    let credential = credential_meta(&tempo.pay(&offered).await.unwrap());
    let result = call(
        &client,
        "search",
        json!({"query": "mcp"}),
        Some(credential.clone()),
    )
    .await
    .unwrap();
    let receipt = &result.meta.as_ref().unwrap()[META_RECEIPT];
    assert_eq!(
        (&receipt["status"], &receipt["challengeId"]),
        (&json!("success"), &offered.id.as_str().into())
    );
    assert_eq!(balance(&rpc, RECIPIENT).await, recipient_before + 10_000);
    let error = call(&client, "search", json!({"query": "mcp"}), Some(credential))
        .await
        .unwrap_err();
    assert_eq!(error.code.0, -32043, "{error:?}");
    assert_eq!(balance(&rpc, RECIPIENT).await, recipient_before + 10_000);

    // A tool that fails after payment (an empty query) takes no money: the pull payment is
    // never broadcast, and the result goes out without a receipt.
    let payer_before = balance(&rpc, &format!("{:#x}", tempo.address())).await;
    let paying = PaymentClient::new(connect(&url).await, tempo.clone());
    let failed = paying
        .call_tool(params("search", json!({"query": " "})))
        .await
        .unwrap();
    assert_eq!(failed.result.is_error, Some(true));
    let payment = failed.payment.expect("search asked for payment");
    assert!(payment.receipt.is_none());
    assert_eq!(balance(&rpc, RECIPIENT).await, recipient_before + 10_000);
    assert_eq!(
        balance(&rpc, &format!("{:#x}", tempo.address())).await,
        payer_before
    );
}
