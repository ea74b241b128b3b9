"""The benchmark's private corner of the running services.

The services of ``infra/services.sh`` are shared with the test suite, which drops and
recreates the sample tables in ``darwin`` and the store tables in ``notify_store``, and injects
faults into the provider sinks. The benchmark therefore works in databases of its own on the
same clusters (``darwin_bench`` on the primary, streamed to the standby like any other
database; ``notify_bench_*`` on the store cluster), on Kafka topics and consumer groups with
a prefix of its own, and with its own two provider sinks (the project's sink code, started
as child processes on free ports), so that neither side disturbs the other's counts.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from darwin_notify_assets.storage.db import Database, connect
from darwin_notify_tests.services import ServicesUnavailable
from darwin_notify_tests.services import services_env as shared_services_env

REPO_ROOT = Path(__file__).resolve().parents[1]
PIPELINE_ROLE = "darwin_notify"
# Databases of one run are named after it (``darwin_bench_<run id>``, ``notify_bench_<run
# id>_<part>``), so two runs at once (a colleague's test suite and a `make bench`) never meet.
STORE_PARTS = ("staged", "dagster", "naive", "scratch", "tenants")
# The tables the sample schedules watch (and the ledgers they feed), read by change detection.
WATCHED_TABLES = ("People", "Property", "Deal", "DeletedRecord")
SOURCE_TABLES = (
    "Office",
    "Agent",
    "People",
    "Property",
    "Deal",
    "DeletedRecord",
    "NotificationTemplate",
    "NotificationSchedule",
)


class StackError(RuntimeError):
    """A service the benchmark needs is missing or misbehaves."""


def services_env() -> dict[str, str]:
    """The settings ``infra/services.sh env`` prints, as a dictionary."""
    try:
        return shared_services_env()
    except ServicesUnavailable as exc:
        raise StackError(str(exc)) from None


def service_pids(env: dict[str, str]) -> dict[str, int | None]:
    """Process ids of the shared services (the fault tests restart Kafka now and then)."""
    services = Path(env.get("DARWIN_NOTIFY_SERVICES_DIR", "/var/tmp/darwin-notify-services"))
    files = {
        name: services / "pg" / name / "postmaster.pid" for name in ("primary", "replica", "store")
    }
    files["kafka"] = Path(env.get("DARWIN_NOTIFY_KAFKA_PID_FILE", services / "kafka/kafka.pid"))
    out: dict[str, int | None] = {}
    for name, path in files.items():
        try:
            out[name] = int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            out[name] = None
    return out


def with_database(url: str, database: str) -> str:
    """``url`` (``postgresql://user@host:port/db``) pointing at another database."""
    head, _, _ = url.rpartition("/")
    return f"{head}/{database}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sinks:
    """The benchmark's own SendGrid and SMS sinks (child processes)."""

    run_dir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    records: dict[str, Path] = field(default_factory=dict)

    def start(self) -> None:
        for kind in ("sendgrid", "sms"):
            port = free_port()
            record = self.run_dir / f"sink-{kind}.jsonl"
            log = open(self.run_dir / f"sink-{kind}.log", "w")  # noqa: SIM115 - lives with it
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "darwin_notify_assets.testing.sinks",
                    kind,
                    "--port",
                    str(port),
                    "--record",
                    str(record),
                    "--log-level",
                    "WARNING",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
            )
            self.procs.append(proc)
            self.urls[kind] = f"http://127.0.0.1:{port}"
            self.records[kind] = record
        deadline = time.monotonic() + 30
        for kind, url in self.urls.items():
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/_health", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise StackError(f"the benchmark's {kind} sink did not start ({url})")
                time.sleep(0.1)

    def counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for kind, url in self.urls.items():
            with urllib.request.urlopen(f"{url}/_requests", timeout=5) as r:
                out[kind] = json.loads(r.read())
        return out

    def pids(self) -> dict[str, int]:
        return {kind: p.pid for kind, p in zip(self.urls, self.procs, strict=True)}

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class BenchStack:
    """Admin access to the clusters, the benchmark's databases, and its child environment."""

    def __init__(self, run_dir: Path, run_id: str):
        self.run_dir = run_dir
        self.run_id = run_id
        self.env = services_env()
        missing = [
            k
            for k in (
                "DARWIN_NOTIFY_REPLICA_URL",
                "DARWIN_NOTIFY_STORE_URL",
                "DARWIN_NOTIFY_PRIMARY_ADMIN_URL",
                "DARWIN_NOTIFY_REPLICA_ADMIN_URL",
                "DARWIN_NOTIFY_KAFKA_BOOTSTRAP",
            )
            if not self.env.get(k)
        ]
        if missing:
            raise StackError(f"{missing} not set by infra/services.sh env; run `make services-up`")
        self.source_db = f"darwin_bench_{run_id}"
        self.store_dbs = {part: f"notify_bench_{run_id}_{part}" for part in STORE_PARTS}
        self.primary_admin_url = with_database(
            self.env["DARWIN_NOTIFY_PRIMARY_ADMIN_URL"], self.source_db
        )
        self.replica_admin_url = with_database(
            self.env["DARWIN_NOTIFY_REPLICA_ADMIN_URL"], self.source_db
        )
        self.replica_url = with_database(self.env["DARWIN_NOTIFY_REPLICA_URL"], self.source_db)
        store_url = self.env["DARWIN_NOTIFY_STORE_URL"]
        self.store_urls = {
            part: with_database(store_url, name) for part, name in self.store_dbs.items()
        }
        # The store cluster's superuser: same host and port as the pipeline's store URL.
        self.store_admin_url = with_database(
            store_url.replace(f"{PIPELINE_ROLE}@", "postgres@"), "postgres"
        )
        self.sinks = Sinks(run_dir)

    # -- connections ----------------------------------------------------------------------------
    def primary(self) -> Database:
        return connect(self.primary_admin_url)

    def replica_admin(self) -> Database:
        return connect(self.replica_admin_url)

    # -- databases ------------------------------------------------------------------------------
    def create_databases(self, index_reads_only: bool = False) -> None:
        """The run's source database on the primary and its store databases.

        Args:
            index_reads_only: Tell the planner to read the source tables through an index
                wherever one can serve the statement (``enable_seqscan`` off for the source
                database, which the standby replays). On tables of a few hundred rows the
                planner rightly prefers sequential scans; with this, a sequential scan that
                remains is a statement no index can serve.
        """
        admin = connect(with_database(self.env["DARWIN_NOTIFY_PRIMARY_ADMIN_URL"], "postgres"))
        try:
            admin.conn.autocommit = True
            admin.execute(f"CREATE DATABASE {self.source_db}").close()
            if index_reads_only:
                admin.execute(f"ALTER DATABASE {self.source_db} SET enable_seqscan = off").close()
        finally:
            admin.close()
        db = self.primary()
        try:
            for stmt in (
                "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
                f"GRANT USAGE ON SCHEMA public TO {PIPELINE_ROLE}",
                "ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public "
                f"GRANT SELECT ON TABLES TO {PIPELINE_ROLE}",
            ):
                db.execute(stmt).close()
            db.commit()
        finally:
            db.close()
        admin = connect(self.store_admin_url)
        try:
            admin.conn.autocommit = True
            for name in self.store_dbs.values():
                admin.execute(f"CREATE DATABASE {name} OWNER {PIPELINE_ROLE}").close()
        finally:
            admin.close()

    def drop_databases(self) -> None:
        admin = connect(self.store_admin_url)
        try:
            admin.conn.autocommit = True
            for name in self.store_dbs.values():
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)").close()
        finally:
            admin.close()
        admin = connect(with_database(self.env["DARWIN_NOTIFY_PRIMARY_ADMIN_URL"], "postgres"))
        try:
            admin.conn.autocommit = True
            admin.execute(f"DROP DATABASE IF EXISTS {self.source_db} WITH (FORCE)").close()
        finally:
            admin.close()

    def delete_topics(self, prefix: str) -> list[str]:
        """The run's Kafka topics (every name starting with ``prefix``)."""
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(
            bootstrap_servers=self.env["DARWIN_NOTIFY_KAFKA_BOOTSTRAP"],
            client_id=f"{prefix}cleanup",
        )
        try:
            topics = [t for t in admin.list_topics() if t.startswith(prefix)]
            if topics:
                admin.delete_topics(topics)
            return topics
        finally:
            admin.close()

    # -- replication ------------------------------------------------------------------------------
    def wait_replayed(self, primary: Database, timeout: float = 120) -> float:
        """Wait until the standby replayed everything written so far; returns seconds waited.

        The target is the WAL *insert* position: with ``synchronous_commit = off`` a commit
        returns before its record is written, and ``pg_current_wal_lsn()`` (the write
        position) can still be short of it, so a wait on it may end before the commit.
        """
        started = time.monotonic()
        lsn = primary.scalar("SELECT pg_current_wal_insert_lsn()::text")
        primary.commit()
        replica = self.replica_admin()
        try:
            while time.monotonic() - started < timeout:
                done = replica.scalar(
                    "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), ?::pg_lsn) >= 0", [lsn]
                )
                replica.commit()
                if done:
                    return time.monotonic() - started
                time.sleep(0.01)
        finally:
            replica.close()
        raise StackError(f"the standby did not replay up to {lsn} within {timeout}s")

    # -- statistics -------------------------------------------------------------------------------
    def primary_statements(self) -> int:
        """Statements run by the pipeline's role on the primary, from its pg_stat_statements."""
        db = self.primary()
        try:
            db.execute("SELECT pg_stat_force_next_flush()").close()
            db.commit()
            value = int(
                db.scalar(
                    "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE userid = ?::regrole",
                    [PIPELINE_ROLE],
                )
            )
            db.commit()
            return value
        finally:
            db.close()

    def reset_replica_stats(self) -> None:
        db = self.replica_admin()
        try:
            db.execute("SELECT pg_stat_reset()").close()
            db.commit()
        finally:
            db.close()

    def replica_table_stats(self, settle: float = 10.0) -> dict[str, dict[str, int]]:
        return replica_table_stats(self.replica_admin_url, settle)

    # -- children -------------------------------------------------------------------------------
    def child_env(self, store: str, topic_prefix: str) -> dict[str, str]:
        """The environment of a child that runs the pipeline against the benchmark's corner."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DARWIN_NOTIFY_")}
        env.update(self.env)
        env.update(
            {
                "DARWIN_NOTIFY_REPLICA_URL": self.replica_url,
                "DARWIN_NOTIFY_STORE_URL": self.store_urls[store],
                "DARWIN_NOTIFY_KAFKA_TOPIC_PREFIX": topic_prefix,
                "DARWIN_NOTIFY_SENDGRID_HOST": self.sinks.urls["sendgrid"],
                "DARWIN_NOTIFY_SMS_BASE_URL": self.sinks.urls["sms"],
                "DARWIN_NOTIFY_HOME": str(self.run_dir / "home"),
                "DAGSTER_HOME": str(self.run_dir / "dagster_home"),
                "PYTHONPATH": str(REPO_ROOT),
            }
        )
        return env


def replica_table_stats(admin_url: str, settle: float = 10.0) -> dict[str, dict[str, int]]:
    """``pg_stat_user_tables`` of the benchmark's source tables on the standby.

    A backend flushes its counters when it exits; this waits until no session of the
    pipeline's role is connected to the benchmark's database, then reads them.
    """
    db = connect(admin_url)
    try:
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            n = db.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND usename = ?",
                [PIPELINE_ROLE],
            )
            db.commit()
            if not n:
                break
            time.sleep(0.05)
        rows = db.query_dicts(
            "SELECT relname, coalesce(seq_scan, 0) AS seq_scan, "
            "coalesce(seq_tup_read, 0) AS seq_tup_read, coalesce(idx_scan, 0) AS idx_scan, "
            "coalesce(idx_tup_fetch, 0) AS idx_tup_fetch FROM pg_stat_user_tables"
        )
        db.commit()
    finally:
        db.close()
    return {r["relname"]: {k: int(v) for k, v in r.items() if k != "relname"} for r in rows}


def stats_delta(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    out = {}
    for table, values in after.items():
        prev = before.get(table, {})
        d = {k: v - prev.get(k, 0) for k, v in values.items()}
        if any(d.values()):
            out[table] = d
    return out


def read_jsonl_from(path: Path, offset: int = 0) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open("rb") as f:
        f.seek(offset)
        return [json.loads(line) for line in f if line.strip()]
