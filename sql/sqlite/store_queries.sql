-- Statements of the notification store whose form differs per dialect. {values} stands for a
-- list of (?, ?, ...) rows and {keys} for a list of ?, filled in by the caller; every value is
-- a bound parameter.

-- name: finish_outcomes
-- Record many send outcomes at once, each only if its message is still 'sending'.
UPDATE message
SET status = v.status, reason = v.reason, provider_message_id = v.pid, updated_at = ?
FROM (SELECT column1 AS id, column2 AS status, column3 AS reason, column4 AS pid
      FROM (VALUES {values})) AS v
WHERE message.message_id = v.id AND message.status = ?
RETURNING message.message_id;

-- name: skipped_event_keys
-- Of the given event keys, those whose change was decided against.
SELECT event_key FROM change_decision WHERE fired = ? AND event_key IN ({keys});

-- name: decided_event_keys
-- Of the given event keys, those whose change has a recorded decision, fired or not.
SELECT event_key FROM change_decision WHERE event_key IN ({keys});
