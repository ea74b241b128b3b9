"""Schedules indexed so that a changed row is judged only against those that can apply.

darwin.Cloud serves many offices, each with schedules of its own: thousands of schedules on
one table that differ only in a criterion on the tenant column (``OfficeID eq 17``). Judging
every row against every schedule costs rows x schedules; this index groups a table's
schedules by watch column, and within a group puts the schedules whose criteria pin the
tenant column to values (``eq``, ``in``) into a hash lookup by value. A row is then judged
against the schedules of its tenant and those that pin no tenant (a scan), in their original
order, so decisions are the ones a scan of every schedule would make for those schedules.

A schedule left out is one whose tenant criterion the row fails; its decision against is not
recorded (see docs/source-model.md, "Tenants").

A table whose rows do not carry the tenant column (a listing is in its agent's office) gets
its rows' tenants from the agent table, one statement per batch of rows (``tenants_of``).
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from darwin_notify_assets.domain.keys import RecordId, record_id
from darwin_notify_assets.domain.model import SourceModel
from darwin_notify_assets.domain.schedules import UNINDEXABLE, Schedule, equality_key
from darwin_notify_assets.storage.replica import ReplicaReader

# Operators whose schedules can be found by the row's value: the value (or one of the list).
_INDEXED_OPS = ("eq", "in")


@dataclass(frozen=True)
class _Group:
    """The schedules of one watch column, as positions in the index's schedule tuple."""

    scan: tuple[int, ...]
    by_value: Mapping[Any, tuple[int, ...]]
    every: tuple[int, ...]

    def lookup(self, tenant: Any) -> tuple[int, ...]:
        if not self.by_value:
            return self.scan
        key = equality_key(tenant)
        if key is UNINDEXABLE:
            # A boolean compares equal to any true value (see same_value): judge them all.
            return self.every if tenant is not None else self.scan
        bucket = self.by_value.get(key, ())
        if not bucket:
            return self.scan
        if not self.scan:
            return bucket
        return tuple(sorted(self.scan + bucket))


def _pinned_values(schedule: Schedule, column: str) -> list[Any] | None:
    """The keys of the tenant values ``schedule`` can fire for, or None when it pins none."""
    for c in schedule.criteria:
        if c.column != column or c.op not in _INDEXED_OPS:
            continue
        values = c.value if c.op == "in" else [c.value]
        keys = [equality_key(v) for v in values]
        if any(k is UNINDEXABLE or k != k for k in keys):
            continue
        return list(dict.fromkeys(keys))
    return None


class ScheduleIndex:
    """One table's schedules (of one kind of event) by watch column and tenant value."""

    def __init__(self, schedules: Sequence[Schedule], tenant_column: str | None):
        self.schedules = tuple(schedules)
        self.tenant_column = tenant_column
        self.needs_tenant = tenant_column is not None and any(
            c.column == tenant_column for s in self.schedules for c in s.criteria
        )
        positions: dict[str, list[int]] = {}
        for i, s in enumerate(self.schedules):
            positions.setdefault(s.watch_column, []).append(i)
        groups = []
        for watch, members in positions.items():
            scan: list[int] = []
            by_value: dict[Any, list[int]] = {}
            for i in members:
                pinned = _pinned_values(self.schedules[i], tenant_column) if tenant_column else None
                if pinned is None:
                    scan.append(i)
                else:
                    for key in pinned:
                        by_value.setdefault(key, []).append(i)
            groups.append(
                (
                    watch,
                    _Group(
                        scan=tuple(scan),
                        by_value={k: tuple(v) for k, v in by_value.items()},
                        every=tuple(members),
                    ),
                )
            )
        self.groups: tuple[tuple[str, _Group], ...] = tuple(groups)

    @property
    def indexed(self) -> int:
        """How many schedules are found by tenant value rather than scanned."""
        return sum(len(g.every) - len(g.scan) for _, g in self.groups)

    def applicable(self, watched: Iterable[str], tenant: Any) -> list[Schedule]:
        """The schedules of the watch columns ``watched`` that a row of ``tenant`` can fire,
        in their original order."""
        found: list[int] = []
        n = 0
        for watch, group in self.groups:
            if watch in watched:
                found.extend(group.lookup(tenant))
                n += 1
        if n > 1:
            found.sort()
        return [self.schedules[i] for i in found]


def tenants_of(
    replica: ReplicaReader,
    model: SourceModel,
    table: str,
    rows: Sequence[Mapping[str, Any]],
) -> dict[RecordId, Any] | None:
    """The tenant of each row by record id, for a table whose rows lack the tenant column:
    their agent's (one statement per batch of agents). None when the rows carry it, or the
    model declares no tenant, or the table names no agent."""
    if model.tenant is None or not rows:
        return None
    column = model.tenant.column
    agent_column = model.agent_column(table)
    if column in rows[0] or agent_column is None:
        return None
    key = model.key_of(table)
    agents = [int(r[agent_column]) for r in rows if r.get(agent_column) is not None]
    found = replica.fetch_grouped(model.agent.table, model.agent.key, agents, [column])
    out: dict[RecordId, Any] = {}
    for r in rows:
        agent = r.get(agent_column)
        group = found.get(int(agent)) if agent is not None else None
        out[record_id(r, key)] = group[0].get(column) if group else None
    return out
