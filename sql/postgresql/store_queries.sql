-- Every statement of the notification store, by name; the same names in every dialect.
-- {list} stands for an IN list of ?, filled in by the caller. A bulk statement takes its rows
-- as one array parameter per column (unnest), then any other parameters (see
-- storage/dialects.py). Every value is bound.

-- name: delete_window_run
DELETE FROM window_run WHERE partition_key = ?;

-- name: insert_window_run
INSERT INTO window_run (partition_key, window_start, window_end, replica_applied_through,
                        replica_state, rows_read, detected_at)
VALUES (?, ?, ?, ?, ?, ?, ?);

-- name: select_window_run
SELECT partition_key, window_start, window_end, replica_applied_through, replica_state,
       rows_read, detected_at, schedule_version
FROM window_run WHERE partition_key = ?;

-- name: select_windows_between
SELECT partition_key FROM window_run WHERE window_start >= ? AND window_end <= ?;

-- name: select_last_window
SELECT MAX(partition_key) FROM window_run;

-- name: column_type
-- A store column's type (store_upgrades.sql's table__column__text).
SELECT data_type FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = ? AND column_name = ?;

-- name: select_known_event_keys
SELECT event_key FROM change_event WHERE event_key IN ({list});

-- name: select_snapshots
SELECT record_id, row_values FROM record_snapshot
WHERE source_table = ? AND record_id IN ({list});

-- name: insert_change_events
-- Insert if absent: an event already recorded (same key) is skipped.
INSERT INTO change_event (event_key, partition_key, schedule_id, source_table, record_id,
                          event_type, version, agent_id, contact_id, old_values, row_values,
                          detected_at)
SELECT * FROM unnest(?::text[], ?::text[], ?::integer[], ?::text[], ?::text[], ?::text[],
                     ?::text[], ?::bigint[], ?::bigint[], ?::text[], ?::text[], ?::timestamp[])
ON CONFLICT (event_key) DO NOTHING;

-- name: upsert_record_snapshots
INSERT INTO record_snapshot (source_table, record_id, row_values, seen_at)
SELECT * FROM unnest(?::text[], ?::text[], ?::text[], ?::timestamp[])
ON CONFLICT (source_table, record_id) DO UPDATE
SET row_values = excluded.row_values, seen_at = excluded.seen_at;

-- name: upsert_deal_ledger
INSERT INTO deal_ledger (deal_id, agent_id, post_date, sale_price, gross_commission)
SELECT * FROM unnest(?::bigint[], ?::bigint[], ?::timestamp[], ?::numeric(16,2)[],
                     ?::numeric(16,2)[])
ON CONFLICT (deal_id) DO UPDATE
SET agent_id = excluded.agent_id, post_date = excluded.post_date,
    sale_price = excluded.sale_price, gross_commission = excluded.gross_commission;

-- name: upsert_listing_ledger
INSERT INTO listing_ledger (property_id, agent_id, status)
SELECT * FROM unnest(?::bigint[], ?::bigint[], ?::text[])
ON CONFLICT (property_id) DO UPDATE SET agent_id = excluded.agent_id, status = excluded.status;

-- name: delete_deal_ledger_rows
DELETE FROM deal_ledger WHERE deal_id IN ({list});

-- name: delete_listing_ledger_rows
DELETE FROM listing_ledger WHERE property_id IN ({list});

-- name: insert_window_agents
INSERT INTO window_agent (partition_key, agent_id)
SELECT * FROM unnest(?::text[], ?::bigint[])
ON CONFLICT (partition_key, agent_id) DO NOTHING;

-- name: select_window_agents
SELECT agent_id FROM window_agent WHERE partition_key = ?
UNION
SELECT agent_id FROM candidate
WHERE partition_key = ? AND uses_totals = ? AND agent_id IS NOT NULL;

-- name: select_deal_totals
SELECT agent_id, COUNT(*), COALESCE(SUM(sale_price), 0), COALESCE(SUM(gross_commission), 0)
FROM deal_ledger WHERE agent_id IN ({list}) AND post_date >= ? GROUP BY agent_id;

