//! Money as exact integers: decimal prices ("0.01") to base units and back, never floats.
//!
//! ```
//! use mpp_core::amount::{DecimalAmount, format_base_units, parse_base_units};
//!
//! let price: DecimalAmount = "0.01".parse().unwrap();
//! assert_eq!(price.to_base_units(6).unwrap(), 10_000);
//! assert!("0.0000001".parse::<DecimalAmount>().unwrap().to_base_units(6).is_err());
//! assert!("-1".parse::<DecimalAmount>().is_err());
//! assert_eq!(format_base_units(10_000, 6), "0.01");
//! assert_eq!(parse_base_units("10000").unwrap(), 10_000);
//!
//! // Computed prices stay exact: 0.001 per kilobyte, for 250 kilobytes.
//! let per_kb = DecimalAmount::from_base_units(1, 3);
//! let total = per_kb.checked_mul(250).unwrap();
//! assert_eq!(total.to_string(), "0.25");
//! assert_eq!(total.checked_add(price).unwrap().to_string(), "0.26");
//! ```

use std::fmt;
use std::str::FromStr;

/// Why an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not a plain non-negative decimal number (sign, exponent, junk, empty...).
    #[error("`{0}` is not a non-negative decimal amount")]
    Invalid(String),
    /// More fractional digits than the currency has decimals.
    #[error("`{amount}` has more than {decimals} decimal places")]
    TooPrecise {
        /// The amount as written.
        amount: String,
        /// The currency's number of decimals.
        decimals: u8,
    },
    /// The value does not fit in 128 bits of base units.
    #[error("`{0}` is too large")]
    Overflow(String),
}

/// A non-negative decimal amount in display units (e.g. dollars), held exactly as
/// `mantissa × 10^-scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DecimalAmount {
    mantissa: u128,
    scale: u32,
}

/// The most fractional digits a [`DecimalAmount`] keeps (after dropping trailing zeros).
const MAX_SCALE: u32 = 38;

impl DecimalAmount {
    /// Zero.
    pub const ZERO: Self = Self {
        mantissa: 0,
        scale: 0,
    };

    /// Parses `digits[.digits]`. No sign, exponent, whitespace or thousands separators.
    pub fn parse(input: &str) -> Result<Self, AmountError> {
        let invalid = || AmountError::Invalid(input.to_owned());
        let (int_part, frac_part) = match input.split_once('.') {
            Some((i, f)) => (i, f),
            None => (input, ""),
        };
        let has_dot = input.contains('.');
        if int_part.is_empty()
            || (has_dot && frac_part.is_empty())
            || !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(invalid());
        }
        let frac_part = frac_part.trim_end_matches('0');
        let scale = u32::try_from(frac_part.len()).map_err(|_| invalid())?;
        if scale > MAX_SCALE {
            return Err(AmountError::TooPrecise {
                amount: input.to_owned(),
                decimals: MAX_SCALE as u8,
            });
        }
        let mut mantissa: u128 = 0;
        for b in int_part.bytes().chain(frac_part.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(u128::from(b - b'0')))
                .ok_or_else(|| AmountError::Overflow(input.to_owned()))?;
        }
        Ok(Self { mantissa, scale })
    }

    /// Converts to base units of a currency with `decimals` decimals ("0.01" at 6 = 10000).
    /// Fails if the amount has more precision than the currency or overflows `u128`.
    pub fn to_base_units(&self, decimals: u8) -> Result<u128, AmountError> {
        let decimals_u32 = u32::from(decimals);
        if self.scale > decimals_u32 {
            return Err(AmountError::TooPrecise {
                amount: self.to_string(),
                decimals,
            });
        }
        10u128
            .checked_pow(decimals_u32 - self.scale)
            .and_then(|factor| self.mantissa.checked_mul(factor))
            .ok_or_else(|| AmountError::Overflow(self.to_string()))
    }

    /// True for zero.
    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// The amount `units` base units make in a currency with `decimals` decimals
    /// (`10000` at 6 = "0.01"): the inverse of [`DecimalAmount::to_base_units`].
    pub fn from_base_units(units: u128, decimals: u8) -> Self {
        Self::normalized(units, u32::from(decimals))
    }

    /// `self + other`, exactly; `None` if the sum does not fit.
    #[must_use]
    pub fn checked_add(self, other: Self) -> Option<Self> {
        let scale = self.scale.max(other.scale);
        let a = self.rescaled(scale)?;
        let b = other.rescaled(scale)?;
        Some(Self::normalized(a.checked_add(b)?, scale))
    }

    /// `self × count` (e.g. a unit price times a quantity), exactly; `None` if the product
    /// does not fit.
    #[must_use]
    pub fn checked_mul(self, count: u64) -> Option<Self> {
        let mantissa = self.mantissa.checked_mul(u128::from(count))?;
        Some(Self::normalized(mantissa, self.scale))
    }

    /// The mantissa at a larger `scale` (same value, more fractional digits).
    fn rescaled(self, scale: u32) -> Option<u128> {
        10u128
            .checked_pow(scale - self.scale)
            .and_then(|factor| self.mantissa.checked_mul(factor))
    }

    /// `mantissa × 10^-scale` without trailing fractional zeros, so equal values compare
    /// equal (the form [`DecimalAmount::parse`] produces).
    fn normalized(mut mantissa: u128, mut scale: u32) -> Self {
        if mantissa == 0 {
            return Self::ZERO;
        }
        while scale > 0 && mantissa.is_multiple_of(10) {
            mantissa /= 10;
            scale -= 1;
        }
        Self { mantissa, scale }
    }
}

