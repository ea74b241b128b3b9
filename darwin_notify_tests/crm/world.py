"""A second source schema for the tests: a brokerage CRM shaped unlike the sample darwin.Cloud.

Schema-qualified tables (``crm.Listing``, ``crm.Client``, ``crm.Broker``, ``crm.Sale``), other
keys (``ListingNo``; showings keyed by the pair ``(ListingNo, ShowingSeq)``), other watch columns
(``CreatedAt``, ``ChangedAt``), deletions by a soft-delete column (``crm.Listing.DeletedAt``,
``crm.Showing.CancelledAt``) or flag (``crm.Client.Removed``, a recipient table), schedules and
templates in ``crm.Alert`` and ``crm.AlertLayout`` with other column names, and a sales ledger
that counts a sale only once its ``Stage`` is ``Closed``.

Everything here is deterministic for a seed: a base state and, per window, a list of
operations (insert, update, soft delete) with their timestamps, which ``apply_window`` writes to a
SQLite file or the PostgreSQL primary, and which the oracle replays on dictionaries.
"""

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from darwin_notify_assets.storage.db import Database

HERE = Path(__file__).resolve().parent
MODEL = HERE / "crm.model.yaml"
START = datetime(2026, 5, 4, 9, 0)
WINDOW = timedelta(minutes=5)

KEYS: dict[str, str | tuple[str, ...]] = {
    "crm.Branch": "BranchNo",
    "crm.Broker": "BrokerNo",
    "crm.Client": "ClientNo",
    "crm.Listing": "ListingNo",
    "crm.Sale": "SaleNo",
    "crm.Showing": ("ListingNo", "ShowingSeq"),
    "crm.Alert": "AlertNo",
    "crm.AlertLayout": "LayoutNo",
}
SHOWING = "crm.Showing"
# What a soft deletion sets, per table: a timestamp, or a flag beside ChangedAt.
REMOVED_AT = {"crm.Listing": "DeletedAt", SHOWING: "CancelledAt"}
REMOVED_FLAG = {"crm.Client": "Removed"}
# The join table of listings and the clients interested in them (no key of its own).
INTEREST = "crm.ListingInterest"
# Written in this order (a row's references first).
TABLES = (*KEYS, INTEREST)

