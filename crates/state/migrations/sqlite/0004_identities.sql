-- permatoken state, schema 4 (SQLite): each token's last `/me` answer (its user or system-user id
-- and name: not secrets), so that a restarted watch or a new leader asks `/me` only on a token's
-- first check ever or a change of verdict, not again for a whole fleet. `identity_at` is the time
-- of the check that saw it: the identity goes with the token's latest check only when the two
-- times agree. NULL until `/me` has answered; a later check without an answer keeps it.
-- SQLite adds one column per statement (PostgreSQL's twin adds the three in one).

ALTER TABLE tokens ADD COLUMN identity_id TEXT;
ALTER TABLE tokens ADD COLUMN identity_name TEXT;
ALTER TABLE tokens ADD COLUMN identity_at BIGINT;
