-- The CRM fixture on PostgreSQL, in its own schema; the pipeline's role may read it.
DROP SCHEMA IF EXISTS crm CASCADE;
CREATE SCHEMA crm;
CREATE TABLE crm."Branch" (
    "BranchNo" integer PRIMARY KEY, "BranchName" varchar(100) NOT NULL,
    "TZ" varchar(64) NOT NULL, "CreatedAt" timestamp NOT NULL, "ChangedAt" timestamp NOT NULL
);
CREATE TABLE crm."Broker" (
    "BrokerNo" integer PRIMARY KEY, "BranchNo" integer NOT NULL, "GivenName" varchar(100),
    "FamilyName" varchar(100), "EmailAddr" varchar(200), "CellNumber" varchar(40),
    "Active" smallint NOT NULL, "CreatedAt" timestamp NOT NULL, "ChangedAt" timestamp NOT NULL
);
CREATE TABLE crm."Client" (
    "ClientNo" integer PRIMARY KEY, "BrokerNo" integer NOT NULL, "GivenName" varchar(100),
    "FamilyName" varchar(100), "EmailAddr" varchar(200), "CellNumber" varchar(40),
    "MailOK" smallint NOT NULL, "TextOK" smallint NOT NULL, "Removed" smallint NOT NULL DEFAULT 0,
    "CreatedAt" timestamp NOT NULL, "ChangedAt" timestamp NOT NULL
);
CREATE TABLE crm."Listing" (
    "ListingNo" integer PRIMARY KEY, "BrokerNo" integer NOT NULL, "Street" varchar(200) NOT NULL,
    "Town" varchar(100) NOT NULL, "AskingPrice" numeric(14, 2) NOT NULL,
    "State" varchar(20) NOT NULL, "CreatedAt" timestamp NOT NULL, "ChangedAt" timestamp NOT NULL,
    "DeletedAt" timestamp
);
CREATE TABLE crm."Sale" (
    "SaleNo" integer PRIMARY KEY, "BrokerNo" integer NOT NULL, "ListingNo" integer NOT NULL,
    "BuyerClientNo" integer, "Price" numeric(14, 2) NOT NULL, "Fee" numeric(14, 2) NOT NULL,
    "Stage" varchar(20) NOT NULL, "CloseDate" timestamp, "CreatedAt" timestamp NOT NULL,
    "ChangedAt" timestamp NOT NULL
);
CREATE TABLE crm."Alert" (
    "AlertNo" integer PRIMARY KEY, "Title" varchar(100) NOT NULL, "OnTable" varchar(64) NOT NULL,
    "OnEvent" varchar(10) NOT NULL, "WatchCol" varchar(64), "ColsChanged" varchar(400),
    "Filter" text, "Via" varchar(10) NOT NULL, "Who" varchar(20) NOT NULL,
    "LayoutNo" integer NOT NULL, "Once" varchar(10) NOT NULL, "WithTotals" boolean NOT NULL,
    "Enabled" boolean NOT NULL
);
CREATE TABLE crm."AlertLayout" (
    "LayoutNo" integer PRIMARY KEY, "Title" varchar(100) NOT NULL, "MailSubject" varchar(200),
    "MailHtml" text, "MailText" text, "TextMessage" varchar(400)
);
CREATE TABLE crm."ListingInterest" (
    "ListingNo" integer NOT NULL, "ClientNo" integer NOT NULL, "CreatedAt" timestamp NOT NULL,
    PRIMARY KEY ("ListingNo", "ClientNo")
);
CREATE TABLE crm."Showing" (
    "ListingNo" integer NOT NULL, "ShowingSeq" integer NOT NULL, "BrokerNo" integer NOT NULL,
    "ClientNo" integer NOT NULL, "ShowAt" timestamp NOT NULL, "Status" varchar(20) NOT NULL,
    "Note" varchar(200) NOT NULL, "CreatedAt" timestamp NOT NULL,
    "ChangedAt" timestamp NOT NULL, "CancelledAt" timestamp,
    PRIMARY KEY ("ListingNo", "ShowingSeq")
);
CREATE INDEX ix_crm_client_createdat ON crm."Client" ("CreatedAt");
CREATE INDEX ix_crm_client_changedat ON crm."Client" ("ChangedAt");
CREATE INDEX ix_crm_listing_createdat ON crm."Listing" ("CreatedAt");
CREATE INDEX ix_crm_listing_changedat ON crm."Listing" ("ChangedAt");
CREATE INDEX ix_crm_sale_createdat ON crm."Sale" ("CreatedAt");
CREATE INDEX ix_crm_sale_changedat ON crm."Sale" ("ChangedAt");
CREATE INDEX ix_crm_broker_createdat ON crm."Broker" ("CreatedAt");
CREATE INDEX ix_crm_broker_changedat ON crm."Broker" ("ChangedAt");
CREATE INDEX ix_crm_client_brokerno ON crm."Client" ("BrokerNo");
CREATE INDEX ix_crm_listing_deletedat ON crm."Listing" ("DeletedAt");
CREATE INDEX ix_crm_showing_createdat ON crm."Showing" ("CreatedAt");
CREATE INDEX ix_crm_showing_changedat ON crm."Showing" ("ChangedAt");
CREATE INDEX ix_crm_showing_cancelledat ON crm."Showing" ("CancelledAt");
GRANT USAGE ON SCHEMA crm TO darwin_notify;
GRANT SELECT ON ALL TABLES IN SCHEMA crm TO darwin_notify;
