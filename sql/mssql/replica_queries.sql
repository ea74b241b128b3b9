-- Reads darwin-notify makes on the replica (SQL Server Always On readable secondary).

-- name: table_columns
SELECT COLUMN_NAME FROM INFORMATION_SCHEMA.COLUMNS
WHERE TABLE_SCHEMA = SCHEMA_NAME() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION;

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
