//! The paying side (feature `client`): [`PaymentClient`] wraps a running rmcp client, and a
//! tool call answered with `-32042` is paid through a [`Payer`] and sent again, once, with
//! the credential in `params._meta["org.paymentauth/credential"]`.
//!
//! ```no_run
//! # async fn demo(payer: impl mpp_core::Payer + 'static) -> Result<(), Box<dyn std::error::Error>> {
//! use mpp_mcp::client::PaymentClient;
//! use rmcp::ServiceExt;
//! use rmcp::model::{CallToolRequestParams, ClientConfig};
//! use rmcp::transport::StreamableHttpClientTransport;
//!
//! let transport = StreamableHttpClientTransport::from_uri("http://127.0.0.1:3000/mcp");
//! let client = PaymentClient::new(ClientConfig::default().serve(transport).await?, payer);
//! let paid = client.call_tool(CallToolRequestParams::new("search")).await?;
//! println!("{:?} paid with {:?}", paid.result.content, paid.payment.and_then(|p| p.receipt));
//! # Ok(()) }
//! ```
//!
//! The client pays only for a `-32042` (or a result carrying
//! `_meta["org.paymentauth/payment-required"]`), never for a challenge that has expired, and
//! at most once per call: a refused paid call comes back as [`CallError::Refused`], with the
//! server's reason, not as a second payment.

use crate::meta::{credential_value, receipt};
use mpp_core::expiry::{Clock, SystemClock, parse_timestamp};
use mpp_core::mcp::{
    META_CREDENTIAL, META_PAYMENT_REQUIRED, PAYMENT_REQUIRED_CODE, VERIFICATION_FAILED_CODE,
};
use mpp_core::payer::PayError;
use mpp_core::{Challenge, Credential, EncodedJson, Payer, Receipt};
use rmcp::ErrorData;
use rmcp::model::{CallToolRequestParams, CallToolResult, RequestMetaObject};
use rmcp::service::{RoleClient, RunningService, Service, ServiceError};
use serde_json::Value;
use std::ops::Deref;
use std::sync::Arc;

/// Why a paying tool call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The MCP exchange failed, or the server answered with an error that is not about
    /// payment (both as rmcp reports them).
    #[error("mcp: {0}")]
    Service(#[from] ServiceError),
    /// Payment was required, but no challenge in the answer could be read.
    #[error("payment required, but the answer carries no valid challenge")]
    NoChallenge,
    /// None of the offered challenges can be paid by this payer (or all have expired).
    #[error("no offered challenge can be paid (offered: {0})")]
    Unsupported(String),
    /// The payer could not pay.
    #[error("payment: {0}")]
    Payer(#[from] PayError),
    /// The paid call was refused for its payment (`-32043`, `-32042` again, a malformed
    /// credential, the payment node down); nothing more is paid. The error's `data` holds the
    /// server's `problem`. (An error of the tool itself comes back as
    /// [`CallError::Service`].)
    #[error("paid call refused: {} {}", .0.code.0, .0.message)]
    Refused(ErrorData),
}

/// A payment made for a tool call.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Payment {
    /// The challenge that was paid.
    pub challenge: Challenge,
    /// The receipt in the result's `_meta`, when the server sent one.
    pub receipt: Option<Receipt>,
}

/// The result of a tool call, and the payment made for it, if one was needed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PaidCall {
    /// The tool's result (the paid retry's, or the first one when no payment was asked).
    pub result: CallToolResult,
    /// The payment, when the first answer asked for one.
    pub payment: Option<Payment>,
}

/// A running rmcp client that pays for tool calls (see the [module docs](self)). Everything
/// else of the client is reachable through `Deref`.
pub struct PaymentClient<S: Service<RoleClient>> {
    service: RunningService<RoleClient, S>,
    payer: Arc<dyn Payer>,
}

impl<S: Service<RoleClient>> std::fmt::Debug for PaymentClient<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentClient").finish_non_exhaustive()
    }
}

impl<S: Service<RoleClient>> Deref for PaymentClient<S> {
    type Target = RunningService<RoleClient, S>;
    fn deref(&self) -> &Self::Target {
        &self.service
    }
}

impl<S: Service<RoleClient>> PaymentClient<S> {
    /// A client of `service` (e.g. `ClientConfig::default().serve(transport).await?`) that
    /// pays with `payer`.
    pub fn new(service: RunningService<RoleClient, S>, payer: impl Payer + 'static) -> Self {
        Self {
            service,
            payer: Arc::new(payer),
        }
    }

    /// The running client, unwrapped.
    pub fn into_inner(self) -> RunningService<RoleClient, S> {
        self.service
    }

