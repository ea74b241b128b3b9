"""Reading the local services' settings and the provider sinks' records, without pytest.

The integration tests, the soak (`scripts/soak.py`) and the benchmark (`benchmarks/`) share
these; a missing service raises ``ServicesUnavailable`` with the command that starts it.
"""

import json
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICES_SH = REPO_ROOT / "infra" / "services.sh"
HINT = "start the services with `make services-up`"


# The notification store's tables, children first, so a harness can drop them in order.
STORE_TABLES = (
    "provider_budget",
    "delivery_event",
    "message_delivery",
    "suppression",
    "message_event",
    "message",
    "candidate",
    "change_event",
    "change_decision",
    "record_snapshot",
    "deal_ledger",
    "listing_ledger",
    "window_agent",
    "agent_totals",
    "window_run",
    "run_schedule",
    "schedule_snapshot",
)


class ServicesUnavailable(RuntimeError):
    """The services' settings could not be read."""


def services_env(timeout: float = 60) -> dict[str, str]:
    """The ``export NAME=value`` lines of ``infra/services.sh env``, as a dict."""
    try:
        out = subprocess.run(
            ["bash", str(SERVICES_SH), "env"],
            capture_output=True,
            text=True,
            check=True,
            timeout=timeout,
        ).stdout
    except subprocess.CalledProcessError as exc:
        raise ServicesUnavailable(
            f"`infra/services.sh env` failed: {exc.stderr.strip()}; {HINT}"
        ) from None
    values = {}
    for line in out.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export":
            name, _, value = words[1].partition("=")
            values[name] = value
    return values


def read_jsonl(path: str) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def sink_records(env: dict[str, str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every request the SendGrid and SMS sinks recorded, in order."""
    return (
        read_jsonl(env["DARWIN_NOTIFY_SENDGRID_SINK_RECORD"]),
        read_jsonl(env["DARWIN_NOTIFY_SMS_SINK_RECORD"]),
    )


def mandrill_records(env: dict[str, str]) -> list[dict[str, Any]]:
    """Every request the Mandrill sink recorded, in order."""
    return read_jsonl(env["DARWIN_NOTIFY_MANDRILL_SINK_RECORD"])


def sink_url(env: dict[str, str], which: str) -> str:
    """The base URL of a sink (``sendgrid``, ``sms`` or ``mandrill``)."""
    if which == "mandrill":
        return env["DARWIN_NOTIFY_MANDRILL_HOST"].removesuffix("/api/1.0")
    key = "DARWIN_NOTIFY_SENDGRID_HOST" if which == "sendgrid" else "DARWIN_NOTIFY_SMS_BASE_URL"
    return env[key]


def sink_control(env: dict[str, str], which: str, **command: Any) -> None:
    """Queue a fault (or a reset) in one of the sinks: see ``darwin_notify_assets.testing.sinks``."""
    import requests

    requests.post(f"{sink_url(env, which)}/_control", json=command, timeout=5).raise_for_status()


# -- worker processes --------------------------------------------------------------------------
def start_worker(
    kind: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    argv: list[str] | None = None,
) -> subprocess.Popen:
    """A ``darwin-notify worker KIND`` process (or ``argv``), its output in ``log_path``."""
    import os
    import sys

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            argv or [sys.executable, "-m", "darwin_notify_assets.cli", "-v", "worker", kind],
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )


def stop_processes(procs: list[subprocess.Popen], timeout: float = 30) -> None:
    """SIGTERM every process still running, then wait; kill what does not stop in time."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# -- provider sinks of one's own -----------------------------------------------------------------
def start_sinks(
    run_dir: Path, timeout: float = 30
) -> tuple[list[subprocess.Popen], dict[str, str]]:
    """A SendGrid and an SMS sink of the caller's own (child processes on free ports), and the
    settings that point darwin-notify and ``sink_records`` at them. The shared sinks of
    ``make services-up`` also count whatever anybody else sends."""
    import socket
    import sys
    import time
    import urllib.request

    run_dir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    urls: dict[str, str] = {}
    records: dict[str, Path] = {}
    for kind in ("sendgrid", "sms"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        records[kind] = run_dir / f"{kind}.jsonl"
        urls[kind] = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "darwin_notify_assets.testing.sinks", kind]
        argv += ["--port", str(port), "--record", str(records[kind]), "--log-level", "WARNING"]
        procs.append(start_worker(kind, run_dir / f"{kind}.log", argv=argv))
    deadline = time.monotonic() + timeout
    for kind, url in urls.items():
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_health", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                stop_processes(procs)
                raise ServicesUnavailable(f"the {kind} sink on {url} did not start; see {run_dir}")
            time.sleep(0.1)
    env = {
        "DARWIN_NOTIFY_SENDGRID_HOST": urls["sendgrid"],
        "DARWIN_NOTIFY_SMS_BASE_URL": urls["sms"],
        "DARWIN_NOTIFY_SENDGRID_SINK_RECORD": str(records["sendgrid"]),
        "DARWIN_NOTIFY_SMS_SINK_RECORD": str(records["sms"]),
    }
    return procs, env


def admin_connection(url: str, database: str = "postgres"):
    """psycopg2 as the clusters' superuser (autocommit), at ``url``'s host and port."""
    import psycopg2

    parsed = urlsplit(url)
    conn = psycopg2.connect(
        host=parsed.hostname, port=parsed.port, user="postgres", dbname=database
    )
    conn.autocommit = True
    return conn


@contextmanager
def own_dagster_storage(env: dict[str, str], prefix: str = "dagster") -> Iterator[str]:
    """A Dagster storage database of its own on the services' store cluster, for one run of a
    tool; yields its name (for ``DAGSTER_PG_DB``) and drops it after. Runs of an earlier run
    that died (still ``STARTED`` in a shared storage) are then never seen as in flight."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    url = f"postgresql://postgres@{env['DAGSTER_PG_HOST']}:{env['DAGSTER_PG_PORT']}/"
    conn = admin_connection(url)
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" OWNER "{env["DAGSTER_PG_USER"]}"')
    finally:
        conn.close()
    try:
        yield name
    finally:
        conn = admin_connection(url)  # a fresh one: the cluster may have restarted meanwhile
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            conn.close()
