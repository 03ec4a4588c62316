//! [`Discovery`]: the finished documents (`/openapi.json`, `/llms.txt`), rendered once and
//! served as they are.

use super::llms;
use super::router::{LLMS_PATH, OPENAPI_PATH};
use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use mpp_core::DecimalAmount;
use mpp_core::discovery::{PaymentInfo, ServiceInfo, X_SERVICE_INFO};
use serde_json::Value;
use std::sync::Arc;
use utoipa::openapi::OpenApi;

/// How long clients and caches may keep the documents (mppx sends the same).
const CACHE: &str = "public, max-age=300";

/// One paid operation as `/llms.txt` lists it.
#[derive(Debug, Clone)]
pub(crate) struct PaidOperation {
    pub(crate) method: &'static str,
    pub(crate) path: String,
    pub(crate) summary: Option<String>,
    pub(crate) info: PaymentInfo,
    /// The declared price in display units (`None`: computed per request).
    pub(crate) price: Option<DecimalAmount>,
}

/// The discovery documents of a [`PaidRouter`](super::PaidRouter): the OpenAPI document with
/// `x-payment-info` on each paid operation and `x-service-info` at the root, and the
/// `llms.txt` summary for agents. Rendered once, when made; cloning shares them.
#[derive(Debug, Clone)]
pub struct Discovery {
    document: Value,
    json: Bytes,
    llms: Arc<str>,
}

impl Discovery {
    pub(crate) fn new(
        mut openapi: OpenApi,
        service: &ServiceInfo,
        paid: Vec<PaidOperation>,
    ) -> Self {
        // Plain strings and string-keyed maps: serializing cannot fail.
        let service_json = serde_json::to_value(service).unwrap_or(Value::Null);
        openapi
            .extensions
            .get_or_insert_with(Default::default)
            .insert(X_SERVICE_INFO.to_owned(), service_json);
        let llms = llms::render(&openapi.info.title, &paid);
        let document = serde_json::to_value(&openapi).unwrap_or(Value::Null);
        tracing::debug!(
            paid_operations = paid.len(),
            "discovery documents generated"
        );
        Self {
            json: Bytes::from(document.to_string()),
            document,
            llms: llms.into(),
        }
    }

    /// The OpenAPI document, as `/openapi.json` serves it.
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// The `llms.txt` text: each paid endpoint, its prices and how to pay.
    pub fn llms_txt(&self) -> &str {
        &self.llms
    }

    /// `GET /openapi.json` (`application/json`) and `GET /llms.txt` (`text/plain`), both with
    /// `Cache-Control: public, max-age=300`, serving the documents rendered once. Free: merge
    /// it outside any payment layer.
    pub fn router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let json = self.json.clone();
        let llms = Bytes::copy_from_slice(self.llms.as_bytes());
        Router::new()
            .route(
                OPENAPI_PATH,
                get(move || {
                    let json = json.clone();
                    async move {
                        (
                            [(CONTENT_TYPE, "application/json"), (CACHE_CONTROL, CACHE)],
                            json,
                        )
                    }
                }),
            )
            .route(
                LLMS_PATH,
                get(move || {
                    let llms = llms.clone();
                    async move {
                        (
                            [
                                (CONTENT_TYPE, "text/plain; charset=utf-8"),
                                (CACHE_CONTROL, CACHE),
                            ],
                            llms,
                        )
                    }
                }),
            )
    }
}
