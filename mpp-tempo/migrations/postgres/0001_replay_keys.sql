-- Single-use keys (tx hashes, proof ids, single-use challenge ids), claimed atomically.
-- `expires_at` is unix time in milliseconds (rounded up, so a claim never ends early).
-- A row whose `expires_at <= now` is free and may be claimed again.
CREATE TABLE replay_keys (
    key        TEXT   PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

CREATE INDEX replay_keys_expires_at ON replay_keys (expires_at);
