//! Routes documented without `#[utoipa::path]`: an HTTP method, a path and a handler, recorded
//! together so the route served is the route documented.

use axum::handler::Handler;
use axum::routing::MethodRouter;
use utoipa::openapi::path::{HttpMethod, Operation, Paths};
use utoipa::openapi::{Response, ResponseBuilder};
use utoipa_axum::router::UtoipaMethodRouter;

/// One HTTP method at one path with its handler, and the OpenAPI operation that documents
/// it: what [`PaidRouter::paid`](super::PaidRouter::paid) takes for a handler without
/// `#[utoipa::path]`. Made by [`get`], [`post`], [`put`], [`patch`] and [`delete`]; see the
/// [module docs](super) for an example.
#[must_use]
pub struct Endpoint<S = ()> {
    path: String,
    method: HttpMethod,
    operation: Operation,
    router: MethodRouter<S>,
}

impl<S> Endpoint<S> {
    fn new(path: &str, method: HttpMethod, router: MethodRouter<S>) -> Self {
        let mut operation = Operation::new();
        operation
            .responses
            .responses
            .insert("200".into(), successful_response().into());
        Self {
            path: path.to_owned(),
            method,
            operation,
            router,
        }
    }

    /// A one-line summary of what the operation does (agents read it beside the price).
    pub fn summary(mut self, summary: impl Into<String>) -> Self {
        self.operation.summary = Some(summary.into());
        self
    }

    /// Edits the operation: a request body, parameters, responses... A paid `POST`, `PUT` or
    /// `PATCH` should declare its request body (the official validator warns otherwise):
    ///
    /// ```
    /// use mpp_axum::discovery::{self, utoipa::openapi::request_body::RequestBodyBuilder};
    /// use mpp_axum::discovery::utoipa::openapi::{ContentBuilder, ObjectBuilder, Type};
    ///
    /// let chat: discovery::Endpoint = discovery::post("/chat", || async { "hi" }).operation(|op| {
    ///     let prompt = ObjectBuilder::new().schema_type(Type::Object).build();
    ///     let json = ContentBuilder::new().schema(Some(prompt)).build();
    ///     op.request_body = Some(RequestBodyBuilder::new().content("application/json", json).build());
    /// });
    /// ```
    pub fn operation(mut self, edit: impl FnOnce(&mut Operation)) -> Self {
        edit(&mut self.operation);
        self
    }
}

/// `200`, as mppx documents an operation it knows nothing else about.
fn successful_response() -> Response {
    ResponseBuilder::new()
        .description("Successful response")
        .build()
}

impl<S> From<Endpoint<S>> for UtoipaMethodRouter<S> {
    fn from(endpoint: Endpoint<S>) -> Self {
        let mut paths = Paths::new();
        paths.add_path_operation(&endpoint.path, vec![endpoint.method], endpoint.operation);
        (Vec::new(), paths, endpoint.router)
    }
}

macro_rules! endpoint_constructors {
    ($($name:ident => $method:ident $verb:literal),* $(,)?) => {$(
        #[doc = concat!(
            "A `", $verb, "` endpoint at `path` served by `handler` (as axum's \
             [`", stringify!($name), "`](axum::routing::", stringify!($name), ")), documented \
             with a `200` response until [`Endpoint::operation`] says more."
        )]
        pub fn $name<H, T, S>(path: &str, handler: H) -> Endpoint<S>
        where
            H: Handler<T, S>,
            T: 'static,
            S: Clone + Send + Sync + 'static,
        {
            Endpoint::new(path, HttpMethod::$method, axum::routing::$name(handler))
        }
    )*};
}

endpoint_constructors! {
    get => Get "GET",
    post => Post "POST",
    put => Put "PUT",
    patch => Patch "PATCH",
    delete => Delete "DELETE",
}
