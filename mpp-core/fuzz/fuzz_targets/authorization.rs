//! `Authorization: Payment` parser: never panics; accepted credentials re-encode losslessly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpp_core::Credential;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for candidate in [text.to_owned(), format!("Payment {text}")] {
        if let Ok(credential) = Credential::from_authorization(&candidate) {
            let again = Credential::from_authorization(&credential.to_authorization())
                .expect("re-encoded credential parses");
            assert_eq!(again, credential);
        }
    }
});
