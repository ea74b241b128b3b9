"""A recipient's time zone at the end of the path the source model gives, read for a batch with
one statement per foreign key; and the year of the agent totals in a zone."""

import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from darwin_notify_assets.domain import zones
from darwin_notify_assets.domain.model import check_model, load_model, parse_model
from darwin_notify_assets.errors import ConfigurationError

CRM_MODEL = Path(__file__).parents[1] / "crm" / "crm.model.yaml"
SAMPLE_MODEL = Path(load_model.__code__.co_filename).parent.parent / "sample"


class RecordingFetch:
    """Rows by key from dictionaries, one recorded call per statement a replica would run."""

    def __init__(self, tables: dict[str, dict[int, dict[str, Any]]]) -> None:
        self.tables = tables
        self.calls: list[tuple[str, tuple[int, ...], str]] = []

    def __call__(self, table: str, ids: Sequence[int], key: str) -> dict[int, dict[str, Any]]:
        self.calls.append((table, tuple(ids), key))
        rows = self.tables.get(table, {})
        return {i: rows[i] for i in ids if i in rows}


def test_the_office_form_is_the_path_through_the_agent_and_its_office():
    model = load_model()
    agent, contact = zones.zone_path(model, "agent"), zones.zone_path(model, "contact")
    assert agent == zones.ZonePath((zones.Hop("OfficeID", "Office", "OfficeID"),), "TimeZone")
    assert contact == zones.ZonePath(
        (zones.Hop("AgentID", "Agent", "AgentID"), zones.Hop("OfficeID", "Office", "OfficeID")),
        "TimeZone",
    )


def test_the_crm_lists_its_own_foreign_keys():
    model = load_model(CRM_MODEL)
    assert zones.zone_path(model, "contact") == zones.ZonePath(
        (
            zones.Hop("BrokerNo", "crm.Broker", "BrokerNo"),
            zones.Hop("BranchNo", "crm.Branch", "BranchNo"),
        ),
        "TZ",
    )
    assert "crm.Branch" in model.tables_read()


def test_a_batch_follows_each_foreign_key_with_one_statement_and_skips_held_rows():
    path = zones.ZonePath(
        (zones.Hop("Region", "Region", "RegionID"), zones.Hop("Country", "Country", "CountryID")),
        "Zone",
    )
    recipients = [{"ID": i, "Region": 1 + i % 3} for i in range(30)] + [{"ID": 99, "Region": None}]
    fetch = RecordingFetch(
        {
            "Region": {2: {"RegionID": 2, "Country": 8}, 3: {"RegionID": 3, "Country": 9}},
            "Country": {9: {"CountryID": 9, "Zone": "Asia/Tokyo"}},
        }
    )
    held = {"Region": {1: {"RegionID": 1, "Country": 7}}, "Country": {7: {"Zone": "Europe/Oslo"}}}
    fetched = zones.prefetch(path, recipients, lambda t: held.get(t, {}), fetch)
    # region 1 and country 7 are held; the rest come in one statement per table
    assert fetch.calls == [("Region", (2, 3), "RegionID"), ("Country", (8, 9), "CountryID")]
    assert set(fetched["Region"]) == {2, 3} and set(fetched["Country"]) == {9}

    def lookup(table: str, key: int):
        return held.get(table, {}).get(key) or fetched.get(table, {}).get(key)

    names = {r["ID"]: path.walk(r, lookup) for r in recipients}
    assert names[0] == "Europe/Oslo"  # region 1, held
    assert names[2] == "Asia/Tokyo"  # region 3, country 9
    assert names[1] is None  # region 2's country 8 is not on the source
    assert names[99] is None  # no region


def test_read_zones_reads_the_recipients_then_each_table_on_the_way():
    model = load_model()
    fetch = RecordingFetch(
        {
            "Agent": {1: {"AgentID": 1, "OfficeID": 5}, 2: {"AgentID": 2, "OfficeID": 6}},
            "Office": {5: {"OfficeID": 5, "TimeZone": " America/Denver "}, 6: {"OfficeID": 6}},
        }
    )
    assert zones.read_zones(model, "agent", [2, 1, 1, 3], fetch) == {
        1: "America/Denver",
        2: None,
    }
    assert [c[0] for c in fetch.calls] == ["Agent", "Office"]
    assert zones.read_zones(model, "agent", [], fetch) == {}
    assert len(fetch.calls) == 2


