"""The Dagster UI's partitions page with ten years of daily partitions, in a real browser.

Starts ``dagster-webserver`` (no daemon) on a Dagster home of its own with
``DARWIN_NOTIFY_PARTITION_START`` ``--years`` before today, optionally records ``--materialized``
runless materializations of ``delivery_log`` (the newest days), and opens
``/assets/delivery_log?view=partitions`` in headless Chromium ``--repeat`` times. For each load
it measures the time from navigation to the partition count ("3,653 Partitions Selected"),
to the newest partition in the list, and to a day's detail with its metadata, and prints a
table and the same figures as one JSON line. ``--window-years N`` also times the same page
with the design the days replaced: an asset partitioned by five-minute windows over N years
(``benchmarks/ui_partitions_windows.py``).

Run on demand (``python benchmarks/ui_partitions.py``), not part of the test suite. The
instance is SQLite by default; ``--storage postgres`` puts it in a fresh database on the
services' store cluster (hold the services' lock, like the other benchmarks).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from darwin_notify_tests.dagster_ui import (  # noqa: E402
    DagsterServer,
    UIPage,
    chromium,
    partitions_selected,
)

ASSET = "delivery_log"


def _write_instance(home: Path, storage: str, env: dict[str, str]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    if storage == "postgres":
        repo = Path(__file__).resolve().parents[1]
        (home / "dagster.yaml").write_text((repo / "dagster.yaml").read_text())
    else:
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")


def _materialize(home: Path, keys: list[str]) -> float:
    from dagster import AssetMaterialization, DagsterInstance

    started = time.monotonic()
    instance = DagsterInstance.from_config(str(home))
    try:
        for key in keys:
            instance.report_runless_asset_event(
                AssetMaterialization(asset_key=ASSET, partition=key, metadata={"sent": 0})
            )
    finally:
        instance.dispose()
    return time.monotonic() - started


def _postgres_database(env: dict[str, str]) -> tuple[str, Any]:
    import psycopg2

    conn = psycopg2.connect(
        host=env["DAGSTER_PG_HOST"], port=env["DAGSTER_PG_PORT"], user="postgres", dbname="postgres"
    )
    conn.autocommit = True
    name = f"dagster_uibench_{uuid.uuid4().hex[:8]}"
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}" OWNER {env["DAGSTER_PG_USER"]}')
    return name, conn


def _time_loads(
    server: DagsterServer,
    shots: Path,
    newest: str,
    repeat: int,
    detail_day: str | None,
    materialized: bool,
) -> list[dict[str, float]]:
    loads: list[dict[str, float]] = []
    with chromium() as browser:
        for i in range(repeat):
            ui = UIPage(browser, server.url, shots, timeout_ms=600_000)
            page = ui.page
            t0 = time.monotonic()
            page.goto(f"{server.url}/assets/{ASSET}?view=partitions", wait_until="commit")
            page.get_by_text("Partitions Selected").first.wait_for()
            load = {"count_s": time.monotonic() - t0}
            page.get_by_text(newest, exact=True).first.wait_for()
            load["list_s"] = time.monotonic() - t0
            load["shown"] = float(partitions_selected(ui.text()) or 0)
            ui.shot(f"partitions-load{i + 1}")
            if detail_day:
                t1 = time.monotonic()
                page.goto(
                    f"{server.url}/assets/{ASSET}?view=partitions&partition={detail_day}",
                    wait_until="commit",
                )
                page.get_by_text(detail_day, exact=True).first.wait_for()
                if materialized:
                    page.get_by_text("sent", exact=True).first.wait_for()
                else:
                    page.get_by_text("No metadata entries").first.wait_for()
                load["detail_s"] = time.monotonic() - t1
                ui.shot(f"partition-detail-load{i + 1}")
            loads.append(load)
            page.context.close()
    return loads


def _figures(loads: list[dict[str, float]], key: str) -> dict[str, float] | None:
    values = [load[key] for load in loads if key in load]
    if not values:
        return None
    return {
        "first": round(values[0], 2),
        "median": round(statistics.median(values), 2),
        "max": round(max(values), 2),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from dagster import DailyPartitionsDefinition

    today = datetime.now(UTC).date()
    start = today.replace(year=today.year - args.years)
    partitions = DailyPartitionsDefinition(
        start_date=start.isoformat(), fmt="%Y-%m-%d", timezone="UTC", end_offset=1
    ).get_partition_keys()
    work = Path(tempfile.mkdtemp(prefix="ui-partitions-"))
    home = work / "dagster_home"
    env = dict(os.environ)
    admin = None
    if args.storage == "postgres":
        from darwin_notify_tests.services import services_env

        env.update(services_env())
        env["DAGSTER_PG_DB"], admin = _postgres_database(env)
        os.environ.update({k: env[k] for k in env if k.startswith("DAGSTER_PG_")})
    env["DARWIN_NOTIFY_PARTITION_START"] = f"{start.isoformat()}-00:00"
    env["DARWIN_NOTIFY_HOME"] = str(work)
    _write_instance(home, args.storage, env)
    materialized = partitions[-args.materialized :] if args.materialized else []
    result: dict[str, Any] = {
        "partition_start": start.isoformat(),
        "partitions": len(partitions),
        "materialized": len(materialized),
        "storage": args.storage,
        "loads": args.repeat,
        "screenshots": str(work / "screenshots"),
    }
    try:
        result["seconds_materializing"] = round(
            _materialize(home, materialized) if materialized else 0.0, 1
        )
        server = DagsterServer(home, work / "webserver.log", env, daemon=False)
        started = time.monotonic()
        server.start()
        result["webserver_ready_s"] = round(time.monotonic() - started, 1)
        try:
            loads = _time_loads(
                server,
                work / "screenshots",
                partitions[-1],
                args.repeat,
                (materialized[-1] if materialized else partitions[-2]) if args.detail else None,
                bool(materialized),
            )
        finally:
            server.stop()
    finally:
        if admin is not None:
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{env["DAGSTER_PG_DB"]}" WITH (FORCE)')
            admin.close()
    result["partitions_shown"] = int(loads[-1]["shown"])
    for key in ("count", "list", "detail"):
        result[f"to_partition_{key}_s"] = _figures(loads, f"{key}_s")
    if args.window_years:
        result["five_minute_windows"] = _measure_windows(args, work)
    return result


def _measure_windows(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The same page if every five-minute window were a partition (the rejected design)."""
    from dagster import TimeWindowPartitionsDefinition

    now = datetime.now(UTC).replace(tzinfo=None)
    start = now.replace(year=now.year - args.window_years, hour=0, minute=0, second=0)
    first = start.strftime("%Y-%m-%d-%H:%M")
    keys = TimeWindowPartitionsDefinition(
        cron_schedule="*/5 * * * *", start=first, fmt="%Y-%m-%d-%H:%M", timezone="UTC"
    ).get_partition_keys()
    home = work / "windows_home"
    _write_instance(home, "sqlite", {})
    env = {**os.environ, "UI_BENCH_WINDOWS_START": first, "DARWIN_NOTIFY_HOME": str(work)}
    server = DagsterServer(
        home,
        work / "webserver-windows.log",
        env,
        daemon=False,
        target=["-m", "benchmarks.ui_partitions_windows"],
    )
    started = time.monotonic()
    server.start()
    ready = time.monotonic() - started
    try:
        loads = _time_loads(
            server, work / "screenshots-windows", keys[-1], args.repeat, None, False
        )
    finally:
        server.stop()
    return {
        "years": args.window_years,
        "partitions": len(keys),
        "partitions_shown": int(loads[-1]["shown"]),
        "webserver_ready_s": round(ready, 1),
        "to_partition_count_s": _figures(loads, "count_s"),
        "to_partition_list_s": _figures(loads, "list_s"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--years", type=int, default=10, help="years of daily partitions")
    parser.add_argument("--repeat", type=int, default=5, help="page loads to time")
    parser.add_argument(
        "--materialized", type=int, default=0, help="newest days to mark materialized"
    )
    parser.add_argument("--storage", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--no-detail", dest="detail", action="store_false", help="skip the day's detail"
    )
    parser.add_argument(
        "--window-years",
        type=int,
        default=0,
        help="also time the page with five-minute partitions over this many years",
    )
    args = parser.parse_args(argv)
    result = measure(args)
    out = sys.stdout
    out.write(
        f"{result['partitions']} daily partitions from {result['partition_start']} "
        f"({result['materialized']} materialized, {result['storage']} instance); the page "
        f"showed {result['partitions_shown']}\n"
    )
    out.write(f"webserver ready in {result['webserver_ready_s']} s\n")
    for label, key in (
        ("to the partition count", "to_partition_count_s"),
        ("to the partition list", "to_partition_list_s"),
        ("to a day's detail", "to_partition_detail_s"),
    ):
        f = result[key]
        if f:
            out.write(
                f"{label:<24} first {f['first']:>6.2f} s  median {f['median']:>6.2f} s  "
                f"max {f['max']:>6.2f} s  ({result['loads']} loads)\n"
            )
    windows = result.get("five_minute_windows")
    if windows:
        out.write(
            f"five-minute partitions over {windows['years']} year(s): {windows['partitions']} "
            f"(the page showed {windows['partitions_shown']}); webserver ready in "
            f"{windows['webserver_ready_s']} s\n"
        )
        for label, key in (
            ("to the partition count", "to_partition_count_s"),
            ("to the partition list", "to_partition_list_s"),
        ):
            f = windows[key]
            out.write(
                f"{label:<24} first {f['first']:>6.2f} s  median {f['median']:>6.2f} s  "
                f"max {f['max']:>6.2f} s\n"
            )
    out.write(f"screenshots: {result['screenshots']}\n")
    out.write(json.dumps(result) + "\n")
    return 0 if result["partitions_shown"] == result["partitions"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
