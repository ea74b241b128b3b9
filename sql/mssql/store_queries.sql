-- Every statement of the notification store, by name; the same names in every dialect.
-- {list} stands for an IN list of ?, filled in by the caller; {values} for the rows of a bulk
-- statement, whose parameters come first; a bulk statement without {values} takes its rows as
-- its first parameter, one JSON array of arrays read with OPENJSON (see storage/dialects.py).
-- Every value is bound.
-- T-SQL for SQL Server 2019 and later, without MERGE: insert-if-absent is INSERT ... SELECT
-- ... WHERE NOT EXISTS under UPDLOCK, HOLDLOCK.

-- name: delete_window_run
DELETE FROM dbo.window_run WHERE partition_key = ?;

-- name: insert_window_run
INSERT INTO dbo.window_run (
    partition_key, window_start, window_end, replica_applied_through,
    replica_state, rows_read, detected_at
)
VALUES (?, ?, ?, ?, ?, ?, ?);

-- name: select_window_run
SELECT partition_key, window_start, window_end, replica_applied_through, replica_state,
       rows_read, detected_at, schedule_version
FROM dbo.window_run WHERE partition_key = ?;

-- name: select_windows_between
SELECT partition_key FROM dbo.window_run WHERE window_start >= ? AND window_end <= ?;

-- name: select_last_window
SELECT MAX(partition_key) FROM dbo.window_run;

-- name: column_type
-- A store column's type (store_upgrades.sql's table__column__text).
SELECT DATA_TYPE FROM INFORMATION_SCHEMA.COLUMNS
WHERE TABLE_SCHEMA = N'dbo' AND TABLE_NAME = ? AND COLUMN_NAME = ?;

-- name: select_known_event_keys
SELECT event_key FROM dbo.change_event WHERE event_key IN ({list});

-- name: select_snapshots
SELECT record_id, row_values FROM dbo.record_snapshot
WHERE source_table = ? AND record_id IN ({list});

-- name: insert_change_events
-- Insert if absent: an event already recorded (same key) is skipped.
INSERT INTO dbo.change_event (event_key, partition_key, schedule_id, source_table, record_id,
    event_type, version, agent_id, contact_id, old_values, row_values, detected_at)
SELECT s.event_key, s.partition_key, s.schedule_id, s.source_table, s.record_id, s.event_type,
    s.version, s.agent_id, s.contact_id, s.old_values, s.row_values, s.detected_at
FROM (VALUES {values}) AS s (event_key, partition_key, schedule_id, source_table, record_id,
    event_type, version, agent_id, contact_id, old_values, row_values, detected_at)
WHERE NOT EXISTS (SELECT 1 FROM dbo.change_event AS t WITH (UPDLOCK, HOLDLOCK) WHERE t.event_key
    = s.event_key);

-- name: upsert_record_snapshots
-- Replace-or-insert without MERGE: the rows once into a table variable, then an update of
-- the present keys (range-locked, so no one inserts them meanwhile) and an insert of the rest.
DECLARE @s TABLE (
    source_table nvarchar(200) NOT NULL,
    record_id nvarchar(200) NOT NULL,
    row_values nvarchar(max) NOT NULL,
    seen_at datetime2(7) NOT NULL
);
INSERT INTO @s (source_table, record_id, row_values, seen_at) VALUES {values};
UPDATE t SET row_values = s.row_values, seen_at = s.seen_at
FROM dbo.record_snapshot AS t WITH (UPDLOCK, SERIALIZABLE)
JOIN @s AS s ON s.source_table = t.source_table AND s.record_id = t.record_id;
INSERT INTO dbo.record_snapshot (source_table, record_id, row_values, seen_at)
SELECT s.source_table, s.record_id, s.row_values, s.seen_at FROM @s AS s
WHERE NOT EXISTS (SELECT 1 FROM dbo.record_snapshot AS t WITH (UPDLOCK, HOLDLOCK) WHERE
    t.source_table = s.source_table AND t.record_id = s.record_id);

-- name: upsert_deal_ledger
-- Replace-or-insert without MERGE: the rows once into a table variable, then an update of
-- the present keys (range-locked, so no one inserts them meanwhile) and an insert of the rest.
DECLARE @s TABLE (
    deal_id bigint NOT NULL,
    agent_id bigint NOT NULL,
    post_date datetime2(7) NULL,
    sale_price decimal(16,2) NULL,
    gross_commission decimal(16,2) NULL
);
INSERT INTO @s (deal_id, agent_id, post_date, sale_price, gross_commission) VALUES {values};
UPDATE t SET agent_id = s.agent_id, post_date = s.post_date, sale_price = s.sale_price,
    gross_commission = s.gross_commission
