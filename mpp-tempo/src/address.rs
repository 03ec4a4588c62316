//! [`IntoAddress`]: addresses given to the builder as strings or as alloy [`Address`]es,
//! checked once, with errors that show what was expected.

use alloy::primitives::Address;

/// A value that names an address: an [`Address`], or its `0x`-prefixed hex form (any case;
/// a mixed-case string whose EIP-55 checksum is wrong is accepted with a warning in the log).
pub trait IntoAddress {
    /// The address, or why the input is not one.
    fn into_address(self) -> Result<Address, AddressError>;
}

/// Why a string is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// Not `0x` followed by 40 hex digits.
    #[error("expected a 0x-prefixed 20-byte hex address, got {0:?}")]
    Malformed(String),
}

impl IntoAddress for Address {
    fn into_address(self) -> Result<Address, AddressError> {
        Ok(self)
    }
}

impl IntoAddress for &Address {
    fn into_address(self) -> Result<Address, AddressError> {
        Ok(*self)
    }
}

impl IntoAddress for &str {
    fn into_address(self) -> Result<Address, AddressError> {
        parse_address(self)
    }
}

impl IntoAddress for String {
    fn into_address(self) -> Result<Address, AddressError> {
        parse_address(&self)
    }
}

impl IntoAddress for &String {
    fn into_address(self) -> Result<Address, AddressError> {
        parse_address(self)
    }
}

/// Parses `0x` + 40 hex digits. A mixed-case input whose EIP-55 checksum is wrong is logged
/// (a possible typo) but accepted: addresses in the wild are often re-cased by hand.
pub fn parse_address(input: &str) -> Result<Address, AddressError> {
    // Long inputs are cut in the message: it is meant to be read.
    let shown = || input.chars().take(66).collect::<String>();
    let trimmed = input.trim();
    let Some(digits) = trimmed.strip_prefix("0x") else {
        return Err(AddressError::Malformed(shown()));
    };
    if digits.len() != 40 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AddressError::Malformed(shown()));
    }
    let mixed_case = digits.bytes().any(|b| b.is_ascii_lowercase())
        && digits.bytes().any(|b| b.is_ascii_uppercase());
    if mixed_case && Address::parse_checksummed(trimmed, None).is_err() {
        tracing::warn!(
            address = trimmed,
            "address has a wrong EIP-55 checksum (mixed case): check it for typos"
        );
    }
    trimmed
        .parse()
        .map_err(|_| AddressError::Malformed(shown()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_case_and_checks_mixed_case() {
        let lower = "0x742d35cc6634c0532925a3b844bc9e7595f8fe00";
        let checksummed = "0x742d35Cc6634C0532925a3b844Bc9e7595f8fE00";
        assert_eq!(lower.into_address(), checksummed.into_address());
        assert!(
            lower
                .to_uppercase()
                .replace("0X", "0x")
                .into_address()
                .is_ok()
        );
        // A wrong checksum is only warned about.
        assert_eq!(
            "0x742d35CC6634C0532925a3b844Bc9e7595f8fE00".into_address(),
            lower.into_address()
        );
    }

    #[test]
    fn says_what_was_expected() {
        let err = "0x1234".into_address().unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected a 0x-prefixed 20-byte hex address, got \"0x1234\""
        );
        assert!(
            "742d35cc6634c0532925a3b844bc9e7595f8fe00"
                .into_address()
                .is_err()
        );
        assert!(
            "0x742d35cc6634c0532925a3b844bc9e7595f8fg00"
                .into_address()
                .is_err()
        );
    }
}
