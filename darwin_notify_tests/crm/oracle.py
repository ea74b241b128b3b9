"""An independent model of the sends the CRM fixture's alerts must make.

It replays the fixture's operations on dictionaries, window by window, and applies each
alert's rule as its title states it, as a reader of the replica at the end of each window
sees it. It shares no code with the pipeline but the address checks.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from darwin_notify_assets.domain.render import check_email, check_phone
from darwin_notify_tests.crm.world import INTEREST, SHOWING, WINDOW, WindowOps, World


@dataclass
class Expected:
    email: set[str] = field(default_factory=set)
    sms: set[str] = field(default_factory=set)
    # Alert 23's closed sales and volume this year, per sale key, as of its window.
    totals: dict[str, tuple[int, Decimal, int]] = field(default_factory=dict)

    @property
    def all(self) -> set[str]:
        return self.email | self.sms


# The CRM's year is New York's for every broker (its model's totals.year_time_zone).
YEAR_ZONE = ZoneInfo("America/New_York")


def year_bounds(moment: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The year holding ``moment`` (naive UTC) in ``zone``, as naive UTC [start, end)."""
    year = moment.replace(tzinfo=UTC).astimezone(zone).year

    def first(y: int) -> datetime:
        return datetime(y, 1, 1, tzinfo=zone).astimezone(UTC).replace(tzinfo=None)

    return first(year), first(year + 1)


def _ts(value: datetime) -> str:
    return value.isoformat(sep=" ", timespec="microseconds")


def _showing(key: tuple[int, int]) -> str:
    """A showing as candidate keys name it: its key's values as a JSON array, in the model's
    column order (ListingNo, ShowingSeq), as docs/source-model.md describes."""
    return f"{SHOWING}:[{key[0]},{key[1]}]"


def _ok(check: Any, value: Any) -> bool:
    try:
        check(value)
        return True
    except ValueError:
        return False