-- name: select_listing_counts
SELECT agent_id, COUNT(*) FROM listing_ledger
WHERE agent_id IN ({list}) AND status = ? GROUP BY agent_id;

-- name: upsert_agent_totals
INSERT INTO agent_totals (agent_id, year, units_ytd, volume_ytd, commission_ytd,
                          active_listings, computed_through, computed_at)
SELECT * FROM unnest(?::bigint[], ?::integer[], ?::integer[], ?::numeric(16,2)[],
                     ?::numeric(16,2)[], ?::integer[], ?::timestamp[], ?::timestamp[])
ON CONFLICT (agent_id) DO UPDATE
SET year = excluded.year, units_ytd = excluded.units_ytd, volume_ytd = excluded.volume_ytd,
    commission_ytd = excluded.commission_ytd, active_listings = excluded.active_listings,
    computed_through = excluded.computed_through, computed_at = excluded.computed_at;

-- name: select_agent_totals
SELECT agent_id, year, units_ytd, volume_ytd, commission_ytd, active_listings, computed_through
FROM agent_totals WHERE agent_id IN ({list});

-- name: select_unexpanded_events
-- One page of a window's events whose candidates are not inserted yet (keyset on event_id).
SELECT event_id, event_key, partition_key, schedule_id, source_table, record_id, event_type,
       version, agent_id, contact_id, old_values, row_values
FROM change_event
WHERE partition_key = ? AND event_id > ? AND expanded = ?
ORDER BY event_id
LIMIT ?;

-- name: select_schedule_events
SELECT event_id, event_key, partition_key, schedule_id, source_table, record_id, event_type,
       version, agent_id, contact_id, old_values, row_values
FROM change_event WHERE partition_key = ? AND schedule_id = ? ORDER BY event_id;

-- name: mark_events_expanded
UPDATE change_event SET expanded = ? WHERE event_id IN ({list});

-- name: insert_candidates
INSERT INTO candidate (candidate_key, partition_key, schedule_id, channel, event_id,
                       source_table, record_id, agent_id, recipient_kind, recipient_id,
                       uses_totals, created_at)
SELECT * FROM unnest(?::text[], ?::text[], ?::integer[], ?::text[], ?::bigint[], ?::text[],
                     ?::text[], ?::bigint[], ?::text[], ?::bigint[], ?::boolean[],
                     ?::timestamp[])
ON CONFLICT (candidate_key) DO NOTHING;

-- name: select_new_candidate_ids
SELECT candidate_id FROM candidate WHERE partition_key = ? AND created_at = ?
ORDER BY candidate_id;

-- name: count_window_candidates
SELECT COUNT(*) FROM candidate WHERE partition_key = ?;

-- name: count_window_events
SELECT COUNT(*) FROM change_event WHERE partition_key = ?;

-- name: select_unrendered_candidate_ids
SELECT c.candidate_id FROM candidate c
WHERE c.partition_key = ?
  AND NOT EXISTS (SELECT 1 FROM message m WHERE m.candidate_id = c.candidate_id)
ORDER BY c.candidate_id;

-- name: count_unrendered_candidates
-- Each message has exactly one candidate (unique candidate_id) of its window: two counts
-- over the partition indexes instead of an anti-join over every candidate.
SELECT (SELECT COUNT(*) FROM candidate WHERE partition_key = ?)
     - (SELECT COUNT(*) FROM message WHERE partition_key = ?);

-- name: select_render_items
SELECT c.candidate_id, c.candidate_key, c.partition_key, c.schedule_id, c.channel,
       c.source_table, c.record_id, c.agent_id, c.recipient_kind, c.recipient_id,
       c.uses_totals, e.event_type, e.old_values, e.row_values
FROM candidate c JOIN change_event e ON e.event_id = c.event_id
WHERE c.candidate_id IN ({list})
  AND NOT EXISTS (SELECT 1 FROM message m WHERE m.candidate_id = c.candidate_id)
ORDER BY c.candidate_id;

-- name: insert_messages
INSERT INTO message (candidate_id, candidate_key, partition_key, channel, to_address, subject,
                     html_body, text_body, sms_body, sms_encoding, sms_segments, status,
                     reason, attempts, created_at, updated_at, schedule_version,
                     recipient_tz)