LAYOUTS: tuple[dict[str, Any], ...] = (
    {
        "LayoutNo": 10,
        "Title": "Fresh listing",
        "MailSubject": "New on the market: {{ Street }}",
        "MailHtml": "<p>Hello {{ recipient.GivenName }}, {{ Street }} in {{ Town }} is listed at "
        "{{ AskingPrice|money }} by {{ agent.GivenName }} ({{ office.BranchName }}).</p>",
        "MailText": "Hello {{ recipient.GivenName }}, {{ Street }} in {{ Town }} is listed at "
        "{{ AskingPrice|money }} by {{ agent.GivenName }} ({{ office.BranchName }}).",
        "TextMessage": None,
    },
    {
        "LayoutNo": 11,
        "Title": "Price cut",
        "MailSubject": None,
        "MailHtml": None,
        "MailText": None,
        "TextMessage": "{{ Street }}: {{ change.old.AskingPrice|money }} -> {{ AskingPrice|money }}",
    },
    {
        "LayoutNo": 12,
        "Title": "Sale closed",
        "MailSubject": "Sale {{ SaleNo }} of {{ listing.Street }} closed",
        "MailHtml": "<p>{{ agent.GivenName }}: {{ totals.units_ytd }} closed sales, "
        "{{ totals.volume_ytd|money }} this year; {{ totals.active_listings }} open.</p>",
        "MailText": "{{ agent.GivenName }}: {{ totals.units_ytd }} closed sales, "
        "{{ totals.volume_ytd|money }} this year; {{ totals.active_listings }} open.",
        "TextMessage": None,
    },
    {
        "LayoutNo": 13,
        "Title": "Welcome",
        "MailSubject": "Welcome, {{ GivenName }}",
        "MailHtml": "<p>Welcome, {{ GivenName }}. {{ agent.GivenName }} will be in touch.</p>",
        "MailText": "Welcome, {{ GivenName }}. {{ agent.GivenName }} will be in touch.",
        "TextMessage": None,
    },
    {
        "LayoutNo": 15,
        "Title": "Price cut for you",
        "MailSubject": "Price cut: {{ Street }}",
        "MailHtml": "<p>{{ recipient.GivenName }}, {{ Street }} is now {{ AskingPrice|money }}.</p>",
        "MailText": "{{ recipient.GivenName }}, {{ Street }} is now {{ AskingPrice|money }}.",
        "TextMessage": None,
    },
    {
        "LayoutNo": 16,
        "Title": "Showing booked",
        "MailSubject": "Showing #{{ ShowingSeq }} of listing {{ ListingNo }}",
        "MailHtml": "<p>{{ recipient.GivenName }}, showing #{{ ShowingSeq }} of listing "
        "{{ ListingNo }} at {{ listing.Street }} ({{ Note }}) is booked with "
        "{{ agent.GivenName }}.</p>",
        "MailText": "{{ recipient.GivenName }}, showing #{{ ShowingSeq }} of listing "
        "{{ ListingNo }} at {{ listing.Street }} ({{ Note }}) is booked with "
        "{{ agent.GivenName }}.",
        "TextMessage": None,
    },
    {
        "LayoutNo": 17,
        "Title": "Showing confirmed",
        "MailSubject": None,
        "MailHtml": None,
        "MailText": None,
        "TextMessage": "Showing #{{ ShowingSeq }} of listing {{ ListingNo }} confirmed: {{ Note }}",
    },
    {
        "LayoutNo": 18,
        "Title": "Showing cancelled",
        "MailSubject": "Showing #{{ ShowingSeq }} of listing {{ ListingNo }} cancelled",
        "MailHtml": "<p>Showing #{{ ShowingSeq }} of listing {{ ListingNo }} at "
        "{{ listing.Street }} ({{ Note }}) was cancelled.</p>",
        "MailText": "Showing #{{ ShowingSeq }} of listing {{ ListingNo }} at "
        "{{ listing.Street }} ({{ Note }}) was cancelled.",
        "TextMessage": None,
    },
    {
        "LayoutNo": 14,
        "Title": "Withdrawn",
        "MailSubject": "{{ Street }} was withdrawn",
        "MailHtml": "<p>{{ Street }} ({{ Town }}) is off the market.</p>",
        "MailText": "{{ Street }} ({{ Town }}) is off the market.",
        "TextMessage": None,
    },
)