@pytest.mark.parametrize(
    ("zone", "moment", "year", "start"),
    [
        # 03:00 UTC on January 1 is still December 31 in Chicago
        ("America/Chicago", datetime(2027, 1, 1, 3), 2026, datetime(2026, 1, 1, 6)),
        ("America/Chicago", datetime(2027, 1, 1, 7), 2027, datetime(2027, 1, 1, 6)),
        # and already January 1 in Tokyo, whose year began nine hours before UTC's
        ("Asia/Tokyo", datetime(2026, 12, 31, 16), 2027, datetime(2026, 12, 31, 15)),
        ("UTC", datetime(2026, 7, 4), 2026, datetime(2026, 1, 1)),
    ],
)
def test_a_year_begins_at_midnight_of_january_first_in_its_zone(zone, moment, year, start):
    assert zones.year_start(ZoneInfo(zone), moment) == (year, start)


# -- the model's own checks ------------------------------------------------------------------
def _sample_text(old: str, new: str) -> str:
    text = (SAMPLE_MODEL / "darwin_cloud.model.yaml").read_text()
    assert old in text
    return text.replace(old, new, 1)


AGENT_ZONE = "    time_zone: {office: TimeZone}\n"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            AGENT_ZONE,
            "    time_zone: {via: [{column: RegionID, to: Region}], column: TZ}\n",
            r"m.yaml:\d+: recipients.agent.time_zone.via.0 names Region, which tables lacks",
        ),
        (
            AGENT_ZONE,
            "    time_zone: {via: [{column: OfficeID, to: Office}], office: TimeZone}\n",
            "time_zone with via names the column of its last table",
        ),
        (AGENT_ZONE, "    time_zone: {via: [], column: TZ}\n", "lists at least one foreign key"),
        (
            "  year_time_zone: agent\n",
            "  year_time_zone: Mars/Olympus\n",
            r"m.yaml:\d+: totals.year_time_zone: .*not 'Mars/Olympus'",
        ),
        (
            AGENT_ZONE,
            "",
            "totals.year_time_zone is 'agent', but recipients.agent has no time_zone",
        ),
    ],
)
def test_a_bad_zone_path_or_year_zone_is_one_clear_error(old, new, message):
    with pytest.raises(ConfigurationError, match=message):
        parse_model(_sample_text(old, new), "m.yaml")


def test_a_fixed_year_zone_needs_no_recipient_zone():
    text = _sample_text(AGENT_ZONE, "").replace(
        "  year_time_zone: agent\n", "  year_time_zone: Europe/Berlin\n"
    )
    assert parse_model(text, "m.yaml").totals.year_time_zone == "Europe/Berlin"


def test_check_names_each_missing_column_on_the_way_to_a_zone():
    model = parse_model(
        _sample_text(
            AGENT_ZONE,
            "    time_zone:\n"
            "      via: [{column: OfficeID, to: Office}, {column: RegionID, to: Region}]\n"
            "      column: TZ\n",
        ).replace(
            "tables:\n",
            "tables:\n  Region:\n    key: RegionID\n    watch: [ModifiedDate]\n",
            1,
        ),
        "m.yaml",
    )
    catalog = {
        "Agent": ["AgentID", "FirstName", "LastName", "Email", "MobilePhone", "IsActive"],
        "Office": ["OfficeID", "TimeZone"],
        "Region": ["RegionID", "ModifiedDate"],
    }
    problems = [str(p) for p in check_model(model, lambda t: catalog.get(t, ["x"]))]
    assert (
        "recipients.agent.time_zone.via.0: column Agent.OfficeID does not exist on the replica"
        in (problems)
    )
    assert (
        "recipients.agent.time_zone.via.1: column Office.RegionID does not exist on the replica"
        in (problems)
    )
    assert "recipients.agent.time_zone: column Region.TZ does not exist on the replica" in problems


def test_the_crm_clients_zones_are_read_from_the_replica_one_statement_per_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from darwin_notify_assets.storage.db import connect
    from darwin_notify_assets.storage.replica import ReplicaReader
    from darwin_notify_tests.crm.test_crm_chain import build_crm_env

    env = build_crm_env(tmp_path / "home", monkeypatch)
    model = load_model(CRM_MODEL)
    reader = ReplicaReader(connect(f"sqlite:///{env.home / 'darwin.db'}", read_only=True), model)
    try:
        clients = sorted(env.world.base["crm.Client"])
        statements: list[str] = []
        reader.db.conn.set_trace_callback(statements.append)
        found = zones.read_zones(model, "contact", clients, reader.fetch_by_ids)
        reader.db.conn.set_trace_callback(None)
    finally:
        reader.close()
        env.source.close()
        env.instance.dispose()
    base = env.world.base
    assert found == {
        c: base["crm.Branch"][base["crm.Broker"][base["crm.Client"][c]["BrokerNo"]]["BranchNo"]][
            "TZ"
        ]
        for c in clients
    }
    assert len(set(found.values())) == 2
    # the catalog aside, one statement per table on the way
    read = [m for s in statements for m in re.findall(r'FROM "(crm\.\w+)" WHERE', s)]
    assert read == ["crm.Client", "crm.Broker", "crm.Branch"]
