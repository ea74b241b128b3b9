-- The notification store ("queue DB"): darwin-notify's own state, never on the source database.

CREATE TABLE IF NOT EXISTS window_run (
    partition_key TEXT PRIMARY KEY,
    window_start TEXT NOT NULL,
    window_end TEXT NOT NULL,
    replica_applied_through TEXT,
    replica_state TEXT,
    rows_read INTEGER NOT NULL DEFAULT 0,
    detected_at TEXT
);

-- record_id is a record's id (domain/keys.py): a single integer key's value, or a composite
-- key's JSON text. SQLite's INTEGER affinity keeps the first as an integer and the second,
-- which never reads as a number, as text; keys.from_stored reads both.
CREATE TABLE IF NOT EXISTS change_event (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_key TEXT NOT NULL UNIQUE,
    partition_key TEXT NOT NULL,
    schedule_id INTEGER NOT NULL,
    source_table TEXT NOT NULL,
    record_id INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    version TEXT NOT NULL,
    agent_id INTEGER,
    contact_id INTEGER,
    old_values TEXT,
    row_values TEXT,
    -- set once the event's candidates are inserted: a rerun never re-resolves its audience
    expanded INTEGER NOT NULL DEFAULT 0,
    detected_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS change_event_partition ON change_event (partition_key, schedule_id);

-- Every change read once decided, fired or not, by its event key: a later read of the same
-- version (the lookback, a rerun) keeps the first decision.
CREATE TABLE IF NOT EXISTS change_decision (
    event_key TEXT PRIMARY KEY,
    partition_key TEXT NOT NULL,
    fired INTEGER NOT NULL,
    decided_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS record_snapshot (
    source_table TEXT NOT NULL,
    record_id INTEGER NOT NULL,
    row_values TEXT NOT NULL,
    seen_at TEXT NOT NULL,
    PRIMARY KEY (source_table, record_id)
);

CREATE TABLE IF NOT EXISTS deal_ledger (
    deal_id INTEGER PRIMARY KEY,
    agent_id INTEGER NOT NULL,
    post_date TEXT,
    sale_price NUMERIC,
    gross_commission NUMERIC
);
CREATE INDEX IF NOT EXISTS deal_ledger_agent ON deal_ledger (agent_id, post_date);

CREATE TABLE IF NOT EXISTS listing_ledger (
    property_id INTEGER PRIMARY KEY,
    agent_id INTEGER NOT NULL,
    status TEXT
);
CREATE INDEX IF NOT EXISTS listing_ledger_agent ON listing_ledger (agent_id, status);

CREATE TABLE IF NOT EXISTS window_agent (
    partition_key TEXT NOT NULL,
    agent_id INTEGER NOT NULL,
    PRIMARY KEY (partition_key, agent_id)
);

CREATE TABLE IF NOT EXISTS agent_totals (
    agent_id INTEGER PRIMARY KEY,
    year INTEGER NOT NULL,
    units_ytd INTEGER NOT NULL,
    volume_ytd NUMERIC NOT NULL,
    commission_ytd NUMERIC NOT NULL,
    active_listings INTEGER NOT NULL,
    computed_through TEXT NOT NULL,
    computed_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS candidate (
    candidate_id INTEGER PRIMARY KEY AUTOINCREMENT,
    candidate_key TEXT NOT NULL UNIQUE,
    partition_key TEXT NOT NULL,
    schedule_id INTEGER NOT NULL,
    channel TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    source_table TEXT NOT NULL,
    record_id INTEGER NOT NULL,
    agent_id INTEGER,
    recipient_kind TEXT NOT NULL,
    recipient_id INTEGER,
    uses_totals INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS candidate_partition ON candidate (partition_key, candidate_id);

CREATE TABLE IF NOT EXISTS message (
    message_id INTEGER PRIMARY KEY AUTOINCREMENT,
    candidate_id INTEGER NOT NULL UNIQUE,
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
    status TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'unknown', 'suppressed', 'render_failed', 'deferred')),
    reason TEXT,
    claim_token TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    provider_message_id TEXT,
    -- set right before the provider is called: a claim without it never reached a provider
    requested_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    -- the recipient's time zone as the source model gives it (quiet hours, daily caps)
    recipient_tz TEXT,
    -- a deferred message may go from then on (UTC)
    deferred_until TEXT
);
CREATE INDEX IF NOT EXISTS message_partition_status ON message (partition_key, status);
CREATE INDEX IF NOT EXISTS message_claim ON message (claim_token);
-- a daily cap counts a recipient's sends of the day at the claim
CREATE INDEX IF NOT EXISTS message_recipient ON message (to_address, channel);
-- the deferred-messages sensor looks for deferred messages (few), then their due time
CREATE INDEX IF NOT EXISTS message_status ON message (status, updated_at);

CREATE TABLE IF NOT EXISTS message_event (
    message_event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    reason TEXT,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS message_event_message ON message_event (message_id);

-- The schedules and templates one run used, by version (a hash of what was read): every
-- later step of the run, and every message it rendered, refers to the same snapshot.
CREATE TABLE IF NOT EXISTS schedule_snapshot (
    version TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS run_schedule (
    run_id TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- Provider events, stored before they are acknowledged, once per dedup_key.
CREATE TABLE IF NOT EXISTS delivery_event (
    delivery_event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key TEXT NOT NULL UNIQUE,
    provider TEXT NOT NULL,
    channel TEXT NOT NULL,
    message_id INTEGER,
    provider_message_id TEXT,
    event_type TEXT NOT NULL,
    delivery_status TEXT NOT NULL,
    occurred_at INTEGER,
    detail TEXT,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS delivery_event_message ON delivery_event (message_id);

-- Opt-outs and suppressions: an address of a channel, or a recipient for one schedule, one
-- channel or everything. subject_key names the row; active = 0 is an opt-in again.
CREATE TABLE IF NOT EXISTS suppression (
    subject_key TEXT PRIMARY KEY,
    scope TEXT NOT NULL CHECK (scope IN ('address', 'schedule', 'channel', 'all')),
    channel TEXT,
    address TEXT,
    recipient_kind TEXT,
    recipient_id INTEGER,
    schedule_id INTEGER,
    active INTEGER NOT NULL,
    reason TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS suppression_address ON suppression (channel, address);
CREATE INDEX IF NOT EXISTS suppression_recipient ON suppression (recipient_kind, recipient_id);

-- A sent message's delivery state (domain/delivery.py): the highest-ranked provider event so
-- far. A table of its own beside message, so that stores created before it need no ALTER.
CREATE TABLE IF NOT EXISTS message_delivery (
    message_id INTEGER PRIMARY KEY,
    delivery_status TEXT NOT NULL,
    delivery_rank INTEGER NOT NULL,
    events INTEGER NOT NULL,
    first_event_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- One sending budget per provider, shared by every send worker (a token bucket; times are
-- seconds since the epoch). A conditional update on version takes tokens.
CREATE TABLE IF NOT EXISTS provider_budget (
    provider TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    refilled_at REAL NOT NULL,
    blocked_until REAL NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0
);