FROM dbo.deal_ledger AS t WITH (UPDLOCK, SERIALIZABLE)
JOIN @s AS s ON s.deal_id = t.deal_id;
INSERT INTO dbo.deal_ledger (deal_id, agent_id, post_date, sale_price, gross_commission)
SELECT s.deal_id, s.agent_id, s.post_date, s.sale_price, s.gross_commission FROM @s AS s
WHERE NOT EXISTS (SELECT 1 FROM dbo.deal_ledger AS t WITH (UPDLOCK, HOLDLOCK) WHERE t.deal_id =
    s.deal_id);

-- name: upsert_listing_ledger
-- Replace-or-insert without MERGE: the rows once into a table variable, then an update of
-- the present keys (range-locked, so no one inserts them meanwhile) and an insert of the rest.
DECLARE @s TABLE (
    property_id bigint NOT NULL,
    agent_id bigint NOT NULL,
    status nvarchar(200) NULL
);
INSERT INTO @s (property_id, agent_id, status) VALUES {values};
UPDATE t SET agent_id = s.agent_id, status = s.status
FROM dbo.listing_ledger AS t WITH (UPDLOCK, SERIALIZABLE)
JOIN @s AS s ON s.property_id = t.property_id;
INSERT INTO dbo.listing_ledger (property_id, agent_id, status)
SELECT s.property_id, s.agent_id, s.status FROM @s AS s
WHERE NOT EXISTS (SELECT 1 FROM dbo.listing_ledger AS t WITH (UPDLOCK, HOLDLOCK) WHERE
    t.property_id = s.property_id);

-- name: delete_deal_ledger_rows
DELETE FROM dbo.deal_ledger WHERE deal_id IN ({list});

-- name: delete_listing_ledger_rows
DELETE FROM dbo.listing_ledger WHERE property_id IN ({list});

-- name: insert_window_agents
INSERT INTO dbo.window_agent (partition_key, agent_id)
SELECT s.partition_key, s.agent_id
FROM (VALUES {values}) AS s (partition_key, agent_id)
WHERE NOT EXISTS (SELECT 1 FROM dbo.window_agent AS t WITH (UPDLOCK, HOLDLOCK) WHERE
    t.partition_key = s.partition_key AND t.agent_id = s.agent_id);

-- name: select_window_agents
SELECT agent_id FROM dbo.window_agent WHERE partition_key = ?
UNION
SELECT agent_id FROM dbo.candidate
WHERE partition_key = ? AND uses_totals = ? AND agent_id IS NOT NULL;

-- name: select_deal_totals
SELECT agent_id, COUNT(*), COALESCE(SUM(sale_price), 0), COALESCE(SUM(gross_commission), 0)
FROM dbo.deal_ledger WHERE agent_id IN ({list}) AND post_date >= ? GROUP BY agent_id;

-- name: select_listing_counts
SELECT agent_id, COUNT(*) FROM dbo.listing_ledger
WHERE agent_id IN ({list}) AND status = ? GROUP BY agent_id;

-- name: upsert_agent_totals
-- Replace-or-insert without MERGE: the rows once into a table variable, then an update of
-- the present keys (range-locked, so no one inserts them meanwhile) and an insert of the rest.
DECLARE @s TABLE (
    agent_id bigint NOT NULL,
    year int NOT NULL,
    units_ytd int NOT NULL,
    volume_ytd decimal(16,2) NOT NULL,
    commission_ytd decimal(16,2) NOT NULL,
    active_listings int NOT NULL,
    computed_through datetime2(7) NOT NULL,
    computed_at datetime2(7) NOT NULL
);
INSERT INTO @s (agent_id, year, units_ytd, volume_ytd, commission_ytd, active_listings,
    computed_through, computed_at) VALUES {values};
UPDATE t SET year = s.year, units_ytd = s.units_ytd, volume_ytd = s.volume_ytd, commission_ytd =
    s.commission_ytd, active_listings = s.active_listings, computed_through =
    s.computed_through, computed_at = s.computed_at
