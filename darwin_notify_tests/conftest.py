"""Fixtures of the embedded tier: a seeded SQLite darwin.Cloud, a store, settings, a runtime,
and a helper that runs one change window through Dagster in process.

Everything lives in a temporary folder (``DARWIN_NOTIFY_HOME``): ``darwin.db`` is the sample
darwin.Cloud (written here through a read-write connection, as the application would; the
pipeline opens it read-only), ``store.db`` the notification store, ``outbox/`` the file
outbox. No server is needed.
"""

import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, DagsterInstance, ExecuteInProcessResult

from darwin_notify_assets.bus.base import JobBus
from darwin_notify_assets.config import PREFIX, Settings
from darwin_notify_assets.defs.notifications.runs import run_window
from darwin_notify_assets.defs.resources import SendersResource, resources_from_env
from darwin_notify_assets.delivery.senders import Sender
from darwin_notify_assets.domain import detect
from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.domain.pipeline import LoadedSchedules, Runtime, load_schedules
from darwin_notify_assets.domain.windows import Window
from darwin_notify_assets.sample import demo, seed
from darwin_notify_assets.storage.db import Database, connect
from darwin_notify_assets.storage.replica import ReplicaReader
from darwin_notify_assets.storage.store import CandidateRow, NotificationStore, OutboundMessage
from darwin_notify_assets.testing.senders import RecordingSender
from darwin_notify_tests.mssql.server import SKIP_REASON, server_url

