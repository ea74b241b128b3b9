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

-- name: message__recipient_tz
ALTER TABLE message ADD COLUMN recipient_tz TEXT;

-- name: message__deferred_until
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt as store_schema.sql
-- declares it (its CHECK admits 'deferred'), keeping every row and id.
CREATE TABLE message_upgrade (
    message_id INTEGER PRIMARY KEY AUTOINCREMENT,
    candidate_id INTEGER NOT NULL UNIQUE,
    candidate_key TEXT NOT NULL UNIQUE,
    partition_key TEXT NOT NULL,
    channel TEXT NOT NULL,
    to_address TEXT,
    subject TEXT,
    html_body TEXT,
    text_body TEXT,
    sms_body TEXT,
    sms_encoding TEXT,
    sms_segments INTEGER,
    status TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'unknown', 'suppressed', 'render_failed', 'deferred')),
    reason TEXT,
    claim_token TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    provider_message_id TEXT,
    requested_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    schedule_version TEXT,
    recipient_tz TEXT,
    deferred_until TEXT
);
INSERT INTO message_upgrade (message_id, candidate_id, candidate_key, partition_key, channel,
    to_address, subject, html_body, text_body, sms_body, sms_encoding, sms_segments, status,
    reason, claim_token, attempts, provider_message_id, requested_at, created_at, updated_at,
    schedule_version, recipient_tz)
SELECT message_id, candidate_id, candidate_key, partition_key, channel,
    to_address, subject, html_body, text_body, sms_body, sms_encoding, sms_segments, status,
    reason, claim_token, attempts, provider_message_id, requested_at, created_at, updated_at,
    schedule_version, recipient_tz
FROM message;
DROP TABLE message;
ALTER TABLE message_upgrade RENAME TO message;
CREATE INDEX IF NOT EXISTS message_partition_status ON message (partition_key, status);
CREATE INDEX IF NOT EXISTS message_claim ON message (claim_token);
CREATE INDEX IF NOT EXISTS message_recipient ON message (to_address, channel);
CREATE INDEX IF NOT EXISTS message_status ON message (status, updated_at);
