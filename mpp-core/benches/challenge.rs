//! Criterion benchmarks of the hot protocol paths: issuing a challenge (JCS + HMAC + header
//! formatting) and parsing + verifying a credential.
#![allow(missing_docs)]
fn main() {}
