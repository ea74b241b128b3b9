-- Forward-only upgrades of a store created by an earlier schema, applied by
-- NotificationStore.ensure_schema after store_schema.sql: each one, named table__column, runs
-- only when that column is missing; one named table__column__text runs only while that
-- column is not yet of a text type (store queries column_type).
--
-- Record ids may be a composite key's JSON text (domain/keys.py). SQLite needs no upgrade for
-- that: its INTEGER-affinity record_id columns keep text that does not read as a number
-- (every composite key's form) as text, and a comparison with a text parameter applies the
-- column's affinity, so a store of any age holds both forms (store_schema.sql).

-- name: window_run__schedule_version
ALTER TABLE window_run ADD COLUMN schedule_version TEXT;

-- name: message__schedule_version
ALTER TABLE message ADD COLUMN schedule_version TEXT;

-- name: message__requested_at
ALTER TABLE message ADD COLUMN requested_at TEXT;