impl FromStr for DecimalAmount {
    type Err = AmountError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for DecimalAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_scaled(f, self.mantissa, self.scale)
    }
}

fn write_scaled(f: &mut impl fmt::Write, value: u128, scale: u32) -> fmt::Result {
    let digits = value.to_string();
    let scale = scale as usize;
    if scale == 0 || value == 0 {
        return f.write_str(&digits);
    }
    if digits.len() <= scale {
        f.write_str("0.")?;
        for _ in digits.len()..scale {
            f.write_char('0')?;
        }
        f.write_str(digits.trim_end_matches('0'))
    } else {
        let (int_part, frac_part) = digits.split_at(digits.len() - scale);
        let frac_part = frac_part.trim_end_matches('0');
        f.write_str(int_part)?;
        if !frac_part.is_empty() {
            f.write_char('.')?;
            f.write_str(frac_part)?;
        }
        Ok(())
    }
}

/// Formats base units in display units, without trailing zeros (10000 at 6 decimals = "0.01").
pub fn format_base_units(units: u128, decimals: u8) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_scaled(&mut out, units, u32::from(decimals));
    out
}

/// Parses a base-unit amount as it appears on the wire: `0` or digits without a leading zero.
pub fn parse_base_units(input: &str) -> Result<u128, AmountError> {
    let bytes = input.as_bytes();
    if bytes.is_empty()
        || !bytes.iter().all(u8::is_ascii_digit)
        || (bytes.len() > 1 && bytes[0] == b'0')
    {
        return Err(AmountError::Invalid(input.to_owned()));
    }
    input
        .parse::<u128>()
        .map_err(|_| AmountError::Overflow(input.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_converts() {
        let cases = [
            ("0.01", 6, Some(10_000u128)),
            ("1", 6, Some(1_000_000)),
            ("0.000075", 6, Some(75)),
            ("0.0000001", 6, None),
            ("12.50", 2, Some(1250)),
            ("0", 6, Some(0)),
            ("0.10000000", 6, Some(100_000)),
        ];
        for (input, decimals, expected) in cases {
            let parsed = DecimalAmount::parse(input).unwrap();
            assert_eq!(parsed.to_base_units(decimals).ok(), expected, "{input}");
        }
    }

    #[test]
    fn rejects_junk() {
        for bad in [
            "", "-1", "+1", "1e5", "1.", ".5", "1,000", " 1", "1 ", "0x10", "NaN", "1..2", "١",
        ] {
            assert!(
                matches!(DecimalAmount::parse(bad), Err(AmountError::Invalid(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            DecimalAmount::parse("340282366920938463463374607431768211456"),
            Err(AmountError::Overflow(_))
        ));
        assert!(matches!(
            DecimalAmount::parse("340282366920938463463374607431768211455")
                .unwrap()
                .to_base_units(6),
            Err(AmountError::Overflow(_))
        ));
    }

    #[test]
    fn display_and_format() {
        assert_eq!(DecimalAmount::parse("0.0100").unwrap().to_string(), "0.01");
        assert_eq!(DecimalAmount::parse("007").unwrap().to_string(), "7");
        assert_eq!(format_base_units(0, 6), "0");
        assert_eq!(format_base_units(1_000_000, 6), "1");
        assert_eq!(format_base_units(1_500_000, 6), "1.5");
        assert_eq!(format_base_units(75, 6), "0.000075");
        assert_eq!(format_base_units(u128::MAX, 0), u128::MAX.to_string());
    }

    #[test]
    fn arithmetic_is_exact_and_normalized() {
        let d = |s: &str| DecimalAmount::parse(s).unwrap();
        assert_eq!(DecimalAmount::from_base_units(10_000, 6), d("0.01"));
        assert_eq!(DecimalAmount::from_base_units(0, 6), DecimalAmount::ZERO);
        assert_eq!(DecimalAmount::from_base_units(1_500_000, 6), d("1.5"));
        assert_eq!(DecimalAmount::from_base_units(7, 0), d("7"));
        assert_eq!(d("0.5").checked_mul(2), Some(d("1")));
        assert_eq!(d("0.001").checked_mul(0), Some(DecimalAmount::ZERO));
        assert_eq!(d("0.25").checked_add(d("0.75")), Some(d("1")));
        assert_eq!(d("12").checked_add(d("0.000001")), Some(d("12.000001")));
        assert_eq!(
            d("0.01")
                .checked_mul(3)
                .and_then(|a| a.to_base_units(6).ok()),
            Some(30_000)
        );
        let max = DecimalAmount::from_base_units(u128::MAX, 0);
        assert_eq!(max.checked_mul(2), None);
        assert_eq!(max.checked_add(d("1")), None);
        // Rescaling a huge integer part to the other side's decimals overflows too.
        assert_eq!(max.checked_add(d("0.1")), None);
        // Round trip through the text form.
        for units in [0u128, 1, 10, 999_999, 1_000_000, 123_456_789] {
            let amount = DecimalAmount::from_base_units(units, 6);
            assert_eq!(amount.to_base_units(6), Ok(units));
            assert_eq!(d(&amount.to_string()), amount);
        }
    }

    #[test]
    fn base_units_are_strict() {
        assert_eq!(parse_base_units("0").unwrap(), 0);
        assert_eq!(parse_base_units("1000000").unwrap(), 1_000_000);
        for bad in ["", "01", "-1", "1.0", "1e6", " 1"] {
            assert!(parse_base_units(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            parse_base_units("340282366920938463463374607431768211456"),
            Err(AmountError::Overflow(_))
        ));
    }
}
