-- Reads darwin-notify makes on the replica (SQL Server Always On readable secondary).

-- name: table_columns
-- The one parameter is the source model's name: schema-qualified (crm.Listing) or not.
WITH n AS (SELECT CAST(? AS nvarchar(256)) AS full_name)
SELECT c.COLUMN_NAME FROM INFORMATION_SCHEMA.COLUMNS AS c CROSS JOIN n
WHERE c.TABLE_SCHEMA = COALESCE(PARSENAME(n.full_name, 2), SCHEMA_NAME())
  AND c.TABLE_NAME = PARSENAME(n.full_name, 1)
ORDER BY c.ORDINAL_POSITION;

-- name: watermark
-- The raw state of this database's replica here; storage/mssql_watermark.py decides from it
-- how far the primary's commits are applied. One row always: for a database in no
-- availability group the replica columns are NULL. The view's times are the server's local
-- time, hence both clocks. Needs VIEW SERVER STATE (VIEW SERVER PERFORMANCE STATE from 2022).
SELECT d.state_desc AS database_state,
       CAST(DATABASEPROPERTYEX(DB_NAME(), 'Updateability') AS nvarchar(60)) AS updateability,
       d.is_in_standby,
       CASE WHEN d.source_database_id IS NULL THEN 0 ELSE 1 END AS is_snapshot,
       rs.is_primary_replica,
       rs.synchronization_state_desc,
       rs.is_suspended,
       rs.suspend_reason_desc,
       CONVERT(varchar(40), rs.last_hardened_lsn) AS last_hardened_lsn,
       CONVERT(varchar(40), rs.last_redone_lsn) AS last_redone_lsn,
       rs.last_hardened_time,
       rs.last_redone_time,
       rs.last_commit_time,
       rs.redo_queue_size,
       rs.log_send_queue_size,
       rs.secondary_lag_seconds,
       SYSUTCDATETIME() AS server_utc_now,
       SYSDATETIME() AS server_local_now
FROM sys.databases AS d
LEFT JOIN sys.dm_hadr_database_replica_states AS rs
       ON rs.database_id = d.database_id AND rs.is_local = 1
WHERE d.database_id = DB_ID();

-- name: write_access
-- What this login may do in the database: CREATE TABLE as HAS_PERMS_BY_NAME answers it
-- (1, 0, or NULL when it cannot tell), then every database permission it holds. Any of
-- INSERT, UPDATE, DELETE, ALTER or CONTROL, or CREATE TABLE, refuses the connection.
SELECT CAST(N'CREATE TABLE' AS nvarchar(128)) AS permission_name,
       HAS_PERMS_BY_NAME(NULL, N'DATABASE', N'CREATE TABLE') AS granted
UNION ALL
SELECT CAST(p.permission_name AS nvarchar(128)), 1
FROM fn_my_permissions(NULL, N'DATABASE') AS p;

-- name: cdc_capture_instance
-- Change Data Capture: the capture instance's source table and captured columns (no row when
-- it does not exist or this login may not read cdc.change_tables), and whether this login
-- may select from its all-changes function and read its change data (sys.fn_cdc_get_min_lsn
-- answers 0x00000000000000000000 to a login outside the capture instance's gating role).
SELECT OBJECT_SCHEMA_NAME(ct.source_object_id) AS source_schema,
       OBJECT_NAME(ct.source_object_id) AS source_table,
       cc.column_name,
       HAS_PERMS_BY_NAME(N'cdc.' + QUOTENAME(N'fn_cdc_get_all_changes_' + ct.capture_instance),
                         N'OBJECT', N'SELECT') AS can_select,
       CASE WHEN sys.fn_cdc_get_min_lsn(ct.capture_instance) = 0x00000000000000000000
            THEN 0 ELSE 1 END AS can_read_changes
FROM cdc.change_tables AS ct
JOIN cdc.captured_columns AS cc ON cc.object_id = ct.object_id
WHERE ct.capture_instance = ?
ORDER BY cc.column_ordinal;

-- name: cdc_lsn_bounds
-- The LSN range of a window's deletions and the capture instance's limits, one row. CDC maps
-- LSNs to the server's local time: the window's UTC times are moved there, and the answers
-- back to UTC, by the server's current offset (docs/sqlserver.md, Change Data Capture).
-- Parameters: the capture instance, the window's start minus lookback, its end (UTC).
SELECT b.min_lsn,
       DATEADD(minute, -b.tz, sys.fn_cdc_map_lsn_to_time(b.min_lsn)) AS min_time,
       b.max_lsn,
       DATEADD(minute, -b.tz, sys.fn_cdc_map_lsn_to_time(b.max_lsn)) AS max_time,
       sys.fn_cdc_map_time_to_lsn(N'smallest greater than or equal',
                                  DATEADD(minute, b.tz, b.from_utc)) AS from_lsn,
       sys.fn_cdc_map_time_to_lsn(N'largest less than or equal',
                                  DATEADD(minute, b.tz, b.to_utc)) AS to_lsn
FROM (SELECT sys.fn_cdc_get_min_lsn(?) AS min_lsn,
             sys.fn_cdc_get_max_lsn() AS max_lsn,
             DATEPART(TZOFFSET, SYSDATETIMEOFFSET()) AS tz,
             CAST(? AS datetime2(3)) AS from_utc,
             CAST(? AS datetime2(3)) AS to_utc) AS b;

-- name: cdc_deletions
-- The deletions (operation 1) a capture instance recorded in an LSN range, with the commit
-- time of each in UTC. {changes_function} is cdc.fn_cdc_get_all_changes_<capture instance>
-- and {key_columns} the table's key (c.<key> AS record_id; a composite key's columns as
-- record_key_1, record_key_2, ...), checked against cdc.change_tables and
-- cdc.captured_columns first, then quoted. Parameters: from LSN, to LSN (binary(10)).
SELECT {key_columns},
       DATEADD(minute, -DATEPART(TZOFFSET, SYSDATETIMEOFFSET()),
               sys.fn_cdc_map_lsn_to_time(c.__$start_lsn)) AS deleted_at,
       c.__$start_lsn AS start_lsn
FROM {changes_function}(?, ?, N'all') AS c
WHERE c.__$operation = 1
ORDER BY c.__$start_lsn, c.__$seqval;

-- name: cdc_first_deletion
-- The earliest deletion a capture instance recorded in an LSN range (the sensor's question
-- "did anything change since"), as cdc_deletions.
SELECT TOP (1)
       DATEADD(minute, -DATEPART(TZOFFSET, SYSDATETIMEOFFSET()),
               sys.fn_cdc_map_lsn_to_time(c.__$start_lsn)) AS deleted_at
FROM {changes_function}(?, ?, N'all') AS c
WHERE c.__$operation = 1
ORDER BY c.__$start_lsn;
