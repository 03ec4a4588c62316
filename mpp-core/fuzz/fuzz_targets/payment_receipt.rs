//! `Payment-Receipt` parser: never panics; accepted receipts re-encode losslessly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpp_core::Receipt;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(receipt) = Receipt::from_header_value(text) {
        let again = Receipt::from_header_value(&receipt.to_header_value())
            .expect("re-encoded receipt parses");
        assert_eq!(again, receipt);
    }
});
