//! The realm binds every challenge; without a configured one it comes from each request's
//! `Host`, which breaks verification across instances behind a proxy that rewrites it. The
//! layer says so once, at start-up.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use mpp_axum::Mpp;

const SECRET: &str = "realm-warning-secret-0123456789abcd";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged_while(f: impl FnOnce()) -> String {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
}

#[test]
fn a_layer_without_a_realm_warns_at_start_up() {
    let logged = logged_while(|| {
        let _layer = Mpp::new(SECRET).unwrap().layer();
    });
    assert!(logged.contains("WARN"), "{logged}");
    assert!(logged.contains("no realm configured"), "{logged}");

    let logged = logged_while(|| {
        let _layer = Mpp::new(SECRET).unwrap().realm("api.example.com").layer();
    });
    assert!(!logged.contains("no realm configured"), "{logged}");
}
