-- permatoken state, schema 3 (SQLite): claims, so that a renewal or a failover is done once even when
-- a fenced leader and its successor both reach it. The key names the token (its SHA-256), the
-- action and the state change it answers; whoever inserts the row does the action, and marks it
-- done after. A claim never marked done stays: the action may have happened.
-- Portable as written (PostgreSQL's twin also moves the leader's heartbeat table in).

CREATE TABLE claims (
    key TEXT PRIMARY KEY,
    replica TEXT NOT NULL,
    claimed_at BIGINT NOT NULL,
    done_at BIGINT
);