ALERTS: tuple[dict[str, Any], ...] = (
    {
        "AlertNo": 21,
        "Title": "Fresh listing to the broker's clients",
        "OnTable": "crm.Listing",
        "OnEvent": "insert",
        "WatchCol": "CreatedAt",
        "ColsChanged": None,
        "Filter": [{"column": "State", "op": "eq", "value": "Open"}],
        "Via": "email",
        "Who": "agent_contacts",
        "LayoutNo": 10,
        "Once": "record",
        "WithTotals": False,
        "Enabled": True,
    },
    {
        "AlertNo": 22,
        "Title": "Price cut to the broker",
        "OnTable": "crm.Listing",
        "OnEvent": "update",
        "WatchCol": "ChangedAt",
        "ColsChanged": "AskingPrice",
        "Filter": [{"column": "AskingPrice", "op": "decreased"}],
        "Via": "sms",
        "Who": "agent",
        "LayoutNo": 11,
        "Once": "change",
        "WithTotals": False,
        "Enabled": True,
    },
    {
        "AlertNo": 23,
        "Title": "Sale closed, with totals",
        "OnTable": "crm.Sale",
        "OnEvent": "update",
        "WatchCol": "ChangedAt",
        "ColsChanged": "Stage",
        "Filter": [{"column": "Stage", "op": "eq", "value": "Closed"}],
        "Via": "email",
        "Who": "agent",
        "LayoutNo": 12,
        "Once": "record",
        "WithTotals": True,
        "Enabled": True,
    },
    {
        "AlertNo": 24,
        "Title": "Welcome a client",
        "OnTable": "crm.Client",
        "OnEvent": "insert",
        "WatchCol": "CreatedAt",
        "ColsChanged": None,
        "Filter": None,
        "Via": "email",
        "Who": "record_contact",
        "LayoutNo": 13,
        "Once": "record",
        "WithTotals": False,
        "Enabled": True,
    },
    {
        "AlertNo": 25,
        "Title": "Listing withdrawn",
        "OnTable": "crm.Listing",
        "OnEvent": "delete",
        "WatchCol": None,
        "ColsChanged": None,
        "Filter": None,
        "Via": "email",
        "Who": "agent",
        "LayoutNo": 14,
        "Once": "change",
        "WithTotals": False,
        "Enabled": True,
    },
    {
        "AlertNo": 27,
        "Title": "Price cut to the clients interested in the listing",
        "OnTable": "crm.Listing",
        "OnEvent": "update",
        "WatchCol": "ChangedAt",
        "ColsChanged": "AskingPrice",
        "Filter": [{"column": "AskingPrice", "op": "decreased"}],
        "Via": "email",
        "Who": "record_contacts",
        "LayoutNo": 15,
        "Once": "change",
        "WithTotals": False,
        "Enabled": True,
    },
    {
        "AlertNo": 28,
        "Title": "Showing booked to its client",
        "OnTable": "crm.Showing",
        "OnEvent": "insert",
        "WatchCol": "CreatedAt",
        "ColsChanged": None,
        "Filter": None,
        "Via": "email",
        "Who": "record_contact",
        "LayoutNo": 16,
        "Once": "record",
        "WithTotals": False,
        "Enabled": True,
    },
    {
        "AlertNo": 29,
        "Title": "Showing confirmed to the broker",
        "OnTable": "crm.Showing",
        "OnEvent": "update",
        "WatchCol": "ChangedAt",
        "ColsChanged": "Status",
        "Filter": [{"column": "Status", "op": "eq", "value": "Confirmed"}],
        "Via": "sms",
        "Who": "agent",
        "LayoutNo": 17,
        "Once": "change",
        "WithTotals": False,
        "Enabled": True,
    },
    {
        "AlertNo": 30,
        "Title": "Showing cancelled to the broker",
        "OnTable": "crm.Showing",
        "OnEvent": "delete",
        "WatchCol": None,
        "ColsChanged": None,
        "Filter": None,
        "Via": "email",
        "Who": "agent",
        "LayoutNo": 18,
        "Once": "change",
        "WithTotals": False,
        "Enabled": True,
    },
    {
        "AlertNo": 26,
        "Title": "Broker edited (disabled)",
        "OnTable": "crm.Broker",
        "OnEvent": "update",
        "WatchCol": "ChangedAt",
        "ColsChanged": None,
        "Filter": None,
        "Via": "email",
        "Who": "agent",
        "LayoutNo": 13,
        "Once": "change",
        "WithTotals": False,
        "Enabled": False,
    },
)


@dataclass(frozen=True)
class Op:
    """One write: ``insert`` (``values`` is the whole row), ``update`` (the columns it sets),
    or ``delete`` (a soft deletion at ``at``: ``REMOVED_AT`` or ``REMOVED_FLAG``; a showing's
    is its cancellation). ``key`` is a showing's ``(ListingNo, ShowingSeq)``."""

    kind: str
    table: str
    key: Any
    at: datetime
    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class WindowOps:
    start: datetime
    ops: list[Op]


@dataclass
class World:
    """The base rows by table and key, and the operations of each window."""

    base: dict[str, dict[Any, dict[str, Any]]]
    windows: list[WindowOps]


def _phone(rng: random.Random, good: bool) -> str:
    return f"+1617555{rng.randrange(10000):04d}" if good else "555-01"


def _email(name: str, n: int, good: bool) -> str:
    return f"{name.lower()}.{n}@example.org" if good else f"{name.lower()}-at-nowhere"


