//! Challenge expiry: RFC 3339 timestamps as the SDKs write them, and an injectable clock.
//!
//! ```
//! use mpp_core::expiry::{Clock, FixedClock, format_timestamp, parse_timestamp};
//! use time::macros::datetime;
//!
//! let clock = FixedClock::new(datetime!(2025-01-06 12:00:00 UTC));
//! let expires = format_timestamp(clock.now() + mpp_core::expiry::DEFAULT_CHALLENGE_TTL);
//! assert_eq!(expires, "2025-01-06T12:05:00.000Z");
//! assert_eq!(parse_timestamp(&expires).unwrap(), datetime!(2025-01-06 12:05:00 UTC));
//! assert!(parse_timestamp("2025-01-06 12:05:00Z").is_err());
//! ```

use std::sync::Mutex;
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// How long a challenge stays valid unless configured otherwise (both SDKs: 5 minutes).
pub const DEFAULT_CHALLENGE_TTL: Duration = Duration::from_secs(300);

/// The clock skew tolerated between the instances that issue and check a challenge: the
/// default maximum challenge lifetime is the challenge TTL plus this.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// A timestamp that is not RFC 3339 in the form the SDK clients accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an RFC 3339 timestamp")]
pub struct TimestampError(pub String);

/// Where "now" comes from. Tests inject a [`FixedClock`] or [`ManualClock`].
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> OffsetDateTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock stopped at one instant.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(OffsetDateTime);

impl FixedClock {
    /// A clock that always says `at`.
    pub fn new(at: OffsetDateTime) -> Self {
        Self(at)
    }
}

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        self.0
    }
}

/// A clock that tests move by hand.
#[derive(Debug)]
pub struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    /// Starts at `at`.
    pub fn new(at: OffsetDateTime) -> Self {
        Self(Mutex::new(at))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Formats an instant as `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC (JavaScript's `toISOString`, which
/// every SDK client accepts).
pub fn format_timestamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    let year = at.year();
    if !(0..=9999).contains(&year) {
        // Outside what four digits hold: no challenge lives there, but stay total.
        return format!(
            "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.millisecond()
        );
    }
    // Written digit by digit: this runs on every 402, and `format!` costs several times more.
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut value: u32| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year.unsigned_abs());
    put(5, 2, u32::from(u8::from(at.month())));
    put(8, 2, u32::from(at.day()));
    put(11, 2, u32::from(at.hour()));
    put(14, 2, u32::from(at.minute()));
    put(17, 2, u32::from(at.second()));
    put(20, 3, u32::from(at.millisecond()));
    out.iter().map(|&b| char::from(b)).collect()
}

/// Parses an RFC 3339 timestamp of the shape
/// `^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$` (uppercase `T` and `Z`,
/// the form the mppx client insists on).
pub fn parse_timestamp(input: &str) -> Result<OffsetDateTime, TimestampError> {
    if !has_sdk_shape(input.as_bytes()) {
        return Err(TimestampError(input.to_owned()));
    }
    OffsetDateTime::parse(input, &Rfc3339).map_err(|_| TimestampError(input.to_owned()))
}

fn has_sdk_shape(b: &[u8]) -> bool {
    let digits = |range: std::ops::Range<usize>| {
        b.get(range)
            .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || b[10] != b'T'
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    match rest {
        b"Z" => true,
        [sign, h1, h2, b':', m1, m2] => {
            matches!(sign, b'+' | b'-') && [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn accepts_sdk_forms() {
        for ok in [
            "2025-01-06T12:05:00Z",
            "2025-01-06T12:05:00.000Z",
            "2025-01-06T12:05:00.123456789Z",
            "2025-01-06T14:05:00+02:00",
        ] {
            assert!(parse_timestamp(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            parse_timestamp("2025-01-06T14:05:00+02:00").unwrap(),
            datetime!(2025-01-06 12:05:00 UTC)
        );
    }

    #[test]
    fn rejects_other_forms() {
        for bad in [
            "",
            "2025-01-06t12:05:00z",
            "2025-01-06T12:05:00",
            "2025-01-06T12:05:00.Z",
            "2025-13-06T12:05:00Z",
            "2025-01-06T12:05:00+0200",
            "1736165100",
            "2025-01-06T12:05:00Z ",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_milliseconds_in_utc() {
        assert_eq!(
            format_timestamp(datetime!(2025-01-06 14:05:00.5 +02:00)),
            "2025-01-06T12:05:00.500Z"
        );
        // The digit-by-digit writer agrees with `format!` and round-trips through the parser.
        for unix_ms in [
            0_i64,
            1,
            999,
            1_736_165_100_123,
            253_402_300_799_999,
            951_782_400_000,
        ] {
            let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                at.year(),
                u8::from(at.month()),
                at.day(),
                at.hour(),
                at.minute(),
                at.second(),
                at.millisecond()
            );
            let formatted = format_timestamp(at);
            assert_eq!(formatted, expected);
            assert_eq!(parse_timestamp(&formatted).ok(), Some(at));
        }
    }

    #[test]
    fn manual_clock_advances() {
        let clock = ManualClock::new(datetime!(2025-01-06 12:00:00 UTC));
        clock.advance(Duration::from_secs(61));
        assert_eq!(clock.now(), datetime!(2025-01-06 12:01:01 UTC));
    }
}
