"""A deterministic sample darwin.Cloud: base data, a stream of changes, and their writers.

The demo, the tests and the benchmarks all use this model of darwin.Cloud (its DDL is
``sample/schema/<dialect>/darwin_schema.sql``). Everything is drawn from ``random.Random``
seeded by the caller, so the same arguments always give the same rows, the same changes in the same order
with the same timestamps. The data is realistic on purpose, including a small share of bad
input (invalid addresses and phones, markup and non-Latin script in names) that the pipeline
must survive without stopping.

Timestamps are naive UTC ``datetime`` values, money is ``Decimal`` with two places, booleans
are ``bool``; the writers convert them for each dialect.
"""

import json
import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any

from darwin_notify_assets.storage import sqlfiles
from darwin_notify_assets.storage.db import Database

logger = logging.getLogger(__name__)

# Column kinds that need converting per dialect; every other column is int or text.
TIMESTAMP = "timestamp"
DATE = "date"
MONEY = "money"
BOOL = "bool"

COLUMNS: dict[str, tuple[str, ...]] = {
    "Office": ("OfficeID", "Name", "TimeZone", "CreateDate", "ModifiedDate"),
    "Agent": (
        "AgentID",
        "OfficeID",
        "FirstName",
        "LastName",
        "Email",
        "MobilePhone",
        "IsActive",
        "CreateDate",
        "ModifiedDate",
    ),
    "People": (
        "PeopleID",
        "AgentID",
        "FirstName",
        "LastName",
        "Email",
        "MobilePhone",
        "EmailOptIn",
        "SmsOptIn",
        "CreateDate",
        "ModifiedDate",
    ),
    "Property": (
        "PropertyID",
        "AgentID",
        "Address",
        "City",
        "State",
        "Zip",
        "ListPrice",
        "Status",
        "CreateDate",
        "ModifiedDate",
    ),
    "Deal": (
        "DealID",
        "PropertyID",
        "AgentID",
        "BuyerPeopleID",
        "SalePrice",
        "GrossCommission",
        "CloseDate",
        "PostDate",
        "CreateDate",
        "ModifiedDate",
    ),
    "DeletedRecord": ("DeletedRecordID", "TableName", "RecordID", "DeletedDate"),
    "NotificationTemplate": (
        "TemplateID",
        "Name",
        "Subject",
        "HtmlBody",
        "TextBody",
        "SmsBody",
        "ModifiedDate",
    ),
    "NotificationSchedule": (
        "ScheduleID",
        "Name",
        "SourceTable",
        "EventType",
        "WatchColumn",
        "ChangedColumns",
        "Criteria",
        "Channel",
        "Audience",
        "TemplateID",
        "DedupeScope",
        "UsesAgentTotals",
        "IsActive",
        "ModifiedDate",
    ),
}

KEY_COLUMNS: dict[str, str] = {
    "Office": "OfficeID",
    "Agent": "AgentID",
    "People": "PeopleID",
    "Property": "PropertyID",
    "Deal": "DealID",
    "DeletedRecord": "DeletedRecordID",
    "NotificationTemplate": "TemplateID",
    "NotificationSchedule": "ScheduleID",
}

COLUMN_KINDS: dict[str, dict[str, str]] = {
    "Office": {"CreateDate": TIMESTAMP, "ModifiedDate": TIMESTAMP},
    "Agent": {"IsActive": BOOL, "CreateDate": TIMESTAMP, "ModifiedDate": TIMESTAMP},
    "People": {
        "EmailOptIn": BOOL,
        "SmsOptIn": BOOL,
        "CreateDate": TIMESTAMP,
        "ModifiedDate": TIMESTAMP,
    },
    "Property": {"ListPrice": MONEY, "CreateDate": TIMESTAMP, "ModifiedDate": TIMESTAMP},
    "Deal": {
        "SalePrice": MONEY,
        "GrossCommission": MONEY,
        "CloseDate": DATE,
        "PostDate": TIMESTAMP,
        "CreateDate": TIMESTAMP,
        "ModifiedDate": TIMESTAMP,
    },
    "DeletedRecord": {"DeletedDate": TIMESTAMP},
    "NotificationTemplate": {"ModifiedDate": TIMESTAMP},
    "NotificationSchedule": {
        "UsesAgentTotals": BOOL,
        "IsActive": BOOL,
        "ModifiedDate": TIMESTAMP,
    },
}

#: Columns a change window reads by index range, per table.
WATCH_COLUMNS: dict[str, tuple[str, ...]] = {
    "Office": ("CreateDate", "ModifiedDate"),
    "Agent": ("CreateDate", "ModifiedDate"),
    "People": ("CreateDate", "ModifiedDate"),
    "Property": ("CreateDate", "ModifiedDate"),
    "Deal": ("CreateDate", "ModifiedDate", "PostDate"),
    "DeletedRecord": ("DeletedDate",),
    "NotificationTemplate": ("ModifiedDate",),
    "NotificationSchedule": ("ModifiedDate",),
}

#: Foreign keys the pipeline looks rows up by.
LOOKUP_COLUMNS: dict[str, tuple[str, ...]] = {
    "Agent": ("OfficeID",),
    "People": ("AgentID",),
    "Property": ("AgentID",),
    "Deal": ("AgentID", "PropertyID"),
}

TABLES: tuple[str, ...] = tuple(COLUMNS)

PROPERTY_STATUSES = ("Active", "Pending", "Sold", "Withdrawn")

# Deliberately bad contact data; tests look these values up.
INVALID_EMAILS = ("jane.doe@", "no-at-sign.example.com")
INVALID_PHONES = ("555-0100", "+1 123")
MARKUP_NAMES = ("<script>alert(1)</script>", "Ann <b>& Co</b>")

_CENT = Decimal("0.01")


