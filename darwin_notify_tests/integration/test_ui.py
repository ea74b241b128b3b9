"""The Dagster UI in a real browser, on the integration stack.

One ``dagster dev`` (webserver, daemon, code server) serves both tests of the module: its
instance in a PostgreSQL database of its own on the store cluster, darwin-notify's settings
on a source database, a store and provider sinks of its own on the stack, and ten years of
day partitions. Headless Chromium (Debian's package, driven by Playwright) opens the
lineage, a day's partition of ``delivery_log`` and of ``rendered_messages`` with their
metadata (counts, failures by reason, the masked preview) and checks, launches a rerun of
one window from the launchpad and a backfill of a range of days from the partitions dialog,
after the daemon's sensor caught up a window by itself; the provider sinks then show that
nothing was sent twice, and no page showed an address or number of the source.

Screenshots of every step go to ``$DARWIN_NOTIFY_UI_ARTIFACTS`` when it is set, else to the
test's temporary folder; their paths are printed (``pytest -rP`` or ``-s`` shows them).
"""

import os
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from darwin_notify_assets.config import Settings
from darwin_notify_assets.defs.notifications.partitions import (
    WINDOWS_TAG,
    notification_days_for,
    windows_of_run,
)
from darwin_notify_assets.domain.pipeline import Runtime
from darwin_notify_assets.domain.windows import Window
from darwin_notify_assets.sample import seed
from darwin_notify_assets.sample.demo import DEMO_START
from darwin_notify_assets.storage.store import MessageStatus
from darwin_notify_tests import services as shared
from darwin_notify_tests.dagster_ui import (
    DagsterServer,
    UIPage,
    chromium,
    partitions_selected,
)
from darwin_notify_tests.integration.conftest import PIPELINE_ROLE, Stack, make_stack, windows_of

pytestmark = pytest.mark.integration

NOTIFICATION_ASSETS = [
    "notification_schedules",
    "change_window",
    "agent_totals",
    "candidate_notifications",
    "rendered_messages",
    "delivery_log",
]
AUDIT_ASSETS = ["reconciliation_report", "send_audit"]
OPERATIONS_ASSETS = ["render_workers", "send_workers"]
ALL_ASSETS = sorted(NOTIFICATION_ASSETS + AUDIT_ASSETS + OPERATIONS_ASSETS)
DELIVERY_CHECKS = ["no_duplicate_sends", "no_missed_notifications"]
DAY = DEMO_START.strftime("%Y-%m-%d")
NEXT_DAY = (DEMO_START + timedelta(days=1)).strftime("%Y-%m-%d")
# How long the UI's runs may take: each is a subprocess that loads the code location and runs
# every step in a process of its own, on a machine shared with the services.
RUN_TIMEOUT = 600


def _with_database(url: str, database: str) -> str:
    head, _, _ = url.rpartition("/")
    return f"{head}/{database}"