GIVEN = ("Ada", "Bo", "Cy", "Di", "Ed", "Fay", "Gus", "Hal", "Ivy", "Jo", "Kit", "Lu")
STREETS = ("Elm St", "Oak Ave", "Pine Rd", "Birch Ln", "Cedar Ct", "Maple Dr")
TOWNS = ("Salem", "Lynn", "Quincy", "Newton")


def generate(seed: int = 11, windows: int = 4) -> World:
    rng = random.Random(seed)
    t0 = START - timedelta(days=30)
    base: dict[str, dict[Any, dict[str, Any]]] = {t: {} for t in TABLES}
    for no, (name, tz) in enumerate(
        (("Harbor", "America/New_York"), ("Prairie", "America/Chicago")), 1
    ):
        base["crm.Branch"][no] = {
            "BranchNo": no,
            "BranchName": name,
            "TZ": tz,
            "CreatedAt": t0,
            "ChangedAt": t0,
        }
    # Broker 4 is inactive, broker 3 has no valid mobile number.
    for no in range(1, 5):
        given = GIVEN[no]
        base["crm.Broker"][no] = {
            "BrokerNo": no,
            "BranchNo": 1 + no % 2,
            "GivenName": given,
            "FamilyName": "Broker",
            "EmailAddr": _email(given, no, True),
            "CellNumber": _phone(rng, no != 3),
            "Active": 0 if no == 4 else 1,
            "CreatedAt": t0,
            "ChangedAt": t0,
        }
    for no in range(1, 41):
        base["crm.Client"][no] = _client(rng, no, t0)
    for no in range(1, 21):
        base["crm.Listing"][no] = _listing(rng, no, t0)
    for no in range(1, 9):
        listing = base["crm.Listing"][no]
        closed = no <= 3
        base["crm.Sale"][no] = {
            "SaleNo": no,
            "BrokerNo": listing["BrokerNo"],
            "ListingNo": no,
            "BuyerClientNo": rng.randrange(1, 41),
            "Price": listing["AskingPrice"],
            "Fee": (listing["AskingPrice"] * Decimal("0.03")).quantize(Decimal("0.01")),
            "Stage": "Closed" if closed else "Pending",
            # A pending sale's CloseDate is the planned one: only Stage says it counts. Sale 1
            # closed at 02:00 UTC on January 1: in New York, the CRM's year, the year before.
            "CloseDate": (
                (datetime(START.year, 1, 1, 2, 0) if no == 1 else t0)
                if closed
                else START + timedelta(days=20)
            ),
            "CreatedAt": t0,
            "ChangedAt": t0,
        }
    pairs: set[tuple[int, int]] = set()
    for listing_no in range(1, 21):
        for client_no in rng.sample(range(1, 41), rng.randrange(0, 4)):
            pairs.add((listing_no, client_no))
    for n, (listing_no, client_no) in enumerate(sorted(pairs), 1):
        base[INTEREST][n] = {"ListingNo": listing_no, "ClientNo": client_no, "CreatedAt": t0}
    for layout in LAYOUTS:
        base["crm.AlertLayout"][layout["LayoutNo"]] = dict(layout)
    for alert in ALERTS:
        base["crm.Alert"][alert["AlertNo"]] = {**alert, "Filter": _json(alert["Filter"])}
    changes = _changes(rng, base, windows, pairs)
    # Showings draw from a generator of their own, so the other tables' data stay as they were.
    _showings(random.Random(seed + 1000), base, changes)
    return World(base, changes)


def _json(value: Any) -> str | None:
    return json.dumps(value) if value is not None else None


def _client(rng: random.Random, no: int, at: datetime) -> dict[str, Any]:
    given = rng.choice(GIVEN)
    return {
        "ClientNo": no,
        "BrokerNo": rng.randrange(1, 5),
        "GivenName": given,
        "FamilyName": "Client",
        "EmailAddr": _email(given, no, rng.random() > 0.15),
        "CellNumber": _phone(rng, True),
        "MailOK": int(rng.random() > 0.3),
        "TextOK": int(rng.random() > 0.5),
        "Removed": 0,
        "CreatedAt": at,
        "ChangedAt": at,
    }


