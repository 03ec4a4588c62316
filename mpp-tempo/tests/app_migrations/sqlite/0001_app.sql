-- An application's own schema, migrated with its own `sqlx::migrate!()` (default tracking
-- table `_sqlx_migrations`) on the database the replay store uses.
CREATE TABLE app_orders (
    id    INTEGER PRIMARY KEY NOT NULL,
    item  TEXT    NOT NULL
);
