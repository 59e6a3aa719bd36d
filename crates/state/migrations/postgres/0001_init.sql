-- permatoken state, schema 1 (PostgreSQL): the same tables, columns and meaning as
-- migrations/sqlite/0001_init.sql. It differs only where the two dialects disagree: the two
-- auto-numbered keys are `BIGINT GENERATED ALWAYS AS IDENTITY`, and the 0/1 flags are BOOLEAN.
-- Times are integer unix seconds (BIGINT); lists are JSON arrays in TEXT; ids given by the caller are
-- TEXT. Nothing here ever holds a secret: tokens are known by their SHA-256.

CREATE TABLE tokens (
    token_sha256   TEXT PRIMARY KEY,          -- full SHA-256 of the token, 64 lowercase hex digits
    name           TEXT NOT NULL,             -- configuration name, e.g. `orders` or `orders/KEY_BACKUP`
    role           TEXT NOT NULL,             -- `primary` or `backup`
    backup_of      TEXT,                      -- for a backup, the name of the token it stands in for
    fingerprint    TEXT NOT NULL,             -- the short fingerprint permatoken prints
    source_path    TEXT NOT NULL,             -- where the token is read from (a file), never its value
    source_key     TEXT,                      -- the variable in that file, if any
    first_seen     BIGINT NOT NULL,
    last_seen      BIGINT NOT NULL,
    last_check_id  BIGINT,                    -- the latest check, kept by retention and read by the page
    last_check_at  BIGINT
);
CREATE INDEX tokens_by_name ON tokens (name);

CREATE TABLE checks (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_sha256    TEXT NOT NULL REFERENCES tokens (token_sha256) ON DELETE CASCADE,
    checked_at      BIGINT NOT NULL,
    status          TEXT NOT NULL,            -- ok, warning, critical, unknown
    alert_state     TEXT NOT NULL,            -- ok, expiring, critical, dead, failed_over, cannot_be_checked…
    valid           BOOLEAN,                  -- NULL when the check could not tell
    expires_at      BIGINT,
    never_expires   BOOLEAN NOT NULL,
    kind            TEXT,
    missing_scopes  TEXT NOT NULL,            -- JSON array of strings
    finding_codes   TEXT NOT NULL,            -- JSON array of strings
    elapsed_ms      BIGINT NOT NULL
);
CREATE INDEX checks_by_token_time ON checks (token_sha256, checked_at);
CREATE INDEX checks_by_time ON checks (checked_at);

CREATE TABLE announced (
    token_name        TEXT PRIMARY KEY,
    state             TEXT,                   -- the state last announced, NULL if none yet
    since             BIGINT,
    alert_id          TEXT,
    last_reminder_at  BIGINT,
    unknown_since     BIGINT                  -- first of an unbroken run of `unknown` checks
);

CREATE TABLE alerts (
    id              TEXT PRIMARY KEY,         -- stable id chosen by the caller, sent to receivers
    token_name      TEXT NOT NULL,
    state           TEXT NOT NULL,
    previous_state  TEXT,
    message         TEXT NOT NULL,
    fix             TEXT,
    created_at      BIGINT NOT NULL
);

CREATE TABLE deliveries (
    alert_id         TEXT NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    route            TEXT NOT NULL,
    status           TEXT NOT NULL,           -- pending, delivered, failed
    attempts         INTEGER NOT NULL,
    next_attempt_at  BIGINT,                  -- NULL once delivered or given up
    last_error       TEXT,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (alert_id, route)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at);

CREATE TABLE events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,
    token_name  TEXT,
    kind        TEXT NOT NULL,                -- renewal, failover, reload, config_reload, …
    detail      TEXT NOT NULL
);
CREATE INDEX events_by_time ON events (at);
