"""A recipient's time zone, read where the source model says it is.

A recipient kind's ``time_zone`` is a path: from the recipient's row, zero or more foreign
keys, each naming a row of a table by its key, then the column of the last row that holds an
IANA name (``America/Chicago``). ``{column: TZ}`` has no foreign key; ``{office: TimeZone}``
goes through the recipient's agent (a contact's: ``relations.record_agent``) and
``relations.agent_office``; ``{via: [...], column: TZ}`` lists its own.

A batch of recipients follows its path with one statement per foreign key (``prefetch``),
never one per recipient, and skips the rows the batch has read already (rendering has read
the agents and their offices for the templates anyway).

Quiet hours and daily caps are decided in the zone (``delivery/rules.py``); so is the year of
the agent totals when the model's ``totals.year_time_zone`` is ``agent``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from darwin_notify_assets.domain.model import SourceModel

Row = Mapping[str, Any]
# (table, key value) -> that row, when the batch has it.
Lookup = Callable[[str, int], Row | None]
# (table, ids, key column) -> rows by id: one statement per batch of ids.
Fetch = Callable[[str, Sequence[int], str], Mapping[Any, Row]]

# The store keeps at most 64 characters of a zone; a longer value is no IANA name either.
MAX_ZONE = 64


@functools.lru_cache(maxsize=512)
def zone_info(name: str) -> ZoneInfo | None:
    """The IANA zone of that name, or None when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


@dataclass(frozen=True)
class Hop:
    """``column`` of the row before names a row of ``table`` by its ``key``."""

    column: str
    table: str
    key: str


@dataclass(frozen=True)
class ZonePath:
    hops: tuple[Hop, ...]
    column: str

    def walk(self, row: Row | None, lookup: Lookup) -> str | None:
        """The zone's name at the end of the path from ``row``, or None where it breaks (a
        foreign key that is NULL or names a row the batch lacks, an empty column)."""
        for hop in self.hops:
            value = row.get(hop.column) if row is not None else None
            if value is None:
                return None
            row = lookup(hop.table, int(value))
        value = row.get(self.column) if row is not None else None
        text = str(value).strip() if value is not None else ""
        return text[:MAX_ZONE] or None


def zone_path(model: SourceModel, kind: str) -> ZonePath | None:
    """The path to the time zone of recipients of ``kind`` (agent or contact), or None when the
    model gives them none."""
    recipient = model.recipients[kind]  # type: ignore[index]
    source = recipient.time_zone
    if source is None:
        return None
    if source.office is not None:
        office = model.relations.agent_office
        assert office is not None, "validated with the model"
        hops = []
        if kind != "agent":
            column = model.relations.record_agent[recipient.table]
            hops.append(Hop(column, model.agent.table, model.agent.key))
        hops.append(Hop(office.column, office.to, str(model.key_of(office.to))))
        return ZonePath(tuple(hops), source.office)
    assert source.column is not None, "validated with the model"
    via = tuple(Hop(h.column, h.to, str(model.key_of(h.to))) for h in source.via or ())
    return ZonePath(via, source.column)


def prefetch(
    path: ZonePath,
    rows: Iterable[Row],
    have: Callable[[str], Mapping[int, Row]],
    fetch: Fetch,
) -> dict[str, dict[int, Row]]:
    """The rows of the path's tables that ``rows`` lead to and ``have`` (the rows the caller
    holds, per table) lacks: one ``fetch`` per foreign key of the path, for the whole batch."""
    fetched: dict[str, dict[int, Row]] = {}
    current = list(rows)
    for hop in path.hops:
        held = have(hop.table)
        extra = fetched.setdefault(hop.table, {})
        ids = {int(r[hop.column]) for r in current if r.get(hop.column) is not None}
        missing = sorted(i for i in ids if i not in held and i not in extra)
        if missing:
            extra.update((int(k), v) for k, v in fetch(hop.table, missing, hop.key).items())
        current = [r for i in ids if (r := held.get(i) or extra.get(i)) is not None]
    return fetched


def read_zones(
    model: SourceModel, kind: str, ids: Sequence[int], fetch: Fetch
) -> dict[int, str | None]:
    """The time zones of these recipients, read from the source: one statement for their rows
    and one per foreign key of the path, per batch. Empty when the model gives none."""
    path = zone_path(model, kind)
    if path is None or not ids:
        return {}
    recipient = model.recipients[kind]  # type: ignore[index]
    rows = {int(k): v for k, v in fetch(recipient.table, sorted(set(ids)), recipient.key).items()}
    fetched = prefetch(path, rows.values(), lambda table: {}, fetch)

    def lookup(table: str, key: int) -> Row | None:
        return fetched.get(table, {}).get(key)

    return {i: path.walk(row, lookup) for i, row in rows.items()}


def year_start(zone: ZoneInfo, moment: datetime) -> tuple[int, datetime]:
    """The year that holds ``moment`` (naive UTC) in ``zone``, and its first instant, January 1
    at midnight there, in naive UTC."""
    local = moment.replace(tzinfo=UTC).astimezone(zone)
    start = datetime(local.year, 1, 1, tzinfo=zone).astimezone(UTC).replace(tzinfo=None)
    return local.year, start
