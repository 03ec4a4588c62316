-- Payment-channel state for sessions (session.md §8), one row per channel.
--
-- Amounts are base units stored exactly as NUMERIC(39,0) (anything up to 2^128), never i64.
-- The CHECKs enforce `spent <= highest_voucher_amount <= deposit` in the database itself;
-- "never decreases" is enforced by the conditional UPDATEs (or row locks) that write rows.
CREATE TABLE channels (
    channel_id                TEXT          PRIMARY KEY
                              CHECK (channel_id = lower(channel_id) AND channel_id LIKE '0x%'),
    protocol                  TEXT          NOT NULL CHECK (protocol IN ('v1', 'v2')),
    chain_id                  BIGINT        NOT NULL CHECK (chain_id >= 0),
    escrow                    TEXT          NOT NULL,
    -- Immutable descriptor.
    payer                     TEXT          NOT NULL,
    payee                     TEXT          NOT NULL,
    token                     TEXT          NOT NULL,
    operator                  TEXT,
    authorized_signer         TEXT          NOT NULL,
    salt                      TEXT,
    expiring_nonce_hash       TEXT,
    descriptor                JSONB         NOT NULL DEFAULT '{}'::jsonb,
    -- Amounts in base units.
    deposit                   NUMERIC(39,0) NOT NULL DEFAULT 0 CHECK (deposit >= 0),
    settled_on_chain          NUMERIC(39,0) NOT NULL DEFAULT 0 CHECK (settled_on_chain >= 0),
    highest_voucher_amount    NUMERIC(39,0) NOT NULL DEFAULT 0 CHECK (highest_voucher_amount >= 0),
    highest_voucher_signature TEXT,
    spent                     NUMERIC(39,0) NOT NULL DEFAULT 0 CHECK (spent >= 0),
    units                     BIGINT        NOT NULL DEFAULT 0 CHECK (units >= 0),
    -- Lifecycle (unix seconds; 0 = not set).
    close_requested_at        BIGINT        NOT NULL DEFAULT 0,
    finalized                 BOOLEAN       NOT NULL DEFAULT FALSE,
    last_settlement_at        BIGINT        NOT NULL DEFAULT 0,
    last_settlement_spent     NUMERIC(39,0) NOT NULL DEFAULT 0 CHECK (last_settlement_spent >= 0),
    last_settlement_units     BIGINT        NOT NULL DEFAULT 0,
    created_at                BIGINT        NOT NULL,
    updated_at                BIGINT        NOT NULL,

    CHECK (spent <= highest_voucher_amount),
    CHECK (highest_voucher_amount <= deposit),
    CHECK (settled_on_chain <= deposit)
);

CREATE INDEX channels_payer ON channels (payer);
