// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title ITIP20ChannelReserve
/// @notice The ABI of the TIP-1034 "TIP-20 channel reserve" precompile at
/// 0x4d50500000000000000000000000000000000000, as `tempo-contracts` 1.11 binds it
/// (`tempo_alloy::contracts::precompiles::ITIP20ChannelReserve`): same function signatures,
/// struct layouts, events (names, indexed arguments, types) and errors.
interface ITIP20ChannelReserve {
    /// Immutable channel identity supplied to all descriptor-based methods.
    struct ChannelDescriptor {
        address payer;
        address payee;
        address operator;
        address token;
        bytes32 salt;
        address authorizedSigner;
        bytes32 expiringNonceHash;
    }

    /// Mutable channel state (one storage slot).
    struct ChannelState {
        uint96 settled;
        uint96 deposit;
        uint32 closeRequestedAt;
    }

    /// Descriptor plus current state.
    struct Channel {
        ChannelDescriptor descriptor;
        ChannelState state;
    }

    function CLOSE_GRACE_PERIOD() external view returns (uint64);
    function VOUCHER_TYPEHASH() external view returns (bytes32);

    function open(
        address payee,
        address operator,
        address token,
        uint96 deposit,
        bytes32 salt,
        address authorizedSigner
    ) external returns (bytes32 channelId);

    function settle(ChannelDescriptor calldata descriptor, uint96 cumulativeAmount, bytes calldata signature)
        external;

    function topUp(ChannelDescriptor calldata descriptor, uint96 additionalDeposit) external;

    function close(
        ChannelDescriptor calldata descriptor,
        uint96 cumulativeAmount,
        uint96 captureAmount,
        bytes calldata signature
    ) external;

    function requestClose(ChannelDescriptor calldata descriptor) external;

    function withdraw(ChannelDescriptor calldata descriptor) external;

    function getChannel(ChannelDescriptor calldata descriptor) external view returns (Channel memory);

    function getChannelState(bytes32 channelId) external view returns (ChannelState memory);

    function getChannelStatesBatch(bytes32[] calldata channelIds) external view returns (ChannelState[] memory);

    function computeChannelId(
        address payer,
        address payee,
        address operator,
        address token,
        bytes32 salt,
        address authorizedSigner,
        bytes32 expiringNonceHash
    ) external view returns (bytes32);

    function getVoucherDigest(bytes32 channelId, uint96 cumulativeAmount) external view returns (bytes32);

    function domainSeparator() external view returns (bytes32);

    function storageCredits(address payer) external view returns (uint64 credits);

    event ChannelOpened(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed payee,
        address operator,
        address token,
        address authorizedSigner,
        bytes32 salt,
        bytes32 expiringNonceHash,
        uint96 deposit
    );

    event Settled(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed payee,
        uint96 cumulativeAmount,
        uint96 deltaPaid,
        uint96 newSettled
    );

    event TopUp(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed payee,
        uint96 additionalDeposit,
        uint96 newDeposit
    );

    event CloseRequested(
        bytes32 indexed channelId, address indexed payer, address indexed payee, uint256 closeGraceEnd
    );

    event ChannelClosed(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed payee,
        uint96 settledToPayee,
        uint96 refundedToPayer
    );

    event CloseRequestCancelled(bytes32 indexed channelId, address indexed payer, address indexed payee);

    error ChannelAlreadyExists();
    error ChannelNotFound();
    error NotPayer();
    error NotPayeeOrOperator();
    error InvalidPayee();
    error ZeroDeposit();
    error ExpiringNonceHashNotSet();
    error InvalidSignature();
    error AmountExceedsDeposit();
    error AmountNotIncreasing();
    error CaptureAmountInvalid();
    error CloseNotReady();
    error DepositOverflow();
}

/// The ERC-20-compatible part of a TIP-20 token this contract uses.
interface ITIP20Transfers {
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
}