def expected_sends(
    world: World, windows: Iterable[WindowOps], year_zone: ZoneInfo = YEAR_ZONE
) -> Expected:
    state = {t: {k: dict(v) for k, v in rows.items()} for t, rows in world.base.items()}
    out = Expected()
    for w in windows:
        before = {t: {k: dict(v) for k, v in rows.items()} for t, rows in state.items()}
        inserted: dict[str, set[Any]] = {t: set() for t in state}
        deleted: list[tuple[int, datetime]] = []
        cancelled: list[tuple[tuple[int, int], datetime]] = []
        for op in w.ops:
            if op.kind == "insert":
                state[op.table][op.key] = dict(op.values)
                inserted[op.table].add(op.key)
            elif op.kind == "update":
                state[op.table][op.key].update(op.values)
            else:
                # A soft-deleted row is gone for every alert: a removed client is addressed
                # by none, a removed listing only by the withdrawal alert (25), a cancelled
                # showing only by alert 30.
                state[op.table].pop(op.key)
                if op.table == "crm.Listing":
                    deleted.append((op.key, op.at))
                elif op.table == SHOWING:
                    cancelled.append((op.key, op.at))
        brokers, clients = state["crm.Broker"], state["crm.Client"]

        def broker_can(no: int, check: Any, column: str, brokers=brokers) -> bool:
            b = brokers.get(no)
            return bool(b and b["Active"] and _ok(check, b[column]))

        def client_mail(no: int, clients=clients) -> bool:
            c = clients.get(no)
            return bool(c and c["MailOK"] and _ok(check_email, c["EmailAddr"]))

        # 21: a new open listing -> every client of its broker who takes email.
        for no in inserted["crm.Listing"]:
            listing = state["crm.Listing"][no]
            if listing["State"] != "Open":
                continue
            for client in clients.values():
                if client["BrokerNo"] == listing["BrokerNo"] and client_mail(client["ClientNo"]):
                    out.email.add(f"s21|crm.Listing:{no}|contact:{client['ClientNo']}")
        # 22: the asking price went down over the window -> SMS to the broker, per change.
        for no, listing in state["crm.Listing"].items():
            old = before["crm.Listing"].get(no)
            if old is None or listing["ChangedAt"] == old["ChangedAt"]:
                continue
            if listing["AskingPrice"] < old["AskingPrice"] and broker_can(
                listing["BrokerNo"], check_phone, "CellNumber"
            ):
                out.sms.add(
                    f"s22|crm.Listing:{no}:update@{_ts(listing['ChangedAt'])}"
                    f"|agent:{listing['BrokerNo']}"
                )
        # 27: the same price cuts -> email to every client interested in the listing who
        # takes email (the join table as it is at the end of the window).
        interest = {(r["ListingNo"], r["ClientNo"]) for r in state[INTEREST].values()}
        for no, listing in state["crm.Listing"].items():
            old = before["crm.Listing"].get(no)
            if old is None or listing["ChangedAt"] == old["ChangedAt"]:
                continue
            if listing["AskingPrice"] < old["AskingPrice"]:
                for listing_no, client_no in interest:
                    if listing_no == no and client_mail(client_no):
                        out.email.add(
                            f"s27|crm.Listing:{no}:update@{_ts(listing['ChangedAt'])}"
                            f"|contact:{client_no}"
                        )
        # 23: a sale closed -> email to its broker, once per sale, with this year's totals.
        for no, sale in state["crm.Sale"].items():
            old = before["crm.Sale"].get(no)
            if sale["Stage"] != "Closed" or (old is not None and old["Stage"] == "Closed"):
                continue
            broker = sale["BrokerNo"]
            if broker_can(broker, check_email, "EmailAddr"):
                key = f"s23|crm.Sale:{no}|agent:{broker}"
                out.email.add(key)
                start, end = year_bounds(w.start + WINDOW, year_zone)
                mine = [
                    s
                    for s in state["crm.Sale"].values()
                    if s["BrokerNo"] == broker
                    and s["Stage"] == "Closed"
                    and s["CloseDate"] is not None
                    and start <= s["CloseDate"] < end
                ]
                open_listings = sum(
                    1
                    for li in state["crm.Listing"].values()
                    if li["BrokerNo"] == broker and li["State"] == "Open"
                )
                out.totals[key] = (
                    len(mine),
                    sum((s["Price"] for s in mine), Decimal(0)),
                    open_listings,
                )
        # 24: a new client who takes email is welcomed.
        for no in inserted["crm.Client"]:
            if client_mail(no):
                out.email.add(f"s24|crm.Client:{no}|contact:{no}")
        # 28: a new showing -> email to its client, if the client takes email.
        for key in inserted[SHOWING]:
            showing = state[SHOWING][key]
            if client_mail(showing["ClientNo"]):
                out.email.add(f"s28|{_showing(key)}|contact:{showing['ClientNo']}")
        # 29: a showing seen before became Confirmed -> SMS to its broker, per change.
        for key, showing in state[SHOWING].items():
            old = before[SHOWING].get(key)
            if old is None or old["Status"] == "Confirmed" or showing["Status"] != "Confirmed":
                continue
            if broker_can(showing["BrokerNo"], check_phone, "CellNumber"):
                out.sms.add(
                    f"s29|{_showing(key)}:update@{_ts(showing['ChangedAt'])}"
                    f"|agent:{showing['BrokerNo']}"
                )
        # 30: a showing seen before was cancelled -> email to its broker.
        for key, at in cancelled:
            old = before[SHOWING].get(key)
            if old is not None and broker_can(old["BrokerNo"], check_email, "EmailAddr"):
                out.email.add(f"s30|{_showing(key)}:delete@{_ts(at)}|agent:{old['BrokerNo']}")
        # 25: a listing seen before was removed -> email to its broker.
        for no, at in deleted:
            old = before["crm.Listing"].get(no)
            if old is not None and broker_can(old["BrokerNo"], check_email, "EmailAddr"):
                out.email.add(f"s25|crm.Listing:{no}:delete@{_ts(at)}|agent:{old['BrokerNo']}")
    return out