SEED = 7
START = demo.DEMO_START
WINDOW_MINUTES = 5
PARTITION = START.strftime("%Y-%m-%d-%H:%M")
ASSET_CHAIN = (
    "notification_schedules",
    "change_window",
    "agent_totals",
    "candidate_notifications",
    "rendered_messages",
    "delivery_log",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests of the executed T-SQL tier are skipped, and say why, when no server is named."""
    if server_url() is None:
        for item in items:
            if "mssql" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


class SenderRecorder:
    """Every sender a run builds is the real one (the file outbox) wrapped in a
    RecordingSender; calls are kept per home folder and channel."""

    def __init__(self) -> None:
        self.calls: dict[str, dict[str, list[OutboundMessage]]] = {}
        self.scripts: dict[str, dict[str, list[BaseException | None]]] = {}
        self._lock = threading.Lock()

    def wrap(self, home: Path, senders: dict[str, Sender]) -> dict[str, Sender]:
        calls, scripts = self.for_home(home), self.scripts_for(home)
        return {
            channel: RecordingSender(
                channel, inner=sender, calls=calls[channel], script=scripts[channel]
            )
            for channel, sender in senders.items()
        }

    def for_home(self, home: Path) -> dict[str, list[OutboundMessage]]:
        """The provider calls made for the environment under ``home``, per channel."""
        with self._lock:
            return self.calls.setdefault(str(home.resolve()), {"email": [], "sms": []})

    def scripts_for(self, home: Path) -> dict[str, list[BaseException | None]]:
        """Scripted provider answers for ``home`` (consumed across all its senders)."""
        with self._lock:
            return self.scripts.setdefault(str(home.resolve()), {"email": [], "sms": []})


# The recorder of the running test, if it installed one (``install_recording_senders``).
_RECORDER: list[SenderRecorder] = []


class RecordingSendersResource(SendersResource):
    """The senders resource of the environment, each sender wrapped by the test's recorder."""

    home: str

    def make(self) -> dict[str, Sender]:
        return _RECORDER[0].wrap(Path(self.home), super().make())


def install_recording_senders(mp: pytest.MonkeyPatch) -> SenderRecorder:
    recorder = SenderRecorder()
    mp.setattr(sys.modules[__name__], "_RECORDER", [recorder])
    return recorder


def env_resources(**overrides: Any) -> dict[str, Any]:
    """The resources the environment describes; with a recorder installed, recording senders."""
    resources = resources_from_env(**overrides)
    if _RECORDER and "senders" not in overrides:
        base = resources["senders"]
        home = Settings.from_env().home
        resources["senders"] = RecordingSendersResource(**base.model_dump(), home=home)
    return resources


@dataclass
class EmbeddedEnv:
    """A seeded embedded environment under ``home``; see the module docstring."""

    home: Path
    settings: Settings
    dataset: seed.Dataset
    changes: list[seed.WindowChanges]
    source: Database
    instance: DagsterInstance
    mp: pytest.MonkeyPatch
    applied: set[int] = field(default_factory=set)
    _open: list[Callable[[], None]] = field(default_factory=list)

    # -- windows ------------------------------------------------------------------------------
    def window(self, index: int) -> Window:
        return Window.containing(self.changes[index].start, self.settings.window_minutes)

    def key(self, index: int) -> str:
        return self.window(index).partition_key

    def apply(self, index: int) -> None:
        """Write window ``index``'s changes to darwin.db (once)."""
        if index not in self.applied:
            seed.apply_window(self.source, self.changes[index])
            self.applied.add(index)

    def run_window(self, index: int, apply: bool = True) -> ExecuteInProcessResult:
        """Apply the window's changes (once) and materialize its partition through Dagster."""
        if apply:
            self.apply(index)
        # the resource reads DARWIN_NOTIFY_HOME at run time: point it at this environment
        self.mp.setenv("DARWIN_NOTIFY_HOME", str(self.home))
        return run_partition(self.key(index), self.instance)

    # -- parts --------------------------------------------------------------------------------
    def runtime(self, bus: JobBus | None = None) -> Runtime:
        rt = Runtime.from_settings(self.settings, bus)
        self._open.append(rt.close)
        return rt

    def store(self) -> NotificationStore:
        store = NotificationStore.open(self.settings.store_url)
        store.ensure_schema()
        self._open.append(store.close)
        return store

    def replica(self) -> ReplicaReader:
        replica = ReplicaReader.open(self.settings.replica_url)
        self._open.append(replica.close)
        return replica

    def loaded(self) -> LoadedSchedules:
        return load_schedules(self.replica())

    def close(self) -> None:
        for close in reversed(self._open):
            with suppress(Exception):
                close()
        self._open.clear()
        self.source.close()
        self.instance.dispose()

    # -- direct reads, independent of the product's query code --------------------------------
    def store_rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return sqlite_rows(Path(self.settings.store_url.removeprefix("sqlite:///")), sql, params)

    def source_rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return sqlite_rows(self.home / "darwin.db", sql, params)

    def outbox_files(self) -> list[Path]:
        outbox = Path(self.settings.outbox_dir)
        if not outbox.exists():
            return []
        return sorted(p for p in outbox.rglob("*") if p.suffix in (".eml", ".json"))

    def set_row(self, table: str, key: int, values: Mapping[str, Any]) -> None:
        """UPDATE one darwin.db row (timestamps given as datetimes are bound like the seed's)."""
        db = self.source
        cols = list(values)
        assignments = ", ".join(f"{db.quote(c)} = ?" for c in cols)
        params = [db.ts(v) if isinstance(v, datetime) else v for v in values.values()]
        db.execute(
            f"UPDATE {db.quote(table)} SET {assignments} "
            f"WHERE {db.quote(seed.KEY_COLUMNS[table])} = ?",
            [*params, key],
        ).close()
        db.commit()

    def insert_row(self, table: str, values: Mapping[str, Any]) -> None:
        db = self.source
        cols = list(values)
        params = [db.ts(v) if isinstance(v, datetime) else v for v in values.values()]
        db.execute(
            f"INSERT INTO {db.quote(table)} ({', '.join(db.quote(c) for c in cols)}) "
            f"VALUES ({', '.join('?' for _ in cols)})",
            params,
        ).close()
        db.commit()


def sqlite_rows(path: Path, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Rows as dicts through a fresh, read-only sqlite3 connection."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cur = conn.execute(sql, tuple(params))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        conn.close()


def run_partition(partition_key: str, instance: DagsterInstance) -> ExecuteInProcessResult:
    """Materialize one change window's whole chain through Dagster, in this process.

    The resources are those the environment describes when the run starts, so the caller
    must have set ``DARWIN_NOTIFY_HOME`` (the env fixtures do).
    """
    return run_window(partition_key, instance, env_resources())


def materialization_metadata(
    instance: DagsterInstance, asset: str, partition_key: str | None = None
) -> dict[str, Any]:
    """The latest materialization's metadata of ``asset`` as plain values (of the day of the
    window ``partition_key``, when given, by a run that processed that window)."""
    event = instance.get_latest_materialization_event(AssetKey(asset))
    assert event is not None, f"{asset} was never materialized"
    mat = event.asset_materialization
    assert mat is not None
    metadata = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    if partition_key is not None:
        # A window key: the materialization is of its day, by a run that processed it.
        assert mat.partition == partition_key[:10], (asset, mat.partition, partition_key)
        if len(partition_key) > 10 and "first_window" in metadata:
            assert metadata["first_window"] <= partition_key <= metadata["last_window"]
    return metadata


def clean_environment(mp: pytest.MonkeyPatch, home: Path) -> None:
    """No setting of the caller's shell leaks in: embedded defaults under ``home``."""
    for name in list(os.environ):
        if name.startswith(PREFIX):
            mp.delenv(name)
    mp.delenv("DAGSTER_HOME", raising=False)
    mp.setenv("DARWIN_NOTIFY_HOME", str(home))
    # A hang fails within a minute instead of the production half hour.
    mp.setenv("DARWIN_NOTIFY_STAGE_TIMEOUT_SECONDS", "60")


def take_baseline(settings: Settings) -> None:
    """Record the replica's rows as last seen, as a deployment does before its first window."""
    rt = Runtime.from_settings(settings)
    try:
        detect.baseline(rt.replica, rt.store, load_schedules(rt.replica).schedules)
    finally:
        rt.close()


def build_env(
    home: Path,
    mp: pytest.MonkeyPatch,
    windows: int = 3,
    customize: Callable[[Database, seed.Dataset, list[seed.WindowChanges]], None] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> EmbeddedEnv:
    """Seed darwin.db with ``SeedSize.small()``, take the baseline, return the environment.

    ``customize(db, dataset, changes)`` may edit darwin.db (templates, schedules, contacts)
    after the base is written and before the baseline is taken, as demo.py orders it.
    ``extra_env`` is set after the environment is cleaned (a store on a server, say).
    """
    home.mkdir(parents=True, exist_ok=True)
    clean_environment(mp, home)
    for name, value in (extra_env or {}).items():
        mp.setenv(name, value)
    settings = Settings.from_env(overrides={"home": str(home)})
    source = connect(f"sqlite:///{home / 'darwin.db'}")
    seed.create_schema(source)
    dataset = seed.generate_base(seed.SeedSize.small(), SEED, START)
    seed.write_base(source, dataset)
    changes = seed.generate_changes(dataset, SEED, START, windows, settings.window_minutes)
    if customize is not None:
        customize(source, dataset, changes)
        source.commit()
    take_baseline(settings)
    return EmbeddedEnv(
        home=home,
        settings=settings,
        dataset=dataset,
        changes=changes,
        source=source,
        instance=DagsterInstance.ephemeral(),
        mp=mp,
    )


@pytest.fixture
def embedded_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedEnv]:
    """A fresh seeded environment (3 windows of changes generated, none applied yet)."""
    env = build_env(tmp_path / "home", monkeypatch)
    try:
        yield env
    finally:
        env.close()


@pytest.fixture
def env_factory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., EmbeddedEnv]]:
    """Build an environment with a ``customize`` hook (see ``build_env``)."""
    made: list[EmbeddedEnv] = []

    def make(windows: int = 3, customize=None) -> EmbeddedEnv:
        env = build_env(tmp_path / f"home{len(made)}", monkeypatch, windows, customize)
        made.append(env)
        return env

    try:
        yield make
    finally:
        for env in made:
            env.close()


