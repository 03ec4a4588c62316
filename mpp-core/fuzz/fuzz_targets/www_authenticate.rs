//! `WWW-Authenticate` parser: never panics, and whatever it accepts formats and re-parses to
//! the same challenges.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpp_core::Challenge;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(challenges) = Challenge::parse_all(text) {
        for c in challenges {
            // A parsed value may hold control characters (refused by the formatter); the rest
            // must survive a round trip.
            if let Ok(header) = c.to_header_value() {
                let again = Challenge::parse_all(&header).expect("formatted challenge parses");
                assert_eq!(again, vec![c]);
            }
        }
    }
});
