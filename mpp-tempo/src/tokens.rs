//! Well-known TIP-20 token addresses.

use alloy::primitives::{Address, address};

/// pathUSD: the default charge currency on Moderato and local nodes, and the fee token a
/// sponsor pays with unless told otherwise. The same address on every Tempo network (a
/// genesis token).
pub const PATH_USD: Address = address!("20c0000000000000000000000000000000000000");

/// USDC.e on Tempo mainnet: the default charge currency there (as in the `mpp` and `mppx`
/// SDKs). It does not exist on a local anvil node.
pub const USDC_E: Address = address!("20C000000000000000000000b9537d11c60E8b50");
