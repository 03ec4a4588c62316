//! The `session` intent: payment channels funded once on chain, paid off chain by cumulative
//! EIP-712 vouchers, and settled in batches (session.md).
//!
//! Two protocol versions ([`SessionProtocol`]): **v2** on the TIP-20 channel reserve
//! precompile ([`TIP20_CHANNEL_RESERVE`], what mppx serves and its client requires) and
//! **v1** on a `TempoStreamChannel` escrow contract (what the `mpp` crate serves).
//!
//! The offline half lives here, pure and allocation-light where it is hot:
//!
//! - [`TempoSessionRequest`]: the terms (`request` of a `session` challenge).
//! - [`ChannelDescriptor`], [`V1Channel`], [`expiring_nonce_hash`]: channel identity and
//!   ids; [`abi`]: the escrow interfaces (calls, events, errors).
//! - [`VoucherDomain`], [`VoucherSignature`], [`check_voucher`]: EIP-712 vouchers, canonical
//!   signature checks, and the server's voucher checks in order (cheap ones first).
//! - [`SessionPayload`]: the credential payloads (`open`, `topUp`, `voucher`, `close`);
//!   [`check_descriptor`], [`check_source`]: the checks every v2 action shares.
//! - [`SessionReceipt`], [`NeedVoucher`]: what the server answers with.
//! - [`SessionError`]: every refusal, with its `session/*` problem type and status.
//! - `client` (feature `client`): voucher signing and payload builders for payers, and
//!   `TempoSessionPayer`, the `mpp_core` payer that opens channels and pays with vouchers.
//! - [`store`]: channel state ([`store::ChannelStore`]) in memory, SQLite or Postgres, every
//!   change one conditional update per channel.

pub mod abi;
mod channel;
#[cfg(feature = "client")]
pub mod client;
mod error;
mod escrow;
mod method;
#[cfg(feature = "client")]
mod payer;
mod payload;
mod receipt;
mod server;
mod server_key;
mod settler;
pub mod store;
mod terms;
mod voucher;
mod wake;
mod wire;

pub use channel::{
    CLOSE_GRACE_PERIOD, ChannelDescriptor, MAX_V2_AMOUNT, SessionProtocol, TIP20_CHANNEL_RESERVE,
    V1_ESCROW_MAINNET, V1_ESCROW_MODERATO, V1Channel, expiring_nonce_hash,
};
pub use error::SessionError;
pub use escrow::OnChainState;
pub use method::{DEFAULT_POLL_INTERVAL, DEFAULT_UNIT_TYPE};
#[cfg(feature = "client")]
pub use payer::{ChannelSnapshot, SessionVoucher, TempoSessionPayer};
pub use payload::{
    ClosePayload, MAX_TRANSACTION_BYTES, OpenPayload, PayloadError, SessionPayload, TopUpPayload,
    VoucherPayload, check_descriptor, check_source,
};
pub use receipt::{NeedVoucher, ReceiptError, SESSION_INTENT, SessionReceipt};
pub use server::{
    DEFAULT_CHANNEL_RETENTION, DEFAULT_CHANNEL_STATE_TTL, SessionAction, SessionConfig,
    SessionCredential, SessionVerified, TempoSessions,
};
pub use server_key::{ServerKey, ServerTxError};
pub use settler::{
    SettlementHook, SettlementReport, SettlementSchedule, SettlementTrigger, SettlerConfig,
    SettlerHandle,
};
pub use terms::{SessionMethodDetails, TempoSessionRequest, TermsError};
pub use voucher::{
    CLOSE_AUTHORIZATION_TYPEHASH, DOMAIN_NAME_V1, DOMAIN_NAME_V2, DOMAIN_VERSION,
    EIP712_DOMAIN_TYPEHASH, MAX_SIGNATURE_BYTES, SECP256K1N_HALF, VOUCHER_TYPEHASH_V1,
    VOUCHER_TYPEHASH_V2, VoucherDomain, VoucherOutcome, VoucherSignature, VoucherState,
    check_open_amounts, check_voucher, close_capture,
};
