-- Sample darwin.Cloud schema, SQL Server. Re-runnable: every object is created only when
-- absent. Timestamps are datetime2(6) holding UTC; text that people type is nvarchar so
-- non-Latin names survive. Ids are assigned by the application (no IDENTITY).

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
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'IX_Office_CreateDate' AND object_id = OBJECT_ID(N'dbo.Office'))
    CREATE INDEX IX_Office_CreateDate ON dbo.Office (CreateDate);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'IX_Office_ModifiedDate' AND object_id = OBJECT_ID(N'dbo.Office'))
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
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'IX_Agent_OfficeID' AND object_id = OBJECT_ID(N'dbo.Agent'))
    CREATE INDEX IX_Agent_OfficeID ON dbo.Agent (OfficeID);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'IX_Agent_CreateDate' AND object_id = OBJECT_ID(N'dbo.Agent'))
    CREATE INDEX IX_Agent_CreateDate ON dbo.Agent (CreateDate);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'IX_Agent_ModifiedDate' AND object_id = OBJECT_ID(N'dbo.Agent'))
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
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'IX_People_AgentID' AND object_id = OBJECT_ID(N'dbo.People'))
    CREATE INDEX IX_People_AgentID ON dbo.People (AgentID);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'IX_People_CreateDate' AND object_id = OBJECT_ID(N'dbo.People'))
    CREATE INDEX IX_People_CreateDate ON dbo.People (CreateDate);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'IX_People_ModifiedDate' AND object_id = OBJECT_ID(N'dbo.People'))
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
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'IX_Property_AgentID' AND object_id = OBJECT_ID(N'dbo.Property'))
    CREATE INDEX IX_Property_AgentID ON dbo.Property (AgentID);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'IX_Property_CreateDate' AND object_id = OBJECT_ID(N'dbo.Property'))
    CREATE INDEX IX_Property_CreateDate ON dbo.Property (CreateDate);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'IX_Property_ModifiedDate' AND object_id = OBJECT_ID(N'dbo.Property'))
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
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'IX_Deal_PropertyID' AND object_id = OBJECT_ID(N'dbo.Deal'))
    CREATE INDEX IX_Deal_PropertyID ON dbo.Deal (PropertyID);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'IX_Deal_AgentID' AND object_id = OBJECT_ID(N'dbo.Deal'))
    CREATE INDEX IX_Deal_AgentID ON dbo.Deal (AgentID);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'IX_Deal_CreateDate' AND object_id = OBJECT_ID(N'dbo.Deal'))
    CREATE INDEX IX_Deal_CreateDate ON dbo.Deal (CreateDate);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'IX_Deal_ModifiedDate' AND object_id = OBJECT_ID(N'dbo.Deal'))
    CREATE INDEX IX_Deal_ModifiedDate ON dbo.Deal (ModifiedDate);
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'IX_Deal_PostDate' AND object_id = OBJECT_ID(N'dbo.Deal'))
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
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'IX_DeletedRecord_DeletedDate' AND object_id = OBJECT_ID(N'dbo.DeletedRecord'))
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
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'IX_NotificationTemplate_ModifiedDate' AND object_id = OBJECT_ID(N'dbo.NotificationTemplate'))
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
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'IX_NotificationSchedule_ModifiedDate' AND object_id = OBJECT_ID(N'dbo.NotificationSchedule'))
    CREATE INDEX IX_NotificationSchedule_ModifiedDate ON dbo.NotificationSchedule (ModifiedDate);
GO