@contextmanager
def own_services(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """A source database (on the primary, streamed to the standby), a notification store, a
    Dagster storage and provider sinks of the module's own, on the stack's clusters; yields
    the settings that point at them. The UI shows only these tests' runs, the sensor starts
    without a cursor of an earlier test and sees only these changes, and the sinks count
    only these sends: the shared ones also record whatever else runs on the machine."""
    suffix = uuid.uuid4().hex[:8]
    source, store, dagster = (f"{p}_ui_{suffix}" for p in ("darwin", "notify_store", "dagster"))
    primary_url = stack.env["DARWIN_NOTIFY_PRIMARY_ADMIN_URL"]
    store_url = (
        f"postgresql://postgres@{stack.env['DAGSTER_PG_HOST']}:{stack.env['DAGSTER_PG_PORT']}/"
    )
    created: list[tuple[str, str]] = []
    sinks: list = []
    try:
        conn = shared.admin_connection(primary_url)
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{source}"')
        finally:
            conn.close()
        created.append((primary_url, source))
        conn = shared.admin_connection(primary_url, source)
        try:
            with conn.cursor() as cur:
                cur.execute(f"GRANT USAGE ON SCHEMA public TO {PIPELINE_ROLE}")
                cur.execute(
                    "ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public "
                    f"GRANT SELECT ON TABLES TO {PIPELINE_ROLE}"
                )
        finally:
            conn.close()
        conn = shared.admin_connection(store_url)
        try:
            with conn.cursor() as cur:
                for name in (store, dagster):
                    cur.execute(f'CREATE DATABASE "{name}" OWNER {PIPELINE_ROLE}')
                    created.append((store_url, name))
        finally:
            conn.close()
        overrides = {
            "DAGSTER_PG_DB": dagster,
            "DARWIN_NOTIFY_STORE_URL": _with_database(stack.env["DARWIN_NOTIFY_STORE_URL"], store),
        }
        for name in ("DARWIN_NOTIFY_REPLICA_URL", "DARWIN_NOTIFY_PRIMARY_ADMIN_URL"):
            overrides[name] = _with_database(stack.env[name], source)
        overrides["DARWIN_NOTIFY_REPLICA_ADMIN_URL"] = _with_database(
            stack.env["DARWIN_NOTIFY_REPLICA_ADMIN_URL"], source
        )
        sinks, sink_env = shared.start_sinks(tmp_path / "sinks")
        overrides.update(sink_env)
        for name, value in overrides.items():
            monkeypatch.setenv(name, value)
            stack.env[name] = value
        stack.reset_store()
        yield overrides
    finally:
        shared.stop_processes(sinks)
        # Fresh connections: a cluster may have been restarted meanwhile.
        for url, name in reversed(created):
            conn = shared.admin_connection(url)
            try:
                with conn.cursor() as cur:
                    cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                conn.close()


def _screenshots(tmp_path: Path) -> Path:
    root = os.environ.get("DARWIN_NOTIFY_UI_ARTIFACTS")
    if root:
        return Path(root) / f"ui-{time.strftime('%Y%m%d-%H%M%S')}"
    return tmp_path / "screenshots"


def _announce(path: Path) -> None:
    sys.stdout.write(f"screenshot: {path}\n")


def _wait(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _sent_records(stack: Stack) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    email, sms = stack.sink_records()
    return (
        [r for r in email if r.get("status") == 202],
        [r for r in sms if r.get("status") == 201],
    )


def _email_key(record: dict[str, Any]) -> str:
    return str(record["custom_args"]["darwin_notify_key"])


def _sms_identity(record: dict[str, Any]) -> tuple[str, str]:
    to = record.get("to")
    return (to[0] if isinstance(to, list) else to, record.get("body", ""))


def _store_counts(settings, partition_key: str) -> dict[str, int]:
    rt = Runtime.from_settings(settings)
    try:
        counts = rt.store.status_counts(partition_key)
    finally:
        rt.close()
    return {str(k): v for k, v in counts.items()} | {"sent": counts.get(MessageStatus.SENT, 0)}


def _finished(instance, run_id: str):
    from dagster import DagsterRunStatus

    run = instance.get_run_by_id(run_id)
    done = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    return run if run is not None and run.status in done else None


def _in_flight(instance) -> list:
    from dagster import RunsFilter

    from darwin_notify_assets.defs.notifications.sensors import IN_FLIGHT

    return list(instance.get_runs(filters=RunsFilter(statuses=IN_FLIGHT)))


def _deliveries(instance) -> list[tuple[str, dict[str, Any]]]:
    """Every delivery_log materialization, newest first: (run id, partition and metadata)."""
    from dagster import AssetKey

    records = instance.fetch_materializations(AssetKey("delivery_log"), limit=1000).records
    out = []
    for record in sorted(records, key=lambda r: r.storage_id, reverse=True):
        materialization = record.asset_materialization
        metadata = {k: v.value for k, v in materialization.metadata.items()}
        out.append((record.run_id, {"partition": materialization.partition, **metadata}))
    return out


def _delivery_metadata(instance, run_id: str) -> dict[str, Any]:
    for rid, metadata in _deliveries(instance):
        if rid == run_id:
            return metadata
    pytest.fail(f"run {run_id} recorded no delivery_log materialization")


def _materialization_metadata(instance, asset: str, run_id: str) -> dict[str, Any]:
    from dagster import AssetKey

    records = instance.fetch_materializations(AssetKey(asset), limit=1000).records
    for record in records:
        if record.run_id == run_id:
            return {k: v.value for k, v in record.asset_materialization.metadata.items()}
    pytest.fail(f"run {run_id} recorded no {asset} materialization")


def _personal_data(primary) -> list[str]:
    """Every address and number of the source's people and agents, as written there and,
    for numbers, without their country code: none of them may appear in the UI."""
    values: set[str] = set()
    for table in ("People", "Agent"):
        for email, phone in primary.query(f'SELECT "Email", "MobilePhone" FROM "{table}"'):
            if email and "@" in email:
                values.add(email)
            if phone:
                values.add(phone)
                digits = re.sub(r"\D", "", phone)
                if len(digits) >= 10:
                    values.add(digits[-10:])
    primary.commit()
    assert len(values) > 100, "the source must have people to look for"
    return sorted(values)


def _nothing_personal(shown: list[str], personal: list[str], settings: Settings) -> None:
    """No address or number of the source in any text the browser was shown, and every
    address-like word masked but the sender's own address and the user@host of a
    connection URL (the resources' settings)."""
    text = "\n".join(shown)
    assert "***" in text, "the pages read must have shown masked values"
    leaked = [value for value in personal if value in text]
    assert leaked == [], f"personal data shown in the UI: {leaked[:5]}"
    addresses = re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", text)
    unmasked = [
        a
        for a in addresses
        if "***" not in a
        and a != settings.email_from
        and not re.fullmatch(r"\d{1,3}(?:\.\d{1,3}){3}", a.rpartition("@")[2])
    ]
    assert unmasked == [], unmasked


def _one_chain_run_at_a_time(instance) -> None:
    """The runs of the chain (``darwin_notify/chain``) never overlapped in time."""
    from dagster import RunsFilter

    records = instance.get_run_records(filters=RunsFilter(tags={"darwin_notify/chain": "notify"}))
    spans = sorted((r.start_time, r.end_time, r.dagster_run.run_id) for r in records)
    assert len(spans) >= 2 and all(start and end for start, end, _ in spans), spans
    for (_, end, before), (start, _, after) in zip(spans, spans[1:], strict=False):
        assert start >= end, f"chain runs {before[:8]} and {after[:8]} were in flight together"


def _latest_delivery(instance, day: str) -> tuple[str, dict[str, Any]]:
    return next((rid, md) for rid, md in _deliveries(instance) if md["partition"] == day)


@dataclass
class World:
    """The module's stack, its own services and scenario, and the Dagster UI serving them."""

    stack: Stack
    settings: Settings
    overrides: dict[str, str]
    instance: Any
    server: DagsterServer
    browser: Any
    shots: Path
    windows: list[Window]
    personal: list[str]
    sent_at_start: tuple[int, int]
    sent_before_ui: tuple[int, int]
    started: float


def _ten_years_back() -> str:
    today = datetime.now(UTC).date()
    return f"{today.replace(year=today.year - 10).isoformat()}-00:00"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Arranged before the UI starts: the source seeded, two windows run through the helpers
    the other tests use, the third applied for the daemon's sensor to find on its own."""
    started = time.monotonic()
    tmp = tmp_path_factory.mktemp("ui")
    with pytest.MonkeyPatch.context() as mp:
        stack = make_stack(tmp, mp)
        with own_services(stack, mp, tmp) as overrides:
            overrides["DARWIN_NOTIFY_PARTITION_START"] = _ten_years_back()
            mp.setenv("DARWIN_NOTIFY_PARTITION_START", overrides["DARWIN_NOTIFY_PARTITION_START"])
            primary = stack.admin("PRIMARY")
            dataset = stack.reset_source(primary, seed.SeedSize.small())
            changes = seed.generate_changes(dataset, 7, DEMO_START, 3, 5)
            windows = windows_of(changes)
            stack.wait_replayed(primary)
            settings = stack.settings()
            stack.baseline(settings)
            email_start, sms_start = (len(r) for r in _sent_records(stack))
            instance = stack.dagster_instance()
            for wc, window in zip(changes[:2], windows[:2], strict=True):
                seed.apply_window(primary, wc)
                stack.wait_replayed(primary)
                assert stack.run_window(instance, window.partition_key).success
            seed.apply_window(primary, changes[2])
            stack.wait_replayed(primary)
            personal = _personal_data(primary)
            primary.close()
            email_before_ui, sms_before_ui = (len(r) for r in _sent_records(stack))
            assert email_before_ui > email_start, "the first windows must have sent email"
            rt = Runtime.from_settings(settings)
            try:
                # Where the sensor will continue from (it has no cursor yet).
                assert rt.store.last_window() == windows[1].partition_key
            finally:
                rt.close()
            server = DagsterServer(tmp / "dagster_home", tmp / "dagster-dev.log", dict(os.environ))
            try:
                server.start()
                with chromium() as browser:
                    yield World(
                        stack=stack,
                        settings=settings,
                        overrides=overrides,
                        instance=instance,
                        server=server,
                        browser=browser,
                        shots=_screenshots(tmp),
                        windows=windows,
                        personal=personal,
                        sent_at_start=(email_start, sms_start),
                        sent_before_ui=(email_before_ui, sms_before_ui),
                        started=started,
                    )
                # Whatever the daemon started by itself (the sensor, the hourly
                # reconciliation) finishes before the server stops: no run is cut off.
                _wait(lambda: not _in_flight(instance), RUN_TIMEOUT, "the runs in flight")
            finally:
                server.stop()
                instance.dispose()
                sys.stdout.write(f"UI tests took {time.monotonic() - started:.0f}s\n")


@pytest.fixture
def ui(world: World, services_environment: None, monkeypatch: pytest.MonkeyPatch) -> UIPage:
    """A browser tab on the module's UI; the module's own settings in the environment again
    (the tier's autouse fixture sets the shared ones for each test)."""
    for name, value in world.overrides.items():
        monkeypatch.setenv(name, value)
    return UIPage(world.browser, world.server.url, world.shots, on_shot=_announce)


def test_the_ui_reruns_a_window_and_backfills_days_without_sending_twice(
    world: World, ui: UIPage
) -> None:
    from dagster import DagsterRunStatus, RunsFilter

    started = time.monotonic()
    stack, settings, instance, server = world.stack, world.settings, world.instance, world.server
    windows = world.windows
    email_start, sms_start = world.sent_at_start
    email_before_ui, sms_before_ui = world.sent_before_ui

    # The sensor continues after the store's last window: one run from the third window on.
    def sensor_run():
        runs = instance.get_runs(
            filters=RunsFilter(tags={"dagster/sensor_name": "replica_lag_sensor"})
        )
        return runs[0] if runs else None

    first = _wait(sensor_run, 180, "the sensor's first run")
    covered = windows_of_run(DAY, first.tags[WINDOWS_TAG], 5, datetime.max, timedelta(0))
    assert covered[0] == windows[2] and len(covered) == 24, first.tags
    sensor = _wait(lambda: _finished(instance, first.run_id), RUN_TIMEOUT, "the sensor's run")
    assert sensor.status == DagsterRunStatus.SUCCESS, server.tail()
    sensor_md = _delivery_metadata(instance, sensor.run_id)
    assert sensor_md["partition"] == DAY
    email_after_sensor, sms_after_sensor = (len(r) for r in _sent_records(stack))
    sensor_sends = email_after_sensor + sms_after_sensor - email_before_ui - sms_before_ui
    third = _store_counts(settings, windows[2].partition_key)
    assert sensor_md["sent_in_this_run"] > 0 and sensor_sends == third["sent"], (
        f"the third window's sends are the sensor run's: run metadata {sensor_md}, "
        f"store {third}, {sensor_sends} new provider requests"
    )

    with ui.step("lineage"):
        _lineage(ui, len(notification_days_for(settings).get_partition_keys()))
    with ui.step("partition"):
        _partition(ui, sensor.run_id, sensor_md, settings)
    with ui.step("rendered"):
        rendered_md = _materialization_metadata(instance, "rendered_messages", sensor.run_id)
        _rendered(ui, sensor.run_id, rendered_md)
    with ui.step("checks"):
        _checks(ui)
    with ui.step("rerun"):
        rerun_id = _launch_rerun(ui, windows[0].start.strftime("%H:%M"))
    tag = f"{windows[0].start:%H:%M}..{windows[2].start:%H:%M}"
    with ui.step("backfill"):
        backfill_id = _launch_backfill(ui, instance, DAY, NEXT_DAY, tag)

    rerun = _wait(lambda: _finished(instance, rerun_id), RUN_TIMEOUT, "the UI's rerun")
    assert rerun.status == DagsterRunStatus.SUCCESS, server.tail()
    assert rerun.tags[WINDOWS_TAG] == f"{windows[0].start:%H:%M}"
    assert rerun.tags["dagster/partition"] == DAY
    backfill = _wait(
        lambda: (b := instance.get_backfill(backfill_id)) is not None
        and b.status.value != "REQUESTED"
        and b,
        RUN_TIMEOUT,
        "the UI's backfill",
    )
    assert backfill.status.value == "COMPLETED_SUCCESS", server.tail()
    backfill_runs = instance.get_runs(filters=RunsFilter(tags={"dagster/backfill": backfill_id}))
    assert sorted(r.tags["dagster/partition"] for r in backfill_runs) == [DAY, NEXT_DAY]
    assert all(r.status == DagsterRunStatus.SUCCESS for r in backfill_runs)
    assert all(r.tags[WINDOWS_TAG] == tag for r in backfill_runs)

    with ui.step("runs"):
        _runs_page(ui, rerun_id, backfill_id, [r.run_id for r in backfill_runs])
    for run in [rerun, *backfill_runs]:
        md = _delivery_metadata(instance, run.run_id)
        assert md["sent_in_this_run"] == 0, (run.tags, md)
    # Each day's partition now shows the newest of those runs, which sent nothing.
    for day in (DAY, NEXT_DAY):
        run_id, md = _latest_delivery(instance, day)
        assert run_id in {rerun_id, *(r.run_id for r in backfill_runs)}
        with ui.step(f"partition-{day}"):
            _reran_partition(ui, day, run_id, md)
    _nothing_personal(ui.shown, world.personal, settings)

    # The sensor did not flood: its one run caught up the third window and the empty
    # windows after it, and no two runs of the chain (the sensor's, the launchpad's rerun)
    # were ever in flight together.
    sensor_runs = instance.get_runs(
        filters=RunsFilter(tags={"dagster/sensor_name": "replica_lag_sensor"})
    )
    assert [r.run_id for r in sensor_runs] == [sensor.run_id]
    _one_chain_run_at_a_time(instance)

    # The provider sinks: the rerun and the backfill sent nothing; no key was sent twice.
    email, sms = _sent_records(stack)
    assert (len(email), len(sms)) == (email_after_sensor, sms_after_sensor)
    email_keys = Counter(_email_key(r) for r in email[email_start:])
    assert [k for k, n in email_keys.items() if n > 1] == []
    sms_keys = Counter(_sms_identity(r) for r in sms[sms_start:])
    assert [k for k, n in sms_keys.items() if n > 1] == []
    rt = Runtime.from_settings(settings)
    try:
        sent = rt.store.messages(statuses=[MessageStatus.SENT])
        still_open = rt.store.messages(statuses=[MessageStatus.QUEUED, MessageStatus.SENDING])
    finally:
        rt.close()
    assert len(sent) == len(email_keys) + len(sms_keys)
    assert still_open == []
    sys.stdout.write(f"UI test took {time.monotonic() - started:.0f}s after the arrangement\n")


# -- the steps in the browser ------------------------------------------------------------------
def _lineage(ui: UIPage, days: int) -> None:
    page = ui.page
    ui.goto(
        "/asset-groups",
        ready=lambda: page.locator(
            "[class*=collapsedGroupNodeBox], [class*=assetName]"
        ).first.wait_for(),
    )
    if len(ui.asset_node_names()) < len(ALL_ASSETS):
        ui.choose(
            page.locator("button:has([aria-label=settings])").last,
            page.get_by_text("Expand all groups").last,
        )
        page.keyboard.press("Escape")
    expected = ALL_ASSETS
    _wait(lambda: ui.asset_node_names() == expected, 60, f"asset nodes {expected}", 0.5)
    ui.shot("lineage")
    assert ui.asset_node_names() == expected
    for name, checks in (("delivery_log", 2), ("change_window", 1), ("agent_totals", 1)):
        node = _asset_node(ui, name)
        assert re.search(rf"Asset checks\s*{checks}\s*/\s*{checks}\s+Passed", node), (name, node)
    for name in NOTIFICATION_ASSETS + ["send_audit"]:
        node = _asset_node(ui, name)
        assert re.search(rf"\b({days:,}|{days}) partitions", node), (name, days, node)
    body = ui.text()
    assert all(group in body for group in ("notifications", "audit", "operations")), body[:400]


def _asset_node(ui: UIPage, name: str) -> str:
    """The text of the asset graph's node of ``name`` (its checks, partitions, latest event)."""
    return str(
        ui.page.locator("[class*=assetNodeContainer]")
        .filter(has=ui.page.locator("[class*=assetName]", has_text=re.compile(f"^{name}$")))
        .first.inner_text()
    )


def _partition(ui: UIPage, run_id: str, expected: dict[str, Any], settings) -> None:
    page = ui.page
    ui.goto(
        f"/assets/delivery_log?view=partitions&partition={DAY}",
        ready=lambda: page.get_by_text("sent_in_this_run", exact=True).first.wait_for(),
    )
    page.get_by_text("per_window", exact=True).first.scroll_into_view_if_needed()
    ui.shot(f"delivery_log-{DAY}")
    body = ui.text()
    days = len(notification_days_for(settings).get_partition_keys())
    assert partitions_selected(body) in (days, days + 1), body[:400]
    assert "Materialized" in body
    assert run_id[:8] in body, "the partition's latest run is the sensor's"
    md = ui.metadata()
    for key in ("sent", "sent_in_this_run", "failed", "unknown", "suppressed", "windows"):
        assert md.get(key) == str(expected[key]), (key, md.get(key), expected[key])
    assert md["first_window"] == expected["first_window"]
    assert md["last_window"] == expected["last_window"]
    rows = ui.table_with_header("window")
    assert len(rows) == expected["windows"] == 24
    assert [r["window"] for r in rows] == [r.data["window"] for r in expected["per_window"].records]
    assert sum(int(r["sent"]) for r in rows) == expected["sent"] > 0


def _rendered(ui: UIPage, run_id: str, expected: dict[str, Any]) -> None:
    """rendered_messages' day: its counts, the failures by reason and the masked preview of
    one message per schedule."""
    page = ui.page
    ui.goto(
        f"/assets/rendered_messages?view=partitions&partition={DAY}",
        ready=lambda: page.get_by_text("message_preview", exact=True).first.wait_for(),
    )
    page.get_by_text("failures_by_reason", exact=True).first.scroll_into_view_if_needed()
    ui.shot(f"rendered_messages-{DAY}")
    assert run_id[:8] in ui.text(), "the partition's latest run is the sensor's"
    md = ui.metadata()
    for key in ("rendered", "suppressed", "render_failed", "windows"):
        assert md.get(key) == str(expected[key]), (key, md.get(key), expected[key])
    rows = ui.table_with_header("reason_class")
    assert rows == [
        {k: str(v) for k, v in r.data.items()} for r in expected["failures_by_reason"].records
    ]
    failures = expected["suppressed"] + expected["render_failed"]
    assert sum(int(r["count"]) for r in rows) == failures > 0, rows
    preview = ui.markdown("message_preview", shot="rendered_messages-preview")
    headers = re.findall(r"\((email|sms), (\w+), (\d{4}-\d{2}-\d{2}-\d{2}:\d{2})\)", preview)
    assert headers and {h[2] for h in headers} == {expected["first_window"]}, preview[:600]
    assert "***" in preview, preview[:600]
    not_sendable = ui.markdown("not_sendable")
    assert "suppressed: " in not_sendable, not_sendable[:600]


def _checks(ui: UIPage) -> None:
    page = ui.page
    ui.goto(
        "/assets/delivery_log?view=checks",
        ready=lambda: page.get_by_text("Evaluation result").first.wait_for(),
    )
    _wait(
        lambda: set(ui.check_states(DELIVERY_CHECKS).values()) == {"Succeeded"},
        60,
        "both checks shown as succeeded",
        0.5,
    )
    ui.shot("delivery_log-checks")
    assert ui.check_states(DELIVERY_CHECKS) == dict.fromkeys(DELIVERY_CHECKS, "Succeeded")
    result = page.get_by_text("Evaluation result").first.locator("xpath=..").inner_text()
    assert "Passed" in result, result
    md = ui.metadata()
    assert md.get("duplicates") == "0", md


def _pick_partition(ui: UIPage, field: Any, key: str, attempts: int = 3) -> None:
    """Type ``key`` into the launchpad's partition field and pick it from the suggestions; the
    field is typed into again when the suggestions closed before the pick (the page was
    still rendering its ten years of days)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(1, attempts + 1):
        field.click()
        field.fill("")
        field.fill(key)
        try:
            ui.page.get_by_text(key, exact=True).last.click(timeout=20_000)
            return
        except PlaywrightTimeout:
            if attempt == attempts:
                raise
            ui.page.keyboard.press("Escape")


def _launch_rerun(ui: UIPage, window: str) -> str:
    page = ui.page
    ui.goto(
        "/locations/darwin_notify_assets/jobs/notify_window/playground",
        ready=lambda: page.get_by_placeholder("Partition").wait_for(),
    )
    partition = page.get_by_placeholder("Partition")
    _pick_partition(ui, partition, DAY)
    _wait(lambda: f"partition: {DAY}" in _tag_texts(ui), 60, "the partition tag", 0.5)
    page.get_by_role("button", name="Edit tags").click()
    dialog = page.get_by_role("dialog").filter(has_text="Add tags to run")
    dialog.get_by_role("button", name="Add custom tag").click()
    dialog.get_by_placeholder("Tag Key").last.fill(WINDOWS_TAG)
    dialog.get_by_placeholder("Tag Value").last.fill(window)
    dialog.get_by_role("button", name="Apply").click()
    dialog.wait_for(state="hidden")
    _wait(lambda: f"{WINDOWS_TAG}: {window}" in _tag_texts(ui), 30, "the windows tag", 0.5)
    ui.shot("launchpad-rerun")
    assert "No errors" in ui.text()
    page.get_by_role("button", name="Launch Run").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    run_id = page.url.rsplit("/", 1)[-1].split("?")[0]
    page.get_by_text(f"partition: {DAY}").first.wait_for()
    ui.shot("rerun-launched")
    return run_id


def _tag_texts(ui: UIPage) -> list[str]:
    return [
        re.sub(r"\s+", " ", t).strip()
        for t in ui.page.locator("[data-tooltip]").evaluate_all(
            "es => es.map(e => e.getAttribute('data-tooltip'))"
        )
        if t
    ]


def _launch_backfill(ui: UIPage, instance, first: str, last: str, windows: str) -> str:
    page = ui.page
    ui.goto(
        "/locations/darwin_notify_assets/asset-groups/notifications/lineage",
        ready=lambda: page.get_by_role("button", name=re.compile("Materialize all")).wait_for(),
    )
    page.get_by_role("button", name=re.compile("Materialize all")).click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    dialog.get_by_text("Partition selection").wait_for()
    # The dialog offers the last 90 days first; the range must be picked from all of them.
    dialog.get_by_role("button", name=re.compile("Last 90 days|All time")).wait_for()
    show_all = dialog.get_by_role("button", name="Show all partitions")
    if show_all.count():
        show_all.click()
    dialog.get_by_role("button", name=re.compile("All time")).wait_for()
    selection = dialog.locator("input[type=text]").first
    selection.fill(f"[{first}...{last}]")
    selection.press("Enter")
    dialog.get_by_text("2 partitions", exact=True).wait_for()
    dialog.get_by_text("Tags", exact=True).click()
    dialog.get_by_role("button", name="Add tags").click()
    tags = page.get_by_role("dialog").filter(has_text="Add tags to")
    keys = tags.get_by_placeholder("Tag Key")
    if keys.count() == 0 or keys.last.input_value():
        tags.get_by_role("button", name="Add custom tag").click()
    tags.get_by_placeholder("Tag Key").last.fill(WINDOWS_TAG)
    tags.get_by_placeholder("Tag Value").last.fill(windows)
    tags.get_by_role("button", name="Apply").click()
    tags.wait_for(state="hidden")
    dialog.get_by_text(f"{WINDOWS_TAG}: {windows}").wait_for()
    ui.shot("backfill-dialog")
    text = dialog.inner_text()
    assert "2 partitions" in text and "1 tags" in text, text
    before = {b.backfill_id for b in instance.get_backfills()}
    dialog.get_by_role("button", name="Launch backfill").click()
    backfill = _wait(
        lambda: [b for b in instance.get_backfills() if b.backfill_id not in before],
        60,
        "the backfill to be created",
        0.5,
    )[0]
    page.get_by_text(f"Created backfill {backfill.backfill_id}").wait_for()
    ui.shot("backfill-launched")
    assert backfill.tags.get(WINDOWS_TAG) == windows
    return str(backfill.backfill_id)


def _runs_page(ui: UIPage, rerun_id: str, backfill_id: str, backfill_runs: list[str]) -> None:
    """The runs list: the rerun and the backfill succeeded, with their windows tag; then
    the backfill's own runs, one per day."""
    page = ui.page

    def row(label: str) -> str:
        found = page.locator("[class*=rowGrid]").filter(has=page.get_by_text(label, exact=True))
        return str(found.first.inner_text()) if found.count() else ""

    ui.goto("/runs", ready=lambda: page.get_by_text(rerun_id[:8], exact=True).first.wait_for())
    _wait(
        lambda: "Success" in row(rerun_id[:8]) and "Success" in row(backfill_id),
        60,
        "the rerun and the backfill listed as succeeded",
        0.5,
    )
    ui.shot("runs")
    assert f"{WINDOWS_TAG}: " in row(rerun_id[:8]) and f"partition: {DAY}" in row(rerun_id[:8])
    backfill = row(backfill_id)
    assert "Backfill" in backfill and "2 partitions" in backfill, backfill
    page.get_by_text("Show runs within backfills").click()
    _wait(lambda: all("Success" in row(r[:8]) for r in backfill_runs), 60, "backfill runs", 0.5)
    ui.shot("runs-within-backfill")
    days = sorted(
        re.search(r"partition: (\S+)", row(r[:8])).group(1)  # type: ignore[union-attr]
        for r in backfill_runs
    )
    assert days == [DAY, NEXT_DAY], days


def _reran_partition(ui: UIPage, day: str, run_id: str, expected: dict[str, Any]) -> None:
    page = ui.page
    ui.goto(
        f"/assets/delivery_log?view=partitions&partition={day}",
        ready=lambda: page.get_by_text(run_id[:8], exact=True).first.wait_for(),
    )
    page.get_by_text("sent_in_this_run", exact=True).first.wait_for()
    ui.shot(f"delivery_log-{day}-after")
    md = ui.metadata()
    for key in ("sent_in_this_run", "sent", "windows", "first_window", "last_window"):
        assert md.get(key) == str(expected[key]), (day, key, md.get(key), expected[key])
    assert md["sent_in_this_run"] == "0"
    assert len(ui.table_with_header("window")) == expected["windows"]


def test_the_partitions_page_lists_ten_years_of_days(world: World, ui: UIPage) -> None:
    """Ten years of daily partitions (Dagster advises at most about 100,000): the partitions
    page renders the whole count, what is materialized and missing, and the newest day."""
    from dagster import AssetKey

    days = notification_days_for(world.settings).get_partition_keys()
    assert 3650 <= len(days) <= 3654
    done = world.instance.get_materialized_partitions(AssetKey("delivery_log"))
    page = ui.page
    ui.goto(
        "/assets/delivery_log?view=partitions",
        ready=lambda: page.get_by_text("Partitions Selected").first.wait_for(),
    )
    page.get_by_text(days[-1], exact=True).first.wait_for()
    ui.shot("ten-years-of-partitions")
    body = ui.text()
    assert partitions_selected(body) == len(days), body[:400]
    assert f"Materialized ({len(done)})" in body and f"Missing ({len(days) - len(done)})" in body
    assert f"{days[0]}...{days[-1]}" in page.locator("input").first.input_value()