# -- sizes and rates ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SeedSize:
    """How many rows of each kind the base dataset holds.

    Attributes:
        offices: Office rows.
        agents: Agent rows.
        contacts: People rows (every agent's contacts together).
        properties: Property rows still present at the start (deleted ones are extra).
        deals: Deal rows; each sits on its own property, so at most ``properties``.
    """

    offices: int
    agents: int
    contacts: int
    properties: int
    deals: int

    def __post_init__(self) -> None:
        if min(self.offices, self.agents) < 1:
            raise ValueError("a dataset needs at least one office and one agent")
        if min(self.contacts, self.properties, self.deals) < 0:
            raise ValueError("row counts cannot be negative")
        if self.deals > self.properties:
            raise ValueError("each deal sits on its own property: deals <= properties")

    @classmethod
    def small(cls) -> "SeedSize":
        """A size for unit tests: fast, yet every kind of row and change occurs."""
        return cls(offices=3, agents=12, contacts=120, properties=60, deals=30)

    @classmethod
    def demo(cls) -> "SeedSize":
        """A size for the demo: a mid-sized brokerage."""
        return cls(offices=5, agents=40, contacts=1_200, properties=400, deals=200)

    @classmethod
    def scaled(cls, contacts: int) -> "SeedSize":
        """A size for benchmarks, proportioned like a brokerage with ``contacts`` contacts.

        Args:
            contacts: Number of People rows; the other tables follow the demo's proportions
                (about 30 contacts per agent, 25 agents per office, 3 contacts per property,
                2 properties per deal).
        """
        contacts = max(1, contacts)
        agents = max(1, contacts // 30)
        properties = max(1, contacts // 3)
        return cls(
            offices=max(1, agents // 25),
            agents=agents,
            contacts=contacts,
            properties=properties,
            deals=properties // 2,
        )


@dataclass(frozen=True)
class ChangeRates:
    """Mean number of changes of each kind in one window (before ``intensity``).

    A fractional mean is drawn as its whole part plus one with the fraction's probability.
    """

    new_listings: float
    price_drops: float
    price_increases: float
    property_edits: float
    new_deals: float
    deals_posted: float
    new_contacts: float
    contact_updates: float
    listings_removed: float

    @classmethod
    def for_size(cls, size: SeedSize) -> "ChangeRates":
        """Rates proportional to the dataset, with a floor so every kind occurs each window."""
        return cls(
            new_listings=max(2.0, size.properties / 250),
            price_drops=max(2.0, size.properties / 200),
            price_increases=max(1.0, size.properties / 600),
            property_edits=max(2.0, size.properties / 300),
            new_deals=max(1.0, size.deals / 150),
            deals_posted=max(1.0, size.deals / 150),
            new_contacts=max(2.0, size.contacts / 300),
            contact_updates=max(2.0, size.contacts / 400),
            listings_removed=max(1.0, size.properties / 800),
        )

    def scaled(self, intensity: float) -> "ChangeRates":
        """These rates multiplied by ``intensity``."""
        if intensity < 0:
            raise ValueError("intensity cannot be negative")
        values = {name: getattr(self, name) * intensity for name in self.__dataclass_fields__}
        return ChangeRates(**values)


# -- datasets and changes ----------------------------------------------------------------------
Row = tuple[Any, ...]


@dataclass(frozen=True)
class Dataset:
    """Every row of the base dataset, as tuples in ``COLUMNS`` order, per table.

    Attributes:
        size: The requested size.
        seed: The seed it was generated from.
        start: Every CreateDate/ModifiedDate/PostDate/DeletedDate lies before this instant.
        tables: Rows per table name (every name of ``TABLES`` is present).
    """

    size: SeedSize
    seed: int
    start: datetime
    tables: Mapping[str, Sequence[Row]]

    def rows(self, table: str) -> Sequence[Row]:
        """The rows of ``table`` as tuples in ``COLUMNS[table]`` order."""
        return self.tables[table]

    def records(self, table: str) -> list[dict[str, Any]]:
        """The rows of ``table`` as dictionaries keyed by column name."""
        names = COLUMNS[table]
        return [dict(zip(names, row, strict=True)) for row in self.tables[table]]

    def counts(self) -> dict[str, int]:
        """Number of rows per table."""
        return {table: len(rows) for table, rows in self.tables.items()}


class ChangeKind(StrEnum):
    """What a change means in the business, used to label and count operations."""

    NEW_LISTING = "new_listing"
    PRICE_DROP = "price_drop"
    PRICE_INCREASE = "price_increase"
    PROPERTY_EDIT = "property_edit"
    NEW_DEAL = "new_deal"
    DEAL_POSTED = "deal_posted"
    NEW_CONTACT = "new_contact"
    CONTACT_UPDATE = "contact_update"
    LISTING_REMOVED = "listing_removed"


@dataclass(frozen=True)
class Insert:
    """A new row.

    Attributes:
        table: Table name.
        row: Every column of the new row.
        kind: What the change means.
        at: When it happened (the row's CreateDate).
    """

    table: str
    row: Mapping[str, Any]
    kind: ChangeKind
    at: datetime

    @property
    def key(self) -> int:
        """The new row's primary key."""
        return int(self.row[KEY_COLUMNS[self.table]])


@dataclass(frozen=True)
class Update:
    """New values for some columns of one row (ModifiedDate always among them).

    Attributes:
        table: Table name.
        key: Primary key of the row.
        values: The columns that are set, with their new values.
        old: The same columns' previous values.
        kind: What the change means.
        at: When it happened (the new ModifiedDate).
    """

    table: str
    key: int
    values: Mapping[str, Any]
    old: Mapping[str, Any]
    kind: ChangeKind
    at: datetime

    def changed_columns(self) -> tuple[str, ...]:
        """Columns whose value differs from before, ModifiedDate excluded."""
        return tuple(
            c for c, v in self.values.items() if c != "ModifiedDate" and self.old.get(c) != v
        )


@dataclass(frozen=True)
class Delete:
    """A deleted row; applying it also writes the matching DeletedRecord row.

    Attributes:
        table: Table name.
        key: Primary key of the deleted row.
        row: The row's last values (where a deleted record's merge fields come from).
        deleted_record_id: The DeletedRecordID of the DeletedRecord row.
        kind: What the change means.
        at: When it happened (the DeletedDate).
    """

    table: str
    key: int
    row: Mapping[str, Any]
    deleted_record_id: int
    kind: ChangeKind
    at: datetime

    def deleted_record(self) -> Row:
        """The DeletedRecord row, in ``COLUMNS['DeletedRecord']`` order."""
        return (self.deleted_record_id, self.table, self.key, self.at)


Operation = Insert | Update | Delete


@dataclass(frozen=True)
class WindowChanges:
    """The changes of one window ``[start, end)``, in time order.

    Every operation's timestamp lies strictly inside the window.
    """

    start: datetime
    end: datetime
    operations: tuple[Operation, ...]

    def counts(self) -> dict[str, int]:
        """Number of operations per ``ChangeKind`` value (kinds that occur only)."""
        counts: dict[str, int] = {}
        for op in self.operations:
            counts[op.kind.value] = counts.get(op.kind.value, 0) + 1
        return counts


@dataclass(frozen=True)
class WindowSummary:
    """What was written for one window.

    Attributes:
        start: Window start (inclusive).
        end: Window end (exclusive).
        by_kind: Operations per ``ChangeKind`` value.
        by_operation: Operations per ``"<Table>.<insert|update|delete>"``.
    """

    start: datetime
    end: datetime
    by_kind: Mapping[str, int]
    by_operation: Mapping[str, int]


@dataclass(frozen=True)
class SeedSummary:
    """What ``seed_database`` wrote.

    Attributes:
        base_rows: Base rows per table.
        windows: One summary per window, in time order.
    """

    base_rows: Mapping[str, int]
    windows: tuple[WindowSummary, ...]

    def totals_by_kind(self) -> dict[str, int]:
        """Operations per ``ChangeKind`` value over all windows."""
        return _sum_counts(w.by_kind for w in self.windows)

    def totals_by_operation(self) -> dict[str, int]:
        """Operations per ``"<Table>.<insert|update|delete>"`` over all windows."""
        return _sum_counts(w.by_operation for w in self.windows)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (timestamps as ISO 8601 text)."""
        return {
            "base_rows": dict(self.base_rows),
            "totals_by_kind": self.totals_by_kind(),
            "totals_by_operation": self.totals_by_operation(),
            "windows": [
                {
                    "start": w.start.isoformat(),
                    "end": w.end.isoformat(),
                    "by_kind": dict(w.by_kind),
                    "by_operation": dict(w.by_operation),
                }
                for w in self.windows
            ],
        }


def _sum_counts(parts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for name, n in part.items():
            total[name] = total.get(name, 0) + n
    return dict(sorted(total.items()))


# -- reference data ----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Metro:
    city: str
    time_zone: str
    state: str
    towns: tuple[tuple[str, str], ...]  # (town, zip prefix)
    area_codes: tuple[int, ...]
    median_price: int


# Ordered so that the first five offices already span five time zones.
_METROS: tuple[_Metro, ...] = (
    _Metro(
        "New York",
        "America/New_York",
        "NY",
        (("New York", "100"), ("Brooklyn", "112"), ("Astoria", "111"), ("Bronx", "104")),
        (212, 718, 646, 917),
        850_000,
    ),
    _Metro(
        "Chicago",
        "America/Chicago",
        "IL",
        (("Chicago", "606"), ("Evanston", "602"), ("Oak Park", "603"), ("Naperville", "605")),
        (312, 773, 630, 847),
        380_000,
    ),
    _Metro(
        "Los Angeles",
        "America/Los_Angeles",
        "CA",
        (
            ("Los Angeles", "900"),
            ("Pasadena", "911"),
            ("Santa Monica", "904"),
            ("Long Beach", "908"),
        ),
        (213, 310, 323, 626),
        950_000,
    ),
    _Metro(
        "Denver",
        "America/Denver",
        "CO",
        (("Denver", "802"), ("Aurora", "800"), ("Lakewood", "802"), ("Boulder", "803")),
        (303, 720),
        560_000,
    ),
    _Metro(
        "Phoenix",
        "America/Phoenix",
        "AZ",
        (("Phoenix", "850"), ("Scottsdale", "852"), ("Tempe", "852"), ("Mesa", "852")),
        (602, 480, 623),
        430_000,
    ),
    _Metro(
        "Boston",
        "America/New_York",
        "MA",
        (("Boston", "021"), ("Cambridge", "021"), ("Somerville", "021"), ("Newton", "024")),
        (617, 857),
        780_000,
    ),
    _Metro(
        "Dallas",
        "America/Chicago",
        "TX",
        (("Dallas", "752"), ("Plano", "750"), ("Irving", "750"), ("Garland", "750")),
        (214, 972, 469),
        400_000,
    ),
    _Metro(
        "Seattle",
        "America/Los_Angeles",
        "WA",
        (("Seattle", "981"), ("Bellevue", "980"), ("Redmond", "980"), ("Tacoma", "984")),
        (206, 425, 253),
        820_000,
    ),
    _Metro(
        "Anchorage",
        "America/Anchorage",
        "AK",
        (("Anchorage", "995"), ("Eagle River", "995"), ("Wasilla", "996")),
        (907,),
        370_000,
    ),
    _Metro(
        "Honolulu",
        "Pacific/Honolulu",
        "HI",
        (("Honolulu", "968"), ("Kailua", "967"), ("Pearl City", "967")),
        (808,),
        900_000,
    ),
)

_BRANDS = (
    "Keystone Realty",
    "Harbor & Main Real Estate",
    "Summit Home Group",
    "Cornerstone Properties",
    "Bluebird Realty",
    "Northgate Homes",
)

# (display name, ASCII form for email addresses)
_FIRST_NAMES: tuple[tuple[str, str], ...] = tuple(
    (n, n.lower())
    for n in (
        "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William "
        "Barbara Richard Susan Joseph Jessica Thomas Sarah Christopher Karen Daniel Lisa "
        "Matthew Nancy Anthony Sandra Mark Betty Steven Ashley Andrew Emily Kevin Michelle "
        "Brian Amanda Priya Aisha Carlos Mei Omar Fatima Diego Hannah Ethan Olivia Noah Emma "
        "Liam Ava Lucas Sofia Mateo Isabella Jamal Keisha Raj Ananya Hiroshi Yuki Grace Leo"
    ).split()
)
_LAST_NAMES: tuple[tuple[str, str], ...] = tuple(
    (n, n.lower().replace("'", ""))
    for n in (
        "Smith Johnson Williams Brown Jones Miller Davis Wilson Anderson Taylor Thomas Moore "
        "Jackson Martin Lee Thompson White Harris Clark Lewis Robinson Walker Young Allen King "
        "Wright Scott Hill Green Adams Baker Nelson Carter Mitchell Perez Roberts Turner "
        "Phillips Campbell Parker Evans Edwards Collins Stewart Morris Rogers Reed Cook Morgan "
        "Bell Murphy Bailey Rivera Cooper Richardson Cox Howard Ward Patel Kim Chen O'Brien "
        "O'Connor"
    ).split()
)
_NON_LATIN_FIRST: tuple[tuple[str, str], ...] = (
    ("José", "jose"),
    ("Zoë", "zoe"),
    ("Renée", "renee"),
    ("Björn", "bjorn"),
    ("Siobhán", "siobhan"),
    ("Chloé", "chloe"),
    ("Łukasz", "lukasz"),
    ("Inés", "ines"),
    ("伟", "wei"),
    ("秀英", "xiuying"),
)
_NON_LATIN_LAST: tuple[tuple[str, str], ...] = (
    ("García", "garcia"),
    ("Muñoz", "munoz"),
    ("Nguyễn", "nguyen"),
    ("Müller", "muller"),
    ("Peña", "pena"),
    ("Brontë", "bronte"),
    ("李", "li"),
    ("王", "wang"),
    ("张", "zhang"),
)
_NON_LATIN_SHARE = 0.04
_CONTACT_DOMAINS = ("example.com", "example.net", "example.org")

_STREETS = tuple(
    (
        "Maple Oak Cedar Elm Pine Washington Lake Hill Park Main Highland Sunset Ridge Willow "
        "Jefferson Lincoln Madison Franklin Chestnut Walnut Spruce River O'Connor Meadow Forest "
        "Prospect Church Mill Orchard Harbor"
    ).split()
)
_STREET_TYPES = ("St", "Ave", "Rd", "Blvd", "Dr", "Ln", "Ct", "Way", "Pl", "Ter")


# -- templates and schedules ---------------------------------------------------------------------
_NEW_LISTING_HTML = """\
<p>Hi {{ recipient.FirstName }},</p>
<p>{{ agent.FirstName }} {{ agent.LastName }} of {{ office.Name }} just listed
<strong>{{ Address }}, {{ City }}, {{ State }} {{ Zip }}</strong> at {{ ListPrice|money }}.</p>
<p>Reply to this email{% if agent.MobilePhone %} or call {{ agent.MobilePhone }}{% endif %}
to arrange a showing.</p>
"""
_NEW_LISTING_TEXT = """\
Hi {{ recipient.FirstName }},

{{ agent.FirstName }} {{ agent.LastName }} of {{ office.Name }} just listed \
{{ Address }}, {{ City }}, {{ State }} {{ Zip }} at {{ ListPrice|money }}.

Reply to this email{% if agent.MobilePhone %} or call {{ agent.MobilePhone }}{% endif %} \
to arrange a showing.
"""
_PRICE_DROP_SMS = (
    "{{ recipient.FirstName }}: price drop on {{ Address }}, {{ City }}: now "
    "{{ ListPrice|money }} (was {{ change.old.ListPrice|money }})."
)
_DEAL_POSTED_HTML = """\
<p>Congratulations {{ agent.FirstName }}!</p>
<p>Deal {{ DealID }} on {{ property.Address }}, {{ property.City }} closed on
{{ CloseDate|date }} at {{ SalePrice|money }} and was posted on {{ PostDate|date }}.
Gross commission: {{ GrossCommission|money }}.</p>
<p>Your year to date:</p>
<ul>
<li>Deals posted: {{ totals.units_ytd }}</li>
<li>Sales volume: {{ totals.volume_ytd|money }}</li>
<li>Gross commission: {{ totals.commission_ytd|money }}</li>
<li>Active listings: {{ totals.active_listings }}</li>
</ul>
"""
_DEAL_POSTED_TEXT = """\
Congratulations {{ agent.FirstName }}!

Deal {{ DealID }} on {{ property.Address }}, {{ property.City }} closed on \
{{ CloseDate|date }} at {{ SalePrice|money }} and was posted on {{ PostDate|date }}. \
Gross commission: {{ GrossCommission|money }}.

Your year to date:
- Deals posted: {{ totals.units_ytd }}
- Sales volume: {{ totals.volume_ytd|money }}
- Gross commission: {{ totals.commission_ytd|money }}
- Active listings: {{ totals.active_listings }}
"""
_WELCOME_HTML = """\
<p>Hi {{ FirstName }},</p>
<p>Thanks for connecting with {{ agent.FirstName }} {{ agent.LastName }} at {{ office.Name }}.
We will let you know when homes that fit you come on the market.</p>
<p>{{ agent.FirstName }} {{ agent.LastName }}<br>{{ agent.Email }}\
{% if agent.MobilePhone %}<br>{{ agent.MobilePhone }}{% endif %}</p>
"""
_WELCOME_TEXT = """\
Hi {{ FirstName }},

Thanks for connecting with {{ agent.FirstName }} {{ agent.LastName }} at {{ office.Name }}. \
We will let you know when homes that fit you come on the market.

{{ agent.FirstName }} {{ agent.LastName }}
{{ agent.Email }}{% if agent.MobilePhone %}
{{ agent.MobilePhone }}{% endif %}
"""
_LISTING_REMOVED_HTML = """\
<p>Hi {{ agent.FirstName }},</p>
<p>Your listing at <strong>{{ Address }}, {{ City }}, {{ State }} {{ Zip }}</strong>
(last listed at {{ ListPrice|money }}) was removed from darwin.Cloud.</p>
<p>If that was not intended, please contact the {{ office.Name }} office.</p>
"""
_LISTING_REMOVED_TEXT = """\
Hi {{ agent.FirstName }},

Your listing at {{ Address }}, {{ City }}, {{ State }} {{ Zip }} (last listed at \
{{ ListPrice|money }}) was removed from darwin.Cloud.

If that was not intended, please contact the {{ office.Name }} office.
"""

#: (TemplateID, Name, Subject, HtmlBody, TextBody, SmsBody)
SAMPLE_TEMPLATES: tuple[tuple[int, str, str | None, str | None, str | None, str | None], ...] = (
    (
        1,
        "New listing",
        "New listing at {{ Address }}, {{ City }}",
        _NEW_LISTING_HTML,
        _NEW_LISTING_TEXT,
        None,
    ),
    (2, "Price drop", None, None, None, _PRICE_DROP_SMS),
    (
        3,
        "Deal posted",
        "Deal {{ DealID }} posted: {{ SalePrice|money }}",
        _DEAL_POSTED_HTML,
        _DEAL_POSTED_TEXT,
        None,
    ),
    (4, "Welcome", "Welcome, {{ FirstName }}!", _WELCOME_HTML, _WELCOME_TEXT, None),
    (
        5,
        "Listing removed",
        "Listing removed: {{ Address }}, {{ City }}",
        _LISTING_REMOVED_HTML,
        _LISTING_REMOVED_TEXT,
        None,
    ),
)

#: NotificationSchedule rows without ModifiedDate, as dictionaries keyed by column.
SAMPLE_SCHEDULES: tuple[Mapping[str, Any], ...] = (
    {
        "ScheduleID": 1,
        "Name": "New listing",
        "SourceTable": "Property",
        "EventType": "insert",
        "WatchColumn": "CreateDate",
        "ChangedColumns": None,
        "Criteria": [{"column": "Status", "op": "eq", "value": "Active"}],
        "Channel": "email",
        "Audience": "agent_contacts",
        "TemplateID": 1,
        "DedupeScope": "record",
        "UsesAgentTotals": False,
        "IsActive": True,
    },
    {
        "ScheduleID": 2,
        "Name": "Price drop",
        "SourceTable": "Property",
        "EventType": "update",
        "WatchColumn": "ModifiedDate",
        "ChangedColumns": "ListPrice",
        "Criteria": [{"column": "ListPrice", "op": "decreased"}],
        "Channel": "sms",
        "Audience": "agent",
        "TemplateID": 2,
        "DedupeScope": "change",
        "UsesAgentTotals": False,
        "IsActive": True,
    },
    {
        "ScheduleID": 3,
        "Name": "Deal posted",
        "SourceTable": "Deal",
        "EventType": "update",
        "WatchColumn": "PostDate",
        "ChangedColumns": "PostDate",
        "Criteria": [{"column": "PostDate", "op": "not_null"}],
        "Channel": "email",
        "Audience": "agent",
        "TemplateID": 3,
        "DedupeScope": "record",
        "UsesAgentTotals": True,
        "IsActive": True,
    },
    {
        "ScheduleID": 4,
        "Name": "Welcome",
        "SourceTable": "People",
        "EventType": "insert",
        "WatchColumn": "CreateDate",
        "ChangedColumns": None,
        "Criteria": [{"column": "EmailOptIn", "op": "eq", "value": True}],
        "Channel": "email",
        "Audience": "record_contact",
        "TemplateID": 4,
        "DedupeScope": "record",
        "UsesAgentTotals": False,
        "IsActive": True,
    },
    {
        "ScheduleID": 5,
        "Name": "Listing removed",
        "SourceTable": "Property",
        "EventType": "delete",
        "WatchColumn": "DeletedDate",
        "ChangedColumns": None,
        "Criteria": [],
        "Channel": "email",
        "Audience": "agent",
        "TemplateID": 5,
        "DedupeScope": "change",
        "UsesAgentTotals": False,
        "IsActive": True,
    },
)


def template_rows(modified: datetime) -> list[Row]:
    """The five sample NotificationTemplate rows, in ``COLUMNS`` order."""
    return [(*t, modified) for t in SAMPLE_TEMPLATES]


def schedule_rows(modified: datetime) -> list[Row]:
    """The five sample NotificationSchedule rows, in ``COLUMNS`` order (Criteria as JSON)."""
    rows = []
    for s in SAMPLE_SCHEDULES:
        values = {**s, "Criteria": json.dumps(s["Criteria"]), "ModifiedDate": modified}
        rows.append(tuple(values[c] for c in COLUMNS["NotificationSchedule"]))
    return rows


# -- drawing helpers -----------------------------------------------------------------------------
def _money(value: float | Decimal) -> Decimal:
    return Decimal(str(value)).quantize(_CENT, rounding=ROUND_HALF_UP)


def _price(rng: random.Random, median: int) -> Decimal:
    raw = median * rng.lognormvariate(0.0, 0.35)
    # Asking prices end in 000 or 900, as listing agents price them.
    thousands = max(50, int(raw // 1000))
    return Decimal(thousands * 1000 - (100 if rng.random() < 0.4 else 0)).quantize(_CENT)


def _phone(rng: random.Random, area_codes: Sequence[int]) -> str:
    area = area_codes[int(rng.random() * len(area_codes))]
    while True:
        exchange = rng.randrange(200, 1000)
        # N11 codes are services and 555 is reserved: neither is a valid subscriber number.
        if exchange % 100 != 11 and exchange != 555:
            break
    return f"+1{area}{exchange}{rng.randrange(10000):04d}"


def _name(rng: random.Random) -> tuple[str, str, str, str]:
    """(first, last, first ASCII, last ASCII)."""
    r = rng.random
    first = (
        _NON_LATIN_FIRST[int(r() * len(_NON_LATIN_FIRST))]
        if r() < _NON_LATIN_SHARE
        else _FIRST_NAMES[int(r() * len(_FIRST_NAMES))]
    )
    last = (
        _NON_LATIN_LAST[int(r() * len(_NON_LATIN_LAST))]
        if r() < _NON_LATIN_SHARE
        else _LAST_NAMES[int(r() * len(_LAST_NAMES))]
    )
    return first[0], last[0], first[1], last[1]


def _between(rng: random.Random, low: datetime, high: datetime) -> datetime:
    """A microsecond instant in ``[low, high)`` (``low`` when the span is empty)."""
    span = int((high - low) / timedelta(microseconds=1))
    if span <= 0:
        return low
    return low + timedelta(microseconds=rng.randrange(span))


def _weighted_owner(rng: random.Random, owners: Sequence[int], count: int) -> list[int]:
    """``count`` owners drawn with a skew: some agents hold many more rows than others."""
    if not owners or count <= 0:
        return []
    weights = [rng.paretovariate(2.0) for _ in owners]
    return rng.choices(owners, weights=weights, k=count)


def _street(rng: random.Random) -> str:
    number = rng.randrange(10, 9990)
    street = _STREETS[int(rng.random() * len(_STREETS))]
    kind = _STREET_TYPES[int(rng.random() * len(_STREET_TYPES))]
    unit = f" Apt {rng.randrange(1, 30)}{'ABCD'[rng.randrange(4)]}" if rng.random() < 0.12 else ""
    return f"{number} {street} {kind}{unit}"


def _town(rng: random.Random, metro: _Metro) -> tuple[str, str]:
    town, prefix = metro.towns[int(rng.random() * len(metro.towns))]
    return town, f"{prefix}{rng.randrange(100):02d}"


def _contact_row(
    rng: random.Random,
    people_id: int,
    agent_id: int,
    metro: _Metro,
    created: datetime,
    modified: datetime,
    bad_share: float,
) -> Row:
    first, last, first_ascii, last_ascii = _name(rng)
    r = rng.random
    domain = _CONTACT_DOMAINS[int(r() * len(_CONTACT_DOMAINS))]
    email: str | None = f"{first_ascii}.{last_ascii}{people_id}@{domain}"
    phone: str | None = _phone(rng, metro.area_codes) if r() < 0.92 else None
    if r() < 0.03:
        email = None
    if bad_share and r() < bad_share:
        flaw = int(r() * 4)
        if flaw == 0:
            email = INVALID_EMAILS[int(r() * len(INVALID_EMAILS))]
        elif flaw == 1:
            phone = INVALID_PHONES[int(r() * len(INVALID_PHONES))]
        elif flaw == 2:
            first = MARKUP_NAMES[int(r() * len(MARKUP_NAMES))]
        else:
            email, phone = None, None
    return (
        people_id,
        agent_id,
        first,
        last,
        email,
        phone,
        r() < 0.85,
        r() < 0.60,
        created,
        modified,
    )


# Contacts whose data is wrong on purpose; each one exists in every base dataset.
_DELIBERATE_CONTACTS: tuple[Mapping[str, Any], ...] = (
    {"FirstName": "Jane", "LastName": "Doe", "Email": "jane.doe@", "EmailOptIn": True},
    {
        "FirstName": "Noel",
        "LastName": "Atsign",
        "Email": "no-at-sign.example.com",
        "EmailOptIn": True,
    },
    {"FirstName": "Pat", "LastName": "Shortnumber", "MobilePhone": "555-0100", "SmsOptIn": True},
    {"FirstName": "Chris", "LastName": "Nodigits", "MobilePhone": "+1 123", "SmsOptIn": True},
    {
        "FirstName": "<script>alert(1)</script>",
        "LastName": "Tester",
        "Email": "script.tester{id}@example.com",
        "EmailOptIn": True,
    },
    {
        "FirstName": "Ann <b>& Co</b>",
        "LastName": "Holdings",
        "Email": "ann.holdings{id}@example.com",
        "EmailOptIn": True,
    },
    {
        "FirstName": "José",
        "LastName": "Muñoz",
        "Email": "jose.munoz{id}@example.com",
        "EmailOptIn": True,
        "SmsOptIn": True,
    },
    {
        "FirstName": "Zoë",
        "LastName": "Brontë",
        "Email": "zoe.bronte{id}@example.net",
        "EmailOptIn": True,
        "SmsOptIn": True,
    },
    {
        "FirstName": "伟",
        "LastName": "李",
        "Email": "wei.li{id}@example.org",
        "EmailOptIn": True,
        "SmsOptIn": True,
    },
    {
        "FirstName": "Nora",
        "LastName": "Noaddress",
        "Email": None,
        "MobilePhone": None,
        "EmailOptIn": True,
        "SmsOptIn": True,
    },
    {
        "FirstName": "Oliver",
        "LastName": "Optout",
        "Email": "oliver.optout{id}@example.com",
        "EmailOptIn": False,
        "SmsOptIn": False,
    },
)


def _apply_overrides(row: Row, overrides: Mapping[str, Any], columns: Sequence[str]) -> Row:
    values = dict(zip(columns, row, strict=True))
    for column, value in overrides.items():
        values[column] = value.format(id=row[0]) if isinstance(value, str) else value
    return tuple(values[c] for c in columns)


# -- base dataset -----------------------------------------------------------------------------
def generate_base(size: SeedSize, seed: int, start: datetime) -> Dataset:
    """Generate the base dataset: every row as it stands at ``start``.

    Args:
        size: How many rows of each kind.
        seed: Seed of the random generator; the same arguments always give the same rows.
        start: Naive UTC instant; every timestamp in the dataset lies before it.

    Returns:
        The dataset, including the five sample templates and schedules and a few earlier
        property deletions in DeletedRecord.
    """
    if start.tzinfo is not None:
        raise ValueError("start must be a naive UTC datetime")
    rng = random.Random(f"darwin-base-{seed}")
    day = timedelta(days=1)
    before = start - timedelta(minutes=1)

    offices: list[Row] = []
    office_metro: dict[int, _Metro] = {}
    for i in range(size.offices):
        office_id = i + 1
        metro = _METROS[i % len(_METROS)]
        brand = _BRANDS[(i // len(_METROS) + i) % len(_BRANDS)]
        suffix = f" {i // len(_METROS) + 1}" if i >= len(_METROS) else ""
        created = _between(rng, start - 3000 * day, start - 2200 * day)
        modified = _between(rng, created, before)
        offices.append(
            (office_id, f"{brand} - {metro.city}{suffix}", metro.time_zone, created, modified)
        )
        office_metro[office_id] = metro

    agents: list[Row] = []
    agent_metro: dict[int, _Metro] = {}
    active_agents: list[int] = []
    for i in range(size.agents):
        agent_id = i + 1
        office_id = i % size.offices + 1
        metro = office_metro[office_id]
        first, last, first_ascii, last_ascii = _name(rng)
        # A few fixed agents make non-Latin SMS, a missing phone and an inactive agent certain.
        if agent_id == 2:
            first, first_ascii = "Zoë", "zoe"
        elif agent_id == 5:
            first, last, first_ascii, last_ascii = "秀英", "王", "xiuying", "wang"
        phone: str | None = _phone(rng, metro.area_codes)
        if agent_id == 4:
            phone = None
        is_active = not (agent_id == size.agents and size.agents > 1)
        slug = "".join(
            ch for ch in offices[office_id - 1][1].split(" - ")[0].lower() if ch.isalnum()
        )
        created = _between(rng, start - 2000 * day, start - 1100 * day)
        agents.append(
            (
                agent_id,
                office_id,
                first,
                last,
                f"{first_ascii}.{last_ascii}{agent_id}@{slug}.example.com",
                phone,
                is_active,
                created,
                _between(rng, created, before),
            )
        )
        agent_metro[agent_id] = metro
        if is_active:
            active_agents.append(agent_id)
    agent_ids = [a[0] for a in agents]

    # Contacts: skewed over agents, created over the last three years.
    people: list[Row] = []
    contacts_of: dict[int, list[int]] = {a: [] for a in agent_ids}
    owners = _weighted_owner(rng, agent_ids, size.contacts)
    span_us = int((before - (start - 1095 * day)) / timedelta(microseconds=1))
    oldest = start - 1095 * day
    deliberate_at: dict[int, Mapping[str, Any]] = {}
    if size.contacts:
        step = max(1, size.contacts // (len(_DELIBERATE_CONTACTS) + 1))
        for n, overrides in enumerate(_DELIBERATE_CONTACTS):
            position = min(size.contacts, (n + 1) * step)
            if position not in deliberate_at:
                deliberate_at[position] = overrides
    people_columns = COLUMNS["People"]
    for i, agent_id in enumerate(owners):
        people_id = i + 1
        created = oldest + timedelta(microseconds=rng.randrange(span_us))
        modified = _between(rng, created, before) if rng.random() < 0.3 else created
        row = _contact_row(rng, people_id, agent_id, agent_metro[agent_id], created, modified, 0.0)
        found = deliberate_at.get(people_id)
        if found:
            row = _apply_overrides(row, found, people_columns)
        people.append(row)
        contacts_of[agent_id].append(people_id)

    # Properties; a share sits under a deal, a few were deleted before the start.
    deleted_count = max(1, size.properties // 50) if size.properties else 0
    total_properties = size.properties + deleted_count
    prop_agents = _weighted_owner(rng, agent_ids, total_properties)
    prop_rows: dict[int, list[Any]] = {}
    for i, agent_id in enumerate(prop_agents):
        metro = agent_metro[agent_id]
        town, zip_code = _town(rng, metro)
        status = "Active" if rng.random() < 0.8 else "Withdrawn"
        created = _between(rng, start - 700 * day, before)
        prop_rows[i + 1] = [
            i + 1,
            agent_id,
            _street(rng),
            town,
            metro.state,
            zip_code,
            _price(rng, metro.median_price),
            status,
            created,
            _between(rng, created, before) if rng.random() < 0.4 else created,
        ]
    property_ids = list(prop_rows)
    shuffled = property_ids[:]
    rng.shuffle(shuffled)
    deal_props = shuffled[: size.deals]
    deleted_props = shuffled[size.deals : size.deals + deleted_count]

    deals: list[Row] = []
    all_people = [p[0] for p in people]
    for i, property_id in enumerate(deal_props):
        prop = prop_rows[property_id]
        agent_id = prop[1]
        posted = rng.random() < 0.65
        if posted:
            post_date = _between(rng, start - 365 * day, before)
            close = (post_date - timedelta(hours=rng.uniform(2, 96))).date()
            deal_created = datetime.combine(close, datetime.min.time()) - timedelta(
                days=rng.uniform(15, 60)
            )
            modified = post_date
        else:
            post_date = None
            deal_created = _between(rng, start - 45 * day, before)
            close = (deal_created + timedelta(days=rng.uniform(20, 50))).date()
            modified = _between(rng, deal_created, before)
        prop_created = deal_created - timedelta(days=rng.uniform(3, 120))
        prop[7] = "Sold" if posted else "Pending"
        prop[8] = prop_created
        prop[9] = post_date if post_date else deal_created
        sale = _money(float(prop[6]) * rng.uniform(0.94, 1.03) // 100 * 100)
        commission = _money(sale * Decimal(rng.choice(("0.025", "0.0275", "0.03"))))
        own = contacts_of[agent_id]
        buyer: int | None
        if rng.random() < 0.05 or not all_people:
            buyer = None
        elif own and rng.random() < 0.85:
            buyer = own[int(rng.random() * len(own))]
        else:
            buyer = all_people[int(rng.random() * len(all_people))]
        deals.append(
            (
                i + 1,
                property_id,
                agent_id,
                buyer,
                sale,
                commission,
                close,
                post_date,
                deal_created,
                modified,
            )
        )

    deleted_records: list[Row] = []
    for n, property_id in enumerate(sorted(deleted_props)):
        prop = prop_rows.pop(property_id)
        deleted_records.append((n + 1, "Property", property_id, _between(rng, prop[9], before)))

    catalog_modified = start - timedelta(days=30)
    tables: dict[str, list[Row]] = {
        "Office": offices,
        "Agent": agents,
        "People": people,
        "Property": [tuple(p) for p in prop_rows.values()],
        "Deal": deals,
        "DeletedRecord": deleted_records,
        "NotificationTemplate": template_rows(catalog_modified),
        "NotificationSchedule": schedule_rows(catalog_modified),
    }
    logger.debug("generated base dataset %s with seed %s", size, seed)
    return Dataset(size=size, seed=seed, start=start, tables=tables)


# -- change stream ------------------------------------------------------------------------------
class _Pool:
    """Ids with O(1) add, remove and uniform choice, in a deterministic order."""

    def __init__(self, ids: Iterable[int] = ()):
        self._items: list[int] = []
        self._index: dict[int, int] = {}
        for item in ids:
            self.add(item)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item: object) -> bool:
        return item in self._index

    def add(self, item: int) -> None:
        if item not in self._index:
            self._index[item] = len(self._items)
            self._items.append(item)

    def remove(self, item: int) -> None:
        pos = self._index.pop(item, None)
        if pos is None:
            return
        last = self._items.pop()
        if pos < len(self._items):
            self._items[pos] = last
            self._index[last] = pos

    def choice(self, rng: random.Random) -> int | None:
        if not self._items:
            return None
        return self._items[int(rng.random() * len(self._items))]


class _World:
    """The current state of the mutable tables while changes are drawn."""

    def __init__(self, base: Dataset, rng: random.Random):
        self.rng = rng
        self.agent_metro: dict[int, _Metro] = {}
        metros = {o[0]: _METROS[(o[0] - 1) % len(_METROS)] for o in base.rows("Office")}
        for agent in base.rows("Agent"):
            self.agent_metro[agent[0]] = metros[agent[1]]
        self.active_agents = [a[0] for a in base.rows("Agent") if a[6]] or [
            a[0] for a in base.rows("Agent")
        ]
        self.properties = {
            r[0]: dict(zip(COLUMNS["Property"], r, strict=True)) for r in base.rows("Property")
        }
        self.deals = {r[0]: dict(zip(COLUMNS["Deal"], r, strict=True)) for r in base.rows("Deal")}
        self.people = {
            r[0]: dict(zip(COLUMNS["People"], r, strict=True)) for r in base.rows("People")
        }
        self.contacts_of: dict[int, list[int]] = {a: [] for a in self.agent_metro}
        for pid, person in self.people.items():
            self.contacts_of.setdefault(person["AgentID"], []).append(pid)
        with_deal = {d["PropertyID"] for d in self.deals.values()}
        self.live = _Pool(self.properties)
        self.active = _Pool(
            p for p, r in self.properties.items() if r["Status"] == "Active" and p not in with_deal
        )
        self.withdrawn = _Pool(
            p
            for p, r in self.properties.items()
            if r["Status"] == "Withdrawn" and p not in with_deal
        )
        self.unposted = _Pool(d for d, r in self.deals.items() if r["PostDate"] is None)
        self.contacts = _Pool(self.people)
        deleted = base.rows("DeletedRecord")
        self.next_id = {
            "Property": max([0, *self.properties, *(d[2] for d in deleted)]) + 1,
            "Deal": max([0, *self.deals]) + 1,
            "People": max([0, *self.people]) + 1,
            "DeletedRecord": max([0, *(d[0] for d in deleted)]) + 1,
        }

    def take_id(self, table: str) -> int:
        value = int(self.next_id[table])
        self.next_id[table] = value + 1
        return value

    def update(
        self,
        table: str,
        rows: dict[int, dict[str, Any]],
        key: int,
        values: Mapping[str, Any],
        kind: ChangeKind,
        at: datetime,
    ) -> Update:
        row = rows[key]
        old = {c: row[c] for c in values}
        row.update(values)
        return Update(table=table, key=key, values=dict(values), old=old, kind=kind, at=at)

    # Each handler returns the operations of one business event at instant ``t``.
    def new_listing(self, t: datetime) -> list[Operation]:
        rng = self.rng
        agent_id = self.active_agents[int(rng.random() * len(self.active_agents))]
        metro = self.agent_metro[agent_id]
        town, zip_code = _town(rng, metro)
        pid = self.take_id("Property")
        values = (
            pid,
            agent_id,
            _street(rng),
            town,
            metro.state,
            zip_code,
            _price(rng, metro.median_price),
            "Active",
            t,
            t,
        )
        row = dict(zip(COLUMNS["Property"], values, strict=True))
        self.properties[pid] = dict(row)
        self.live.add(pid)
        self.active.add(pid)
        return [Insert("Property", row, ChangeKind.NEW_LISTING, t)]

    def price_change(self, t: datetime, down: bool) -> list[Operation]:
        rng = self.rng
        pid = self.active.choice(rng)
        if pid is None:
            return []
        old = self.properties[pid]["ListPrice"]
        factor = 1 - rng.uniform(0.02, 0.10) if down else 1 + rng.uniform(0.01, 0.05)
        new = Decimal(int(old * Decimal(str(factor)) // 1000) * 1000).quantize(_CENT)
        if down and new >= old:
            new = (old - 1000).quantize(_CENT)
        if not down and new <= old:
            new = (old + 1000).quantize(_CENT)
        kind = ChangeKind.PRICE_DROP if down else ChangeKind.PRICE_INCREASE
        return [
            self.update(
                "Property", self.properties, pid, {"ListPrice": new, "ModifiedDate": t}, kind, t
            )
        ]

    def property_edit(self, t: datetime) -> list[Operation]:
        rng = self.rng
        pid = self.live.choice(rng)
        if pid is None:
            return []
        row = self.properties[pid]
        values: dict[str, Any]
        if pid in self.withdrawn and rng.random() < 0.6:
            values = {"Status": "Active"}
            self.withdrawn.remove(pid)
            self.active.add(pid)
        elif pid in self.active and rng.random() < 0.4:
            values = {"Status": "Withdrawn"}
            self.active.remove(pid)
            self.withdrawn.add(pid)
        else:
            metro = self.agent_metro[row["AgentID"]]
            town, zip_code = _town(rng, metro)
            if town == row["City"]:
                values = {"Zip": zip_code}
            else:
                values = {"City": town, "Zip": zip_code}
        values["ModifiedDate"] = t
        return [self.update("Property", self.properties, pid, values, ChangeKind.PROPERTY_EDIT, t)]

    def new_deal(self, t: datetime) -> list[Operation]:
        rng = self.rng
        pid = self.active.choice(rng)
        if pid is None:
            return []
        prop = self.properties[pid]
        agent_id = prop["AgentID"]
        sale = _money(float(prop["ListPrice"]) * rng.uniform(0.94, 1.03) // 100 * 100)
        commission = _money(sale * Decimal(rng.choice(("0.025", "0.0275", "0.03"))))
        own = self.contacts_of.get(agent_id) or []
        buyer = own[int(rng.random() * len(own))] if own and rng.random() < 0.9 else None
        deal_id = self.take_id("Deal")
        close = (t + timedelta(days=rng.uniform(20, 50))).date()
        values = (deal_id, pid, agent_id, buyer, sale, commission, close, None, t, t)
        row = dict(zip(COLUMNS["Deal"], values, strict=True))
        self.deals[deal_id] = dict(row)
        self.unposted.add(deal_id)
        self.active.remove(pid)
        pending = self.update(
            "Property",
            self.properties,
            pid,
            {"Status": "Pending", "ModifiedDate": t},
            ChangeKind.PROPERTY_EDIT,
            t,
        )
        return [Insert("Deal", row, ChangeKind.NEW_DEAL, t), pending]

    def deal_posted(self, t: datetime) -> list[Operation]:
        deal_id = self.unposted.choice(self.rng)
        if deal_id is None:
            return []
        self.unposted.remove(deal_id)
        deal = self.deals[deal_id]
        values: dict[str, Any] = {"PostDate": t, "ModifiedDate": t}
        if deal["CloseDate"] is None or deal["CloseDate"] > t.date():
            values = {"CloseDate": t.date(), **values}
        ops: list[Operation] = [
            self.update("Deal", self.deals, deal_id, values, ChangeKind.DEAL_POSTED, t)
        ]
        pid = deal["PropertyID"]
        if pid in self.properties and self.properties[pid]["Status"] != "Sold":
            ops.append(
                self.update(
                    "Property",
                    self.properties,
                    pid,
                    {"Status": "Sold", "ModifiedDate": t},
                    ChangeKind.PROPERTY_EDIT,
                    t,
                )
            )
        return ops

    def new_contact(self, t: datetime) -> list[Operation]:
        rng = self.rng
        agent_id = self.active_agents[int(rng.random() * len(self.active_agents))]
        pid = self.take_id("People")
        values = _contact_row(rng, pid, agent_id, self.agent_metro[agent_id], t, t, 0.06)
        row = dict(zip(COLUMNS["People"], values, strict=True))
        self.people[pid] = dict(row)
        self.contacts_of.setdefault(agent_id, []).append(pid)
        self.contacts.add(pid)
        return [Insert("People", row, ChangeKind.NEW_CONTACT, t)]

    def contact_update(self, t: datetime) -> list[Operation]:
        rng = self.rng
        pid = self.contacts.choice(rng)
        if pid is None:
            return []
        person = self.people[pid]
        metro = self.agent_metro[person["AgentID"]]
        what = int(rng.random() * 5)
        values: dict[str, Any]
        if what == 0:
            domain = _CONTACT_DOMAINS[int(rng.random() * len(_CONTACT_DOMAINS))]
            values = {"Email": f"contact{pid}.{rng.randrange(1000)}@{domain}"}
        elif what == 1:
            values = {"MobilePhone": _phone(rng, metro.area_codes)}
        elif what == 2:
            values = {"EmailOptIn": not person["EmailOptIn"]}
        elif what == 3:
            values = {"SmsOptIn": not person["SmsOptIn"]}
        else:
            values = {"LastName": _LAST_NAMES[int(rng.random() * len(_LAST_NAMES))][0]}
        values["ModifiedDate"] = t
        return [self.update("People", self.people, pid, values, ChangeKind.CONTACT_UPDATE, t)]

    def listing_removed(self, t: datetime) -> list[Operation]:
        rng = self.rng
        pool = self.withdrawn if len(self.withdrawn) and rng.random() < 0.4 else self.active
        pid = pool.choice(rng)
        if pid is None:
            return []
        self.active.remove(pid)
        self.withdrawn.remove(pid)
        self.live.remove(pid)
        row = self.properties.pop(pid)
        return [
            Delete(
                "Property", pid, row, self.take_id("DeletedRecord"), ChangeKind.LISTING_REMOVED, t
            )
        ]


def generate_changes(
    base: Dataset,
    seed: int,
    start: datetime,
    windows: int,
    window_minutes: int = 5,
    intensity: float = 1.0,
    rates: ChangeRates | None = None,
) -> list[WindowChanges]:
    """Generate consecutive windows of changes to ``base``.

    Window ``i`` is ``[start + i*window_minutes, start + (i+1)*window_minutes)``. Within a
    window, events are drawn at random instants strictly inside it and applied in time order to
    the evolving state, so a listing inserted early in a window may already drop its price later
    in the same window. Every update sets ModifiedDate to its instant; inserting a deal also
    marks its property Pending and posting one marks it Sold (same instant).

    Args:
        base: The base dataset the changes apply to.
        seed: Seed of the random generator; the same arguments always give the same changes.
        start: Naive UTC start of the first window; not before ``base.start``.
        windows: Number of windows.
        window_minutes: Length of each window.
        intensity: Multiplier of ``rates``.
        rates: Mean events per window; defaults to ``ChangeRates.for_size(base.size)``.

    Returns:
        One ``WindowChanges`` per window, in time order.
    """
    if start.tzinfo is not None:
        raise ValueError("start must be a naive UTC datetime")
    if start < base.start:
        raise ValueError(f"changes must start at or after the base dataset's start {base.start}")
    if windows < 0 or window_minutes <= 0:
        raise ValueError("windows must be >= 0 and window_minutes > 0")
    rng = random.Random(f"darwin-changes-{seed}")
    world = _World(base, rng)
    rates = (rates or ChangeRates.for_size(base.size)).scaled(intensity)
    handlers: list[tuple[float, Callable[[datetime], list[Operation]]]] = [
        (rates.new_listings, world.new_listing),
        (rates.price_drops, lambda t: world.price_change(t, down=True)),
        (rates.price_increases, lambda t: world.price_change(t, down=False)),
        (rates.property_edits, world.property_edit),
        (rates.new_deals, world.new_deal),
        (rates.deals_posted, world.deal_posted),
        (rates.new_contacts, world.new_contact),
        (rates.contact_updates, world.contact_update),
        (rates.listings_removed, world.listing_removed),
    ]
    length = timedelta(minutes=window_minutes)
    span_us = int(length / timedelta(microseconds=1))
    result: list[WindowChanges] = []
    for w in range(windows):
        w_start = start + w * length
        plan: list[Callable[[datetime], list[Operation]]] = []
        for mean, handler in handlers:
            count = int(mean) + (1 if rng.random() < mean - int(mean) else 0)
            plan.extend([handler] * count)
        rng.shuffle(plan)
        offsets = sorted(rng.randrange(1, span_us) for _ in plan)
        operations: list[Operation] = []
        for handler, offset in zip(plan, offsets, strict=True):
            operations.extend(handler(w_start + timedelta(microseconds=offset)))
        result.append(
            WindowChanges(start=w_start, end=w_start + length, operations=tuple(operations))
        )
    return result


# -- writing ------------------------------------------------------------------------------------
def _converter(db: Database, kind: str | None) -> Callable[[Any], Any] | None:
    if kind == TIMESTAMP:
        return db.ts
    if db.dialect != "sqlite":
        return None
    if kind == DATE:
        return lambda v: v.isoformat() if isinstance(v, date) else v
    if kind == MONEY:
        # sqlite3 cannot bind Decimal; NUMERIC affinity turns the text back into a number.
        return lambda v: None if v is None else str(v)
    if kind == BOOL:
        return lambda v: None if v is None else int(bool(v))
    return None


def _bind_row(db: Database, table: str, columns: Sequence[str], row: Sequence[Any]) -> list[Any]:
    kinds = COLUMN_KINDS[table]
    out = []
    for column, value in zip(columns, row, strict=True):
        convert = _converter(db, kinds.get(column))
        out.append(convert(value) if convert else value)
    return out


def _bind_rows(db: Database, table: str, rows: Iterable[Sequence[Any]]) -> list[list[Any]]:
    columns = COLUMNS[table]
    kinds = COLUMN_KINDS[table]
    converters = [(i, _converter(db, kinds.get(c))) for i, c in enumerate(columns)]
    active = [(i, f) for i, f in converters if f is not None]
    out = []
    for row in rows:
        values = list(row)
        for i, convert in active:
            values[i] = convert(values[i])
        out.append(values)
    return out


def _insert(db: Database, table: str, rows: Sequence[Sequence[Any]]) -> int:
    if not rows:
        return 0
    columns = [db.quote(c) for c in COLUMNS[table]]
    return db.insert_rows(db.quote(table), columns, _bind_rows(db, table, rows))


def create_schema(db: Database) -> None:
    """Create the sample darwin.Cloud tables and indexes (absent ones only) and commit."""
    db.run_script(sqlfiles.read_sample_schema(db.dialect))


def write_base(db: Database, dataset: Dataset) -> dict[str, int]:
    """Insert every row of ``dataset`` into empty tables and commit.

    Returns:
        Rows written per table.
    """
    written: dict[str, int] = {}
    for table in TABLES:
        written[table] = _insert(db, table, dataset.rows(table))
    db.commit()
    logger.info("wrote base dataset to %s: %s", db, written)
    return written


def apply_window(db: Database, window: WindowChanges) -> dict[str, int]:
    """Apply one window's operations in a single transaction.

    Inserts go first, batched per table, then updates in time order, then deletes with their
    DeletedRecord rows; the ids are unique, so this order ends in the same state as applying
    the operations one by one.

    Returns:
        Operations applied per ``"<Table>.<insert|update|delete>"``.
    """
    counts: dict[str, int] = {}
    inserts: dict[str, list[Row]] = {}
    updates: list[Update] = []
    deletes: list[Delete] = []
    for op in window.operations:
        if isinstance(op, Insert):
            inserts.setdefault(op.table, []).append(tuple(op.row[c] for c in COLUMNS[op.table]))
            name = f"{op.table}.insert"
        elif isinstance(op, Update):
            updates.append(op)
            name = f"{op.table}.update"
        else:
            deletes.append(op)
            name = f"{op.table}.delete"
        counts[name] = counts.get(name, 0) + 1
    try:
        for table in TABLES:
            _insert(db, table, inserts.get(table, []))
        for op in updates:
            columns = list(op.values)
            assignments = ", ".join(f"{db.quote(c)} = ?" for c in columns)
            sql = (
                f"UPDATE {db.quote(op.table)} SET {assignments} "
                f"WHERE {db.quote(KEY_COLUMNS[op.table])} = ?"
            )
            params = _bind_row(db, op.table, columns, [op.values[c] for c in columns])
            db.execute(sql, [*params, op.key]).close()
        for op in deletes:
            sql = f"DELETE FROM {db.quote(op.table)} WHERE {db.quote(KEY_COLUMNS[op.table])} = ?"
            db.execute(sql, [op.key]).close()
        _insert(db, "DeletedRecord", [op.deleted_record() for op in deletes])
        db.commit()
    except Exception:
        db.rollback()
        raise
    return dict(sorted(counts.items()))


def seed_database(
    db: Database,
    size: SeedSize,
    seed: int,
    start: datetime,
    windows: int,
    window_minutes: int = 5,
    intensity: float = 1.0,
    on_window: Callable[["WindowSummary"], None] | None = None,
) -> SeedSummary:
    """Create the schema, write the base dataset and apply ``windows`` windows of changes.

    The tables must be empty (or absent). Windows start at ``start``. ``on_window`` is told
    of each window once it is applied (a progress bar).

    Returns:
        Counts of what was written, per table and per window.
    """
    create_schema(db)
    base = generate_base(size, seed, start)
    base_rows = write_base(db, base)
    summaries = []
    for window in generate_changes(base, seed, start, windows, window_minutes, intensity):
        by_operation = apply_window(db, window)
        summaries.append(
            WindowSummary(
                start=window.start,
                end=window.end,
                by_kind=dict(sorted(window.counts().items())),
                by_operation=by_operation,
            )
        )
        if on_window is not None:
            on_window(summaries[-1])
    logger.info("seeded %s: %d base tables, %d windows", db, len(base_rows), len(summaries))
    return SeedSummary(base_rows=base_rows, windows=tuple(summaries))
