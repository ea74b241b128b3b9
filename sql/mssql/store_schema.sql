-- The notification store on SQL Server: a separate database on its own storage, never the
-- source database. Re-runnable: every object is created only when absent; the loader splits
-- batches on lines that are exactly GO. Timestamps are datetime2(7) holding UTC.
-- An index guard matches the index's name, or the name Babelfish keeps it under (the name and
-- table's first 31 characters and an MD5), so that a second run skips it on both engines.

IF OBJECT_ID(N'dbo.window_run', N'U') IS NULL
CREATE TABLE dbo.window_run (
    partition_key nvarchar(200) NOT NULL CONSTRAINT PK_window_run PRIMARY KEY,
    window_start datetime2(7) NOT NULL,
    window_end datetime2(7) NOT NULL,
    replica_applied_through datetime2(7) NULL,
    replica_state nvarchar(200) NULL,
    rows_read int NOT NULL CONSTRAINT DF_window_run_rows_read DEFAULT (0),
    detected_at datetime2(7) NULL
);
GO

IF OBJECT_ID(N'dbo.change_event', N'U') IS NULL
CREATE TABLE dbo.change_event (
    event_id bigint IDENTITY(1,1) NOT NULL CONSTRAINT PK_change_event PRIMARY KEY,
    event_key nvarchar(400) NOT NULL CONSTRAINT UQ_change_event_event_key UNIQUE,
    partition_key nvarchar(200) NOT NULL,
    schedule_id int NOT NULL,
    source_table nvarchar(200) NOT NULL,
    record_id nvarchar(200) NOT NULL,
    event_type nvarchar(200) NOT NULL,
    version nvarchar(200) NOT NULL,
    agent_id bigint NULL,
    contact_id bigint NULL,
    old_values nvarchar(max) NULL,
    row_values nvarchar(max) NULL,
    expanded bit NOT NULL CONSTRAINT DF_change_event_expanded DEFAULT (0),
    detected_at datetime2(7) NOT NULL
);
GO
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.change_event')
    AND (name = N'change_event_partition' OR name LIKE LEFT(N'change_event_partitionchange_event', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX change_event_partition ON dbo.change_event (partition_key, schedule_id);
GO

-- Every change read once decided, fired or not, by its event key: a later read of the same
-- version (the lookback, a rerun) keeps the first decision.
IF OBJECT_ID(N'dbo.change_decision', N'U') IS NULL
CREATE TABLE dbo.change_decision (
    event_key nvarchar(400) NOT NULL CONSTRAINT PK_change_decision PRIMARY KEY,
    partition_key nvarchar(200) NOT NULL,
    fired bit NOT NULL,
    decided_at datetime2(7) NOT NULL
);
GO

IF OBJECT_ID(N'dbo.record_snapshot', N'U') IS NULL
CREATE TABLE dbo.record_snapshot (
    source_table nvarchar(200) NOT NULL,
    record_id nvarchar(200) NOT NULL,
    row_values nvarchar(max) NOT NULL,
    seen_at datetime2(7) NOT NULL,
    CONSTRAINT PK_record_snapshot PRIMARY KEY (source_table, record_id)
);
GO

IF OBJECT_ID(N'dbo.deal_ledger', N'U') IS NULL
CREATE TABLE dbo.deal_ledger (
    deal_id bigint NOT NULL CONSTRAINT PK_deal_ledger PRIMARY KEY,
    agent_id bigint NOT NULL,
    post_date datetime2(7) NULL,
    sale_price decimal(16,2) NULL,
    gross_commission decimal(16,2) NULL
);
GO
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.deal_ledger')
    AND (name = N'deal_ledger_agent' OR name LIKE LEFT(N'deal_ledger_agentdeal_ledger', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX deal_ledger_agent ON dbo.deal_ledger (agent_id, post_date);
GO

IF OBJECT_ID(N'dbo.listing_ledger', N'U') IS NULL
CREATE TABLE dbo.listing_ledger (
    property_id bigint NOT NULL CONSTRAINT PK_listing_ledger PRIMARY KEY,
    agent_id bigint NOT NULL,
    status nvarchar(200) NULL
);
GO
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.listing_ledger')
    AND (name = N'listing_ledger_agent' OR name LIKE LEFT(N'listing_ledger_agentlisting_ledger', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX listing_ledger_agent ON dbo.listing_ledger (agent_id, status);
GO

IF OBJECT_ID(N'dbo.window_agent', N'U') IS NULL
CREATE TABLE dbo.window_agent (
    partition_key nvarchar(200) NOT NULL,
    agent_id bigint NOT NULL,
    CONSTRAINT PK_window_agent PRIMARY KEY (partition_key, agent_id)
);
GO

IF OBJECT_ID(N'dbo.agent_totals', N'U') IS NULL
CREATE TABLE dbo.agent_totals (
    agent_id bigint NOT NULL CONSTRAINT PK_agent_totals PRIMARY KEY,
    year int NOT NULL,
    units_ytd int NOT NULL,
    volume_ytd decimal(16,2) NOT NULL,
    commission_ytd decimal(16,2) NOT NULL,
    active_listings int NOT NULL,
    computed_through datetime2(7) NOT NULL,
    computed_at datetime2(7) NOT NULL
);
GO

IF OBJECT_ID(N'dbo.candidate', N'U') IS NULL
CREATE TABLE dbo.candidate (
    candidate_id bigint IDENTITY(1,1) NOT NULL CONSTRAINT PK_candidate PRIMARY KEY,
    candidate_key nvarchar(400) NOT NULL CONSTRAINT UQ_candidate_candidate_key UNIQUE,
    partition_key nvarchar(200) NOT NULL,
    schedule_id int NOT NULL,
    channel nvarchar(200) NOT NULL,
    event_id bigint NOT NULL,
    source_table nvarchar(200) NOT NULL,
    record_id nvarchar(200) NOT NULL,
    agent_id bigint NULL,
    recipient_kind nvarchar(200) NOT NULL,
    recipient_id bigint NULL,
    uses_totals bit NOT NULL CONSTRAINT DF_candidate_uses_totals DEFAULT (0),
    created_at datetime2(7) NOT NULL
);
GO
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.candidate')
    AND (name = N'candidate_partition' OR name LIKE LEFT(N'candidate_partitioncandidate', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX candidate_partition ON dbo.candidate (partition_key, candidate_id);
GO

IF OBJECT_ID(N'dbo.message', N'U') IS NULL
CREATE TABLE dbo.message (
    message_id bigint IDENTITY(1,1) NOT NULL CONSTRAINT PK_message PRIMARY KEY,
    candidate_id bigint NOT NULL CONSTRAINT UQ_message_candidate_id UNIQUE,
    candidate_key nvarchar(400) NOT NULL CONSTRAINT UQ_message_candidate_key UNIQUE,
    partition_key nvarchar(200) NOT NULL,
    channel nvarchar(200) NOT NULL,
    to_address nvarchar(200) NULL,
    subject nvarchar(max) NULL,
    html_body nvarchar(max) NULL,
    text_body nvarchar(max) NULL,
    sms_body nvarchar(max) NULL,
    sms_encoding nvarchar(200) NULL,
    sms_segments int NULL,
    -- the statuses of domain/messages.py MessageStatus
    status nvarchar(200) NOT NULL CONSTRAINT CK_message_status_2 CHECK (status IN (N'queued', N'sending', N'sent', N'failed', N'unknown', N'suppressed', N'render_failed', N'deferred')),
    reason nvarchar(max) NULL,
    claim_token nvarchar(200) NULL,
    attempts int NOT NULL CONSTRAINT DF_message_attempts DEFAULT (0),
    provider_message_id nvarchar(200) NULL,
    -- set right before the provider is called: a claim without it never reached a provider
    requested_at datetime2(7) NULL,
    created_at datetime2(7) NOT NULL,
    updated_at datetime2(7) NOT NULL,
    -- the recipient's time zone as the source model gives it (quiet hours, daily caps)
    recipient_tz nvarchar(64) NULL,
    -- a deferred message may go from then on (UTC)
    deferred_until datetime2(7) NULL
);
GO
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.message')
    AND (name = N'message_partition_status' OR name LIKE LEFT(N'message_partition_statusmessage', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX message_partition_status ON dbo.message (partition_key, status);
GO
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.message')
    AND (name = N'message_claim' OR name LIKE LEFT(N'message_claimmessage', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX message_claim ON dbo.message (claim_token);
GO
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.message')
    AND (name = N'message_recipient' OR name LIKE LEFT(N'message_recipientmessage', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX message_recipient ON dbo.message (to_address, channel);
GO
-- the deferred-messages sensor looks for deferred messages (few), then their due time
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.message')
    AND (name = N'message_status' OR name LIKE LEFT(N'message_statusmessage', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX message_status ON dbo.message (status, updated_at);
GO
-- The statuses' constraint has a version in its name, so that a store made before 'deferred'
-- is told by the name alone (reading a constraint's definition back is not needed, and
-- Babelfish cannot): such a store drops CK_message_status here and gets CK_message_status_2.
IF EXISTS (SELECT 1 FROM sys.check_constraints WHERE name = N'CK_message_status' AND parent_object_id = OBJECT_ID(N'dbo.message'))
    ALTER TABLE dbo.message DROP CONSTRAINT CK_message_status;
GO
-- A store created before the constraint existed, or before its version 2, gets it here.
IF NOT EXISTS (SELECT 1 FROM sys.check_constraints WHERE name = N'CK_message_status_2' AND parent_object_id = OBJECT_ID(N'dbo.message'))
    ALTER TABLE dbo.message ADD CONSTRAINT CK_message_status_2
        CHECK (status IN (N'queued', N'sending', N'sent', N'failed', N'unknown', N'suppressed', N'render_failed', N'deferred'));
GO

IF OBJECT_ID(N'dbo.message_event', N'U') IS NULL
CREATE TABLE dbo.message_event (
    message_event_id bigint IDENTITY(1,1) NOT NULL CONSTRAINT PK_message_event PRIMARY KEY,
    message_id bigint NOT NULL,
    from_status nvarchar(200) NULL,
    to_status nvarchar(200) NOT NULL,
    reason nvarchar(max) NULL,
    at datetime2(7) NOT NULL
);
GO
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.message_event')
    AND (name = N'message_event_message' OR name LIKE LEFT(N'message_event_messagemessage_event', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX message_event_message ON dbo.message_event (message_id);
GO

-- The schedules and templates one run used, by version (a hash of what was read): every
-- later step of the run, and every message it rendered, refers to the same snapshot.
IF OBJECT_ID(N'dbo.schedule_snapshot', N'U') IS NULL
CREATE TABLE dbo.schedule_snapshot (
    version nvarchar(64) NOT NULL CONSTRAINT PK_schedule_snapshot PRIMARY KEY,
    body nvarchar(max) NOT NULL,
    created_at datetime2(7) NOT NULL
);
GO

IF OBJECT_ID(N'dbo.run_schedule', N'U') IS NULL
CREATE TABLE dbo.run_schedule (
    run_id nvarchar(64) NOT NULL CONSTRAINT PK_run_schedule PRIMARY KEY,
    version nvarchar(64) NOT NULL,
    created_at datetime2(7) NOT NULL
);
GO

-- Provider events, stored before they are acknowledged, once per dedup_key.
IF OBJECT_ID(N'dbo.delivery_event', N'U') IS NULL
CREATE TABLE dbo.delivery_event (
    delivery_event_id bigint IDENTITY(1,1) NOT NULL CONSTRAINT PK_delivery_event PRIMARY KEY,
    dedup_key nvarchar(64) NOT NULL CONSTRAINT UQ_delivery_event_dedup_key UNIQUE,
    provider nvarchar(200) NOT NULL,
    channel nvarchar(200) NOT NULL,
    message_id bigint NULL,
    provider_message_id nvarchar(200) NULL,
    event_type nvarchar(200) NOT NULL,
    delivery_status nvarchar(200) NOT NULL,
    occurred_at bigint NULL,
    detail nvarchar(max) NULL,
    received_at datetime2(7) NOT NULL
);
GO
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.delivery_event')
    AND (name = N'delivery_event_message' OR name LIKE LEFT(N'delivery_event_messagedelivery_event', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX delivery_event_message ON dbo.delivery_event (message_id);
GO

-- Opt-outs and suppressions: an address of a channel, or a recipient for one schedule, one
-- channel or everything. subject_key names the row; active = 0 is an opt-in again.
IF OBJECT_ID(N'dbo.suppression', N'U') IS NULL
CREATE TABLE dbo.suppression (
    subject_key nvarchar(400) NOT NULL CONSTRAINT PK_suppression PRIMARY KEY,
    scope nvarchar(20) NOT NULL CONSTRAINT CK_suppression_scope CHECK (scope IN (N'address', N'schedule', N'channel', N'all')),
    channel nvarchar(200) NULL,
    address nvarchar(200) NULL,
    recipient_kind nvarchar(200) NULL,
    recipient_id bigint NULL,
    schedule_id bigint NULL,
    active bit NOT NULL,
    reason nvarchar(max) NOT NULL,
    updated_at datetime2(7) NOT NULL
);
GO
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.suppression')
    AND (name = N'suppression_address' OR name LIKE LEFT(N'suppression_addresssuppression', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX suppression_address ON dbo.suppression (channel, address);
GO
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.suppression')
    AND (name = N'suppression_recipient' OR name LIKE LEFT(N'suppression_recipientsuppression', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX suppression_recipient ON dbo.suppression (recipient_kind, recipient_id);
GO

-- A sent message's delivery state (domain/delivery.py): the highest-ranked provider event so
-- far. A table of its own beside message, so that stores created before it need no ALTER.
IF OBJECT_ID(N'dbo.message_delivery', N'U') IS NULL
CREATE TABLE dbo.message_delivery (
    message_id bigint NOT NULL CONSTRAINT PK_message_delivery PRIMARY KEY,
    delivery_status nvarchar(200) NOT NULL,
    delivery_rank int NOT NULL,
    events int NOT NULL,
    first_event_at datetime2(7) NOT NULL,
    updated_at datetime2(7) NOT NULL
);
GO

-- One sending budget per provider, shared by every send worker (a token bucket; times are
-- seconds since the epoch). A conditional update on version takes tokens.
IF OBJECT_ID(N'dbo.provider_budget', N'U') IS NULL
CREATE TABLE dbo.provider_budget (
    provider nvarchar(200) NOT NULL CONSTRAINT PK_provider_budget PRIMARY KEY,
    tokens float NOT NULL,
    refilled_at float NOT NULL,
    blocked_until float NOT NULL CONSTRAINT DF_provider_budget_blocked DEFAULT (0),
    version bigint NOT NULL CONSTRAINT DF_provider_budget_version DEFAULT (0)
);
GO