def _listing(rng: random.Random, no: int, at: datetime) -> dict[str, Any]:
    return {
        "ListingNo": no,
        "BrokerNo": rng.randrange(1, 5),
        "Street": f"{rng.randrange(1, 300)} {rng.choice(STREETS)}",
        "Town": rng.choice(TOWNS),
        "AskingPrice": Decimal(rng.randrange(200, 900) * 1000),
        "State": "Open" if rng.random() > 0.2 else "Pending",
        "CreatedAt": at,
        "ChangedAt": at,
    }


def _changes(
    rng: random.Random,
    base: Mapping[str, Mapping[int, Mapping[str, Any]]],
    windows: int,
    pairs: set[tuple[int, int]],
) -> list[WindowOps]:
    listings = {k: dict(v) for k, v in base["crm.Listing"].items()}
    clients = {k: dict(v) for k, v in base["crm.Client"].items()}
    sales = {k: dict(v) for k, v in base["crm.Sale"].items()}
    next_no = {"crm.Listing": 1000, "crm.Client": 1000, "crm.Sale": 1000}
    out = []
    for w in range(windows):
        start = START + w * WINDOW
        ops: list[Op] = []
        # Each record is touched at most once a window, except the double price cut below.
        busy: set[tuple[str, int]] = set()
        lowered: set[int] = set()

        def at(second: int, start: datetime = start) -> datetime:
            return start + timedelta(seconds=second, microseconds=rng.randrange(1000, 999000))

        def pick(table: str, pool: Mapping[int, Any], busy: set[tuple[str, int]] = busy) -> int:
            free = sorted(k for k in pool if (table, k) not in busy)
            key = rng.choice(free)
            busy.add((table, key))
            return key

        for _ in range(2):
            no = next_no["crm.Listing"] = next_no["crm.Listing"] + 1
            row = _listing(rng, no, at(rng.randrange(5, 120)))
            ops.append(Op("insert", "crm.Listing", no, row["CreatedAt"], row))
            busy.add(("crm.Listing", no))
        for down in (True, True, False):
            no = pick("crm.Listing", listings)
            factor = Decimal("0.95") if down else Decimal("1.04")
            price = (listings[no]["AskingPrice"] * factor).quantize(Decimal("1"))
            t = at(rng.randrange(30, 200))
            ops.append(Op("update", "crm.Listing", no, t, {"AskingPrice": price, "ChangedAt": t}))
            listings[no]["AskingPrice"] = price
            if down:
                lowered.add(no)
            if down and w % 2 == 0:
                # Two cuts inside one window are seen as one change, to the latest price.
                price = (price * factor).quantize(Decimal("1"))
                t2 = t + timedelta(seconds=30)
                ops.append(
                    Op("update", "crm.Listing", no, t2, {"AskingPrice": price, "ChangedAt": t2})
                )
                listings[no]["AskingPrice"] = price
        no = pick("crm.Listing", listings)
        t = at(rng.randrange(30, 250))
        ops.append(Op("update", "crm.Listing", no, t, {"Street": "1 Renamed Way", "ChangedAt": t}))
        # New interest, some of it in listings whose price is cut in this window.
        cut = sorted(op.key for op in ops if "AskingPrice" in op.values)
        for listing_no in (cut[0], rng.choice(sorted(listings))):
            client_no = rng.randrange(1, 41)
            if (listing_no, client_no) in pairs:
                continue
            pairs.add((listing_no, client_no))
            t = at(rng.randrange(5, 250))
            row = {"ListingNo": listing_no, "ClientNo": client_no, "CreatedAt": t}
            ops.append(Op("insert", INTEREST, len(pairs) + 10_000, t, row))
        # One client is removed (the soft-delete flag) each window, chosen among those this
        # window's alerts address: interested in a cut listing, or a client of a new
        # listing's broker; preferably one who takes email, so that a send is at stake.
        brokers = {
            op.values["BrokerNo"]
            for op in ops
            if op.kind == "insert" and op.table == "crm.Listing" and op.values["State"] == "Open"
        }
        addressed = {c for listing_no, c in pairs if listing_no in lowered}
        addressed |= {k for k, c in clients.items() if c["BrokerNo"] in brokers}
        addressed &= set(clients)
        if addressed:
            mailing = sorted(k for k in addressed if clients[k]["MailOK"])
            no = rng.choice(mailing or sorted(addressed))
            ops.append(Op("delete", "crm.Client", no, at(rng.randrange(200, 280))))
            busy.add(("crm.Client", no))
            del clients[no]
        for _ in range(2):
            no = next_no["crm.Client"] = next_no["crm.Client"] + 1
            row = _client(rng, no, at(rng.randrange(5, 250)))
            ops.append(Op("insert", "crm.Client", no, row["CreatedAt"], row))
        pending = {k: v for k, v in sales.items() if v["Stage"] == "Pending"}
        if pending:
            no = pick("crm.Sale", pending)
            t = at(rng.randrange(30, 250))
            values = {"Stage": "Closed", "CloseDate": t, "ChangedAt": t}
            ops.append(Op("update", "crm.Sale", no, t, values))
            sales[no].update(values)
        no = pick("crm.Listing", listings)
        listing = listings[no]
        sale_no = next_no["crm.Sale"] = next_no["crm.Sale"] + 1
        t = at(rng.randrange(10, 250))
        sale = {
            "SaleNo": sale_no,
            "BrokerNo": listing["BrokerNo"],
            "ListingNo": no,
            "BuyerClientNo": rng.randrange(1, 41),
            "Price": listing["AskingPrice"],
            "Fee": (listing["AskingPrice"] * Decimal("0.025")).quantize(Decimal("0.01")),
            "Stage": "Pending",
            "CloseDate": START + timedelta(days=25),
            "CreatedAt": t,
            "ChangedAt": t,
        }
        ops.append(Op("insert", "crm.Sale", sale_no, t, sale))
        sales[sale_no] = dict(sale)
        no = pick("crm.Listing", {k: v for k, v in listings.items() if k < 1000})
        ops.append(Op("delete", "crm.Listing", no, at(rng.randrange(30, 280))))
        del listings[no]
        for op in ops:
            if op.kind == "insert" and op.table == "crm.Listing":
                listings[op.key] = dict(op.values)
        ops.sort(key=lambda o: o.at)
        out.append(WindowOps(start, ops))
    return out