/// @title TIP20ChannelReserveStandIn
/// @notice A TEST-ONLY Solidity stand-in for the TIP-1034 channel reserve precompile, to be
/// placed at 0x4d50500000000000000000000000000000000000 on a local anvil node with
/// `anvil_setCode` (anvil 1.7.1 stops at hardfork T4; the precompile activates at T5).
/// Written from the MPP session spec and the precompile's ABI; not the precompile's code.
///
/// Differences from the real precompile (see README.md):
/// - `expiringNonceHash`: the precompile takes it from the enclosing transaction
///   (`keccak256(encodeForSigning(tx) || sender)`, seeded by the node). A contract cannot see
///   that, so the test sets it beforehand with the test hook `setNextExpiringNonceHash`,
///   which is NOT part of the precompile. The first `open` of a transaction consumes the
///   stored value; later `open`s in the same transaction (a batch) reuse it, as with the
///   precompile. Without a value, `open` reverts with `ExpiringNonceHashNotSet()`.
/// - Token pulls: the precompile moves the deposit without an allowance; this contract uses
///   `transferFrom(msg.sender, this, amount)`, so the payer must `approve` it first.
/// - Signatures: only 65-byte secp256k1 `r || s || v` with v in {27, 28} and low s; the
///   precompile also accepts P-256 and WebAuthn (TIP-1020) signatures.
/// - Not modelled: TIP-403 transfer policies, TIP-1028 receive policies, virtual payees,
///   storage credits (`storageCredits` always answers 0), the TIP-20 token check of `token`.
/// - No constructor state: the code is installed with `anvil_setCode`, so nothing runs at
///   deployment. The EIP-712 domain separator is computed per call from `block.chainid` and
///   `address(this)`.
contract TIP20ChannelReserveStandIn is ITIP20ChannelReserve {
    /// Seconds between `requestClose` and `withdraw`.
    uint64 public constant override CLOSE_GRACE_PERIOD = 900;

    /// keccak256("Voucher(bytes32 channelId,uint96 cumulativeAmount)")
    bytes32 public constant override VOUCHER_TYPEHASH =
        keccak256("Voucher(bytes32 channelId,uint96 cumulativeAmount)");

    bytes32 private constant EIP712_DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant NAME_HASH = keccak256("TIP20 Channel Reserve");
    bytes32 private constant VERSION_HASH = keccak256("1");

    /// secp256k1 n / 2: the largest accepted `s` (low-s rule).
    uint256 private constant SECP256K1N_HALF = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    /// Transient slot: the expiring nonce hash of the current transaction, once an `open`
    /// has taken it.
    bytes32 private constant TX_NONCE_HASH_SLOT = keccak256("mpp.standin.tip20-channel-reserve.tx-nonce-hash");
    /// Transient slot seed: channel ids opened in the current transaction.
    bytes32 private constant OPENED_THIS_TX_SEED = keccak256("mpp.standin.tip20-channel-reserve.opened-this-tx");

    /// Channel state by channel id; `deposit != 0` marks an existing channel.
    mapping(bytes32 => ChannelState) private _states;

    /// TEST HOOK storage: the expiring nonce hash the next `open` will use.
    bytes32 private _pendingExpiringNonceHash;

    /// Never written (storage credits are not modelled); keeps `storageCredits` a `view`.
    mapping(address => uint64) private _storageCredits;

    // ---------------------------------------------------------------------------------------
    // Test hook (not part of the precompile)
    // ---------------------------------------------------------------------------------------

    /// @notice TEST HOOK, NOT PART OF THE PRECOMPILE. Stores the `expiringNonceHash` the next
    /// transaction that calls `open` will bind its channels to (the real precompile derives
    /// it from that transaction). Anyone may call it; zero clears it.
    function setNextExpiringNonceHash(bytes32 hash) external {
        _pendingExpiringNonceHash = hash;
    }

    // ---------------------------------------------------------------------------------------
    // Channel lifecycle
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc ITIP20ChannelReserve
    function open(
        address payee,
        address operator,
        address token,
        uint96 deposit,
        bytes32 salt,
        address authorizedSigner
    ) external override returns (bytes32 channelId) {
        if (payee == address(0) || _hasTip20Prefix(payee)) revert InvalidPayee();
        if (deposit == 0) revert ZeroDeposit();

        bytes32 nonceHash = _takeExpiringNonceHash();
        channelId = _computeChannelId(
            ChannelDescriptor({
                payer: msg.sender,
                payee: payee,
                operator: operator,
                token: token,
                salt: salt,
                authorizedSigner: authorizedSigner,
                expiringNonceHash: nonceHash
            })
        );
        if (_states[channelId].deposit != 0 || _openedThisTx(channelId)) revert ChannelAlreadyExists();

        _states[channelId] = ChannelState({settled: 0, deposit: deposit, closeRequestedAt: 0});
        _markOpenedThisTx(channelId);
        _pull(token, msg.sender, deposit);

        emit ChannelOpened(channelId, msg.sender, payee, operator, token, authorizedSigner, salt, nonceHash, deposit);
    }

    /// @inheritdoc ITIP20ChannelReserve
    function settle(ChannelDescriptor calldata descriptor, uint96 cumulativeAmount, bytes calldata signature)
        external
        override
    {
        bytes32 channelId = _computeChannelId(descriptor);
        ChannelState memory state = _existing(channelId);
        _onlyPayeeOrOperator(descriptor);

        if (cumulativeAmount > state.deposit) revert AmountExceedsDeposit();
        if (cumulativeAmount <= state.settled) revert AmountNotIncreasing();
        _checkVoucher(descriptor, channelId, cumulativeAmount, signature);

        uint96 delta = cumulativeAmount - state.settled;
        _states[channelId].settled = cumulativeAmount;
        _pay(descriptor.token, descriptor.payee, delta);

        emit Settled(channelId, descriptor.payer, descriptor.payee, cumulativeAmount, delta, cumulativeAmount);
    }

    /// @inheritdoc ITIP20ChannelReserve
    /// @dev A zero top-up is allowed: it only cancels a pending close request (and does
    /// nothing at all when there is none).
    function topUp(ChannelDescriptor calldata descriptor, uint96 additionalDeposit) external override {
        bytes32 channelId = _computeChannelId(descriptor);
        ChannelState memory state = _existing(channelId);
        if (msg.sender != descriptor.payer) revert NotPayer();

        bool hadCloseRequest = state.closeRequestedAt != 0;
        if (additionalDeposit == 0 && !hadCloseRequest) return;

        if (additionalDeposit != 0) {
            uint256 next = uint256(state.deposit) + uint256(additionalDeposit);
            if (next > type(uint96).max) revert DepositOverflow();
            state.deposit = uint96(next);
            _pull(descriptor.token, msg.sender, additionalDeposit);
        }
        state.closeRequestedAt = 0;
        _states[channelId] = state;

        if (hadCloseRequest) emit CloseRequestCancelled(channelId, descriptor.payer, descriptor.payee);
        emit TopUp(channelId, descriptor.payer, descriptor.payee, additionalDeposit, state.deposit);
    }

    /// @inheritdoc ITIP20ChannelReserve
    /// @dev Idempotent: a second request keeps the first deadline and emits nothing.
    function requestClose(ChannelDescriptor calldata descriptor) external override {
        bytes32 channelId = _computeChannelId(descriptor);
        ChannelState memory state = _existing(channelId);
        if (msg.sender != descriptor.payer) revert NotPayer();
        if (state.closeRequestedAt != 0) return;

        uint32 now32 = block.timestamp > type(uint32).max ? type(uint32).max : uint32(block.timestamp);
        _states[channelId].closeRequestedAt = now32;

        emit CloseRequested(channelId, descriptor.payer, descriptor.payee, block.timestamp + CLOSE_GRACE_PERIOD);
    }

    /// @inheritdoc ITIP20ChannelReserve
    /// @dev `captureAmount` may be below `cumulativeAmount` but not below what is settled. The
    /// voucher is only checked when the close captures more than is settled. Emits
    /// `ChannelClosed(settledToPayee = captureAmount (the channel's total), refundedToPayer)`.
    function close(
        ChannelDescriptor calldata descriptor,
        uint96 cumulativeAmount,
        uint96 captureAmount,
        bytes calldata signature
    ) external override {
        bytes32 channelId = _computeChannelId(descriptor);
        ChannelState memory state = _existing(channelId);
        _onlyPayeeOrOperator(descriptor);

        if (captureAmount < state.settled || captureAmount > cumulativeAmount) revert CaptureAmountInvalid();
        if (captureAmount > state.deposit) revert AmountExceedsDeposit();
        if (captureAmount > state.settled) _checkVoucher(descriptor, channelId, cumulativeAmount, signature);

        uint96 delta = captureAmount - state.settled;
        uint96 refund = state.deposit - captureAmount;
        delete _states[channelId];
        _pay(descriptor.token, descriptor.payee, delta);
        _pay(descriptor.token, descriptor.payer, refund);

        emit ChannelClosed(channelId, descriptor.payer, descriptor.payee, captureAmount, refund);
    }

    /// @inheritdoc ITIP20ChannelReserve
    /// @dev Emits `ChannelClosed(settledToPayee = settled, refundedToPayer = deposit - settled)`.
    function withdraw(ChannelDescriptor calldata descriptor) external override {
        bytes32 channelId = _computeChannelId(descriptor);
        ChannelState memory state = _existing(channelId);
        if (msg.sender != descriptor.payer) revert NotPayer();
        if (state.closeRequestedAt == 0 || block.timestamp < uint256(state.closeRequestedAt) + CLOSE_GRACE_PERIOD) {
            revert CloseNotReady();
        }

        uint96 refund = state.deposit - state.settled;
        delete _states[channelId];
        _pay(descriptor.token, descriptor.payer, refund);

        emit ChannelClosed(channelId, descriptor.payer, descriptor.payee, state.settled, refund);
    }

    // ---------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc ITIP20ChannelReserve
    /// @dev An unknown (or closed) channel reads as the zero state.
    function getChannel(ChannelDescriptor calldata descriptor) external view override returns (Channel memory) {
        return Channel({descriptor: descriptor, state: _states[_computeChannelId(descriptor)]});
    }

    /// @inheritdoc ITIP20ChannelReserve
    function getChannelState(bytes32 channelId) external view override returns (ChannelState memory) {
        return _states[channelId];
    }

    /// @inheritdoc ITIP20ChannelReserve
    function getChannelStatesBatch(bytes32[] calldata channelIds)
        external
        view
        override
        returns (ChannelState[] memory)
    {
        ChannelState[] memory states = new ChannelState[](channelIds.length);
        for (uint256 i = 0; i < channelIds.length; ++i) {
            states[i] = _states[channelIds[i]];
        }
        return states;
    }

    /// @inheritdoc ITIP20ChannelReserve
    function computeChannelId(
        address payer,
        address payee,
        address operator,
        address token,
        bytes32 salt,
        address authorizedSigner,
        bytes32 expiringNonceHash
    ) external view override returns (bytes32) {
        return _computeChannelId(
            ChannelDescriptor({
                payer: payer,
                payee: payee,
                operator: operator,
                token: token,
                salt: salt,
                authorizedSigner: authorizedSigner,
                expiringNonceHash: expiringNonceHash
            })
        );
    }

    /// @inheritdoc ITIP20ChannelReserve
    function getVoucherDigest(bytes32 channelId, uint96 cumulativeAmount) public view override returns (bytes32) {
        bytes32 structHash = keccak256(abi.encode(VOUCHER_TYPEHASH, channelId, cumulativeAmount));
        return keccak256(abi.encodePacked(hex"1901", domainSeparator(), structHash));
    }

    /// @inheritdoc ITIP20ChannelReserve
    function domainSeparator() public view override returns (bytes32) {
        return keccak256(abi.encode(EIP712_DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }

    /// @inheritdoc ITIP20ChannelReserve
    /// @dev Storage credits are not modelled: nothing ever writes them, so this is always 0.
    function storageCredits(address payer) external view override returns (uint64 credits) {
        return _storageCredits[payer];
    }

    // ---------------------------------------------------------------------------------------
    // Internals
    // ---------------------------------------------------------------------------------------

    /// keccak256(abi.encode(payer, payee, operator, token, salt, authorizedSigner,
    /// expiringNonceHash, address(this), block.chainid))
    function _computeChannelId(ChannelDescriptor memory d) private view returns (bytes32) {
        return keccak256(
            abi.encode(
                d.payer,
                d.payee,
                d.operator,
                d.token,
                d.salt,
                d.authorizedSigner,
                d.expiringNonceHash,
                address(this),
                block.chainid
            )
        );
    }

    function _existing(bytes32 channelId) private view returns (ChannelState memory state) {
        state = _states[channelId];
        if (state.deposit == 0) revert ChannelNotFound();
    }

    function _onlyPayeeOrOperator(ChannelDescriptor calldata d) private view {
        if (msg.sender != d.payee && (d.operator == address(0) || msg.sender != d.operator)) {
            revert NotPayeeOrOperator();
        }
    }

    /// Reverts with `InvalidSignature()` unless `signature` is a canonical 65-byte secp256k1
    /// signature (v in {27, 28}, low s) of the voucher by the effective signer
    /// (`authorizedSigner`, or `payer` when that is zero).
    function _checkVoucher(
        ChannelDescriptor calldata d,
        bytes32 channelId,
        uint96 cumulativeAmount,
        bytes calldata signature
    ) private view {
        if (signature.length != 65) revert InvalidSignature();
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (v != 27 && v != 28) revert InvalidSignature();
        if (uint256(s) > SECP256K1N_HALF) revert InvalidSignature();
        address recovered = ecrecover(getVoucherDigest(channelId, cumulativeAmount), v, r, s);
        address expected = d.authorizedSigner == address(0) ? d.payer : d.authorizedSigner;
        if (recovered == address(0) || recovered != expected) revert InvalidSignature();
    }

    /// TIP-20 addresses start with 0x20c0 followed by ten zero bytes.
    function _hasTip20Prefix(address a) private pure returns (bool) {
        return bytes12(bytes20(a)) == bytes12(0x20c000000000000000000000);
    }

    /// The transaction's expiring nonce hash: the one an earlier `open` of this transaction
    /// took, else the test hook's value (consumed). Reverts when neither is set.
    function _takeExpiringNonceHash() private returns (bytes32 hash) {
        bytes32 slot = TX_NONCE_HASH_SLOT;
        assembly ("memory-safe") {
            hash := tload(slot)
        }
        if (hash != bytes32(0)) return hash;
        hash = _pendingExpiringNonceHash;
        if (hash == bytes32(0)) revert ExpiringNonceHashNotSet();
        delete _pendingExpiringNonceHash;
        assembly ("memory-safe") {
            tstore(slot, hash)
        }
    }

    function _openedThisTx(bytes32 channelId) private view returns (bool opened) {
        bytes32 slot = keccak256(abi.encode(OPENED_THIS_TX_SEED, channelId));
        assembly ("memory-safe") {
            opened := tload(slot)
        }
    }

    function _markOpenedThisTx(bytes32 channelId) private {
        bytes32 slot = keccak256(abi.encode(OPENED_THIS_TX_SEED, channelId));
        assembly ("memory-safe") {
            tstore(slot, 1)
        }
    }

    /// Pulls `amount` from `from` (needs an allowance: the precompile does not).
    function _pull(address token, address from, uint96 amount) private {
        if (amount == 0) return;
        bool ok = ITIP20Transfers(token).transferFrom(from, address(this), amount);
        require(ok);
    }

    function _pay(address token, address to, uint96 amount) private {
        if (amount == 0) return;
        bool ok = ITIP20Transfers(token).transfer(to, amount);
        require(ok);
    }
}
