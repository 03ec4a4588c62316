-- What the fee payer spent per scope ('total', or one sender) and time window, in fee-token
-- base units: reserved before a sponsored broadcast, trued up from its receipt. Bounds the
-- sponsored fees per payer and in total. A row is deleted once its window is over.
CREATE TABLE sponsor_spend (
    scope        TEXT    NOT NULL,
    -- Unix seconds.
    window_start INTEGER NOT NULL,
    spent        INTEGER NOT NULL,
    -- Unix milliseconds: the end of the window.
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (scope, window_start)
) WITHOUT ROWID;

CREATE INDEX sponsor_spend_expires_at ON sponsor_spend (expires_at);

-- Responses kept for `Idempotency-Key` repeats: the key (a digest of the route scope and the
-- client's key), the credential it was paid with, and, once served, the response. A row
-- without a status is a request in flight, held by `owner` until `expires_at`.
CREATE TABLE idempotent_responses (
    key        TEXT    PRIMARY KEY NOT NULL,
    credential TEXT    NOT NULL,
    owner      TEXT    NOT NULL,
    status     INTEGER,
    headers    BLOB,
    body       BLOB,
    -- Unix milliseconds.
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX idempotent_responses_expires_at ON idempotent_responses (expires_at);