FROM dbo.agent_totals AS t WITH (UPDLOCK, SERIALIZABLE)
JOIN @s AS s ON s.agent_id = t.agent_id;
INSERT INTO dbo.agent_totals (agent_id, year, units_ytd, volume_ytd, commission_ytd,
    active_listings, computed_through, computed_at)
SELECT s.agent_id, s.year, s.units_ytd, s.volume_ytd, s.commission_ytd, s.active_listings,
    s.computed_through, s.computed_at FROM @s AS s
WHERE NOT EXISTS (SELECT 1 FROM dbo.agent_totals AS t WITH (UPDLOCK, HOLDLOCK) WHERE t.agent_id
    = s.agent_id);

-- name: select_agent_totals
SELECT agent_id, year, units_ytd, volume_ytd, commission_ytd, active_listings, computed_through
FROM dbo.agent_totals WHERE agent_id IN ({list});

-- name: select_unexpanded_events
-- One page of a window's events whose candidates are not inserted yet (keyset on event_id).
SELECT event_id, event_key, partition_key, schedule_id, source_table, record_id, event_type,
       version, agent_id, contact_id, old_values, row_values
FROM dbo.change_event
WHERE partition_key = ? AND event_id > ? AND expanded = ?
ORDER BY event_id
OFFSET 0 ROWS FETCH NEXT ? ROWS ONLY;

-- name: select_schedule_events
SELECT event_id, event_key, partition_key, schedule_id, source_table, record_id, event_type,
       version, agent_id, contact_id, old_values, row_values
FROM dbo.change_event WHERE partition_key = ? AND schedule_id = ? ORDER BY event_id;

-- name: mark_events_expanded
UPDATE dbo.change_event SET expanded = ? WHERE event_id IN ({list});

-- name: insert_candidates
-- The rows arrive as one JSON array of arrays (storage/dialects.py), read with OPENJSON: one
-- parameter per statement instead of one per value. Text columns are read as nvarchar(max),
-- so a value too long for its column fails the insert as a VALUES row would, and is never
-- cut short by the read.
INSERT INTO dbo.candidate (candidate_key, partition_key, schedule_id, channel, event_id,
    source_table, record_id, agent_id, recipient_kind, recipient_id, uses_totals, created_at)
SELECT s.candidate_key, s.partition_key, s.schedule_id, s.channel, s.event_id, s.source_table,
    s.record_id, s.agent_id, s.recipient_kind, s.recipient_id, s.uses_totals, s.created_at
FROM OPENJSON(?) WITH (
    candidate_key nvarchar(max) '$[0]',
    partition_key nvarchar(max) '$[1]',
    schedule_id int '$[2]',
    channel nvarchar(max) '$[3]',
    event_id bigint '$[4]',
    source_table nvarchar(max) '$[5]',
    record_id nvarchar(max) '$[6]',
    agent_id bigint '$[7]',
    recipient_kind nvarchar(max) '$[8]',
    recipient_id bigint '$[9]',
    uses_totals bit '$[10]',
    created_at datetime2(7) '$[11]'
) AS s
WHERE NOT EXISTS (SELECT 1 FROM dbo.candidate AS t WITH (UPDLOCK, HOLDLOCK) WHERE
    t.candidate_key = s.candidate_key);

-- name: select_new_candidate_ids
SELECT candidate_id FROM dbo.candidate WHERE partition_key = ? AND created_at = ?
ORDER BY candidate_id;

-- name: count_window_candidates
SELECT COUNT(*) FROM dbo.candidate WHERE partition_key = ?;

-- name: count_window_events
SELECT COUNT(*) FROM dbo.change_event WHERE partition_key = ?;

-- name: select_unrendered_candidate_ids
SELECT c.candidate_id FROM dbo.candidate c
WHERE c.partition_key = ?
  AND NOT EXISTS (SELECT 1 FROM dbo.message m WHERE m.candidate_id = c.candidate_id)
ORDER BY c.candidate_id;

-- name: count_unrendered_candidates
-- Each message has exactly one candidate (unique candidate_id) of its window: two counts
-- over the partition indexes instead of an anti-join over every candidate.
SELECT (SELECT COUNT(*) FROM dbo.candidate WHERE partition_key = ?)
     - (SELECT COUNT(*) FROM dbo.message WHERE partition_key = ?);

-- name: select_render_items
SELECT c.candidate_id, c.candidate_key, c.partition_key, c.schedule_id, c.channel,
       c.source_table, c.record_id, c.agent_id, c.recipient_kind, c.recipient_id,
       c.uses_totals, e.event_type, e.old_values, e.row_values