def _showing(
    rng: random.Random, listing: Mapping[str, Any], seq: int, at: datetime
) -> dict[str, Any]:
    no = listing["ListingNo"]
    return {
        "ListingNo": no,
        "ShowingSeq": seq,
        "BrokerNo": listing["BrokerNo"],
        "ClientNo": rng.randrange(1, 41),
        "ShowAt": START + timedelta(days=rng.randrange(1, 10), hours=rng.randrange(0, 8)),
        "Status": "Booked" if rng.random() > 0.3 else "Confirmed",
        "Note": f"visit {no}-{seq}",
        "CreatedAt": at,
        "ChangedAt": at,
        "CancelledAt": None,
    }


def _showings(
    rng: random.Random, base: dict[str, dict[Any, dict[str, Any]]], windows: list[WindowOps]
) -> None:
    """Base showings (numbered 1, 2, ... per listing, so the same ShowingSeq recurs across
    listings), and per window two bookings, one confirmation and one cancellation."""
    t0 = START - timedelta(days=30)
    listings = base["crm.Listing"]
    for no in range(1, 13):
        for seq in range(1, rng.randrange(1, 4)):
            base[SHOWING][(no, seq)] = _showing(rng, listings[no], seq, t0)
    live = {k: dict(v) for k, v in base[SHOWING].items()}
    # A cancelled showing keeps its row, and so its number.
    taken = set(live)
    for w in windows:
        busy: set[tuple[int, int]] = set()

        def at(second: int, start: datetime = w.start) -> datetime:
            return start + timedelta(seconds=second, microseconds=rng.randrange(1000, 999000))

        ops: list[Op] = []
        for no in rng.sample(range(1, 13), 2):
            seq = 1 + max((s for n, s in taken if n == no), default=0)
            taken.add((no, seq))
            row = _showing(rng, listings[no], seq, at(rng.randrange(5, 250)))
            row["Status"] = "Booked"
            ops.append(Op("insert", SHOWING, (no, seq), row["CreatedAt"], row))
            live[(no, seq)] = dict(row)
            busy.add((no, seq))
        booked = sorted(k for k, v in live.items() if v["Status"] == "Booked" and k not in busy)
        key = rng.choice(booked)
        t = at(rng.randrange(30, 250))
        values = {"Status": "Confirmed", "ChangedAt": t}
        ops.append(Op("update", SHOWING, key, t, values))
        live[key].update(values)
        busy.add(key)
        key = rng.choice(sorted(k for k in live if k not in busy))
        ops.append(Op("delete", SHOWING, key, at(rng.randrange(30, 280))))
        del live[key]
        w.ops.extend(ops)
        w.ops.sort(key=lambda o: o.at)