    /// Calls a tool; when the server asks for payment, pays the first challenge the payer
    /// can answer and calls again, once, with the credential.
    pub async fn call_tool(&self, params: CallToolRequestParams) -> Result<PaidCall, CallError> {
        let challenges = match self.service.call_tool(params.clone()).await {
            Ok(result) => match payment_required(result.meta.as_deref()) {
                None => {
                    return Ok(PaidCall {
                        result,
                        payment: None,
                    });
                }
                Some(data) => payment_challenges(data),
            },
            Err(ServiceError::McpError(error))
                if i64::from(error.code.0) == PAYMENT_REQUIRED_CODE =>
            {
                payment_challenges(error.data.as_ref().unwrap_or(&Value::Null))
            }
            Err(other) => return Err(other.into()),
        };
        if challenges.is_empty() {
            return Err(CallError::NoChallenge);
        }
        let now = SystemClock.now();
        let payable: Vec<Challenge> = challenges
            .iter()
            .filter(|c| {
                c.expires
                    .as_deref()
                    .and_then(|e| parse_timestamp(e).ok())
                    .is_none_or(|expires| expires > now)
            })
            .cloned()
            .collect();
        let Some(challenge) = self.payer.choose(&payable).cloned() else {
            let offered: Vec<String> = challenges
                .iter()
                .map(|c| format!("{}/{}", c.method, c.intent))
                .collect();
            return Err(CallError::Unsupported(offered.join(", ")));
        };
        tracing::debug!(tool = %params.name, method = %challenge.method, intent = %challenge.intent, "paying for a tool call");
        let credential = self.payer.pay(&challenge).await?;
        let mut paid = params;
        paid.meta
            .get_or_insert_with(RequestMetaObject::new)
            .insert(META_CREDENTIAL.into(), credential_meta(&credential));
        let result = match self.service.call_tool(paid).await {
            Ok(result) => result,
            Err(ServiceError::McpError(error)) if is_payment_refusal(&error) => {
                return Err(CallError::Refused(error));
            }
            Err(other) => return Err(other.into()),
        };
        let receipt = receipt(result.meta.as_ref());
        Ok(PaidCall {
            result,
            payment: Some(Payment { challenge, receipt }),
        })
    }
}

/// A credential as MCP carries it in `params._meta["org.paymentauth/credential"]`: a JSON
/// object whose challenge `request` is an object. For flows that pay by hand;
/// [`PaymentClient`] does this itself.
pub fn credential_meta(credential: &Credential) -> Value {
    credential_value(credential)
}

/// Whether an error answers the payment rather than the tool: a payment code, or the
/// payment error shape (`data.httpStatus`, as an outage of the payment node has it).
fn is_payment_refusal(error: &ErrorData) -> bool {
    let code = i64::from(error.code.0);
    code == PAYMENT_REQUIRED_CODE
        || code == VERIFICATION_FAILED_CODE
        || error
            .data
            .as_ref()
            .is_some_and(|data| data.get("httpStatus").is_some())
}

/// The SDK extension: a tool result that asks for payment in its `_meta` (same shape as a
/// `-32042`'s `error.data`).
fn payment_required(meta: Option<&rmcp::model::JsonObject>) -> Option<&Value> {
    meta?.get(META_PAYMENT_REQUIRED)
}

/// The challenges of a payment-required answer's `data` (a `-32042`'s `error.data`, or a
/// result's `_meta["org.paymentauth/payment-required"]`), skipping any that cannot be read.
/// For flows that pay by hand; [`PaymentClient`] does this itself.
///
/// ```
/// use mpp_mcp::client::payment_challenges;
///
/// let data = serde_json::json!({"httpStatus": 402, "challenges": [{
///     "id": "x1", "realm": "api.example.com", "method": "tempo", "intent": "charge",
///     "request": {"amount": "10000"}, "expires": "2030-01-01T00:00:00.000Z"}]});
/// let challenges = payment_challenges(&data);
/// assert_eq!(challenges[0].request.value()["amount"], "10000");
/// ```
pub fn payment_challenges(data: &Value) -> Vec<Challenge> {
    data.get("challenges")
        .and_then(Value::as_array)
        .map(|all| all.iter().filter_map(challenge).collect())
        .unwrap_or_default()
}

/// A challenge as MCP carries it: `request` an object (its wire form is its JCS, as the
/// server computed the id over), `opaque` a base64url string, or mppx's decoded `meta` map.
fn challenge(value: &Value) -> Option<Challenge> {
    let text = |name: &str| value.get(name).and_then(Value::as_str);
    let request = EncodedJson::from_value(value.get("request")?.clone()).ok()?;
    let mut builder =
        Challenge::builder_encoded(text("realm")?, text("method")?, text("intent")?, request);
    if let Some(expires) = text("expires") {
        builder = builder.expires(expires);
    }
    if let Some(digest) = text("digest") {
        builder = builder.digest(digest);
    }
    if let Some(description) = text("description") {
        builder = builder.description(description);
    }
    let opaque = match (value.get("opaque"), value.get("meta")) {
        (Some(Value::String(wire)), _) => Some(EncodedJson::from_wire(wire).ok()?),
        (None, Some(meta @ Value::Object(_))) => Some(EncodedJson::from_value(meta.clone()).ok()?),
        (None, _) => None,
        (Some(_), _) => return None,
    };
    if let Some(opaque) = opaque {
        builder = builder.opaque(opaque);
    }
    let id = text("id").filter(|id| !id.is_empty())?;
    Some(builder.with_id(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_challenges_as_servers_send_them() {
        let data = json!({"httpStatus": 402, "challenges": [
            {"id": "a", "realm": "r", "method": "tempo", "intent": "charge",
             "request": {"amount": "1", "currency": "0x20c0"}, "expires": "2030-01-01T00:00:00.000Z",
             "opaque": "eyJrIjoidiJ9"},
            {"id": "b", "realm": "r", "method": "tempo", "intent": "charge",
             "request": {"amount": "1"}, "meta": {"k": "v"}},
            {"id": "c", "realm": "r", "method": "tempo", "intent": "charge", "request": "eyJ9"},
            {"realm": "r", "method": "tempo", "intent": "charge", "request": {}}
        ]});
        let read = payment_challenges(&data);
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].request.value()["amount"], "1");
        assert_eq!(
            read[0].opaque.as_ref().map(|o| o.value()["k"].clone()),
            Some(json!("v"))
        );
        // mppx's decoded `meta` stands for the opaque it leaves out.
        assert_eq!(read[1].opaque, read[0].opaque);
    }
}
