"""The second schema (a brokerage CRM, ``world.py``) through the whole chain on SQLite: the
sends are exactly the independent oracle's, and only tables with an active schedule are read."""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from dagster import DagsterInstance

from darwin_notify_assets.config import Settings
from darwin_notify_assets.domain import detect
from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.domain.pipeline import Runtime, load_schedules
from darwin_notify_assets.domain.render import money
from darwin_notify_assets.domain.windows import Window
from darwin_notify_assets.storage.db import Database, connect
from darwin_notify_tests.conftest import (
    clean_environment,
    install_recording_senders,
    run_partition,
    take_baseline,
)
from darwin_notify_tests.crm import world
from darwin_notify_tests.crm.oracle import expected_sends

WINDOWS = 4


@dataclass
class CrmEnv:
    home: Path
    settings: Settings
    world: world.World
    source: Database
    instance: DagsterInstance

    def key(self, index: int) -> str:
        return Window.containing(self.world.windows[index].start, 5).partition_key

    def runtime(self) -> Runtime:
        return Runtime.from_settings(self.settings)


def build_crm_env(home: Path, mp: pytest.MonkeyPatch, alerts: tuple[int, ...] = ()) -> CrmEnv:
    home.mkdir(parents=True, exist_ok=True)
    clean_environment(mp, home)
    mp.setenv("DARWIN_NOTIFY_SOURCE_MODEL", str(world.MODEL))
    settings = Settings.from_env(overrides={"home": str(home)})
    source = connect(f"sqlite:///{home / 'darwin.db'}")
    w = world.generate(windows=WINDOWS)
    world.create(source)
    world.write_base(source, w)
    if alerts:
        world.set_enabled(source, alerts)
    take_baseline(settings)
    return CrmEnv(home, settings, w, source, DagsterInstance.ephemeral())


@pytest.fixture
def crm_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CrmEnv]:
    env = build_crm_env(tmp_path / "home", monkeypatch)
    try:
        yield env
    finally:
        env.source.close()
        env.instance.dispose()


def test_the_crm_model_loads_and_checks_clean(crm_env: CrmEnv) -> None:
    rt = crm_env.runtime()
    try:
        loaded = load_schedules(rt.replica)
    finally:
        rt.close()
    assert loaded.model_problems == ()
    assert loaded.rejected == ()
    assert [s.schedule_id for s in loaded.schedules.schedules] == [
        21,
        22,
        23,
        24,
        25,
        27,
        28,
        29,
        30,
    ]
    assert loaded.schedules.source_tables == (
        "crm.Client",
        "crm.Listing",
        "crm.Sale",
        "crm.Showing",
    )


