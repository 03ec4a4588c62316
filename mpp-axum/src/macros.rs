//! Macros shared by the middleware modules.

/// `get_ref`, `get_mut` and `into_inner` for a service whose inner service is `self.inner`
/// (tower-http gives every middleware the same three).
macro_rules! inner_service_accessors {
    () => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Consumes this service, returning the inner one.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}
