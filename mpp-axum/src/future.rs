//! [`ResponseFuture`]: the future of the payment layers' services.

use crate::body::PaymentBody;
use mpp_core::BoxFuture;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Response future of [`Charge`](crate::Charge).
pub struct ResponseFuture<B, E> {
    pub(crate) inner: BoxFuture<'static, Result<http::Response<PaymentBody<B>>, E>>,
}

impl<B, E> std::fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Result<http::Response<PaymentBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
