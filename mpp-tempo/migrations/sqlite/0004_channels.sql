-- Session payment channels (mpp_tempo::session::store): one row per channel, keyed by the
-- lowercase 0x-hex channel id. Every change is one `BEGIN IMMEDIATE` transaction (the
-- database write lock, taken before the row is read), so changes are serialized across
-- connections and processes sharing the file.
--
-- Amounts are u128 base units stored as TEXT of exactly 39 zero-padded decimal digits
-- (u128::MAX has 39 digits). SQLite's numbers are 64-bit integers or doubles, neither of
-- which holds a u128 exactly; fixed-width digit strings do, and compare as numbers under
-- SQLite's default BINARY collation, so the CHECKs and the settlement scan below are correct
-- in SQL. Arithmetic happens in Rust, under the write lock.
--
-- Times are unix milliseconds. `reservations` is a JSON array of
-- {"id", "amount" (decimal string), "expires_at" (ms)}; `reserved` is their sum and
-- `reservations_expire_at` their earliest expiry. `unsettled` = highest_voucher - settled,
-- kept by every write so the settlement scan can compare it in SQL.
CREATE TABLE session_channels (
    channel_id             TEXT    PRIMARY KEY NOT NULL,
    protocol               TEXT    NOT NULL CHECK (protocol IN ('v1', 'v2')),
    chain_id               INTEGER NOT NULL CHECK (chain_id >= 0),
    escrow                 TEXT    NOT NULL,
    payer                  TEXT    NOT NULL,
    payee                  TEXT    NOT NULL,
    token                  TEXT    NOT NULL,
    operator               TEXT    NOT NULL,
    authorized_signer      TEXT    NOT NULL,
    salt                   TEXT    NOT NULL,
    expiring_nonce_hash    TEXT    NOT NULL,
    deposit                TEXT    NOT NULL
        CHECK (length(deposit) = 39 AND deposit NOT GLOB '*[^0-9]*'),
    highest_voucher        TEXT    NOT NULL
        CHECK (length(highest_voucher) = 39 AND highest_voucher NOT GLOB '*[^0-9]*'),
    voucher_signature      TEXT,
    spent                  TEXT    NOT NULL
        CHECK (length(spent) = 39 AND spent NOT GLOB '*[^0-9]*'),
    reserved               TEXT    NOT NULL
        CHECK (length(reserved) = 39 AND reserved NOT GLOB '*[^0-9]*'),
    reservations           TEXT    NOT NULL DEFAULT '[]',
    reservations_expire_at INTEGER,
    settled                TEXT    NOT NULL
        CHECK (length(settled) = 39 AND settled NOT GLOB '*[^0-9]*'),
    unsettled              TEXT    NOT NULL
        CHECK (length(unsettled) = 39 AND unsettled NOT GLOB '*[^0-9]*'),
    units                  INTEGER NOT NULL CHECK (units >= 0),
    state                  TEXT    NOT NULL CHECK (state IN ('open', 'closing', 'finalized')),
    close_requested_at     INTEGER,
    finalized_at           INTEGER,
    finalized_tx           TEXT,
    last_settlement_at     INTEGER,
    last_settlement_spent  TEXT,
    last_settlement_units  INTEGER,
    last_settlement_tx     TEXT,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL,
    retention_ms           INTEGER NOT NULL CHECK (retention_ms >= 0),
    expires_at             INTEGER NOT NULL,
    version                INTEGER NOT NULL CHECK (version >= 1),
    -- What fixed-width text can check (spent + reserved <= highest is checked in Rust).
    CHECK (spent <= highest_voucher AND reserved <= highest_voucher
           AND settled <= highest_voucher AND highest_voucher <= deposit),
    CHECK ((state = 'closing') = (close_requested_at IS NOT NULL)),
    CHECK ((state = 'finalized') = (finalized_at IS NOT NULL))
) WITHOUT ROWID;

-- The settler's scan: closing channels, and open ones by unsettled value.
CREATE INDEX session_channels_settlement ON session_channels (state, unsettled);
-- The purge.
CREATE INDEX session_channels_expires_at ON session_channels (expires_at);
CREATE INDEX session_channels_reservations_expire_at ON session_channels (reservations_expire_at)
    WHERE reservations_expire_at IS NOT NULL;
