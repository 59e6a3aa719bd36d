-- permatoken state, schema 2 (SQLite): how many reminders went for the announced state, so that a
-- restarted watch numbers the next one on (each reminder's alert id depends on its number).
-- Portable as written (PostgreSQL takes the same statement).

ALTER TABLE announced ADD COLUMN reminders BIGINT NOT NULL DEFAULT 0;
