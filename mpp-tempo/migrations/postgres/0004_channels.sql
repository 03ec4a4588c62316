-- Session payment channels (mpp_tempo::session::store): one row per channel, keyed by the
-- lowercase 0x-hex channel id. Every change is either one conditional
-- `UPDATE ... WHERE ... RETURNING` or a `SELECT ... FOR UPDATE` and one `UPDATE` in a
-- transaction, so changes to a channel are linearizable across every instance.
--
-- Amounts are u128 base units as NUMERIC(39,0): exact (u128::MAX has 39 digits), with SQL
-- arithmetic and comparison, unlike BIGINT (i64) or floats. The CHECKs state the invariants
-- in the database too: spent + reserved <= highest_voucher <= deposit, settled <=
-- highest_voucher, every amount within [0, u128::MAX].
--
-- Times are unix milliseconds. `reservations` is a JSON array of
-- {"id", "amount" (decimal string), "expires_at" (ms)}; `reserved` is their sum and
-- `reservations_expire_at` their earliest expiry.
CREATE TABLE session_channels (
    channel_id             TEXT          PRIMARY KEY,
    protocol               TEXT          NOT NULL CHECK (protocol IN ('v1', 'v2')),
    chain_id               BIGINT        NOT NULL CHECK (chain_id >= 0),
    escrow                 TEXT          NOT NULL,
    payer                  TEXT          NOT NULL,
    payee                  TEXT          NOT NULL,
    token                  TEXT          NOT NULL,
    operator               TEXT          NOT NULL,
    authorized_signer      TEXT          NOT NULL,
    salt                   TEXT          NOT NULL,
    expiring_nonce_hash    TEXT          NOT NULL,
    deposit                NUMERIC(39,0) NOT NULL,
    highest_voucher        NUMERIC(39,0) NOT NULL,
    voucher_signature      TEXT,
    spent                  NUMERIC(39,0) NOT NULL,
    reserved               NUMERIC(39,0) NOT NULL,
    reservations           TEXT          NOT NULL DEFAULT '[]',
    reservations_expire_at BIGINT,
    settled                NUMERIC(39,0) NOT NULL,
    unsettled              NUMERIC(39,0) GENERATED ALWAYS AS (highest_voucher - settled) STORED,
    units                  BIGINT        NOT NULL CHECK (units >= 0),
    state                  TEXT          NOT NULL CHECK (state IN ('open', 'closing', 'finalized')),
    close_requested_at     BIGINT,
    finalized_at           BIGINT,
    finalized_tx           TEXT,
    last_settlement_at     BIGINT,
    last_settlement_spent  NUMERIC(39,0),
    last_settlement_units  BIGINT,
    last_settlement_tx     TEXT,
    created_at             BIGINT        NOT NULL,
    updated_at             BIGINT        NOT NULL,
    retention_ms           BIGINT        NOT NULL CHECK (retention_ms >= 0),
    expires_at             BIGINT        NOT NULL,
    version                BIGINT        NOT NULL CHECK (version >= 1),
    CHECK (deposit >= 0 AND deposit <= 340282366920938463463374607431768211455),
    CHECK (highest_voucher >= 0 AND spent >= 0 AND reserved >= 0 AND settled >= 0),
    CHECK (spent + reserved <= highest_voucher AND highest_voucher <= deposit
           AND settled <= highest_voucher),
    CHECK ((state = 'closing') = (close_requested_at IS NOT NULL)),
    CHECK ((state = 'finalized') = (finalized_at IS NOT NULL))
);

-- The settler's scan: closing channels, and open ones by unsettled value.
CREATE INDEX session_channels_settlement ON session_channels (state, unsettled);
-- The purge.
CREATE INDEX session_channels_expires_at ON session_channels (expires_at);
CREATE INDEX session_channels_reservations_expire_at ON session_channels (reservations_expire_at)
    WHERE reservations_expire_at IS NOT NULL;
