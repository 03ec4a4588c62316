//! The payer identifier a credential carries in `source`: `did:pkh:eip155:<chainId>:<address>`.
//!
//! ```
//! use mpp_core::did::PkhDid;
//!
//! let did: PkhDid = "did:pkh:eip155:42431:0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266".parse().unwrap();
//! assert_eq!(did.chain_id, 42431);
//! assert_eq!(did.address_bytes(), did.address_bytes());
//! assert!("did:pkh:eip155:042431:0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266".parse::<PkhDid>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;

/// A `did:pkh:eip155` identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkhDid {
    /// The EIP-155 chain id.
    pub chain_id: u64,
    /// The account address as written (0x + 40 hex digits, any case).
    pub address: String,
}

/// A `source` that is not a `did:pkh:eip155` identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a did:pkh:eip155:<chainId>:<address> identifier")]
pub struct DidError(pub String);

impl PkhDid {
    /// The 20 address bytes (addresses compare by bytes, not by checksum case).
    pub fn address_bytes(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        // Total even for a hand-built value (the fields are public): extra digits are ignored.
        let hex = self.address.as_bytes().get(2..).unwrap_or_default();
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = (hex_value(pair[0]) << 4) | hex_value(pair[1]);
        }
        out
    }
}

fn hex_value(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

impl FromStr for PkhDid {
    type Err = DidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DidError(s.to_owned());
        let rest = s.strip_prefix("did:pkh:eip155:").ok_or_else(err)?;
        let (chain, address) = rest.split_once(':').ok_or_else(err)?;
        let chain_ok = !chain.is_empty()
            && chain.bytes().all(|b| b.is_ascii_digit())
            && (chain == "0" || !chain.starts_with('0'));
        let address_ok = address.len() == 42
            && address.starts_with("0x")
            && address.as_bytes()[2..].iter().all(u8::is_ascii_hexdigit);
        if !chain_ok || !address_ok {
            return Err(err());
        }
        Ok(Self {
            chain_id: chain.parse().map_err(|_| err())?,
            address: address.to_owned(),
        })
    }
}

impl fmt::Display for PkhDid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "did:pkh:eip155:{}:{}", self.chain_id, self.address)
    }
}
