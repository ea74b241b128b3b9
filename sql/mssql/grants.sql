-- Least privilege for darwin-notify on SQL Server (docs/sqlserver.md). Re-runnable: every
-- principal is created only when absent, and GRANT / DENY repeat harmlessly.
-- Three parts, each run where its header says, with `sqlcmd -b` (stop at the first error).
-- The logins themselves are created by the DBA, once per instance (docs/sqlserver.md,
-- "Logins"): a password never sits in a file.

-- ===========================================================================================
-- Part 1. On EVERY instance that hosts a replica of darwin.Cloud's database (the primary and
-- each secondary), connected to master. Server permissions do not travel with a database.
-- ===========================================================================================
IF SUSER_ID(N'darwin_notify_reader') IS NULL
BEGIN
    THROW 50001, N'Create the login darwin_notify_reader on this instance first (docs/sqlserver.md, Logins).', 1;
END;
GO
-- The replica watermark reads sys.dm_hadr_database_replica_states: VIEW SERVER STATE up to
-- SQL Server 2019, the narrower VIEW SERVER PERFORMANCE STATE from 2022 on (named inside
-- EXEC so that a 2019 server, which does not know it, compiles this batch).
IF CAST(SERVERPROPERTY(N'ProductMajorVersion') AS int) >= 16
    EXEC (N'GRANT VIEW SERVER PERFORMANCE STATE TO [darwin_notify_reader];');
ELSE
    GRANT VIEW SERVER STATE TO [darwin_notify_reader];
GO

-- ===========================================================================================
-- Part 2. On the PRIMARY replica, connected to darwin.Cloud's database. Users, roles and
-- grants live in the database and reach every secondary with it.
-- ===========================================================================================
IF NOT EXISTS (SELECT 1 FROM sys.database_principals WHERE name = N'darwin_notify_readers' AND type = 'R')
    CREATE ROLE [darwin_notify_readers];
GO
-- SELECT on exactly the tables the source model reads: its watched tables (for the sample,
-- Office, Agent, People, Property and Deal), the deletions table, and the schedules and
-- templates. A model naming other tables grants SELECT on each of them, and on no other.
GRANT SELECT ON OBJECT::dbo.Office TO [darwin_notify_readers];
GRANT SELECT ON OBJECT::dbo.Agent TO [darwin_notify_readers];
GRANT SELECT ON OBJECT::dbo.People TO [darwin_notify_readers];
GRANT SELECT ON OBJECT::dbo.Property TO [darwin_notify_readers];
GRANT SELECT ON OBJECT::dbo.Deal TO [darwin_notify_readers];
GRANT SELECT ON OBJECT::dbo.DeletedRecord TO [darwin_notify_readers];
GRANT SELECT ON OBJECT::dbo.NotificationSchedule TO [darwin_notify_readers];
GRANT SELECT ON OBJECT::dbo.NotificationTemplate TO [darwin_notify_readers];
GO
-- Whatever another role may grant later, this one cannot write or change the schema.
DENY INSERT, UPDATE, DELETE, ALTER, EXECUTE, REFERENCES ON SCHEMA::dbo TO [darwin_notify_readers];
DENY CREATE TABLE, CREATE VIEW, CREATE PROCEDURE, CREATE FUNCTION, CREATE SCHEMA TO [darwin_notify_readers];
GO
IF SUSER_ID(N'darwin_notify_reader') IS NULL
BEGIN
    THROW 50002, N'Create the login darwin_notify_reader on the primary first (docs/sqlserver.md, Logins).', 1;
END;
GO
IF NOT EXISTS (SELECT 1 FROM sys.database_principals WHERE name = N'darwin_notify_reader')
    CREATE USER [darwin_notify_reader] FOR LOGIN [darwin_notify_reader] WITH DEFAULT_SCHEMA = dbo;
GO
IF NOT EXISTS (
    SELECT 1
    FROM sys.database_role_members AS rm
    JOIN sys.database_principals AS r ON r.principal_id = rm.role_principal_id
    JOIN sys.database_principals AS m ON m.principal_id = rm.member_principal_id
    WHERE r.name = N'darwin_notify_readers' AND m.name = N'darwin_notify_reader'
)
    ALTER ROLE [darwin_notify_readers] ADD MEMBER [darwin_notify_reader];
GO

-- ===========================================================================================
-- Part 3. On the notification store's own server, connected to the store's database.
-- Nothing of darwin.Cloud is granted here, and the store's login has no user in darwin.Cloud.
-- ===========================================================================================
IF SUSER_ID(N'darwin_notify_store') IS NULL
BEGIN
    THROW 50003, N'Create the login darwin_notify_store on the store''s server first (docs/sqlserver.md, Logins).', 1;
END;
GO
IF NOT EXISTS (SELECT 1 FROM sys.database_principals WHERE name = N'darwin_notify_store')
    CREATE USER [darwin_notify_store] FOR LOGIN [darwin_notify_store] WITH DEFAULT_SCHEMA = dbo;
GO
-- darwin-notify creates and checks its own tables and indexes when it starts
-- (store_schema.sql, re-runnable), in dbo only, and then reads and writes their rows.
GRANT CREATE TABLE TO [darwin_notify_store];
GRANT ALTER, SELECT, INSERT, UPDATE, DELETE, REFERENCES ON SCHEMA::dbo TO [darwin_notify_store];
GO
