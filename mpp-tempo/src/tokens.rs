//! Well-known TIP-20 token addresses.

use alloy::primitives::{Address, address};

/// pathUSD: the default charge currency, and the fee token a sponsor pays with unless told
/// otherwise. The same address on every Tempo network (a genesis token).
pub const PATH_USD: Address = address!("20c0000000000000000000000000000000000000");
