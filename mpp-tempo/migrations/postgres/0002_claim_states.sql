-- Each claim records where its payment stands, who holds it, and (for a transaction) the
-- deadline after which it cannot be mined. Rows from before this migration were claims of
-- payments that were served: they keep that meaning.
ALTER TABLE replay_keys ADD COLUMN state TEXT NOT NULL DEFAULT 'served';
ALTER TABLE replay_keys ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE replay_keys ADD COLUMN valid_before BIGINT;

-- The background resolver reads the pending claims, earliest deadline first.
CREATE INDEX replay_keys_state ON replay_keys (state, valid_before);