# -- writing ----------------------------------------------------------------------------------
def _bind(db: Database, value: Any) -> Any:
    if isinstance(value, datetime):
        return db.ts(value)
    if db.dialect == "sqlite" and isinstance(value, Decimal):
        return str(value)
    return value


def _insert(db: Database, table: str, row: Mapping[str, Any]) -> None:
    cols = list(row)
    db.execute(
        f"INSERT INTO {db.quote_table(table)} ({', '.join(db.quote(c) for c in cols)}) "
        f"VALUES ({', '.join('?' for _ in cols)})",
        [_bind(db, row[c]) for c in cols],
    ).close()


def create(db: Database) -> None:
    """Create the CRM's tables (``schema.<dialect>.sql``) and commit."""
    db.run_script((HERE / f"schema.{db.dialect}.sql").read_text(encoding="utf-8"))


def write_base(db: Database, world: World) -> None:
    with db.transaction():
        for table in TABLES:
            for row in world.base[table].values():
                _insert(db, table, row)


def apply_window(db: Database, window: WindowOps) -> None:
    """One window's operations in one transaction, in time order."""
    with db.transaction():
        for op in window.ops:
            table = db.quote_table(op.table)
            key = KEYS.get(op.table, "")
            columns = (key,) if isinstance(key, str) else key
            where = " AND ".join(f"{db.quote(c)} = ?" for c in columns)
            values = list(op.key) if isinstance(op.key, tuple) else [op.key]
            if op.kind == "insert":
                _insert(db, op.table, op.values)
            elif op.kind == "update":
                cols = list(op.values)
                sets = ", ".join(f"{db.quote(c)} = ?" for c in cols)
                params = [_bind(db, op.values[c]) for c in cols]
                db.execute(f"UPDATE {table} SET {sets} WHERE {where}", [*params, *values]).close()
            else:
                # The CRM deletes by an UPDATE (the model's soft_delete).
                at = _bind(db, op.at)
                if op.table in REMOVED_FLAG:
                    column, value = REMOVED_FLAG[op.table], 1
                else:
                    column, value = REMOVED_AT[op.table], at
                db.execute(
                    f'UPDATE {table} SET "{column}" = ?, "ChangedAt" = ? WHERE {where}',
                    [value, at, *values],
                ).close()


def set_enabled(db: Database, alerts: Sequence[int]) -> None:
    """Enable exactly ``alerts``."""
    with db.transaction():
        table = db.quote_table("crm.Alert")
        db.execute(f'UPDATE {table} SET "Enabled" = ?', [False]).close()
        for no in alerts:
            db.execute(f'UPDATE {table} SET "Enabled" = ? WHERE "AlertNo" = ?', [True, no]).close()
