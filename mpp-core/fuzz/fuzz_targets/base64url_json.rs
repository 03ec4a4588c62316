//! base64url JSON parameters (`request`, `opaque`): never panic; the wire string is kept and
//! canonical re-encoding is stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpp_core::{EncodedJson, base64url};

fuzz_target!(|data: &[u8]| {
    // Raw bytes as the JSON inside, so the fuzzer reaches the JSON and JCS paths directly.
    check(&base64url::encode(data));
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = base64url::decode(text);
    if let Ok(encoded) = EncodedJson::from_wire(text) {
        assert_eq!(encoded.wire(), text);
    }
    check(text);
});

fn check(wire: &str) {
    if let Ok(encoded) = EncodedJson::from_wire(wire)
        && let Ok(canonical) = encoded.canonical_wire()
    {
        // Canonicalization is idempotent (values may normalize, e.g. -0 to 0, as JCS says).
        let again = EncodedJson::from_wire(&canonical).expect("canonical form decodes");
        assert_eq!(again.canonical_wire().ok(), Some(canonical));
    }
}
