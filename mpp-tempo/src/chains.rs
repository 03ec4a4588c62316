//! [`TempoChain`]: the Tempo networks this crate knows, with their chain id, public RPC URL
//! and default charge currency (the values the `mpp` 0.18.2 SDK uses).

use alloy::primitives::Address;

use crate::tokens::{PATH_USD, USDC_E};

/// A Tempo network with known defaults, for [`TempoBuilder::chain`](crate::TempoBuilder::chain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TempoChain {
    /// Tempo mainnet: chain id 4217, RPC `https://rpc.tempo.xyz`, charges USDC.e.
    Mainnet,
    /// The Moderato testnet: chain id 42431, RPC `https://rpc.moderato.tempo.xyz`, charges
    /// pathUSD.
    Moderato,
    /// A local `anvil --network tempo` node on its default port: chain id 31337, RPC
    /// `http://127.0.0.1:8545`, charges pathUSD.
    Localnet,
}

impl TempoChain {
    /// Every known chain.
    pub const ALL: [TempoChain; 3] = [Self::Mainnet, Self::Moderato, Self::Localnet];

    /// The EIP-155 chain id.
    pub const fn chain_id(self) -> u64 {
        match self {
            Self::Mainnet => 4217,
            Self::Moderato => 42431,
            Self::Localnet => 31337,
        }
    }

    /// The public JSON-RPC endpoint (the local default port for [`TempoChain::Localnet`]).
    pub const fn rpc_url(self) -> &'static str {
        match self {
            Self::Mainnet => "https://rpc.tempo.xyz",
            Self::Moderato => "https://rpc.moderato.tempo.xyz",
            Self::Localnet => "http://127.0.0.1:8545",
        }
    }

    /// The TIP-20 token charged unless [`TempoBuilder::currency`](crate::TempoBuilder::currency)
    /// says otherwise.
    pub const fn default_currency(self) -> Address {
        match self {
            Self::Mainnet => USDC_E,
            Self::Moderato | Self::Localnet => PATH_USD,
        }
    }

    /// The known chain with this id.
    pub fn from_chain_id(chain_id: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.chain_id() == chain_id)
    }
}

impl std::fmt::Display for TempoChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Self::Mainnet => "Tempo mainnet",
            Self::Moderato => "Tempo Moderato testnet",
            Self::Localnet => "local Tempo node",
        };
        write!(f, "{name} ({})", self.chain_id())
    }
}
