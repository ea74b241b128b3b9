-- Sample darwin.Cloud schema, SQL Server. Re-runnable: every object is created only when
-- absent. Timestamps are datetime2(6) holding UTC; text that people type is nvarchar so
-- non-Latin names survive. Ids are assigned by the application (no IDENTITY).
-- An index guard matches the index's name, or the name Babelfish keeps it under (the name and
-- table's first 31 characters and an MD5), so that a second run skips it on both engines.

IF OBJECT_ID(N'dbo.Office', N'U') IS NULL
CREATE TABLE dbo.Office (
    OfficeID int NOT NULL,
    Name nvarchar(200) NOT NULL,
    TimeZone varchar(64) NOT NULL,
    CreateDate datetime2(6) NOT NULL,
    ModifiedDate datetime2(6) NOT NULL,
    CONSTRAINT PK_Office PRIMARY KEY CLUSTERED (OfficeID)
);
GO
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.Office')
    AND (name = N'IX_Office_CreateDate' OR name LIKE LEFT(N'IX_Office_CreateDateOffice', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX IX_Office_CreateDate ON dbo.Office (CreateDate);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.Office')
    AND (name = N'IX_Office_ModifiedDate' OR name LIKE LEFT(N'IX_Office_ModifiedDateOffice', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX IX_Office_ModifiedDate ON dbo.Office (ModifiedDate);
GO

IF OBJECT_ID(N'dbo.Agent', N'U') IS NULL
CREATE TABLE dbo.Agent (
    AgentID int NOT NULL,
    OfficeID int NOT NULL,
    FirstName nvarchar(100) NOT NULL,
    LastName nvarchar(100) NOT NULL,
    Email nvarchar(320) NULL,
    MobilePhone varchar(32) NULL,
    IsActive bit NOT NULL CONSTRAINT DF_Agent_IsActive DEFAULT (1),
    CreateDate datetime2(6) NOT NULL,
    ModifiedDate datetime2(6) NOT NULL,
    CONSTRAINT PK_Agent PRIMARY KEY CLUSTERED (AgentID)
);
GO
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.Agent')
    AND (name = N'IX_Agent_OfficeID' OR name LIKE LEFT(N'IX_Agent_OfficeIDAgent', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX IX_Agent_OfficeID ON dbo.Agent (OfficeID);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.Agent')
    AND (name = N'IX_Agent_CreateDate' OR name LIKE LEFT(N'IX_Agent_CreateDateAgent', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX IX_Agent_CreateDate ON dbo.Agent (CreateDate);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.Agent')
    AND (name = N'IX_Agent_ModifiedDate' OR name LIKE LEFT(N'IX_Agent_ModifiedDateAgent', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX IX_Agent_ModifiedDate ON dbo.Agent (ModifiedDate);
GO

IF OBJECT_ID(N'dbo.People', N'U') IS NULL
CREATE TABLE dbo.People (
    PeopleID int NOT NULL,
    AgentID int NOT NULL,
    FirstName nvarchar(100) NULL,
    LastName nvarchar(100) NULL,
    Email nvarchar(320) NULL,
    MobilePhone varchar(32) NULL,
    EmailOptIn bit NOT NULL CONSTRAINT DF_People_EmailOptIn DEFAULT (0),
    SmsOptIn bit NOT NULL CONSTRAINT DF_People_SmsOptIn DEFAULT (0),
    CreateDate datetime2(6) NOT NULL,
    ModifiedDate datetime2(6) NOT NULL,
    CONSTRAINT PK_People PRIMARY KEY CLUSTERED (PeopleID)
);
GO
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.People')
    AND (name = N'IX_People_AgentID' OR name LIKE LEFT(N'IX_People_AgentIDPeople', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX IX_People_AgentID ON dbo.People (AgentID);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.People')
    AND (name = N'IX_People_CreateDate' OR name LIKE LEFT(N'IX_People_CreateDatePeople', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX IX_People_CreateDate ON dbo.People (CreateDate);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.People')
    AND (name = N'IX_People_ModifiedDate' OR name LIKE LEFT(N'IX_People_ModifiedDatePeople', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX IX_People_ModifiedDate ON dbo.People (ModifiedDate);
GO

IF OBJECT_ID(N'dbo.Property', N'U') IS NULL
CREATE TABLE dbo.Property (
    PropertyID int NOT NULL,
    AgentID int NOT NULL,
    Address nvarchar(200) NOT NULL,
    City nvarchar(100) NOT NULL,
    State char(2) NOT NULL,
    Zip varchar(10) NOT NULL,
    ListPrice decimal(14, 2) NOT NULL,
    Status varchar(20) NOT NULL,
    CreateDate datetime2(6) NOT NULL,
    ModifiedDate datetime2(6) NOT NULL,
    CONSTRAINT PK_Property PRIMARY KEY CLUSTERED (PropertyID)
);
GO
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.Property')
    AND (name = N'IX_Property_AgentID' OR name LIKE LEFT(N'IX_Property_AgentIDProperty', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX IX_Property_AgentID ON dbo.Property (AgentID);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.Property')
    AND (name = N'IX_Property_CreateDate' OR name LIKE LEFT(N'IX_Property_CreateDateProperty', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX IX_Property_CreateDate ON dbo.Property (CreateDate);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.Property')
    AND (name = N'IX_Property_ModifiedDate' OR name LIKE LEFT(N'IX_Property_ModifiedDateProperty', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX IX_Property_ModifiedDate ON dbo.Property (ModifiedDate);
GO

IF OBJECT_ID(N'dbo.Deal', N'U') IS NULL
CREATE TABLE dbo.Deal (
    DealID int NOT NULL,
    PropertyID int NOT NULL,
    AgentID int NOT NULL,
    BuyerPeopleID int NULL,
    SalePrice decimal(14, 2) NOT NULL,
    GrossCommission decimal(14, 2) NOT NULL,
    CloseDate date NULL,
    PostDate datetime2(6) NULL,
    CreateDate datetime2(6) NOT NULL,
    ModifiedDate datetime2(6) NOT NULL,
    CONSTRAINT PK_Deal PRIMARY KEY CLUSTERED (DealID)
);
GO
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.Deal')
    AND (name = N'IX_Deal_PropertyID' OR name LIKE LEFT(N'IX_Deal_PropertyIDDeal', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX IX_Deal_PropertyID ON dbo.Deal (PropertyID);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.Deal')
    AND (name = N'IX_Deal_AgentID' OR name LIKE LEFT(N'IX_Deal_AgentIDDeal', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX IX_Deal_AgentID ON dbo.Deal (AgentID);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.Deal')
    AND (name = N'IX_Deal_CreateDate' OR name LIKE LEFT(N'IX_Deal_CreateDateDeal', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX IX_Deal_CreateDate ON dbo.Deal (CreateDate);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.Deal')
    AND (name = N'IX_Deal_ModifiedDate' OR name LIKE LEFT(N'IX_Deal_ModifiedDateDeal', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX IX_Deal_ModifiedDate ON dbo.Deal (ModifiedDate);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.Deal')
    AND (name = N'IX_Deal_PostDate' OR name LIKE LEFT(N'IX_Deal_PostDateDeal', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX IX_Deal_PostDate ON dbo.Deal (PostDate);
GO

IF OBJECT_ID(N'dbo.DeletedRecord', N'U') IS NULL
CREATE TABLE dbo.DeletedRecord (
    DeletedRecordID bigint NOT NULL,
    TableName sysname NOT NULL,
    RecordID bigint NOT NULL,
    DeletedDate datetime2(6) NOT NULL,
    CONSTRAINT PK_DeletedRecord PRIMARY KEY CLUSTERED (DeletedRecordID)
);
GO
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.DeletedRecord')
    AND (name = N'IX_DeletedRecord_DeletedDate' OR name LIKE LEFT(N'IX_DeletedRecord_DeletedDateDeletedRecord', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX IX_DeletedRecord_DeletedDate ON dbo.DeletedRecord (DeletedDate);
GO

IF OBJECT_ID(N'dbo.NotificationTemplate', N'U') IS NULL
CREATE TABLE dbo.NotificationTemplate (
    TemplateID int NOT NULL,
    Name nvarchar(200) NOT NULL,
    Subject nvarchar(max) NULL,
    HtmlBody nvarchar(max) NULL,
    TextBody nvarchar(max) NULL,
    SmsBody nvarchar(max) NULL,
    ModifiedDate datetime2(6) NOT NULL,
    CONSTRAINT PK_NotificationTemplate PRIMARY KEY CLUSTERED (TemplateID)
);
GO
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.NotificationTemplate')
    AND (name = N'IX_NotificationTemplate_ModifiedDate' OR name LIKE LEFT(N'IX_NotificationTemplate_ModifiedDateNotificationTemplate', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX IX_NotificationTemplate_ModifiedDate ON dbo.NotificationTemplate (ModifiedDate);
GO

IF OBJECT_ID(N'dbo.NotificationSchedule', N'U') IS NULL
CREATE TABLE dbo.NotificationSchedule (
    ScheduleID int NOT NULL,
    Name nvarchar(200) NOT NULL,
    SourceTable sysname NOT NULL,
    EventType varchar(10) NOT NULL,
    WatchColumn sysname NOT NULL,
    ChangedColumns nvarchar(max) NULL,
    Criteria nvarchar(max) NULL,
    Channel varchar(10) NOT NULL,
    Audience varchar(20) NOT NULL,
    TemplateID int NOT NULL,
    DedupeScope varchar(10) NOT NULL,
    UsesAgentTotals bit NOT NULL CONSTRAINT DF_NotificationSchedule_UsesAgentTotals DEFAULT (0),
    IsActive bit NOT NULL CONSTRAINT DF_NotificationSchedule_IsActive DEFAULT (1),
    ModifiedDate datetime2(6) NOT NULL,
    CONSTRAINT PK_NotificationSchedule PRIMARY KEY CLUSTERED (ScheduleID)
);
GO
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'dbo.NotificationSchedule')
    AND (name = N'IX_NotificationSchedule_ModifiedDate' OR name LIKE LEFT(N'IX_NotificationSchedule_ModifiedDateNotificationSchedule', 31) + REPLICATE(N'[0-9a-f]', 32)))
    CREATE INDEX IX_NotificationSchedule_ModifiedDate ON dbo.NotificationSchedule (ModifiedDate);
GO
