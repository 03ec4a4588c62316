//! Starts the `paid-api` binary for end-to-end tests.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The recipient the tests configure (dev account 3).
pub(crate) const RECIPIENT: &str = "0x90F79bf6EB2c4f870365E785982E1f101E93b906";

/// A running `paid-api` process, killed on drop.
pub(crate) struct PaidApi {
    child: Child,
    pub(crate) base: String,
}

impl Drop for PaidApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the `paid-api` binary; `extra_env` adds variables (e.g. a fee payer).
pub(crate) async fn start_paid_api(
    rpc_url: &str,
    database_url: &str,
    extra_env: &[(&str, &str)],
) -> PaidApi {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_paid-api"))
        .env("PORT", port.to_string())
        .env("TEMPO_RPC_URL", rpc_url)
        .env("DATABASE_URL", database_url)
        .env("MPP_SECRET_KEY", "e2e-secret-0123456789abcdef0123456789")
        .env("MPP_RECIPIENT", RECIPIENT)
        .env("RUST_LOG", "warn")
        .envs(extra_env.iter().copied())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn paid-api");
    let api = PaidApi {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(format!("{}/health", api.base)).await
            && r.status().is_success()
        {
            return api;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("paid-api did not become healthy at {}", api.base);
}
