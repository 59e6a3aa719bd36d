-- permatoken state, schema 3 (PostgreSQL): claims, so that a renewal or a failover is done once even
-- when a fenced leader and its successor both reach it. The key names the token (its SHA-256), the
-- action and the state change it answers; whoever inserts the row does the action, and marks it
-- done after. A claim never marked done stays: the action may have happened.
-- The claims table is the same statement as migrations/sqlite/0003_claims.sql.
--
-- The leader's heartbeat row (see `postgres/election.rs`) moves here from the election session;
-- IF NOT EXISTS because replicas of schema 2 created it on their session.

CREATE TABLE claims (
    key TEXT PRIMARY KEY,
    replica TEXT NOT NULL,
    claimed_at BIGINT NOT NULL,
    done_at BIGINT
);

CREATE TABLE IF NOT EXISTS leader_heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    replica TEXT NOT NULL,
    pid INTEGER NOT NULL,
    beat_at BIGINT NOT NULL
);