FROM dbo.candidate c JOIN dbo.change_event e ON e.event_id = c.event_id
WHERE c.candidate_id IN ({list})
  AND NOT EXISTS (SELECT 1 FROM dbo.message m WHERE m.candidate_id = c.candidate_id)
ORDER BY c.candidate_id;

-- name: insert_messages
-- The rows as one JSON array of arrays, like insert_candidates.
INSERT INTO dbo.message (candidate_id, candidate_key, partition_key, channel, to_address,
    subject, html_body, text_body, sms_body, sms_encoding, sms_segments, status, reason,
    attempts, created_at, updated_at, schedule_version, recipient_tz)
SELECT s.candidate_id, s.candidate_key, s.partition_key, s.channel, s.to_address, s.subject,
    s.html_body, s.text_body, s.sms_body, s.sms_encoding, s.sms_segments, s.status, s.reason,
    s.attempts, s.created_at, s.updated_at, s.schedule_version, s.recipient_tz
FROM OPENJSON(?) WITH (
    candidate_id bigint '$[0]',
    candidate_key nvarchar(max) '$[1]',
    partition_key nvarchar(max) '$[2]',
    channel nvarchar(max) '$[3]',
    to_address nvarchar(max) '$[4]',
    subject nvarchar(max) '$[5]',
    html_body nvarchar(max) '$[6]',
    text_body nvarchar(max) '$[7]',
    sms_body nvarchar(max) '$[8]',
    sms_encoding nvarchar(max) '$[9]',
    sms_segments int '$[10]',
    status nvarchar(max) '$[11]',
    reason nvarchar(max) '$[12]',
    attempts int '$[13]',
    created_at datetime2(7) '$[14]',
    updated_at datetime2(7) '$[15]',
    schedule_version nvarchar(max) '$[16]',
    recipient_tz nvarchar(max) '$[17]'
) AS s
WHERE NOT EXISTS (SELECT 1 FROM dbo.message AS t WITH (UPDLOCK, HOLDLOCK) WHERE t.candidate_id =
    s.candidate_id);

-- name: insert_first_message_events
-- History rows for the messages one insert created (not those already present).
INSERT INTO dbo.message_event (message_id, from_status, to_status, reason, at)
SELECT m.message_id, NULL, m.status, m.reason, m.created_at FROM dbo.message m
WHERE m.candidate_id IN ({list}) AND m.created_at = ?
  AND NOT EXISTS (SELECT 1 FROM dbo.message_event e WHERE e.message_id = m.message_id);

-- name: select_window_message_ids
SELECT message_id FROM dbo.message WHERE partition_key = ? AND status = ? ORDER BY message_id;

-- name: claim_messages
UPDATE dbo.message SET status = ?, claim_token = ?, attempts = attempts + 1, updated_at = ?
WHERE message_id IN ({list}) AND status = ?;

-- name: reclaim_unrequested_messages
-- A claim whose messages were never handed to the provider (its worker died before its
-- requests) passes to a new claim; the old claimant can no longer stamp them.
UPDATE dbo.message SET claim_token = ?, attempts = attempts + 1, updated_at = ?
WHERE message_id IN ({list}) AND status = ? AND requested_at IS NULL;

-- name: mark_messages_requested
-- Stamped right before the provider is called, only while the claim is still this worker's.
UPDATE dbo.message SET requested_at = ?, updated_at = ?
WHERE message_id IN ({list}) AND claim_token = ? AND status = ? AND requested_at IS NULL;

-- name: select_requested_messages
SELECT message_id FROM dbo.message
WHERE message_id IN ({list}) AND claim_token = ? AND requested_at = ?;

-- name: requeue_unrequested_message
UPDATE dbo.message SET status = ?, claim_token = NULL, reason = ?, updated_at = ?
WHERE message_id = ? AND status = ? AND requested_at IS NULL;

-- name: select_claimed_messages
SELECT message_id, candidate_id, candidate_key, partition_key, channel, status, reason,
       to_address, subject, html_body, text_body, sms_body, sms_encoding, sms_segments,
       claim_token
FROM dbo.message WHERE claim_token = ? AND status = ? ORDER BY message_id;

-- name: insert_message_events
INSERT INTO dbo.message_event (message_id, from_status, to_status, reason, at)
VALUES {values};

