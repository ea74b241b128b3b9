-- Reads darwin-notify makes on the replica (SQL Server Always On readable secondary).

-- name: table_columns
SELECT COLUMN_NAME FROM INFORMATION_SCHEMA.COLUMNS
WHERE TABLE_SCHEMA = SCHEMA_NAME() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION;

-- name: active_schedules
SELECT * FROM [NotificationSchedule] WHERE [IsActive] = 1 ORDER BY [ScheduleID];

-- name: templates
SELECT [TemplateID], [Name], [Subject], [HtmlBody], [TextBody], [SmsBody] FROM [NotificationTemplate];

-- name: watermark
-- On a readable secondary, last_commit_time is the time of the last commit redone here;
-- empty send and redo queues on a synchronizing secondary mean it is applied through now.
SELECT CASE WHEN rs.redo_queue_size = 0 AND rs.log_send_queue_size = 0
                 AND rs.synchronization_state_desc IN ('SYNCHRONIZED', 'SYNCHRONIZING')
            THEN SYSUTCDATETIME()
            -- last_commit_time is in the server's local time
            ELSE DATEADD(minute, DATEDIFF(minute, SYSDATETIME(), SYSUTCDATETIME()), rs.last_commit_time)
       END AS applied_through,
       CONVERT(varchar(40), rs.last_received_lsn) AS receive_lsn,
       CONVERT(varchar(40), rs.last_redone_lsn) AS replay_lsn,
       CASE WHEN rs.is_suspended = 1 THEN 1 ELSE 0 END AS replay_paused,
       rs.last_redone_time AS last_replay_at,
       rs.synchronization_state_desc AS state
FROM sys.dm_hadr_database_replica_states AS rs
WHERE rs.database_id = DB_ID() AND rs.is_local = 1;

-- name: write_access
-- What this login may do in the database: CREATE TABLE as HAS_PERMS_BY_NAME answers it
-- (1, 0, or NULL when it cannot tell), then every database permission it holds. Any of
-- INSERT, UPDATE, DELETE, ALTER or CONTROL, or CREATE TABLE, refuses the connection.
SELECT CAST(N'CREATE TABLE' AS nvarchar(128)) AS permission_name,
       HAS_PERMS_BY_NAME(NULL, N'DATABASE', N'CREATE TABLE') AS granted
UNION ALL
SELECT CAST(p.permission_name AS nvarchar(128)), 1
FROM fn_my_permissions(NULL, N'DATABASE') AS p;