SELECT * FROM unnest(?::bigint[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[],
                     ?::text[], ?::text[], ?::text[], ?::text[], ?::integer[], ?::text[],
                     ?::text[], ?::integer[], ?::timestamp[], ?::timestamp[], ?::varchar(64)[],
                     ?::varchar(64)[])
ON CONFLICT (candidate_id) DO NOTHING;

-- name: insert_first_message_events
-- History rows for the messages one insert created (not those already present).
INSERT INTO message_event (message_id, from_status, to_status, reason, at)
SELECT m.message_id, NULL, m.status, m.reason, m.created_at FROM message m
WHERE m.candidate_id IN ({list}) AND m.created_at = ?
  AND NOT EXISTS (SELECT 1 FROM message_event e WHERE e.message_id = m.message_id);

-- name: select_window_message_ids
SELECT message_id FROM message WHERE partition_key = ? AND status = ? ORDER BY message_id;

-- name: claim_messages
UPDATE message SET status = ?, claim_token = ?, attempts = attempts + 1, updated_at = ?
WHERE message_id IN ({list}) AND status = ?;

-- name: reclaim_unrequested_messages
-- A claim whose messages were never handed to the provider (its worker died before its
-- requests) passes to a new claim; the old claimant can no longer stamp them.
UPDATE message SET claim_token = ?, attempts = attempts + 1, updated_at = ?
WHERE message_id IN ({list}) AND status = ? AND requested_at IS NULL;

-- name: mark_messages_requested
-- Stamped right before the provider is called, only while the claim is still this worker's.
UPDATE message SET requested_at = ?, updated_at = ?
WHERE message_id IN ({list}) AND claim_token = ? AND status = ? AND requested_at IS NULL;

-- name: select_requested_messages
SELECT message_id FROM message
WHERE message_id IN ({list}) AND claim_token = ? AND requested_at = ?;

-- name: requeue_unrequested_message
UPDATE message SET status = ?, claim_token = NULL, reason = ?, updated_at = ?
WHERE message_id = ? AND status = ? AND requested_at IS NULL;

-- name: select_claimed_messages
SELECT message_id, candidate_id, candidate_key, partition_key, channel, status, reason,
       to_address, subject, html_body, text_body, sms_body, sms_encoding, sms_segments,
       claim_token
FROM message WHERE claim_token = ? AND status = ? ORDER BY message_id;

-- name: insert_message_events
INSERT INTO message_event (message_id, from_status, to_status, reason, at)
SELECT * FROM unnest(?::bigint[], ?::text[], ?::text[], ?::text[], ?::timestamp[]);

-- name: finish_messages
-- Record many send outcomes at once, each only if its message is still in the expected
-- status; returns the messages it changed.
UPDATE message AS m
SET status = v.status, reason = v.reason, provider_message_id = v.pid, updated_at = v.at
FROM unnest(?::bigint[], ?::text[], ?::text[], ?::text[], ?::timestamp[])
     AS v (id, status, reason, pid, at)
WHERE m.message_id = v.id AND m.status = ?
RETURNING m.message_id;

-- name: update_message_status
UPDATE message SET status = ?, reason = ?, updated_at = ?
WHERE message_id = ? AND status = ?;

-- name: select_stale_claims
SELECT message_id, requested_at FROM message WHERE status = ? AND updated_at < ? ORDER BY message_id;

-- name: select_window_stale_claims
SELECT message_id, requested_at FROM message WHERE status = ? AND updated_at < ? AND partition_key = ?
ORDER BY message_id;

-- name: count_messages_by_status
SELECT status, COUNT(*) FROM message GROUP BY status;

-- name: count_window_messages_by_status
SELECT status, COUNT(*) FROM message WHERE partition_key = ? GROUP BY status;

-- name: count_window_messages_in_statuses
SELECT COUNT(*) FROM message WHERE partition_key = ? AND status IN ({list});

-- name: select_messages
SELECT message_id, candidate_key, partition_key, channel, to_address, status, reason,
       provider_message_id, attempts, deferred_until
FROM message WHERE status IN ({list}) ORDER BY message_id;

-- name: select_window_messages
SELECT message_id, candidate_key, partition_key, channel, to_address, status, reason,
       provider_message_id, attempts, deferred_until
FROM message WHERE partition_key = ? AND status IN ({list}) ORDER BY message_id;

-- name: select_missing_messages
SELECT c.candidate_key FROM candidate c
WHERE c.partition_key = ?
  AND NOT EXISTS (SELECT 1 FROM message m WHERE m.candidate_id = c.candidate_id)
ORDER BY c.candidate_key;

-- name: select_duplicate_sends
-- Candidate keys with more than one send transition in their history.
SELECT m.candidate_key FROM message_event e JOIN message m ON m.message_id = e.message_id
WHERE e.to_status = ?
GROUP BY m.candidate_key HAVING COUNT(*) > 1;

-- name: select_window_duplicate_sends
SELECT m.candidate_key FROM message_event e JOIN message m ON m.message_id = e.message_id
WHERE e.to_status = ? AND m.partition_key = ?
GROUP BY m.candidate_key HAVING COUNT(*) > 1;

-- name: select_candidate_windows
-- Windows with candidates, from and through optional partition keys (NULL: unbounded).
SELECT DISTINCT partition_key FROM candidate
WHERE partition_key >= COALESCE(?, partition_key)
  AND partition_key <= COALESCE(?, partition_key)
ORDER BY partition_key;

-- name: insert_change_decisions
-- Every change read is decided once, fired or not: the first decision stays.
INSERT INTO change_decision (event_key, partition_key, fired, decided_at)
SELECT * FROM unnest(?::text[], ?::text[], ?::boolean[], ?::timestamp[])
ON CONFLICT (event_key) DO NOTHING;

-- name: skipped_event_keys
-- Of the listed event keys, those whose change was decided against.
SELECT event_key FROM change_decision WHERE fired = ? AND event_key IN ({list});

-- name: decided_event_keys
-- Of the listed event keys, those whose change has a recorded decision, fired or not.
SELECT event_key FROM change_decision WHERE event_key IN ({list});

-- name: insert_schedule_snapshot
INSERT INTO schedule_snapshot (version, body, created_at) VALUES (?, ?, ?)
ON CONFLICT (version) DO NOTHING;

-- name: select_schedule_snapshot
SELECT body FROM schedule_snapshot WHERE version = ?;

-- name: insert_run_schedule
INSERT INTO run_schedule (run_id, version, created_at) VALUES (?, ?, ?)
ON CONFLICT (run_id) DO NOTHING;

-- name: select_run_schedule
SELECT version FROM run_schedule WHERE run_id = ?;

-- name: update_window_schedule_version
UPDATE window_run SET schedule_version = ? WHERE partition_key = ?;

-- name: select_queue_health
-- Messages waiting to be sent, and since when the oldest has waited.
SELECT COUNT(*), MIN(created_at) FROM message WHERE status = ?;

-- name: count_stuck_claims
-- Claims older than the expiry that no outcome has finished.
SELECT COUNT(*) FROM message WHERE status = ? AND updated_at < ?;

-- name: ping
SELECT 1;

-- name: insert_delivery_event
-- A provider event, once per dedup key: a repeat of it changes nothing.
INSERT INTO delivery_event (dedup_key, provider, channel, message_id, provider_message_id,
                            event_type, delivery_status, occurred_at, detail, received_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (dedup_key) DO NOTHING;

-- name: select_message_by_key
SELECT message_id, status FROM message WHERE candidate_key = ?;

-- name: select_message_for_event
SELECT message_id, status FROM message WHERE message_id = ?;

-- name: select_message_by_provider_id
SELECT message_id, status FROM message WHERE provider_message_id = ? AND channel = ?;

-- name: upsert_message_delivery
-- The message keeps its highest-ranked delivery status, whatever order events arrive in.
INSERT INTO message_delivery (message_id, delivery_status, delivery_rank, events,
                              first_event_at, updated_at)
VALUES (?, ?, ?, 1, ?, ?)
ON CONFLICT (message_id) DO UPDATE
SET delivery_status = CASE WHEN excluded.delivery_rank > message_delivery.delivery_rank
                           THEN excluded.delivery_status ELSE message_delivery.delivery_status END,
    delivery_rank = CASE WHEN excluded.delivery_rank > message_delivery.delivery_rank
                         THEN excluded.delivery_rank ELSE message_delivery.delivery_rank END,
    events = message_delivery.events + 1,
    updated_at = excluded.updated_at;

-- name: select_message_delivery
SELECT delivery_status, delivery_rank, events FROM message_delivery WHERE message_id = ?;

-- name: select_message_recipient
SELECT m.message_id, m.channel, m.to_address, c.recipient_kind, c.recipient_id, c.schedule_id
FROM message m JOIN candidate c ON c.candidate_id = m.candidate_id
WHERE m.message_id = ?;

-- name: upsert_suppression
INSERT INTO suppression (subject_key, scope, channel, address, recipient_kind, recipient_id,
                         schedule_id, active, reason, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (subject_key) DO UPDATE
SET active = excluded.active, reason = excluded.reason, updated_at = excluded.updated_at;

-- name: select_suppressions
SELECT subject_key, scope, channel, address, recipient_kind, recipient_id, schedule_id,
       active, reason, updated_at
FROM suppression ORDER BY subject_key;

-- name: suppress_claimable
-- Of the listed queued messages, those whose address or recipient has an active opt-out
-- become suppressed with its reason, marked with the claim token: one statement per batch.
UPDATE message
SET status = ?, claim_token = ?, updated_at = ?,
    reason = (SELECT MIN(s.reason) FROM suppression s
              WHERE s.active = ?
                AND ((s.scope = 'address' AND s.channel = message.channel
                      AND s.address = LOWER(message.to_address))
                  OR (s.scope <> 'address' AND EXISTS (
                      SELECT 1 FROM candidate c
                      WHERE c.candidate_id = message.candidate_id
                        AND c.recipient_kind = s.recipient_kind
                        AND c.recipient_id = s.recipient_id
                        AND (s.scope = 'all'
                          OR (s.scope = 'channel' AND s.channel = message.channel)
                          OR (s.scope = 'schedule' AND s.schedule_id = c.schedule_id))))))
WHERE message_id IN ({list}) AND status = ?
  AND EXISTS (SELECT 1 FROM suppression s
              WHERE s.active = ?
                AND ((s.scope = 'address' AND s.channel = message.channel
                      AND s.address = LOWER(message.to_address))
                  OR (s.scope <> 'address' AND EXISTS (
                      SELECT 1 FROM candidate c
                      WHERE c.candidate_id = message.candidate_id
                        AND c.recipient_kind = s.recipient_kind
                        AND c.recipient_id = s.recipient_id
                        AND (s.scope = 'all'
                          OR (s.scope = 'channel' AND s.channel = message.channel)
                          OR (s.scope = 'schedule' AND s.schedule_id = c.schedule_id))))));

-- name: count_window_deliveries
SELECT d.delivery_status, COUNT(*) FROM message_delivery d
JOIN message m ON m.message_id = d.message_id
WHERE m.partition_key = ? GROUP BY d.delivery_status;

-- name: count_window_sent_without_delivery
-- Sent messages of a window with no provider event since they were sent before the cutoff.
SELECT COUNT(*) FROM message m
WHERE m.partition_key = ? AND m.status = ? AND m.updated_at < ?
  AND NOT EXISTS (SELECT 1 FROM message_delivery d WHERE d.message_id = m.message_id);

-- name: webhook_backlog
-- The webhook service's observable state: events stored since a time, the newest one, and
-- sent messages older than a cutoff that no event has reached yet.
SELECT (SELECT COUNT(*) FROM delivery_event WHERE received_at >= ?),
       (SELECT MAX(received_at) FROM delivery_event),
       (SELECT COUNT(*) FROM message m
        WHERE m.status = ? AND m.updated_at < ?
          AND NOT EXISTS (SELECT 1 FROM message_delivery d WHERE d.message_id = m.message_id));

-- ---- metadata and audit export (the UI's previews and plots) --------------------------------

-- name: select_window_previews
-- The first rendered message of each schedule in the window, with its event's values (whose
-- words the preview masks).
SELECT c.schedule_id, m.channel, m.status, m.subject, m.text_body, m.sms_body,
       e.old_values, e.row_values
FROM message m
JOIN candidate c ON c.candidate_id = m.candidate_id
JOIN change_event e ON e.event_id = c.event_id
WHERE m.message_id IN (
    SELECT MIN(m2.message_id) FROM message m2
    JOIN candidate c2 ON c2.candidate_id = m2.candidate_id
    WHERE m2.partition_key = ? AND (m2.text_body IS NOT NULL OR m2.sms_body IS NOT NULL)
    GROUP BY c2.schedule_id)
ORDER BY c.schedule_id;

-- name: count_messages_by_window_status
-- Messages per window and status, for the windows from and through two partition keys.
SELECT partition_key, status, COUNT(*) FROM message
WHERE partition_key >= ? AND partition_key <= ?
GROUP BY partition_key, status
ORDER BY partition_key, status;

-- name: insert_provider_budget
INSERT INTO provider_budget (provider, tokens, refilled_at)
SELECT ?::text, ?::double precision, ?::double precision
WHERE NOT EXISTS (SELECT 1 FROM provider_budget WHERE provider = ?::text)
ON CONFLICT (provider) DO NOTHING;

-- name: select_provider_budget
SELECT tokens, refilled_at, blocked_until, version FROM provider_budget WHERE provider = ?;

-- name: take_provider_budget
UPDATE provider_budget SET tokens = ?, refilled_at = ?, version = version + 1
WHERE provider = ? AND version = ?;

-- name: block_provider_budget
UPDATE provider_budget SET tokens = 0, refilled_at = ?, blocked_until = ?, version = version + 1
WHERE provider = ? AND blocked_until < ?;

-- name: select_claimable_for_rules
-- What quiet hours and daily caps decide on, for the listed queued messages (at the claim).
SELECT message_id, channel, to_address, recipient_tz FROM message
WHERE message_id IN ({list}) AND status = ?;

-- name: select_recipient_sends
-- The listed addresses' messages of a channel sending or sent (or unknown: the provider may
-- have them) since a time: what a daily cap counts, shared by every send worker.
SELECT to_address, COALESCE(requested_at, updated_at) AS at FROM message
WHERE to_address IN ({list}) AND channel = ? AND status IN (?, ?, ?)
  AND COALESCE(requested_at, updated_at) >= ?;

-- name: defer_messages
-- queued -> deferred at the claim, only while still queued, marked with the claim token.
UPDATE message SET status = ?, deferred_until = ?, reason = ?, claim_token = ?, updated_at = ?
WHERE message_id IN ({list}) AND status = ?;

-- name: release_deferred
-- deferred -> queued for a window's messages whose time has come, only while still deferred:
-- of two callers at once, each message is released by one, marked with its token.
UPDATE message SET status = ?, claim_token = ?, reason = NULL, updated_at = ?
WHERE partition_key = ? AND status = ? AND deferred_until <= ?;

-- name: select_released_messages
SELECT message_id, deferred_until FROM message WHERE claim_token = ? AND status = ? ORDER BY message_id;

-- name: select_due_deferred_windows
-- Windows with deferred messages due by a time: how many, and since when.
SELECT partition_key, COUNT(*) AS n, MIN(deferred_until) AS due FROM message
WHERE status = ? AND deferred_until <= ?
GROUP BY partition_key ORDER BY partition_key;

-- name: select_deferred_summary
SELECT COUNT(*) AS n, MIN(deferred_until) AS due FROM message WHERE status = ?;

-- name: lock_recipients
-- A daily cap counts a recipient's sends one claim at a time: a lock per channel and address
-- held until the claim commits, taken in one order.
SELECT COUNT(*) FROM (
    SELECT pg_advisory_xact_lock(hashtext(t.r)) AS locked
    FROM (SELECT DISTINCT channel || ':' || to_address AS r FROM message
          WHERE to_address IN ({list}) AND channel = ? ORDER BY r) AS t
) AS l;