-- name: finish_messages
-- Record many send outcomes at once, each only if its message is still in the expected
-- status; returns the messages it changed. The rows it will change are read and locked
-- first (UPDLOCK holds to the end of the transaction), then updated, then returned.
DECLARE @v TABLE (
    id bigint NOT NULL,
    status nvarchar(200) NOT NULL,
    reason nvarchar(max) NULL,
    pid nvarchar(200) NULL,
    updated_at datetime2(7) NOT NULL
);
INSERT INTO @v (id, status, reason, pid, updated_at) VALUES {values};
DECLARE @won TABLE (id bigint NOT NULL PRIMARY KEY);
INSERT INTO @won (id)
SELECT DISTINCT m.message_id FROM dbo.message AS m WITH (UPDLOCK, ROWLOCK)
JOIN @v AS v ON v.id = m.message_id
WHERE m.status = ?;
UPDATE m
SET status = v.status, reason = v.reason, provider_message_id = v.pid, updated_at = v.updated_at
FROM dbo.message AS m
JOIN @won AS w ON w.id = m.message_id
JOIN @v AS v ON v.id = m.message_id;
SELECT id FROM @won ORDER BY id;

-- name: update_message_status
UPDATE dbo.message SET status = ?, reason = ?, updated_at = ?
WHERE message_id = ? AND status = ?;

-- name: select_stale_claims
SELECT message_id, requested_at FROM dbo.message WHERE status = ? AND updated_at < ? ORDER BY message_id;

-- name: select_window_stale_claims
SELECT message_id, requested_at FROM dbo.message WHERE status = ? AND updated_at < ? AND partition_key = ?
ORDER BY message_id;

-- name: count_messages_by_status
SELECT status, COUNT(*) FROM dbo.message GROUP BY status;

-- name: count_window_messages_by_status
SELECT status, COUNT(*) FROM dbo.message WHERE partition_key = ? GROUP BY status;

-- name: count_window_messages_in_statuses
SELECT COUNT(*) FROM dbo.message WHERE partition_key = ? AND status IN ({list});

-- name: select_messages
SELECT message_id, candidate_key, partition_key, channel, to_address, status, reason,
       provider_message_id, attempts, deferred_until
FROM dbo.message WHERE status IN ({list}) ORDER BY message_id;

-- name: select_window_messages
SELECT message_id, candidate_key, partition_key, channel, to_address, status, reason,
       provider_message_id, attempts, deferred_until
FROM dbo.message WHERE partition_key = ? AND status IN ({list}) ORDER BY message_id;

-- name: select_missing_messages
SELECT c.candidate_key FROM dbo.candidate c
WHERE c.partition_key = ?
  AND NOT EXISTS (SELECT 1 FROM dbo.message m WHERE m.candidate_id = c.candidate_id)
ORDER BY c.candidate_key;

-- name: select_duplicate_sends
-- Candidate keys with more than one send transition in their history.
SELECT m.candidate_key FROM dbo.message_event e JOIN dbo.message m ON m.message_id =
    e.message_id
WHERE e.to_status = ?
GROUP BY m.candidate_key HAVING COUNT(*) > 1;

-- name: select_window_duplicate_sends
SELECT m.candidate_key FROM dbo.message_event e JOIN dbo.message m ON m.message_id =
    e.message_id
WHERE e.to_status = ? AND m.partition_key = ?
GROUP BY m.candidate_key HAVING COUNT(*) > 1;

-- name: select_candidate_windows
-- Windows with candidates, from and through optional partition keys (NULL: unbounded).
SELECT DISTINCT partition_key FROM dbo.candidate
WHERE partition_key >= COALESCE(?, partition_key)
  AND partition_key <= COALESCE(?, partition_key)
ORDER BY partition_key;

-- name: insert_change_decisions
-- Every change read is decided once, fired or not: the first decision stays.
INSERT INTO dbo.change_decision (event_key, partition_key, fired, decided_at)
SELECT s.event_key, s.partition_key, s.fired, s.decided_at
FROM (VALUES {values}) AS s (event_key, partition_key, fired, decided_at)
WHERE NOT EXISTS (SELECT 1 FROM dbo.change_decision AS t WITH (UPDLOCK, HOLDLOCK) WHERE
    t.event_key = s.event_key);

-- name: skipped_event_keys
-- Of the listed event keys, those whose change was decided against.
SELECT event_key FROM dbo.change_decision WHERE fired = ? AND event_key IN ({list});

