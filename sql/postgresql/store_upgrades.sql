-- Forward-only upgrades of a store created by an earlier schema, applied by
-- NotificationStore.ensure_schema after store_schema.sql: each one, named table__column, runs
-- only when that column is missing.

-- name: window_run__schedule_version
ALTER TABLE window_run ADD COLUMN IF NOT EXISTS schedule_version VARCHAR(64);

-- name: message__schedule_version
ALTER TABLE message ADD COLUMN IF NOT EXISTS schedule_version VARCHAR(64);

-- name: message__requested_at
ALTER TABLE message ADD COLUMN IF NOT EXISTS requested_at TIMESTAMP;

-- name: message__recipient_tz
ALTER TABLE message ADD COLUMN IF NOT EXISTS recipient_tz VARCHAR(64);

-- name: message__deferred_until
ALTER TABLE message ADD COLUMN IF NOT EXISTS deferred_until TIMESTAMP;
