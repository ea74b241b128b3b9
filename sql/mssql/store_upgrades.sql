-- Forward-only upgrades of a store created by an earlier schema, applied by
-- NotificationStore.ensure_schema after store_schema.sql: each one, named table__column, runs
-- only when that column is missing; one named table__column__text runs only while that
-- column is not yet of a text type (store queries column_type). Each guards itself, so a DBA
-- may run the file as is.

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

-- Record ids became text, so a composite key's JSON form fits (domain/keys.py); a single
-- integer key's id is its decimal text, the same as before. The snapshot's primary key
-- holds the column, so it is dropped and made again around the change.
-- name: change_event__record_id__text
IF EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'dbo.change_event')
    AND name = N'record_id' AND system_type_id = TYPE_ID(N'bigint'))
    ALTER TABLE dbo.change_event ALTER COLUMN record_id nvarchar(200) NOT NULL;

-- name: record_snapshot__record_id__text
IF EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'dbo.record_snapshot')
    AND name = N'record_id' AND system_type_id = TYPE_ID(N'bigint'))
BEGIN
    ALTER TABLE dbo.record_snapshot DROP CONSTRAINT PK_record_snapshot;
    ALTER TABLE dbo.record_snapshot ALTER COLUMN record_id nvarchar(200) NOT NULL;
    ALTER TABLE dbo.record_snapshot ADD CONSTRAINT PK_record_snapshot
        PRIMARY KEY (source_table, record_id);
END;

-- name: candidate__record_id__text
IF EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'dbo.candidate')
    AND name = N'record_id' AND system_type_id = TYPE_ID(N'bigint'))
    ALTER TABLE dbo.candidate ALTER COLUMN record_id nvarchar(200) NOT NULL;
