"""An independent model of which notifications the sample schedules must send.

It replays the seed's operations on plain dictionaries, window by window, and applies the
five sample schedules' rules as DARWIN_SCHEMA.md states them, as a window-based reader of the
replica sees them (the state at the end of each window, compared with the state at its start).
It shares no code with the pipeline but the address checks, which have tests of their own.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from darwin_notify_assets.domain.render import check_email, check_phone
from darwin_notify_assets.sample import seed


@dataclass
class Expected:
    """Keys of notifications that must reach a provider, by channel."""

    email: set[str] = field(default_factory=set)
    sms: set[str] = field(default_factory=set)

    @property
    def total(self) -> int:
        return len(self.email) + len(self.sms)


def _ts(value: datetime) -> str:
    return value.isoformat(sep=" ", timespec="microseconds")


def _valid(check, value: Any) -> bool:
    try:
        check(value)
        return True
    except ValueError:
        return False


def expected_sends(dataset: seed.Dataset, windows: Iterable[seed.WindowChanges]) -> Expected:
    tables = {
        t: {int(r[seed.KEY_COLUMNS[t]]): dict(r) for r in dataset.records(t)}
        for t in ("Agent", "People", "Property", "Deal")
    }
    out = Expected()
    for wc in windows:
        before = {t: {k: dict(v) for k, v in rows.items()} for t, rows in tables.items()}
        inserted: dict[str, set[int]] = {t: set() for t in tables}
        deleted: list[seed.Delete] = []
        for op in wc.operations:
            if op.table not in tables:
                continue
            if isinstance(op, seed.Insert):
                tables[op.table][op.key] = dict(op.row)
                inserted[op.table].add(op.key)
            elif isinstance(op, seed.Update):
                tables[op.table][op.key].update(op.values)
            else:
                tables[op.table].pop(op.key, None)
                deleted.append(op)
        after = tables
        agents, people = after["Agent"], after["People"]

        def agent_can(agent_id: int, check, column: str, agents=agents) -> bool:
            a = agents.get(agent_id)
            return bool(a and a.get("IsActive") and _valid(check, a.get(column)))

        def contact_can(pid: int, flag: str, check, column: str, people=people) -> bool:
            p = people.get(pid)
            return bool(p and p.get(flag) and _valid(check, p.get(column)))

        # 1. New listing -> email to every opted-in contact of the agent.
        for pid in inserted["Property"]:
            prop = after["Property"].get(pid)
            if prop is None or prop.get("Status") != "Active":
                continue
            for contact in people.values():
                if contact["AgentID"] == prop["AgentID"] and contact_can(
                    contact["PeopleID"], "EmailOptIn", check_email, "Email"
                ):
                    out.email.add(f"s1|Property:{pid}|contact:{contact['PeopleID']}")
        # 2. Price drop -> SMS to the agent, once per change (net over the window).
        for pid, prop in after["Property"].items():
            old = before["Property"].get(pid)
            if old is None or prop["ModifiedDate"] == old["ModifiedDate"]:
                continue
            if Decimal(str(prop["ListPrice"])) < Decimal(str(old["ListPrice"])) and agent_can(
                prop["AgentID"], check_phone, "MobilePhone"
            ):
                out.sms.add(
                    f"s2|Property:{pid}:update@{_ts(prop['ModifiedDate'])}|agent:{prop['AgentID']}"
                )
        # 3. Deal posted -> email to the agent, once per deal.
        for did, deal in after["Deal"].items():
            old = before["Deal"].get(did)
            if deal.get("PostDate") is None or (
                old is not None and old.get("PostDate") is not None
            ):
                continue
            if agent_can(deal["AgentID"], check_email, "Email"):
                out.email.add(f"s3|Deal:{did}|agent:{deal['AgentID']}")
        # 4. Welcome -> email to the new contact who opted in.
        for pid in inserted["People"]:
            if contact_can(pid, "EmailOptIn", check_email, "Email"):
                out.email.add(f"s4|People:{pid}|contact:{pid}")
        # 5. Listing removed -> email to the agent (needs the listing seen before).
        for op in deleted:
            if op.table != "Property" or op.key not in before["Property"]:
                continue
            agent_id = before["Property"][op.key]["AgentID"]
            if agent_can(agent_id, check_email, "Email"):
                out.email.add(f"s5|Property:{op.key}:delete@{_ts(op.at)}|agent:{agent_id}")
    return out
