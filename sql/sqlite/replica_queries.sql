-- Reads darwin-notify makes on the replica (SQLite: the embedded default).

-- name: table_columns
SELECT name FROM pragma_table_info(?) ORDER BY cid;

-- name: watermark
SELECT strftime('%Y-%m-%d %H:%M:%f', 'now') AS applied_through,
       NULL AS receive_lsn, NULL AS replay_lsn, 0 AS replay_paused,
       NULL AS last_replay_at, 'primary' AS state;

-- name: write_access
-- 1 when this connection refuses writes (the file is also opened with mode=ro).
PRAGMA query_only;
