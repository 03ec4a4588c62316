//! [`PaidTools`]: an rmcp server whose priced tools are paid for over MPP.

use crate::capabilities::payment_capability;
use crate::error::ConfigError;
use mpp_core::gate::Offers;
use mpp_core::{DecimalAmount, EncodedJson, PaymentGate, PriceTerms};
use rmcp::model::JsonObject;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// The `opaque` key that binds a challenge to what it pays for (the key mppx uses for its
/// `scope`, and mpp-axum for routes).
const SCOPE_KEY: &str = "_mppx_scope";

/// Wraps any rmcp [`ServerHandler`](rmcp::ServerHandler) so that the tools priced here are
/// paid before they run; every other request (free tools, lists, resources, prompts) goes
/// through untouched. See the [crate docs](crate) for an example.
///
/// A call to a priced tool:
///
/// - without a credential in `params._meta["org.paymentauth/credential"]` is answered with
///   JSON-RPC error `-32042` carrying fresh challenges; the tool does not run;
/// - with one, is admitted by the [`PaymentGate`] exactly as an HTTP request would be
///   (HMAC binding, pinned terms, scope, expiry, then the method's verification and replay
///   protection), then the tool runs once;
/// - is paid only when the tool answers with a result that is not an error, or accepts it
///   as a task (charge on success: a method that holds the payment, like a Tempo pull
///   charge, takes it then, and not at all for a tool error, an error response or an
///   `input_required` round, whose retry the same credential pays), and the result carries
///   the receipt in `_meta["org.paymentauth/receipt"]`;
/// - is refused with `-32043` (or `-32602` for a credential that does not decode) when the
///   payment does not pay; see [the refusals](crate#refusals).
///
/// Each challenge is bound to its tool (`opaque` = `{"_mppx_scope": "tools/call <name>"}`),
/// so a challenge of a cheap tool cannot pay for an expensive one. A credential sent to a free
/// tool is ignored. The `initialize` (and `server/discover`) answer advertises the accepted
/// methods under `capabilities.experimental.payment`.
///
/// Cloning is cheap (the configuration is shared), as streamable HTTP needs one server per
/// session.
#[derive(Clone)]
#[must_use]
pub struct PaidTools<H> {
    pub(crate) inner: H,
    pub(crate) payments: Arc<Payments>,
}

/// What every clone shares: the gate, its realm, the priced tools and the capability they
/// make.
#[derive(Clone)]
pub(crate) struct Payments {
    pub(crate) gate: PaymentGate,
    pub(crate) realm: Arc<str>,
    pub(crate) tools: HashMap<String, PaidTool>,
    pub(crate) capability: Option<JsonObject>,
}

/// One priced tool: its terms, the offers built from them once, and the scope its challenges
/// are bound to.
#[derive(Clone)]
pub(crate) struct PaidTool {
    pub(crate) terms: PriceTerms,
    pub(crate) offers: Offers,
    pub(crate) scope: EncodedJson,
}

impl<H: fmt::Debug> fmt::Debug for PaidTools<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut tools: Vec<_> = self.payments.tools.keys().collect();
        tools.sort();
        f.debug_struct("PaidTools")
            .field("inner", &self.inner)
            .field("realm", &self.payments.realm)
            .field("paid_tools", &tools)
            .finish_non_exhaustive()
    }
}

impl<H> PaidTools<H> {
    /// Wraps `inner`, with payments verified by `gate`. The gate must have a realm
    /// ([`PaymentGate::realm`]): MCP requests carry no host to take one from.
    ///
    /// Share the gate (its methods and their stores) with the HTTP routes of the same
    /// service, and a credential is verified, and protected against replay, the same way on
    /// both.
    pub fn new(inner: H, gate: PaymentGate) -> Result<Self, ConfigError> {
        let realm: Arc<str> = gate.configured_realm().ok_or(ConfigError::NoRealm)?.into();
        Ok(Self {
            inner,
            payments: Arc::new(Payments {
                gate,
                realm,
                tools: HashMap::new(),
                capability: None,
            }),
        })
    }

    /// Charges `amount` (a decimal in the currency's display units, e.g. `"0.01"`) for each
    /// call of `tool`, once. Checked now against the gate's methods: a bad price fails here,
    /// at start-up, not on a call.
    pub fn charge(self, tool: impl Into<String>, amount: &str) -> Result<Self, ConfigError> {
        let tool = tool.into();
        match amount.parse::<DecimalAmount>() {
            Ok(amount) => self.price(tool, PriceTerms::charge(amount)),
            Err(source) => Err(ConfigError::Amount { tool, source }),
        }
    }

    /// Prices `tool` with any terms (a description, a currency, another intent a method
    /// serves). Pricing a tool again replaces its terms.
    pub fn price(
        mut self,
        tool: impl Into<String>,
        terms: PriceTerms,
    ) -> Result<Self, ConfigError> {
        let tool = tool.into();
        let payments = Arc::make_mut(&mut self.payments);
        let offers = match payments.gate.offers(&terms) {
            Ok(offers) => offers,
            Err(source) => return Err(ConfigError::Offer { tool, source }),
        };
        let scope = tool_scope(&tool);
        payments.tools.insert(
            tool,
            PaidTool {
                terms,
                offers,
                scope,
            },
        );
        payments.capability = payment_capability(payments.tools.values().map(|t| &t.offers));
        Ok(self)
    }

    /// The terms of `tool`, when it is priced.
    pub fn price_of(&self, tool: &str) -> Option<&PriceTerms> {
        self.payments.tools.get(tool).map(|t| &t.terms)
    }

    /// The realm challenges are issued under.
    pub fn realm(&self) -> &str {
        &self.payments.realm
    }

    /// The gate payments are verified by.
    pub fn gate(&self) -> &PaymentGate {
        &self.payments.gate
    }

    /// The wrapped server.
    pub fn inner(&self) -> &H {
        &self.inner
    }

    /// The wrapped server, unwrapped.
    pub fn into_inner(self) -> H {
        self.inner
    }
}

/// `{"_mppx_scope": "tools/call <tool>"}`. The JSON-RPC method in front keeps a tool's scope
/// apart from every HTTP route's (`"GET /path"`: no HTTP method contains a `/`), so a gate
/// shared with HTTP routes never takes one's challenge for the other's.
fn tool_scope(tool: &str) -> EncodedJson {
    let mut map = Map::new();
    map.insert(
        SCOPE_KEY.into(),
        Value::String(format!("tools/call {tool}")),
    );
    // A map with one string entry always canonicalizes.
    EncodedJson::from_map(map).unwrap_or_else(|_| unreachable!("a string map encodes"))
}
