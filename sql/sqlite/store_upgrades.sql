-- Forward-only upgrades of a store created by an earlier schema, applied by
-- NotificationStore.ensure_schema after store_schema.sql: each one, named table__column, runs
-- only when that column is missing.

-- name: window_run__schedule_version
ALTER TABLE window_run ADD COLUMN schedule_version TEXT;

-- name: message__schedule_version
ALTER TABLE message ADD COLUMN schedule_version TEXT;

-- name: message__requested_at
ALTER TABLE message ADD COLUMN requested_at TEXT;
