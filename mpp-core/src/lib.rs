//! MPP core (work in progress).

use std::future::Future;
use std::pin::Pin;

/// A boxed, `Send` future: how object-safe traits in this workspace return async results
/// without choosing a runtime.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
