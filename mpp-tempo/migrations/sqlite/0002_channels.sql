-- Payment-channel state for sessions (session.md §8), one row per channel.
--
-- Amounts are base units stored exactly as canonical decimal TEXT ("0", "1000000"; no sign,
-- no leading zeros, at most 39 digits, i.e. anything up to 2^128). For canonical strings,
-- numeric order is "shorter is smaller, equal length compares bytewise", which the CHECKs
-- below use to enforce `spent <= highest_voucher_amount <= deposit` in the database itself.
-- "Never decreases" is enforced by the conditional UPDATEs that write these rows.
CREATE TABLE channels (
    channel_id                TEXT    PRIMARY KEY NOT NULL
                              CHECK (channel_id = lower(channel_id) AND channel_id GLOB '0x*'),
    protocol                  TEXT    NOT NULL CHECK (protocol IN ('v1', 'v2')),
    chain_id                  INTEGER NOT NULL CHECK (chain_id >= 0),
    escrow                    TEXT    NOT NULL,
    -- Immutable descriptor.
    payer                     TEXT    NOT NULL,
    payee                     TEXT    NOT NULL,
    token                     TEXT    NOT NULL,
    operator                  TEXT,
    authorized_signer         TEXT    NOT NULL,
    salt                      TEXT,
    expiring_nonce_hash       TEXT,
    descriptor                TEXT    NOT NULL DEFAULT '{}',
    -- Amounts (canonical decimal text, see above).
    deposit                   TEXT    NOT NULL DEFAULT '0',
    settled_on_chain          TEXT    NOT NULL DEFAULT '0',
    highest_voucher_amount    TEXT    NOT NULL DEFAULT '0',
    highest_voucher_signature TEXT,
    spent                     TEXT    NOT NULL DEFAULT '0',
    units                     INTEGER NOT NULL DEFAULT 0 CHECK (units >= 0),
    -- Lifecycle (unix seconds; 0 = not set).
    close_requested_at        INTEGER NOT NULL DEFAULT 0,
    finalized                 INTEGER NOT NULL DEFAULT 0 CHECK (finalized IN (0, 1)),
    last_settlement_at        INTEGER NOT NULL DEFAULT 0,
    last_settlement_spent     TEXT    NOT NULL DEFAULT '0',
    last_settlement_units     INTEGER NOT NULL DEFAULT 0,
    created_at                INTEGER NOT NULL,
    updated_at                INTEGER NOT NULL,

    CHECK (deposit NOT GLOB '*[^0-9]*' AND length(deposit) BETWEEN 1 AND 39
           AND (deposit = '0' OR deposit NOT GLOB '0*')),
    CHECK (settled_on_chain NOT GLOB '*[^0-9]*' AND length(settled_on_chain) BETWEEN 1 AND 39
           AND (settled_on_chain = '0' OR settled_on_chain NOT GLOB '0*')),
    CHECK (highest_voucher_amount NOT GLOB '*[^0-9]*' AND length(highest_voucher_amount) BETWEEN 1 AND 39
           AND (highest_voucher_amount = '0' OR highest_voucher_amount NOT GLOB '0*')),
    CHECK (spent NOT GLOB '*[^0-9]*' AND length(spent) BETWEEN 1 AND 39
           AND (spent = '0' OR spent NOT GLOB '0*')),
    CHECK (last_settlement_spent NOT GLOB '*[^0-9]*' AND length(last_settlement_spent) BETWEEN 1 AND 39
           AND (last_settlement_spent = '0' OR last_settlement_spent NOT GLOB '0*')),
    -- spent <= highest_voucher_amount
    CHECK (length(spent) < length(highest_voucher_amount)
           OR (length(spent) = length(highest_voucher_amount) AND spent <= highest_voucher_amount)),
    -- highest_voucher_amount <= deposit
    CHECK (length(highest_voucher_amount) < length(deposit)
           OR (length(highest_voucher_amount) = length(deposit) AND highest_voucher_amount <= deposit)),
    -- settled_on_chain <= deposit
    CHECK (length(settled_on_chain) < length(deposit)
           OR (length(settled_on_chain) = length(deposit) AND settled_on_chain <= deposit))
);

CREATE INDEX channels_payer ON channels (payer);
