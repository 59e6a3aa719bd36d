-- permatoken state, schema 4 (PostgreSQL): each token's last `/me` answer, the same columns and
-- meaning as migrations/sqlite/0004_identities.sql (one statement here, one per column there).

ALTER TABLE tokens
    ADD COLUMN identity_id TEXT,
    ADD COLUMN identity_name TEXT,
    ADD COLUMN identity_at BIGINT;
