-- Forward-only upgrades of a store created by an earlier schema, applied by
-- NotificationStore.ensure_schema after store_schema.sql: each one, named table__column, runs
-- only when that column is missing; one named table__column__text runs only while that
-- column is not yet of a text type (store queries column_type).

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

-- Record ids became text, so a composite key's JSON form fits (domain/keys.py); a single
-- integer key's id is its decimal text, the same as before.
-- name: change_event__record_id__text
ALTER TABLE change_event ALTER COLUMN record_id TYPE TEXT USING record_id::text;

-- name: record_snapshot__record_id__text
ALTER TABLE record_snapshot ALTER COLUMN record_id TYPE TEXT USING record_id::text;

-- name: candidate__record_id__text
ALTER TABLE candidate ALTER COLUMN record_id TYPE TEXT USING record_id::text;