def test_whole_windows_send_exactly_what_the_oracle_expects(
    crm_env: CrmEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = crm_env
    recorder = install_recording_senders(monkeypatch)
    for index, window in enumerate(env.world.windows):
        world.apply_window(env.source, window)
        result = run_partition(env.key(index), env.instance)
        assert result.success, f"window {env.key(index)} failed"
    expected = expected_sends(env.world, env.world.windows)
    assert expected.email and expected.sms and expected.totals
    assert {k.split("|")[0] for k in expected.all} == {
        "s21",
        "s22",
        "s23",
        "s24",
        "s25",
        "s27",
        "s28",
        "s29",
        "s30",
    }

    calls = recorder.for_home(env.home)
    email_keys = [m.candidate_key for m in calls["email"]]
    sms_keys = [m.candidate_key for m in calls["sms"]]
    # One provider call per expected send: nothing missed, nothing twice.
    assert sorted(email_keys) == sorted(expected.email)
    assert sorted(sms_keys) == sorted(expected.sms)

    rt = env.runtime()
    try:
        sent = {m["candidate_key"]: m for m in rt.store.messages(statuses=[MessageStatus.SENT])}
        open_ = rt.store.messages(statuses=[MessageStatus.QUEUED, MessageStatus.SENDING])
    finally:
        rt.close()
    assert set(sent) == expected.all
    assert open_ == []
    # Totals come from the sales ledger, which counts a sale only once it is closed.
    bodies = {m.candidate_key: m.text_body or "" for m in calls["email"]}
    for key, (units, volume, open_listings) in expected.totals.items():
        text = bodies[key]
        assert f"{units} closed sales, {money(volume)} this year; {open_listings} open" in text
    # ...in New York's year (the model's totals.year_time_zone): a sale closed in the first
    # hours of January 1 UTC is of the year before there, and the fixture has one that shows.
    utc_year = expected_sends(env.world, env.world.windows, year_zone=ZoneInfo("UTC")).totals
    assert utc_year != expected.totals

    # Showings are keyed by (ListingNo, ShowingSeq): each message shows its own showing's
    # row, read by the composite key, though the same ShowingSeq recurs across listings.
    showings = [k for k in expected.all if k.split("|")[1].startswith("crm.Showing:")]
    assert len(
        {k.split("|")[1].split(":")[1][1:].split(",")[1].rstrip("]") for k in showings}
    ) < len(showings)
    sms_bodies = {m.candidate_key: m.sms_body or "" for m in calls["sms"]}
    # ...and its listing's street: the related record the model names `listing`, of a
    # cancelled showing too (read through its last-seen ListingNo)
    streets = {r[0]: r[1] for r in env.source.query('SELECT ListingNo, Street FROM "crm.Listing"')}
    for key in showings:
        listing_no, seq = (int(v) for v in key.split("|")[1].split(":")[1].strip("[]").split(","))
        text = bodies.get(key) or sms_bodies[key]
        assert f"showing #{seq} of listing {listing_no}".lower() in text.lower()
        assert f"visit {listing_no}-{seq}" in text
        if key in bodies:
            assert f"of listing {listing_no} at {streets[listing_no]} (" in text
    assert any(k.startswith("s30|") for k in bodies), "no cancelled showing was emailed"
    subjects = {m.candidate_key: m.subject or "" for m in calls["email"]}
    sale_listing = dict(env.source.query('SELECT SaleNo, ListingNo FROM "crm.Sale"'))
    for key in expected.totals:
        sale = int(key.split("|")[1].split(":")[1])
        assert subjects[key] == f"Sale {sale} of {streets[sale_listing[sale]]} closed"

    # A rerun of every window sends nothing new.
    for index in range(WINDOWS):
        assert run_partition(env.key(index), env.instance).success
    assert len(calls["email"]) == len(email_keys) and len(calls["sms"]) == len(sms_keys)


def _tables_in(statements: list[str]) -> set[str]:
    return {m for s in statements for m in re.findall(r'FROM "(crm\.[A-Za-z]+)"', s)}


@pytest.mark.parametrize(
    ("alerts", "tables_read", "statement_tables"),
    [
        (
            (21, 22, 23, 24, 25, 27, 28, 29, 30),
            ["crm.Client", "crm.Listing", "crm.Sale", "crm.Showing"],
            {"crm.Client", "crm.Listing", "crm.Sale", "crm.Showing"},
        ),
        ((29,), ["crm.Showing"], {"crm.Showing"}),
        ((22,), ["crm.Listing"], {"crm.Listing"}),
        ((24,), ["crm.Client"], {"crm.Client"}),
        ((23,), ["crm.Listing", "crm.Sale"], {"crm.Listing", "crm.Sale"}),
        ((), [], set()),
    ],
    ids=["all", "showing-confirmed-only", "price-cut-only", "welcome-only", "totals", "none"],
)
def test_only_tables_with_an_active_schedule_are_read(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    alerts: tuple[int, ...],
    tables_read: list[str],
    statement_tables: set[str],
) -> None:
    env = build_crm_env(tmp_path / "home", monkeypatch, alerts or (99,))
    try:
        world.apply_window(env.source, env.world.windows[0])
        rt = env.runtime()
        try:
            loaded = load_schedules(rt.replica)
            window = Window.containing(env.world.windows[0].start, 5)
            statements: list[str] = []
            rt.replica.db.conn.set_trace_callback(statements.append)
            result = detect.detect_changes(
                rt.replica, rt.store, loaded.schedules, window, env.settings.lookback
            )
            rt.replica.db.conn.set_trace_callback(None)
        finally:
            rt.close()
        assert sorted(result.tables_read) == tables_read
        assert _tables_in(statements) == statement_tables
        # Every change read is one bounded range statement per table.
        reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        for s in reads:
            if any(f'FROM "{t}"' in s for t in tables_read):
                assert " WHERE " in s and ">=" in s and "<" in s
    finally:
        env.source.close()
        env.instance.dispose()
