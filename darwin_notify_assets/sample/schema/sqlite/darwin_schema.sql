-- Sample darwin.Cloud schema (the replica's tables), SQLite flavour.
-- Timestamps are naive UTC text of one fixed width ('%Y-%m-%d %H:%M:%S.%f') so they sort in
-- time order; money is NUMERIC; booleans are 0/1. Ids are assigned by the application.

CREATE TABLE IF NOT EXISTS "Office" (
    "OfficeID" INTEGER NOT NULL PRIMARY KEY,
    "Name" TEXT NOT NULL,
    "TimeZone" TEXT NOT NULL,
    "CreateDate" TEXT NOT NULL,
    "ModifiedDate" TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS "IX_Office_CreateDate" ON "Office" ("CreateDate");
CREATE INDEX IF NOT EXISTS "IX_Office_ModifiedDate" ON "Office" ("ModifiedDate");

CREATE TABLE IF NOT EXISTS "Agent" (
    "AgentID" INTEGER NOT NULL PRIMARY KEY,
    "OfficeID" INTEGER NOT NULL,
    "FirstName" TEXT NOT NULL,
    "LastName" TEXT NOT NULL,
    "Email" TEXT,
    "MobilePhone" TEXT,
    "IsActive" INTEGER NOT NULL DEFAULT 1,
    "CreateDate" TEXT NOT NULL,
    "ModifiedDate" TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS "IX_Agent_OfficeID" ON "Agent" ("OfficeID");
CREATE INDEX IF NOT EXISTS "IX_Agent_CreateDate" ON "Agent" ("CreateDate");
CREATE INDEX IF NOT EXISTS "IX_Agent_ModifiedDate" ON "Agent" ("ModifiedDate");

CREATE TABLE IF NOT EXISTS "People" (
    "PeopleID" INTEGER NOT NULL PRIMARY KEY,
    "AgentID" INTEGER NOT NULL,
    "FirstName" TEXT,
    "LastName" TEXT,
    "Email" TEXT,
    "MobilePhone" TEXT,
    "EmailOptIn" INTEGER NOT NULL DEFAULT 0,
    "SmsOptIn" INTEGER NOT NULL DEFAULT 0,
    "CreateDate" TEXT NOT NULL,
    "ModifiedDate" TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS "IX_People_AgentID" ON "People" ("AgentID");
CREATE INDEX IF NOT EXISTS "IX_People_CreateDate" ON "People" ("CreateDate");
CREATE INDEX IF NOT EXISTS "IX_People_ModifiedDate" ON "People" ("ModifiedDate");

CREATE TABLE IF NOT EXISTS "Property" (
    "PropertyID" INTEGER NOT NULL PRIMARY KEY,
    "AgentID" INTEGER NOT NULL,
    "Address" TEXT NOT NULL,
    "City" TEXT NOT NULL,
    "State" TEXT NOT NULL,
    "Zip" TEXT NOT NULL,
    "ListPrice" NUMERIC NOT NULL,
    "Status" TEXT NOT NULL,
    "CreateDate" TEXT NOT NULL,
    "ModifiedDate" TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS "IX_Property_AgentID" ON "Property" ("AgentID");
CREATE INDEX IF NOT EXISTS "IX_Property_CreateDate" ON "Property" ("CreateDate");
CREATE INDEX IF NOT EXISTS "IX_Property_ModifiedDate" ON "Property" ("ModifiedDate");

CREATE TABLE IF NOT EXISTS "Deal" (
    "DealID" INTEGER NOT NULL PRIMARY KEY,
    "PropertyID" INTEGER NOT NULL,
    "AgentID" INTEGER NOT NULL,
    "BuyerPeopleID" INTEGER,
    "SalePrice" NUMERIC NOT NULL,
    "GrossCommission" NUMERIC NOT NULL,
    "CloseDate" TEXT,
    "PostDate" TEXT,
    "CreateDate" TEXT NOT NULL,
    "ModifiedDate" TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS "IX_Deal_PropertyID" ON "Deal" ("PropertyID");
CREATE INDEX IF NOT EXISTS "IX_Deal_AgentID" ON "Deal" ("AgentID");
CREATE INDEX IF NOT EXISTS "IX_Deal_CreateDate" ON "Deal" ("CreateDate");
CREATE INDEX IF NOT EXISTS "IX_Deal_ModifiedDate" ON "Deal" ("ModifiedDate");
CREATE INDEX IF NOT EXISTS "IX_Deal_PostDate" ON "Deal" ("PostDate");

CREATE TABLE IF NOT EXISTS "DeletedRecord" (
    "DeletedRecordID" INTEGER NOT NULL PRIMARY KEY,
    "TableName" TEXT NOT NULL,
    "RecordID" INTEGER NOT NULL,
    "DeletedDate" TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS "IX_DeletedRecord_DeletedDate" ON "DeletedRecord" ("DeletedDate");

CREATE TABLE IF NOT EXISTS "NotificationTemplate" (
    "TemplateID" INTEGER NOT NULL PRIMARY KEY,
    "Name" TEXT NOT NULL,
    "Subject" TEXT,
    "HtmlBody" TEXT,
    "TextBody" TEXT,
    "SmsBody" TEXT,
    "ModifiedDate" TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS "IX_NotificationTemplate_ModifiedDate" ON "NotificationTemplate" ("ModifiedDate");

CREATE TABLE IF NOT EXISTS "NotificationSchedule" (
    "ScheduleID" INTEGER NOT NULL PRIMARY KEY,
    "Name" TEXT NOT NULL,
    "SourceTable" TEXT NOT NULL,
    "EventType" TEXT NOT NULL,
    "WatchColumn" TEXT NOT NULL,
    "ChangedColumns" TEXT,
    "Criteria" TEXT,
    "Channel" TEXT NOT NULL,
    "Audience" TEXT NOT NULL,
    "TemplateID" INTEGER NOT NULL,
    "DedupeScope" TEXT NOT NULL,
    "UsesAgentTotals" INTEGER NOT NULL DEFAULT 0,
    "IsActive" INTEGER NOT NULL DEFAULT 1,
    "ModifiedDate" TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS "IX_NotificationSchedule_ModifiedDate" ON "NotificationSchedule" ("ModifiedDate");