-- name: decided_event_keys
-- Of the listed event keys, those whose change has a recorded decision, fired or not.
SELECT event_key FROM dbo.change_decision WHERE event_key IN ({list});

-- name: insert_schedule_snapshot
INSERT INTO dbo.schedule_snapshot (version, body, created_at)
SELECT s.version, s.body, s.created_at FROM (VALUES (?, ?, ?)) AS s (version, body, created_at)
WHERE NOT EXISTS (SELECT 1 FROM dbo.schedule_snapshot AS t WITH (UPDLOCK, HOLDLOCK)
    WHERE t.version = s.version);

-- name: select_schedule_snapshot
SELECT body FROM dbo.schedule_snapshot WHERE version = ?;

-- name: insert_run_schedule
INSERT INTO dbo.run_schedule (run_id, version, created_at)
SELECT s.run_id, s.version, s.created_at FROM (VALUES (?, ?, ?)) AS s (run_id, version, created_at)
WHERE NOT EXISTS (SELECT 1 FROM dbo.run_schedule AS t WITH (UPDLOCK, HOLDLOCK)
    WHERE t.run_id = s.run_id);

-- name: select_run_schedule
SELECT version FROM dbo.run_schedule WHERE run_id = ?;

-- name: update_window_schedule_version
UPDATE dbo.window_run SET schedule_version = ? WHERE partition_key = ?;

-- name: select_queue_health
-- Messages waiting to be sent, and since when the oldest has waited.
SELECT COUNT(*), MIN(created_at) FROM dbo.message WHERE status = ?;

-- name: count_stuck_claims
-- Claims older than the expiry that no outcome has finished.
SELECT COUNT(*) FROM dbo.message WHERE status = ? AND updated_at < ?;

-- name: ping
SELECT 1;

-- name: insert_delivery_event
-- A provider event, once per dedup key: a repeat of it changes nothing.
INSERT INTO dbo.delivery_event (dedup_key, provider, channel, message_id, provider_message_id,
    event_type, delivery_status, occurred_at, detail, received_at)
SELECT s.dedup_key, s.provider, s.channel, s.message_id, s.provider_message_id, s.event_type,
    s.delivery_status, s.occurred_at, s.detail, s.received_at
FROM (VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)) AS s (dedup_key, provider, channel, message_id,
    provider_message_id, event_type, delivery_status, occurred_at, detail, received_at)
WHERE NOT EXISTS (SELECT 1 FROM dbo.delivery_event AS t WITH (UPDLOCK, HOLDLOCK) WHERE
    t.dedup_key = s.dedup_key);

-- name: select_message_by_key
SELECT message_id, status FROM dbo.message WHERE candidate_key = ?;

-- name: select_message_for_event
SELECT message_id, status FROM dbo.message WHERE message_id = ?;

-- name: select_message_by_provider_id
SELECT message_id, status FROM dbo.message WHERE provider_message_id = ? AND channel = ?;

-- name: upsert_message_delivery
-- The message keeps its highest-ranked delivery status, whatever order events arrive in.
DECLARE @message_id bigint = ?, @status nvarchar(200) = ?, @rank int = ?,
    @first datetime2(6) = ?, @at datetime2(6) = ?;
UPDATE dbo.message_delivery WITH (UPDLOCK, HOLDLOCK)
SET delivery_status = CASE WHEN @rank > delivery_rank THEN @status ELSE delivery_status END,
    delivery_rank = CASE WHEN @rank > delivery_rank THEN @rank ELSE delivery_rank END,
    events = events + 1, updated_at = @at
WHERE message_id = @message_id;
IF @@ROWCOUNT = 0
    INSERT INTO dbo.message_delivery (message_id, delivery_status, delivery_rank, events,
        first_event_at, updated_at)
    VALUES (@message_id, @status, @rank, 1, @first, @at);

-- name: select_message_delivery
SELECT delivery_status, delivery_rank, events FROM dbo.message_delivery WHERE message_id = ?;

-- name: select_message_recipient
SELECT m.message_id, m.channel, m.to_address, c.recipient_kind, c.recipient_id, c.schedule_id
FROM dbo.message AS m JOIN dbo.candidate AS c ON c.candidate_id = m.candidate_id
WHERE m.message_id = ?;

