"""The integration tier's harness: the real services of ``make services-up``.

Connection settings come from ``infra/services.sh env``. A missing service fails the test with
the command that starts it; nothing here is ever skipped.
"""

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from darwin_notify_assets.config import Settings
from darwin_notify_assets.domain.detect import baseline
from darwin_notify_assets.domain.pipeline import Runtime, load_schedules
from darwin_notify_assets.domain.windows import Window
from darwin_notify_assets.errors import ConfigurationError
from darwin_notify_assets.sample import seed
from darwin_notify_assets.sample.demo import DEMO_START
from darwin_notify_assets.storage.db import Database, connect
from darwin_notify_assets.storage.store import NotificationStore
from darwin_notify_tests import services as shared
from darwin_notify_tests.services import STORE_TABLES

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES_SH = REPO_ROOT / "infra" / "services.sh"
HINT = "start the services with `make services-up`"
PIPELINE_ROLE = "darwin_notify"


def services_env() -> dict[str, str]:
    try:
        return shared.services_env()
    except shared.ServicesUnavailable as exc:
        pytest.fail(str(exc))


@dataclass
class Stack:
    """The running services and helpers to drive a scenario on them."""

    env: dict[str, str]
    tmp: Path
    topic_prefix: str

    def admin(self, which: str = "PRIMARY") -> Database:
        try:
            db = connect(self.env[f"DARWIN_NOTIFY_{which}_ADMIN_URL"])
        except (ConfigurationError, KeyError) as exc:
            pytest.fail(f"cannot reach the {which.lower()}: {exc}; {HINT}")
        if which == "PRIMARY":
            # The test cluster runs with synchronous_commit off; a scenario's own writes must
            # be in the WAL when they return, or waiting for the standby could end too early.
            db.execute("SET synchronous_commit TO on").close()
            db.commit()
        return db

    def settings(self, **overrides: Any) -> Settings:
        return Settings.from_env(overrides={"home": str(self.tmp), **overrides})

    # -- darwin.Cloud on the primary -------------------------------------------------------------
    def reset_source(self, primary: Database, size: seed.SeedSize, seed_value: int = 7):
        for table in seed.TABLES:
            primary.execute(f'DROP TABLE IF EXISTS "{table}"').close()
        primary.commit()
        seed.create_schema(primary)
        dataset = seed.generate_base(size, seed_value, DEMO_START)
        seed.write_base(primary, dataset)
        primary.execute("ANALYZE").close()
        primary.commit()
        return dataset

    def wait_replayed(self, primary: Database, timeout: float = 30) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        lsn = primary.scalar("SELECT pg_current_wal_lsn()::text")
        primary.commit()
        replica = self.admin("REPLICA")
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                done = replica.scalar(
                    "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), ?::pg_lsn) >= 0", [lsn]
                )
                replica.commit()
                if done:
                    return
                time.sleep(0.05)
        finally:
            replica.close()
        pytest.fail(f"the standby did not replay up to {lsn} within {timeout}s")

    # -- the store -----------------------------------------------------------------------------
    def reset_store(self) -> None:
        store = NotificationStore.open(self.env["DARWIN_NOTIFY_STORE_URL"])
        try:
            for table in STORE_TABLES:
                store.db.execute(f"DROP TABLE IF EXISTS {table}").close()
            store.db.commit()
            store.ensure_schema()
        finally:
            store.close()

    def baseline(self, settings: Settings) -> None:
        rt = Runtime.from_settings(settings)
        try:
            baseline(rt.replica, rt.store, load_schedules(rt.replica).schedules)
        finally:
            rt.close()

    # -- statistics ------------------------------------------------------------------------------
    def primary_statements(self) -> int:
        primary = self.admin("PRIMARY")
        try:
            primary.execute("SELECT pg_stat_force_next_flush()").close()
            primary.commit()
            return int(
                primary.scalar(
                    "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE userid = ?::regrole",
                    [PIPELINE_ROLE],
                )
            )
        finally:
            primary.close()

    # -- providers -------------------------------------------------------------------------------
    def sink_records(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return shared.sink_records(self.env)

    def sink_control(self, which: str, **command: Any) -> None:
        shared.sink_control(self.env, which, **command)

    # -- Dagster -----------------------------------------------------------------------------------
    def dagster_instance(self):
        from dagster import DagsterInstance

        home = self.tmp / "dagster_home"
        home.mkdir(exist_ok=True)
        (home / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())
        return DagsterInstance.from_config(str(home))

    def run_window(self, instance, partition_key: str):
        from darwin_notify_assets.defs.notifications.runs import run_window

        return run_window(partition_key, instance)

    # -- workers in their own processes --------------------------------------------------------------
    def start_workers(self, render: int, send: int) -> list[subprocess.Popen]:
        log_dir = self.tmp / "workers"
        return [
            shared.start_worker(kind, log_dir / f"{kind}-{i}.log")
            for kind, count in (("render", render), ("send", send))
            for i in range(count)
        ]


stop_processes = shared.stop_processes


@pytest.fixture(scope="session")
def services() -> dict[str, str]:
    return services_env()


@pytest.fixture(autouse=True)
def services_environment(services: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every integration test sees the services' settings; other tests never do."""
    for name, value in services.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    yield make_stack(tmp_path, monkeypatch)


def make_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """A ``Stack`` on ``tmp_path`` with an empty store, its settings in the environment
    (through ``monkeypatch``, of whichever scope the caller has)."""
    env = services_env()
    missing = [
        k
        for k in (
            "DARWIN_NOTIFY_REPLICA_URL",
            "DARWIN_NOTIFY_STORE_URL",
            "DARWIN_NOTIFY_PRIMARY_ADMIN_URL",
            "DARWIN_NOTIFY_KAFKA_BOOTSTRAP",
        )
        if not env.get(k)
    ]
    if missing:
        pytest.fail(f"{missing} not set by infra/services.sh env; {HINT}")
    prefix = f"it-{uuid.uuid4().hex[:8]}"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DARWIN_NOTIFY_HOME", str(tmp_path))
    monkeypatch.setenv("DARWIN_NOTIFY_KAFKA_TOPIC_PREFIX", prefix)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    s = Stack(env=env, tmp=tmp_path, topic_prefix=prefix)
    s.reset_store()
    return s


def windows_of(changes: list[seed.WindowChanges], minutes: int = 5) -> list[Window]:
    return [Window.containing(wc.start, minutes) for wc in changes]


@contextmanager
def schema_store(store_url: str, prefix: str) -> Iterator[NotificationStore]:
    """A store in a PostgreSQL schema of its own on the store cluster, dropped after."""
    db = connect(store_url)
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    db.execute(f"CREATE SCHEMA {schema}").close()
    db.execute(f"SET search_path TO {schema}").close()
    db.commit()
    try:
        yield NotificationStore(db)
    finally:
        db.rollback()
        db.execute(f"DROP SCHEMA {schema} CASCADE").close()
        db.commit()
        db.close()


def poll(predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
