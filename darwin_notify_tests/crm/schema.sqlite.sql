-- The CRM fixture on SQLite, which has no schemas: each table's name holds its schema.
CREATE TABLE "crm.Branch" (
    BranchNo INTEGER PRIMARY KEY, BranchName TEXT NOT NULL, TZ TEXT NOT NULL,
    CreatedAt TEXT NOT NULL, ChangedAt TEXT NOT NULL
);
CREATE TABLE "crm.Broker" (
    BrokerNo INTEGER PRIMARY KEY, BranchNo INTEGER NOT NULL, GivenName TEXT, FamilyName TEXT,
    EmailAddr TEXT, CellNumber TEXT, Active INTEGER NOT NULL,
    CreatedAt TEXT NOT NULL, ChangedAt TEXT NOT NULL
);
CREATE TABLE "crm.Client" (
    ClientNo INTEGER PRIMARY KEY, BrokerNo INTEGER NOT NULL, GivenName TEXT, FamilyName TEXT,
    EmailAddr TEXT, CellNumber TEXT, MailOK INTEGER NOT NULL, TextOK INTEGER NOT NULL,
    Removed INTEGER NOT NULL DEFAULT 0, CreatedAt TEXT NOT NULL, ChangedAt TEXT NOT NULL
);
CREATE TABLE "crm.Listing" (
    ListingNo INTEGER PRIMARY KEY, BrokerNo INTEGER NOT NULL, Street TEXT NOT NULL,
    Town TEXT NOT NULL, AskingPrice NUMERIC NOT NULL, State TEXT NOT NULL,
    CreatedAt TEXT NOT NULL, ChangedAt TEXT NOT NULL, DeletedAt TEXT
);
CREATE TABLE "crm.Sale" (
    SaleNo INTEGER PRIMARY KEY, BrokerNo INTEGER NOT NULL, ListingNo INTEGER NOT NULL,
    BuyerClientNo INTEGER, Price NUMERIC NOT NULL, Fee NUMERIC NOT NULL, Stage TEXT NOT NULL,
    CloseDate TEXT, CreatedAt TEXT NOT NULL, ChangedAt TEXT NOT NULL
);
CREATE TABLE "crm.Alert" (
    AlertNo INTEGER PRIMARY KEY, Title TEXT NOT NULL, OnTable TEXT NOT NULL,
    OnEvent TEXT NOT NULL, WatchCol TEXT, ColsChanged TEXT, Filter TEXT, Via TEXT NOT NULL,
    Who TEXT NOT NULL, LayoutNo INTEGER NOT NULL, Once TEXT NOT NULL,
    WithTotals INTEGER NOT NULL, Enabled INTEGER NOT NULL
);
CREATE TABLE "crm.AlertLayout" (
    LayoutNo INTEGER PRIMARY KEY, Title TEXT NOT NULL, MailSubject TEXT, MailHtml TEXT,
    MailText TEXT, TextMessage TEXT
);
CREATE TABLE "crm.ListingInterest" (
    ListingNo INTEGER NOT NULL, ClientNo INTEGER NOT NULL, CreatedAt TEXT NOT NULL,
    PRIMARY KEY (ListingNo, ClientNo)
);
CREATE TABLE "crm.Showing" (
    ListingNo INTEGER NOT NULL, ShowingSeq INTEGER NOT NULL, BrokerNo INTEGER NOT NULL,
    ClientNo INTEGER NOT NULL, ShowAt TEXT NOT NULL, Status TEXT NOT NULL, Note TEXT NOT NULL,
    CreatedAt TEXT NOT NULL, ChangedAt TEXT NOT NULL, CancelledAt TEXT,
    PRIMARY KEY (ListingNo, ShowingSeq)
);
CREATE INDEX "ix_crm_Client_CreatedAt" ON "crm.Client" (CreatedAt);
CREATE INDEX "ix_crm_Client_ChangedAt" ON "crm.Client" (ChangedAt);
CREATE INDEX "ix_crm_Listing_CreatedAt" ON "crm.Listing" (CreatedAt);
CREATE INDEX "ix_crm_Listing_ChangedAt" ON "crm.Listing" (ChangedAt);
CREATE INDEX "ix_crm_Sale_CreatedAt" ON "crm.Sale" (CreatedAt);
CREATE INDEX "ix_crm_Sale_ChangedAt" ON "crm.Sale" (ChangedAt);
CREATE INDEX "ix_crm_Broker_CreatedAt" ON "crm.Broker" (CreatedAt);
CREATE INDEX "ix_crm_Broker_ChangedAt" ON "crm.Broker" (ChangedAt);
CREATE INDEX "ix_crm_Client_BrokerNo" ON "crm.Client" (BrokerNo);
CREATE INDEX "ix_crm_Listing_DeletedAt" ON "crm.Listing" (DeletedAt);
CREATE INDEX "ix_crm_Showing_CreatedAt" ON "crm.Showing" (CreatedAt);
CREATE INDEX "ix_crm_Showing_ChangedAt" ON "crm.Showing" (ChangedAt);
CREATE INDEX "ix_crm_Showing_CancelledAt" ON "crm.Showing" (CancelledAt);
