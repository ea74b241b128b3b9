-- The notification store ("queue DB"): darwin-notify's own state, never on the source database.

CREATE TABLE IF NOT EXISTS window_run (
    partition_key VARCHAR(64) PRIMARY KEY,
    window_start TIMESTAMP NOT NULL,
    window_end TIMESTAMP NOT NULL,
    replica_applied_through TIMESTAMP,
    replica_state TEXT,
    rows_read INTEGER NOT NULL DEFAULT 0,
    detected_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS change_event (
    event_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_key TEXT NOT NULL UNIQUE,
    partition_key TEXT NOT NULL,
    schedule_id INTEGER NOT NULL,
    source_table TEXT NOT NULL,
    record_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    version TEXT NOT NULL,
    agent_id BIGINT,
    contact_id BIGINT,
    old_values TEXT,
    row_values TEXT,
    -- set once the event's candidates are inserted: a rerun never re-resolves its audience
    expanded BOOLEAN NOT NULL DEFAULT FALSE,
    detected_at TIMESTAMP NOT NULL
);
CREATE INDEX IF NOT EXISTS change_event_partition ON change_event (partition_key, schedule_id);

-- Every change read once decided, fired or not, by its event key: a later read of the same
-- version (the lookback, a rerun) keeps the first decision.
CREATE TABLE IF NOT EXISTS change_decision (
    event_key TEXT PRIMARY KEY,
    partition_key TEXT NOT NULL,
    fired BOOLEAN NOT NULL,
    decided_at TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS record_snapshot (
    source_table TEXT NOT NULL,
    record_id TEXT NOT NULL,
    row_values TEXT NOT NULL,
    seen_at TIMESTAMP NOT NULL,
    PRIMARY KEY (source_table, record_id)
);

CREATE TABLE IF NOT EXISTS deal_ledger (
    deal_id BIGINT PRIMARY KEY,
    agent_id BIGINT NOT NULL,
    post_date TIMESTAMP,
    sale_price NUMERIC(16,2),
    gross_commission NUMERIC(16,2)
);
CREATE INDEX IF NOT EXISTS deal_ledger_agent ON deal_ledger (agent_id, post_date);

CREATE TABLE IF NOT EXISTS listing_ledger (
    property_id BIGINT PRIMARY KEY,
    agent_id BIGINT NOT NULL,
    status TEXT
);
CREATE INDEX IF NOT EXISTS listing_ledger_agent ON listing_ledger (agent_id, status);

CREATE TABLE IF NOT EXISTS window_agent (
    partition_key TEXT NOT NULL,
    agent_id BIGINT NOT NULL,
    PRIMARY KEY (partition_key, agent_id)
);

CREATE TABLE IF NOT EXISTS agent_totals (
    agent_id BIGINT PRIMARY KEY,
    year INTEGER NOT NULL,
    units_ytd INTEGER NOT NULL,
    volume_ytd NUMERIC(16,2) NOT NULL,
    commission_ytd NUMERIC(16,2) NOT NULL,
    active_listings INTEGER NOT NULL,
    computed_through TIMESTAMP NOT NULL,
    computed_at TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS candidate (
    candidate_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    candidate_key TEXT NOT NULL UNIQUE,
    partition_key TEXT NOT NULL,
    schedule_id INTEGER NOT NULL,
    channel TEXT NOT NULL,
    event_id BIGINT NOT NULL,
    source_table TEXT NOT NULL,
    record_id TEXT NOT NULL,
    agent_id BIGINT,
    recipient_kind TEXT NOT NULL,
    recipient_id BIGINT,
    uses_totals BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX IF NOT EXISTS candidate_partition ON candidate (partition_key, candidate_id);

CREATE TABLE IF NOT EXISTS message (
    message_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    candidate_id BIGINT NOT NULL UNIQUE,
    candidate_key TEXT NOT NULL UNIQUE,
    partition_key TEXT NOT NULL,
    channel TEXT NOT NULL,
    to_address TEXT,
    subject TEXT,
    html_body TEXT,
    text_body TEXT,
    sms_body TEXT,
    sms_encoding TEXT,
    sms_segments INTEGER,
    -- the statuses of domain/messages.py MessageStatus
    status TEXT NOT NULL CONSTRAINT message_status_known CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'unknown', 'suppressed', 'render_failed', 'deferred')),
    reason TEXT,
    claim_token TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    provider_message_id TEXT,
    -- set right before the provider is called: a claim without it never reached a provider
    requested_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    -- the recipient's time zone as the source model gives it (quiet hours, daily caps)
    recipient_tz VARCHAR(64),
    -- a deferred message may go from then on (UTC)
    deferred_until TIMESTAMP
);
CREATE INDEX IF NOT EXISTS message_partition_status ON message (partition_key, status);
CREATE INDEX IF NOT EXISTS message_claim ON message (claim_token);
-- a daily cap counts a recipient's sends of the day at the claim
CREATE INDEX IF NOT EXISTS message_recipient ON message (to_address, channel);
-- the deferred-messages sensor looks for deferred messages (few), then their due time
CREATE INDEX IF NOT EXISTS message_status ON message (status, updated_at);
-- A store created before the constraint existed gets it here, and one whose constraint
-- predates 'deferred' gets the current one (one statement: the loader splits on a semicolon
-- at the end of a line).
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'message_status_known'
               AND conrelid = 'message'::regclass
               AND pg_get_constraintdef(oid) NOT LIKE '%deferred%') THEN
        ALTER TABLE message DROP CONSTRAINT message_status_known; END IF; IF NOT EXISTS (
        SELECT 1 FROM pg_constraint WHERE conname = 'message_status_known'
        AND conrelid = 'message'::regclass) THEN
        ALTER TABLE message ADD CONSTRAINT message_status_known
            CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'unknown', 'suppressed', 'render_failed', 'deferred')); END IF; END $$;

