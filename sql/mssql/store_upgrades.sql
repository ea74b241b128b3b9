-- Forward-only upgrades of a store created by an earlier schema, applied by
-- NotificationStore.ensure_schema after store_schema.sql: each one, named table__column, runs
-- only when that column is missing (and guards itself, so a DBA may run the file as is).

-- name: window_run__schedule_version
IF COL_LENGTH(N'dbo.window_run', N'schedule_version') IS NULL
    ALTER TABLE dbo.window_run ADD schedule_version nvarchar(64) NULL;

-- name: message__schedule_version
IF COL_LENGTH(N'dbo.message', N'schedule_version') IS NULL
    ALTER TABLE dbo.message ADD schedule_version nvarchar(64) NULL;

-- name: message__requested_at
IF COL_LENGTH(N'dbo.message', N'requested_at') IS NULL
    ALTER TABLE dbo.message ADD requested_at datetime2(7) NULL;

-- name: message__recipient_tz
IF COL_LENGTH(N'dbo.message', N'recipient_tz') IS NULL
    ALTER TABLE dbo.message ADD recipient_tz nvarchar(64) NULL;

-- name: message__deferred_until
IF COL_LENGTH(N'dbo.message', N'deferred_until') IS NULL
    ALTER TABLE dbo.message ADD deferred_until datetime2(7) NULL;