-- name: upsert_suppression
DECLARE @subject_key nvarchar(400) = ?, @scope nvarchar(20) = ?, @channel nvarchar(200) = ?,
    @address nvarchar(200) = ?, @recipient_kind nvarchar(200) = ?, @recipient_id bigint = ?,
    @schedule_id bigint = ?, @active bit = ?, @reason nvarchar(max) = ?,
    @at datetime2(6) = ?;
UPDATE dbo.suppression WITH (UPDLOCK, HOLDLOCK)
SET active = @active, reason = @reason, updated_at = @at
WHERE subject_key = @subject_key;
IF @@ROWCOUNT = 0
    INSERT INTO dbo.suppression (subject_key, scope, channel, address, recipient_kind,
        recipient_id, schedule_id, active, reason, updated_at)
    VALUES (@subject_key, @scope, @channel, @address, @recipient_kind, @recipient_id,
        @schedule_id, @active, @reason, @at);

-- name: select_suppressions
SELECT subject_key, scope, channel, address, recipient_kind, recipient_id, schedule_id,
       active, reason, updated_at
FROM dbo.suppression ORDER BY subject_key;

-- name: suppress_claimable
-- Of the listed queued messages, those whose address or recipient has an active opt-out
-- become suppressed with its reason, marked with the claim token: one statement per batch.
UPDATE dbo.message
SET status = ?, claim_token = ?, updated_at = ?,
    reason = (SELECT MIN(s.reason) FROM dbo.suppression AS s
              WHERE s.active = ?
                AND ((s.scope = N'address' AND s.channel = message.channel
                      AND s.address = LOWER(message.to_address))
                  OR (s.scope <> N'address' AND EXISTS (
                      SELECT 1 FROM dbo.candidate AS c
                      WHERE c.candidate_id = message.candidate_id
                        AND c.recipient_kind = s.recipient_kind
                        AND c.recipient_id = s.recipient_id
                        AND (s.scope = N'all'
                          OR (s.scope = N'channel' AND s.channel = message.channel)
                          OR (s.scope = N'schedule' AND s.schedule_id = c.schedule_id))))))
WHERE message_id IN ({list}) AND status = ?
  AND EXISTS (SELECT 1 FROM dbo.suppression AS s
              WHERE s.active = ?
                AND ((s.scope = N'address' AND s.channel = message.channel
                      AND s.address = LOWER(message.to_address))
                  OR (s.scope <> N'address' AND EXISTS (
                      SELECT 1 FROM dbo.candidate AS c
                      WHERE c.candidate_id = message.candidate_id
                        AND c.recipient_kind = s.recipient_kind
                        AND c.recipient_id = s.recipient_id
                        AND (s.scope = N'all'
                          OR (s.scope = N'channel' AND s.channel = message.channel)
                          OR (s.scope = N'schedule' AND s.schedule_id = c.schedule_id))))));

-- name: count_window_deliveries
SELECT d.delivery_status, COUNT(*) FROM dbo.message_delivery AS d
JOIN dbo.message AS m ON m.message_id = d.message_id
WHERE m.partition_key = ? GROUP BY d.delivery_status;

-- name: count_window_sent_without_delivery
-- Sent messages of a window with no provider event since they were sent before the cutoff.
SELECT COUNT(*) FROM dbo.message AS m
WHERE m.partition_key = ? AND m.status = ? AND m.updated_at < ?
  AND NOT EXISTS (SELECT 1 FROM dbo.message_delivery AS d WHERE d.message_id = m.message_id);

-- name: webhook_backlog
-- The webhook service's observable state: events stored since a time, the newest one, and
-- sent messages older than a cutoff that no event has reached yet.
SELECT (SELECT COUNT(*) FROM dbo.delivery_event WHERE received_at >= ?),
       (SELECT MAX(received_at) FROM dbo.delivery_event),
       (SELECT COUNT(*) FROM dbo.message AS m
        WHERE m.status = ? AND m.updated_at < ?
          AND NOT EXISTS (SELECT 1 FROM dbo.message_delivery AS d WHERE d.message_id = m.message_id));

-- ---- metadata and audit export (the UI's previews and plots) --------------------------------

-- name: select_window_previews
-- The first rendered message of each schedule in the window, with its event's values (whose
-- words the preview masks).
SELECT c.schedule_id, m.channel, m.status, m.subject, m.text_body, m.sms_body,
       e.old_values, e.row_values