CREATE TABLE IF NOT EXISTS message_event (
    message_event_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id BIGINT NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    reason TEXT,
    at TIMESTAMP NOT NULL
);
CREATE INDEX IF NOT EXISTS message_event_message ON message_event (message_id);

-- The schedules and templates one run used, by version (a hash of what was read): every
-- later step of the run, and every message it rendered, refers to the same snapshot.
CREATE TABLE IF NOT EXISTS schedule_snapshot (
    version VARCHAR(64) PRIMARY KEY,
    body TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS run_schedule (
    run_id VARCHAR(64) PRIMARY KEY,
    version VARCHAR(64) NOT NULL,
    created_at TIMESTAMP NOT NULL
);

-- Provider events, stored before they are acknowledged, once per dedup_key.
CREATE TABLE IF NOT EXISTS delivery_event (
    delivery_event_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dedup_key TEXT NOT NULL UNIQUE,
    provider TEXT NOT NULL,
    channel TEXT NOT NULL,
    message_id BIGINT,
    provider_message_id TEXT,
    event_type TEXT NOT NULL,
    delivery_status TEXT NOT NULL,
    occurred_at BIGINT,
    detail TEXT,
    received_at TIMESTAMP NOT NULL
);
CREATE INDEX IF NOT EXISTS delivery_event_message ON delivery_event (message_id);

-- Opt-outs and suppressions: an address of a channel, or a recipient for one schedule, one
-- channel or everything. subject_key names the row; active = false is an opt-in again.
CREATE TABLE IF NOT EXISTS suppression (
    subject_key TEXT PRIMARY KEY,
    scope TEXT NOT NULL CHECK (scope IN ('address', 'schedule', 'channel', 'all')),
    channel TEXT,
    address TEXT,
    recipient_kind TEXT,
    recipient_id BIGINT,
    schedule_id BIGINT,
    active BOOLEAN NOT NULL,
    reason TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX IF NOT EXISTS suppression_address ON suppression (channel, address);
CREATE INDEX IF NOT EXISTS suppression_recipient ON suppression (recipient_kind, recipient_id);

-- A sent message's delivery state (domain/delivery.py): the highest-ranked provider event so
-- far. A table of its own beside message, so that stores created before it need no ALTER.
CREATE TABLE IF NOT EXISTS message_delivery (
    message_id BIGINT PRIMARY KEY,
    delivery_status TEXT NOT NULL,
    delivery_rank INTEGER NOT NULL,
    events INTEGER NOT NULL,
    first_event_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- One sending budget per provider, shared by every send worker (a token bucket; times are
-- seconds since the epoch). A conditional update on version takes tokens.
CREATE TABLE IF NOT EXISTS provider_budget (
    provider TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    refilled_at DOUBLE PRECISION NOT NULL,
    blocked_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    version BIGINT NOT NULL DEFAULT 0
);
