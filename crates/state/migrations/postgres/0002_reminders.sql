-- permatoken state, schema 2 (PostgreSQL): how many reminders went for the announced state, so that a
-- restarted watch numbers the next one on (each reminder's alert id depends on its number).
-- The same statement as migrations/sqlite/0002_reminders.sql.

ALTER TABLE announced ADD COLUMN reminders BIGINT NOT NULL DEFAULT 0;
