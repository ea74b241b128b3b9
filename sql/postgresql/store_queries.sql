-- Statements of the notification store whose form differs per dialect. {values} stands for a
-- list of (?, ?, ...) rows and {keys} for a list of ?, filled in by the caller; every value is
-- a bound parameter.

-- name: finish_outcomes
-- Record many send outcomes at once, each only if its message is still 'sending'.
UPDATE message AS m
SET status = CAST(v.status AS text), reason = CAST(v.reason AS text),
    provider_message_id = CAST(v.pid AS text), updated_at = ?
FROM (VALUES {values}) AS v (id, status, reason, pid)
WHERE m.message_id = CAST(v.id AS bigint) AND m.status = ?
RETURNING m.message_id;

-- name: skipped_event_keys
-- Of the given event keys, those whose change was decided against.
SELECT event_key FROM change_decision WHERE fired = ? AND event_key IN ({keys});

-- name: decided_event_keys
-- Of the given event keys, those whose change has a recorded decision, fired or not.
SELECT event_key FROM change_decision WHERE event_key IN ({keys});