def make_messages(
    store: NotificationStore,
    n: int,
    status: MessageStatus = MessageStatus.QUEUED,
    partition: str = PARTITION,
    prefix: str = "k",
    channel: str = "email",
) -> list[int]:
    """Insert ``n`` candidates with messages in ``status``; return the message ids."""
    keys = [f"{prefix}{i}" for i in range(n)]
    store.insert_candidates(
        [
            CandidateRow(
                candidate_key=k,
                partition_key=partition,
                schedule_id=1,
                channel=channel,
                event_id=1000 + i,
                source_table="Property",
                record_id=i,
                agent_id=1,
                recipient_kind="contact",
                recipient_id=i,
                uses_totals=False,
            )
            for i, k in enumerate(keys)
        ]
    )
    ids = {
        r[1]: int(r[0])
        for r in store.db.query(
            "SELECT candidate_id, candidate_key FROM candidate WHERE partition_key = ?", [partition]
        )
    }
    store.insert_messages(
        [
            OutboundMessage(
                candidate_id=ids[k],
                candidate_key=k,
                partition_key=partition,
                channel=channel,
                status=status,
                **(
                    dict(
                        to_address=f"{k}@example.com",
                        subject="s",
                        html_body="<p>h</p>",
                        text_body="t",
                    )
                    if channel == "email"
                    else dict(
                        to_address=f"+1312555{i:04d}",
                        sms_body=f"t {k}",
                        sms_encoding="GSM-7",
                        sms_segments=1,
                    )
                ),
            )
            for i, k in enumerate(keys)
        ]
    )
    rows = store.db.query(
        "SELECT message_id, candidate_key FROM message WHERE partition_key = ? ORDER BY 1",
        [partition],
    )
    store.db.commit()
    # in the order of the keys: an engine may number one INSERT ... SELECT's rows in any order
    ids = {r[1]: int(r[0]) for r in rows}
    return [ids[k] for k in keys]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NotificationStore]:
    """An empty notification store on a temporary SQLite file."""
    s = NotificationStore.open(f"sqlite:///{tmp_path / 'store.db'}")
    s.ensure_schema()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def settings(embedded_env: EmbeddedEnv) -> Settings:
    return embedded_env.settings


@pytest.fixture
def runtime(embedded_env: EmbeddedEnv) -> Runtime:
    return embedded_env.runtime()