FROM dbo.message m
JOIN dbo.candidate c ON c.candidate_id = m.candidate_id
JOIN dbo.change_event e ON e.event_id = c.event_id
WHERE m.message_id IN (
    SELECT MIN(m2.message_id) FROM dbo.message m2
    JOIN dbo.candidate c2 ON c2.candidate_id = m2.candidate_id
    WHERE m2.partition_key = ? AND (m2.text_body IS NOT NULL OR m2.sms_body IS NOT NULL)
    GROUP BY c2.schedule_id)
ORDER BY c.schedule_id;

-- name: count_messages_by_window_status
-- Messages per window and status, for the windows from and through two partition keys.
SELECT partition_key, status, COUNT(*) FROM dbo.message
WHERE partition_key >= ? AND partition_key <= ?
GROUP BY partition_key, status
ORDER BY partition_key, status;

-- name: insert_provider_budget
INSERT INTO dbo.provider_budget (provider, tokens, refilled_at)
SELECT ?, ?, ? WHERE NOT EXISTS (
    SELECT 1 FROM dbo.provider_budget WITH (UPDLOCK, HOLDLOCK) WHERE provider = ?);

-- name: select_provider_budget
SELECT tokens, refilled_at, blocked_until, version FROM dbo.provider_budget WHERE provider = ?;

-- name: take_provider_budget
UPDATE dbo.provider_budget SET tokens = ?, refilled_at = ?, version = version + 1
WHERE provider = ? AND version = ?;

-- name: block_provider_budget
UPDATE dbo.provider_budget SET tokens = 0, refilled_at = ?, blocked_until = ?, version = version + 1
WHERE provider = ? AND blocked_until < ?;

-- name: select_claimable_for_rules
-- What quiet hours and daily caps decide on, for the listed queued messages (at the claim).
SELECT message_id, channel, to_address, recipient_tz FROM dbo.message
WHERE message_id IN ({list}) AND status = ?;

-- name: select_recipient_sends
-- The listed addresses' messages of a channel sending or sent (or unknown: the provider may
-- have them) since a time: what a daily cap counts, shared by every send worker.
SELECT to_address, COALESCE(requested_at, updated_at) AS at FROM dbo.message
WHERE to_address IN ({list}) AND channel = ? AND status IN (?, ?, ?)
  AND COALESCE(requested_at, updated_at) >= ?;

-- name: defer_messages
-- queued -> deferred at the claim, only while still queued, marked with the claim token.
UPDATE dbo.message SET status = ?, deferred_until = ?, reason = ?, claim_token = ?, updated_at = ?
WHERE message_id IN ({list}) AND status = ?;

-- name: release_deferred
-- deferred -> queued for a window's messages whose time has come, only while still deferred:
-- of two callers at once, each message is released by one, marked with its token.
UPDATE dbo.message SET status = ?, claim_token = ?, reason = NULL, updated_at = ?
WHERE partition_key = ? AND status = ? AND deferred_until <= ?;

-- name: select_released_messages
SELECT message_id, deferred_until FROM dbo.message WHERE claim_token = ? AND status = ? ORDER BY message_id;

-- name: select_due_deferred_windows
-- Windows with deferred messages due by a time: how many, and since when.
SELECT partition_key, COUNT(*) AS n, MIN(deferred_until) AS due FROM dbo.message
WHERE status = ? AND deferred_until <= ?
GROUP BY partition_key ORDER BY partition_key;

-- name: select_deferred_summary
SELECT COUNT(*) AS n, MIN(deferred_until) AS due FROM dbo.message WHERE status = ?;

-- name: lock_recipients
-- A daily cap counts a recipient's sends one claim at a time: an application lock per channel
-- and address held until the claim's transaction ends, taken in one order.
DECLARE @resource nvarchar(255);
DECLARE recipients CURSOR LOCAL FAST_FORWARD FOR
    SELECT DISTINCT LEFT(N'darwin-notify cap ' + channel + N':' + to_address, 255) AS r
    FROM dbo.message WHERE to_address IN ({list}) AND channel = ? ORDER BY r;
OPEN recipients;
FETCH NEXT FROM recipients INTO @resource;
WHILE @@FETCH_STATUS = 0
BEGIN
    EXEC sp_getapplock @Resource = @resource, @LockMode = N'Exclusive',
        @LockOwner = N'Transaction';
    FETCH NEXT FROM recipients INTO @resource;
END;
CLOSE recipients;
DEALLOCATE recipients;
