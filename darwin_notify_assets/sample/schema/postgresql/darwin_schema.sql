-- Sample darwin.Cloud schema (the primary's tables, streamed to the hot standby), PostgreSQL.
-- Identifiers are quoted so the SQL Server PascalCase names survive. Timestamps are
-- "timestamp" without time zone holding UTC. Ids are assigned by the application.

CREATE TABLE IF NOT EXISTS "Office" (
    "OfficeID" integer NOT NULL,
    "Name" varchar(200) NOT NULL,
    "TimeZone" varchar(64) NOT NULL,
    "CreateDate" timestamp(6) NOT NULL,
    "ModifiedDate" timestamp(6) NOT NULL,
    CONSTRAINT "PK_Office" PRIMARY KEY ("OfficeID")
);
CREATE INDEX IF NOT EXISTS "IX_Office_CreateDate" ON "Office" ("CreateDate");
CREATE INDEX IF NOT EXISTS "IX_Office_ModifiedDate" ON "Office" ("ModifiedDate");

CREATE TABLE IF NOT EXISTS "Agent" (
    "AgentID" integer NOT NULL,
    "OfficeID" integer NOT NULL,
    "FirstName" varchar(100) NOT NULL,
    "LastName" varchar(100) NOT NULL,
    "Email" varchar(320),
    "MobilePhone" varchar(32),
    "IsActive" boolean NOT NULL DEFAULT true,
    "CreateDate" timestamp(6) NOT NULL,
    "ModifiedDate" timestamp(6) NOT NULL,
    CONSTRAINT "PK_Agent" PRIMARY KEY ("AgentID")
);
CREATE INDEX IF NOT EXISTS "IX_Agent_OfficeID" ON "Agent" ("OfficeID");
CREATE INDEX IF NOT EXISTS "IX_Agent_CreateDate" ON "Agent" ("CreateDate");
CREATE INDEX IF NOT EXISTS "IX_Agent_ModifiedDate" ON "Agent" ("ModifiedDate");

CREATE TABLE IF NOT EXISTS "People" (
    "PeopleID" integer NOT NULL,
    "AgentID" integer NOT NULL,
    "FirstName" varchar(100),
    "LastName" varchar(100),
    "Email" varchar(320),
    "MobilePhone" varchar(32),
    "EmailOptIn" boolean NOT NULL DEFAULT false,
    "SmsOptIn" boolean NOT NULL DEFAULT false,
    "CreateDate" timestamp(6) NOT NULL,
    "ModifiedDate" timestamp(6) NOT NULL,
    CONSTRAINT "PK_People" PRIMARY KEY ("PeopleID")
);
CREATE INDEX IF NOT EXISTS "IX_People_AgentID" ON "People" ("AgentID");
CREATE INDEX IF NOT EXISTS "IX_People_CreateDate" ON "People" ("CreateDate");
CREATE INDEX IF NOT EXISTS "IX_People_ModifiedDate" ON "People" ("ModifiedDate");

CREATE TABLE IF NOT EXISTS "Property" (
    "PropertyID" integer NOT NULL,
    "AgentID" integer NOT NULL,
    "Address" varchar(200) NOT NULL,
    "City" varchar(100) NOT NULL,
    "State" char(2) NOT NULL,
    "Zip" varchar(10) NOT NULL,
    "ListPrice" numeric(14, 2) NOT NULL,
    "Status" varchar(20) NOT NULL,
    "CreateDate" timestamp(6) NOT NULL,
    "ModifiedDate" timestamp(6) NOT NULL,
    CONSTRAINT "PK_Property" PRIMARY KEY ("PropertyID")
);
CREATE INDEX IF NOT EXISTS "IX_Property_AgentID" ON "Property" ("AgentID");
CREATE INDEX IF NOT EXISTS "IX_Property_CreateDate" ON "Property" ("CreateDate");
CREATE INDEX IF NOT EXISTS "IX_Property_ModifiedDate" ON "Property" ("ModifiedDate");

CREATE TABLE IF NOT EXISTS "Deal" (
    "DealID" integer NOT NULL,
    "PropertyID" integer NOT NULL,
    "AgentID" integer NOT NULL,
    "BuyerPeopleID" integer,
    "SalePrice" numeric(14, 2) NOT NULL,
    "GrossCommission" numeric(14, 2) NOT NULL,
    "CloseDate" date,
    "PostDate" timestamp(6),
    "CreateDate" timestamp(6) NOT NULL,
    "ModifiedDate" timestamp(6) NOT NULL,
    CONSTRAINT "PK_Deal" PRIMARY KEY ("DealID")
);
CREATE INDEX IF NOT EXISTS "IX_Deal_PropertyID" ON "Deal" ("PropertyID");
CREATE INDEX IF NOT EXISTS "IX_Deal_AgentID" ON "Deal" ("AgentID");
CREATE INDEX IF NOT EXISTS "IX_Deal_CreateDate" ON "Deal" ("CreateDate");
CREATE INDEX IF NOT EXISTS "IX_Deal_ModifiedDate" ON "Deal" ("ModifiedDate");
CREATE INDEX IF NOT EXISTS "IX_Deal_PostDate" ON "Deal" ("PostDate");

CREATE TABLE IF NOT EXISTS "DeletedRecord" (
    "DeletedRecordID" bigint NOT NULL,
    "TableName" varchar(128) NOT NULL,
    "RecordID" bigint NOT NULL,
    "DeletedDate" timestamp(6) NOT NULL,
    CONSTRAINT "PK_DeletedRecord" PRIMARY KEY ("DeletedRecordID")
);
CREATE INDEX IF NOT EXISTS "IX_DeletedRecord_DeletedDate" ON "DeletedRecord" ("DeletedDate");

CREATE TABLE IF NOT EXISTS "NotificationTemplate" (
    "TemplateID" integer NOT NULL,
    "Name" varchar(200) NOT NULL,
    "Subject" text,
    "HtmlBody" text,
    "TextBody" text,
    "SmsBody" text,
    "ModifiedDate" timestamp(6) NOT NULL,
    CONSTRAINT "PK_NotificationTemplate" PRIMARY KEY ("TemplateID")
);
CREATE INDEX IF NOT EXISTS "IX_NotificationTemplate_ModifiedDate" ON "NotificationTemplate" ("ModifiedDate");

CREATE TABLE IF NOT EXISTS "NotificationSchedule" (
    "ScheduleID" integer NOT NULL,
    "Name" varchar(200) NOT NULL,
    "SourceTable" varchar(128) NOT NULL,
    "EventType" varchar(10) NOT NULL,
    "WatchColumn" varchar(128) NOT NULL,
    "ChangedColumns" text,
    "Criteria" text,
    "Channel" varchar(10) NOT NULL,
    "Audience" varchar(20) NOT NULL,
    "TemplateID" integer NOT NULL,
    "DedupeScope" varchar(10) NOT NULL,
    "UsesAgentTotals" boolean NOT NULL DEFAULT false,
    "IsActive" boolean NOT NULL DEFAULT true,
    "ModifiedDate" timestamp(6) NOT NULL,
    CONSTRAINT "PK_NotificationSchedule" PRIMARY KEY ("ScheduleID")
);
CREATE INDEX IF NOT EXISTS "IX_NotificationSchedule_ModifiedDate" ON "NotificationSchedule" ("ModifiedDate");
