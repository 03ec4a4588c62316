//! A call of a priced tool, start to end: admit the credential through the gate, run the tool
//! once, take the payment only when the tool answered with a result, and return that result
//! with its receipt. The MCP twin of mpp-axum's `serve`.

use crate::meta::{attach_receipt, take_credential};
use crate::payment::ToolPayment;
use crate::refusal::refusal_error;
use crate::server::{PaidTool, Payments};
use mpp_core::Credential;
use mpp_core::gate::{Refusal, RequestContext as GateContext};
use mpp_core::method::{Disposition, Settlement};
use rmcp::model::{CallToolRequestParams, CallToolResponse};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

/// Serves one call of `tool` (see [`PaidTools`](crate::PaidTools) for the rules).
pub(crate) async fn call_paid_tool<H: ServerHandler>(
    inner: &H,
    payments: &Payments,
    tool: &PaidTool,
    mut request: CallToolRequestParams,
    mut context: RequestContext<RoleServer>,
) -> Result<CallToolResponse, ErrorData> {
    let gate = &payments.gate;
    // rmcp moves `params._meta` into the context; a hand-built request may keep it in place.
    let credential = take_credential(&mut context.meta)
        .or_else(|| request.meta.as_mut().and_then(|meta| take_credential(meta)));
    let cx = GateContext::new(&payments.realm, gate.now()).scope(&tool.scope);
    let mut admitted = gate
        .admit(&tool.offers, credential, &cx)
        .await
        .map_err(|refusal| refusal_error(&refusal))?;
    let held = admitted.verified.settlement.take().map(|settlement| Held {
        settlement,
        credential: admitted.credential.clone(),
    });
    if !matches!(admitted.verified.disposition, Disposition::Serve) {
        // A tool call asks for content; a method answering by itself (a session top-up over
        // HTTP) has nothing to answer it with here. Never run the tool unpaid.
        tracing::error!(disposition = ?admitted.verified.disposition, tool = %request.name, "payment method did not ask to serve a tool call");
        finish(held, false).await;
        return Err(refusal_error(&Refusal::misconfigured()));
    }
    let receipt = admitted.verified.receipt.clone();
    let challenge_id = admitted.credential.challenge.id.clone();
    context.extensions.insert(ToolPayment::from(&admitted));
    let name = request.name.clone();

    let answered = inner.call_tool(request, context).await;
    match answered {
        Ok(CallToolResponse::Complete(mut result)) if result.is_error != Some(true) => {
            take(payments, tool, held).await?;
            attach_receipt(&mut result.meta, &receipt, &challenge_id);
            Ok(CallToolResponse::Complete(result))
        }
        // A task accepted for the call is the tool's answer: its result comes later, through
        // `tasks/get`, so the payment is taken now and the receipt goes with the task.
        Ok(CallToolResponse::Task(mut task)) => {
            take(payments, tool, held).await?;
            attach_receipt(&mut task.meta, &receipt, &challenge_id);
            Ok(CallToolResponse::Task(task))
        }
        // A tool error, an error response, or a round asking the client for input: no money.
        // A held payment is released, so the same credential can pay the retry.
        other => {
            tracing::info!(tool = %name, reference = %receipt.reference, "paid tool call not answered with a result; nothing charged");
            finish(held, false).await;
            other
        }
    }
}

/// A payment the method verified and holds until the tool has answered.
struct Held {
    settlement: Settlement,
    credential: Credential,
}

/// Takes a held payment's money (nothing to do for one settled during admission) and ends it
/// as served. On failure the result is withheld, since content is never handed over unpaid:
/// the refusal (logged by the gate) goes out instead.
async fn take(payments: &Payments, tool: &PaidTool, held: Option<Held>) -> Result<(), ErrorData> {
    let Some(mut held) = held else {
        return Ok(());
    };
    let gate = &payments.gate;
    let cx = GateContext::new(&payments.realm, gate.now()).scope(&tool.scope);
    let settled = gate
        .settle(&tool.offers, &mut held.settlement, &held.credential, &cx)
        .await;
    held.settlement.finish(settled.is_ok()).await;
    settled.map_err(|refusal| refusal_error(&refusal))
}

/// Ends a held payment unserved (released, or left redeemable when it was taken), if any.
async fn finish(held: Option<Held>, served: bool) {
    if let Some(held) = held {
        held.settlement.finish(served).await;
    }
}
