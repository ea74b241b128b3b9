-- Reads darwin-notify makes on the replica (PostgreSQL hot standby through psqlODBC).

-- name: table_columns
SELECT column_name FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position;

-- name: watermark
-- A standby whose received WAL is all replayed, not paused, is applied through about now;
-- otherwise only through its last replayed commit. pg_last_xact_replay_timestamp() alone
-- ages while the primary is idle, so it cannot say "caught up" by itself.
SELECT CASE
         WHEN NOT pg_is_in_recovery() THEN clock_timestamp() AT TIME ZONE 'UTC'
         WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() AND NOT pg_is_wal_replay_paused()
              AND (SELECT status FROM pg_stat_wal_receiver) = 'streaming'
           THEN clock_timestamp() AT TIME ZONE 'UTC'
         ELSE pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC'
       END AS applied_through,
       pg_last_wal_receive_lsn()::text AS receive_lsn,
       pg_last_wal_replay_lsn()::text AS replay_lsn,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE FALSE END AS replay_paused,
       pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC' AS last_replay_at,
       CASE WHEN pg_is_in_recovery() THEN coalesce((SELECT status FROM pg_stat_wal_receiver), 'disconnected')
            ELSE 'primary' END AS state;

-- name: write_access
-- 'on' when this session's transactions are read-only (a standby's always are).
SHOW transaction_read_only;
