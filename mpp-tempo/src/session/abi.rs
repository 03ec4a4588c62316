//! The escrow ABIs (session.md §13): the v1 `TempoStreamChannel` contract as deployed (not
//! as the draft lists it), and the v2 TIP-20 channel reserve precompile.

/// The v1 escrow: the `TempoStreamChannel` Solidity contract.
pub mod v1 {
    alloy::sol! {
        /// The `TempoStreamChannel` escrow, as deployed (the ABI both SDKs decode). Where the
        /// draft differs: `getChannel` returns `(finalized, closeRequestedAt, payer, payee,
        /// token, authorizedSigner, deposit, settled)` in that order, `topUp` takes a
        /// `uint256`, `ChannelOpened` carries the `salt`, and the other events use `uint256`
        /// amounts.
        #[sol(rpc)]
        #[derive(Debug, PartialEq, Eq)]
        interface ITempoStreamChannel {
            /// A channel's state, in the deployed field order.
            struct Channel {
                /// Closed for good (withdrawn or closed by the payee).
                bool finalized;
                /// When the payer asked to close (unix seconds); 0 = no request.
                uint64 closeRequestedAt;
                /// Who funded the channel.
                address payer;
                /// Who receives settled vouchers.
                address payee;
                /// The TIP-20 token.
                address token;
                /// The voucher signer (zero = the payer).
                address authorizedSigner;
                /// Total deposited.
                uint128 deposit;
                /// Already paid to the payee.
                uint128 settled;
            }

            /// Seconds between `requestClose` and `withdraw` (900).
            function CLOSE_GRACE_PERIOD() external view returns (uint64);
            /// `keccak256("Voucher(bytes32 channelId,uint128 cumulativeAmount)")`.
            function VOUCHER_TYPEHASH() external view returns (bytes32);
            /// The EIP-712 domain separator for this chain and address.
            function domainSeparator() external view returns (bytes32);

            /// Opens a channel, pulling `deposit` from the sender (after an `approve`).
            function open(
                address payee,
                address token,
                uint128 deposit,
                bytes32 salt,
                address authorizedSigner
            ) external returns (bytes32 channelId);
            /// Pays the payee `cumulativeAmount − settled` with a voucher (payee only).
            function settle(bytes32 channelId, uint128 cumulativeAmount, bytes signature) external;
            /// Adds to the deposit and cancels a pending close request (payer only).
            function topUp(bytes32 channelId, uint256 additionalDeposit) external;
            /// Settles `cumulativeAmount − settled` and refunds the rest (payee only). v1 has
            /// no capture limit: close with the amount actually spent.
            function close(bytes32 channelId, uint128 cumulativeAmount, bytes signature) external;
            /// Starts the payer's close grace period.
            function requestClose(bytes32 channelId) external;
            /// Refunds the payer once the grace period has passed.
            function withdraw(bytes32 channelId) external;

            /// A channel's state (all zero for an unknown id).
            function getChannel(bytes32 channelId) external view returns (Channel memory);
            /// Several channels' states, in order.
            function getChannelsBatch(bytes32[] channelIds)
                external
                view
                returns (Channel[] memory channelStates);
            /// The public mapping getter: the same fields as `getChannel`.
            function channels(bytes32 channelId)
                external
                view
                returns (
                    bool finalized,
                    uint64 closeRequestedAt,
                    address payer,
                    address payee,
                    address token,
                    address authorizedSigner,
                    uint128 deposit,
                    uint128 settled
                );
            /// The channel id `open` would assign for these arguments and sender.
            function computeChannelId(
                address payer,
                address payee,
                address token,
                bytes32 salt,
                address authorizedSigner
            ) external view returns (bytes32);
            /// The EIP-712 digest of a voucher.
            function getVoucherDigest(bytes32 channelId, uint128 cumulativeAmount)
                external
                view
                returns (bytes32);

            /// A channel was opened and funded.
            event ChannelOpened(
                bytes32 indexed channelId,
                address indexed payer,
                address indexed payee,
                address token,
                address authorizedSigner,
                bytes32 salt,
                uint256 deposit
            );
            /// A voucher was settled.
            event Settled(
                bytes32 indexed channelId,
                address indexed payer,
                address indexed payee,
                uint256 cumulativeAmount,
                uint256 deltaPaid,
                uint256 newSettled
            );
            /// The deposit grew.
            event TopUp(
                bytes32 indexed channelId,
                address indexed payer,
                address indexed payee,
                uint256 additionalDeposit,
                uint256 newDeposit
            );
            /// The payer asked to close; `withdraw` works from `closeGraceEnd`.
            event CloseRequested(
                bytes32 indexed channelId,
                address indexed payer,
                address indexed payee,
                uint256 closeGraceEnd
            );
            /// A top-up cancelled a close request.
            event CloseRequestCancelled(
                bytes32 indexed channelId,
                address indexed payer,
                address indexed payee
            );
            /// The channel was closed by the payee, or withdrawn by the payer.
            event ChannelClosed(
                bytes32 indexed channelId,
                address indexed payer,
                address indexed payee,
                uint256 settledToPayee,
                uint256 refundedToPayer
            );
            /// The channel expired.
            event ChannelExpired(
                bytes32 indexed channelId,
                address indexed payer,
                address indexed payee
            );

            /// The amount is above the deposit.
            error AmountExceedsDeposit();
            /// The voucher does not raise the settled amount.
            error AmountNotIncreasing();
            /// The id is taken.
            error ChannelAlreadyExists();
            /// The channel is finalized.
            error ChannelFinalized();
            /// No such channel.
            error ChannelNotFound();
            /// The grace period has not passed.
            error CloseNotReady();
            /// The deposit would overflow.
            error DepositOverflow();
            /// The payee is not acceptable.
            error InvalidPayee();
            /// The voucher signature does not recover to the signer.
            error InvalidSignature();
            /// Only the payee may do this.
            error NotPayee();
            /// Only the payer may do this.
            error NotPayer();
            /// The token transfer failed.
            error TransferFailed();
        }
    }
}

/// The v2 escrow: the TIP-20 channel reserve precompile (TIP-1034). The binding is the
/// canonical one from `tempo-contracts` (calls, events, errors, `ChannelDescriptor`,
/// `ChannelState`), re-exported so the whole session ABI is reachable from here.
pub mod v2 {
    pub use tempo_alloy::contracts::precompiles::ITIP20ChannelReserve;
    pub use tempo_alloy::contracts::precompiles::TIP20_CHANNEL_RESERVE_ADDRESS;
}
