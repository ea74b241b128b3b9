"""Checks that the local services started by ``make services-up`` are the ones the pipeline needs.

Connection settings come from the environment printed by ``infra/services.sh env``; any that
are not exported are read from that script directly. A service that does not answer fails
the test (it is never skipped): start everything with ``make services-up``.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyodbc
import pytest
import requests

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES_SH = REPO_ROOT / "infra" / "services.sh"
START_HINT = "start the local services with `make services-up` (infra/services.sh up)"

ENV_NAMES = (
    "DARWIN_NOTIFY_REPLICA_URL",
    "DARWIN_NOTIFY_STORE_URL",
    "DARWIN_NOTIFY_PRIMARY_ADMIN_URL",
    "DARWIN_NOTIFY_REPLICA_ADMIN_URL",
    "DARWIN_NOTIFY_KAFKA_BOOTSTRAP",
    "DARWIN_NOTIFY_SENDGRID_HOST",
    "DARWIN_NOTIFY_SENDGRID_API_KEY",
    "DARWIN_NOTIFY_SMS_BASE_URL",
    "DARWIN_NOTIFY_TWILIO_ACCOUNT_SID",
    "DARWIN_NOTIFY_TWILIO_AUTH_TOKEN",
    "DARWIN_NOTIFY_SENDGRID_SINK_RECORD",
    "DARWIN_NOTIFY_SMS_SINK_RECORD",
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USER",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB",
    "DARWIN_NOTIFY_SERVICES_DIR",
    "DARWIN_NOTIFY_KAFKA_PID_FILE",
)

SQLSTATE_READ_ONLY = "25006"


def _script_env() -> dict[str, str]:
    result = subprocess.run(
        ["bash", str(SERVICES_SH), "env"], capture_output=True, text=True, check=True, timeout=30
    )
    values: dict[str, str] = {}
    for line in result.stdout.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            values[name] = value
    return values


@pytest.fixture(scope="module")
def services() -> dict[str, str]:
    """The services' connection settings, from the environment or ``services.sh env``."""
    values = {name: os.environ[name] for name in ENV_NAMES if name in os.environ}
    if len(values) < len(ENV_NAMES):
        values = {**_script_env(), **values}
    missing = [name for name in ENV_NAMES if name not in values]
    if missing:
        pytest.fail(f"settings {missing} are missing from `infra/services.sh env`; {START_HINT}")
    return values


def odbc_connection_string(url: str, **options: str) -> str:
    """Builds a psqlODBC connection string from ``postgresql://user@host:port/database``."""
    parts = urlsplit(url)
    fields = {
        "DRIVER": "{PostgreSQL Unicode}",
        "SERVER": parts.hostname or "127.0.0.1",
        "PORT": str(parts.port or 5432),
        "DATABASE": parts.path.lstrip("/"),
        "UID": parts.username or "",
        "PWD": parts.password or "",
        "Protocol": "7.4-1",
        "BoolsAsChar": "0",
        **options,
    }
    return ";".join(f"{key}={value}" for key, value in fields.items())


def connect(url: str, *, what: str, autocommit: bool = True, **options: str) -> pyodbc.Connection:
    """Opens a pyodbc connection, failing the test with a hint when the server is not up."""
    try:
        return pyodbc.connect(odbc_connection_string(url, **options), autocommit=autocommit)
    except pyodbc.Error as exc:
        pytest.fail(f"cannot connect to {what} at {url}: {exc}; {START_HINT}")


def scalar(conn: pyodbc.Connection, sql: str, *params: Any) -> Any:
    """Runs a query and returns the first column of its first row."""
    row = conn.cursor().execute(sql, *params).fetchone()
    return None if row is None else row[0]


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Polls ``predicate`` until it returns something truthy or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


@pytest.fixture(scope="module")
def primary_admin(services: dict[str, str]) -> Iterator[pyodbc.Connection]:
    conn = connect(services["DARWIN_NOTIFY_PRIMARY_ADMIN_URL"], what="the PostgreSQL primary")
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def replica_admin(services: dict[str, str]) -> Iterator[pyodbc.Connection]:
    conn = connect(services["DARWIN_NOTIFY_REPLICA_ADMIN_URL"], what="the PostgreSQL standby")
    yield conn
    conn.close()


@pytest.fixture
def probe_table(primary_admin: pyodbc.Connection) -> Iterator[str]:
    """A table created on the primary by ``postgres``, dropped afterwards."""
    name = f"services_probe_{uuid.uuid4().hex[:12]}"
    primary_admin.cursor().execute(f"CREATE TABLE public.{name} (id int PRIMARY KEY, note text)")
    yield name
    primary_admin.cursor().execute(f"DROP TABLE IF EXISTS public.{name}")


# ------------------------------------------------------------------------------ PostgreSQL


def test_psqlodbc_driver_is_registered() -> None:
    assert "PostgreSQL Unicode" in pyodbc.drivers()


def test_standby_is_in_recovery_and_streaming(
    primary_admin: pyodbc.Connection, replica_admin: pyodbc.Connection
) -> None:
    assert scalar(primary_admin, "SELECT pg_is_in_recovery()") is False
    assert scalar(replica_admin, "SELECT pg_is_in_recovery()") is True
    assert scalar(replica_admin, "SELECT status FROM pg_stat_wal_receiver") == "streaming"
    assert scalar(primary_admin, "SELECT system_identifier FROM pg_control_system()") == scalar(
        replica_admin, "SELECT system_identifier FROM pg_control_system()"
    )


def test_row_written_on_primary_reaches_standby(
    services: dict[str, str],
    primary_admin: pyodbc.Connection,
    replica_admin: pyodbc.Connection,
    probe_table: str,
) -> None:
    note = uuid.uuid4().hex
    started = time.monotonic()
    primary_admin.cursor().execute(f"INSERT INTO {probe_table} VALUES (1, ?)", note)

    def replicated() -> bool:
        try:
            return scalar(replica_admin, f"SELECT note FROM {probe_table} WHERE id = 1") == note
        except pyodbc.Error:  # the CREATE TABLE itself may not be replayed yet
            return False

    assert wait_for(replicated, timeout=5.0), "row written on the primary not on the standby in 5 s"
    assert time.monotonic() - started < 5.0

    # Default privileges from the primary let the pipeline role read new tables on the standby.
    pipeline = connect(services["DARWIN_NOTIFY_REPLICA_URL"], what="the standby as darwin_notify")
    try:
        assert scalar(pipeline, f"SELECT note FROM {probe_table} WHERE id = 1") == note
    finally:
        pipeline.close()


def test_pipeline_role_cannot_write_on_replica(
    services: dict[str, str], replica_admin: pyodbc.Connection, probe_table: str
) -> None:
    assert wait_for(
        lambda: scalar(replica_admin, "SELECT to_regclass(?) IS NOT NULL", probe_table), 5.0
    )
    conn = connect(
        services["DARWIN_NOTIFY_REPLICA_URL"],
        what="the standby as darwin_notify",
        autocommit=False,
        ConnSettings="SET default_transaction_read_only TO on",
    )
    try:
        assert scalar(conn, "SELECT current_user") == "darwin_notify"
        assert scalar(conn, "SHOW default_transaction_read_only") == "on"
        with pytest.raises(pyodbc.Error) as excinfo:
            conn.cursor().execute(f"INSERT INTO {probe_table} VALUES (2, 'nope')")
        assert excinfo.value.args[0] == SQLSTATE_READ_ONLY, excinfo.value
    finally:
        conn.close()


def test_pipeline_role_is_refused_on_primary(
    services: dict[str, str], primary_admin: pyodbc.Connection
) -> None:
    replica = urlsplit(services["DARWIN_NOTIFY_REPLICA_URL"])
    primary = urlsplit(services["DARWIN_NOTIFY_PRIMARY_ADMIN_URL"])
    pipeline_on_primary = (
        f"postgresql://{replica.username}@{primary.hostname}:{primary.port}/darwin"
    )
    with pytest.raises(pyodbc.Error) as excinfo:
        pyodbc.connect(odbc_connection_string(pipeline_on_primary), autocommit=True)
    assert "pg_hba.conf rejects connection" in str(excinfo.value)
    # The role itself exists (roles replicate); only pg_hba.conf keeps it off the primary.
    assert scalar(primary_admin, "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'darwin_notify'")


def test_pg_stat_statements_is_loaded_on_primary(
    primary_admin: pyodbc.Connection, probe_table: str
) -> None:
    assert "pg_stat_statements" in scalar(primary_admin, "SHOW shared_preload_libraries")
    assert scalar(primary_admin, "SHOW pg_stat_statements.track") == "all"
    assert (
        scalar(
            primary_admin, "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'"
        )
        == 1
    )
    # A fresh table gives a statement of its own (constants and aliases are normalised away).
    primary_admin.cursor().execute(f"SELECT count(*) FROM {probe_table}").fetchall()
    calls = scalar(
        primary_admin,
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE ?",
        f"%FROM {probe_table}%",
    )
    assert calls >= 1


def test_store_databases_belong_to_pipeline_role(services: dict[str, str]) -> None:
    store_url = services["DARWIN_NOTIFY_STORE_URL"]
    dagster_url = (
        f"postgresql://{services['DAGSTER_PG_USER']}@{services['DAGSTER_PG_HOST']}:"
        f"{services['DAGSTER_PG_PORT']}/{services['DAGSTER_PG_DB']}"
    )
    for url in (store_url, dagster_url):
        conn = connect(url, what="the notification store cluster")
        try:
            assert scalar(conn, "SELECT pg_is_in_recovery()") is False
            owner = scalar(
                conn,
                "SELECT pg_get_userbyid(datdba) FROM pg_database"
                " WHERE datname = current_database()",
            )
            assert owner == "darwin_notify"
            table = f"services_probe_{uuid.uuid4().hex[:12]}"
            conn.cursor().execute(f"CREATE TABLE {table} (id int)")
            conn.cursor().execute(f"DROP TABLE {table}")
        finally:
            conn.close()


# ----------------------------------------------------------------------------------- Kafka


@pytest.fixture(scope="module")
def kafka_admin(services: dict[str, str]) -> Iterator[Any]:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    bootstrap = services["DARWIN_NOTIFY_KAFKA_BOOTSTRAP"]
    host, _, port = bootstrap.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        pytest.fail(f"Kafka does not accept connections at {bootstrap}: {exc}; {START_HINT}")
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    except KafkaError as exc:
        pytest.fail(f"cannot reach Kafka at {bootstrap}: {exc!r}; {START_HINT}")
    yield admin
    admin.close()


def test_kafka_creates_and_deletes_a_topic_with_three_partitions(kafka_admin: Any) -> None:
    from kafka.admin import NewTopic

    topic = f"services-probe-{uuid.uuid4().hex[:12]}"
    kafka_admin.create_topics([NewTopic(topic, 3, 1)])
    try:
        [described] = kafka_admin.describe_topics([topic])
        assert described["error_code"] == 0
        assert len(described["partitions"]) == 3
        assert all(p["leader_id"] == 1 for p in described["partitions"])
    finally:
        kafka_admin.delete_topics([topic])
    assert wait_for(lambda: topic not in kafka_admin.list_topics(), timeout=10.0)


def test_kafka_broker_settings(kafka_admin: Any) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType

    wanted = {"auto.create.topics.enable": "false", "num.partitions": "6"}
    result = kafka_admin.describe_configs(
        [ConfigResource(ConfigResourceType.BROKER, "1", dict.fromkeys(wanted))], config_filter="all"
    )
    configs = result["broker"]["1"]
    assert {name: configs[name]["value"] for name in wanted} == wanted


def test_kafka_round_trip_through_advertised_listener(
    services: dict[str, str], kafka_admin: Any
) -> None:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import NewTopic

    bootstrap = services["DARWIN_NOTIFY_KAFKA_BOOTSTRAP"]
    topic = f"services-probe-{uuid.uuid4().hex[:12]}"
    kafka_admin.create_topics([NewTopic(topic, 1, 1)])
    try:
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        payload = uuid.uuid4().bytes
        producer.send(topic, payload).get(timeout=15)
        producer.close()
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=15000,
        )
        try:
            received = next(iter(consumer), None)
        finally:
            consumer.close()
        assert received is not None, "no message consumed within 15 s"
        assert received.value == payload
    finally:
        kafka_admin.delete_topics([topic])


# ----------------------------------------------------------------------------------- sinks


def read_records(path: str) -> list[dict[str, Any]]:
    """All records of a sink's JSONL file (missing file: none)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


class Sink:
    """One running sink: its base URL, record file and control endpoint."""

    def __init__(self, base_url: str, record_path: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.record_path = record_path

    def control(self, **command: Any) -> dict[str, Any]:
        response = requests.post(f"{self.base_url}/_control", json=command, timeout=5)
        response.raise_for_status()
        return response.json()

    def counts(self) -> dict[str, int]:
        return requests.get(f"{self.base_url}/_requests", timeout=5).json()

    def records(self) -> list[dict[str, Any]]:
        return read_records(self.record_path)

    def new_records(
        self, before: int, timeout: float = 5.0, expect: int = 1
    ) -> list[dict[str, Any]]:
        """Records appended since there were ``before``, waiting until ``expect`` are there."""
        wait_for(lambda: len(self.records()) >= before + expect, timeout)
        return self.records()[before:]


def _sink(base_url: str, record_path: str, name: str) -> Iterator[Sink]:
    sink = Sink(base_url, record_path)
    try:
        health = requests.get(f"{sink.base_url}/_health", timeout=5)
    except requests.RequestException as exc:
        pytest.fail(f"the {name} sink at {base_url} does not answer: {exc}; {START_HINT}")
    assert health.status_code == 200
    sink.control(reset=True)
    yield sink
    sink.control(reset=True)


@pytest.fixture
def sendgrid_sink(services: dict[str, str]) -> Iterator[Sink]:
    yield from _sink(
        services["DARWIN_NOTIFY_SENDGRID_HOST"],
        services["DARWIN_NOTIFY_SENDGRID_SINK_RECORD"],
        "SendGrid",
    )


@pytest.fixture
def sms_sink(services: dict[str, str]) -> Iterator[Sink]:
    yield from _sink(
        services["DARWIN_NOTIFY_SMS_BASE_URL"], services["DARWIN_NOTIFY_SMS_SINK_RECORD"], "SMS"
    )


def mail_body(marker: str, to: str = "reader@example.com") -> dict[str, Any]:
    return {
        "personalizations": [{"to": [{"email": to}], "custom_args": {"probe": marker}}],
        "from": {"email": "notify@example.com", "name": "darwin-notify"},
        "subject": f"probe {marker}",
        "content": [{"type": "text/plain", "value": "hello"}],
    }


def sendgrid_post(
    services: dict[str, str], body: Any, *, timeout: float = 5.0, api_key: str | None = None
) -> requests.Response:
    key = services["DARWIN_NOTIFY_SENDGRID_API_KEY"] if api_key is None else api_key
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(
        f"{services['DARWIN_NOTIFY_SENDGRID_HOST']}/v3/mail/send",
        json=body,
        headers=headers,
        timeout=timeout,
    )


def test_sendgrid_sink_accepts_a_mail_from_the_sendgrid_client(
    services: dict[str, str], sendgrid_sink: Sink
) -> None:
    from sendgrid import SendGridAPIClient
    from sendgrid.helpers.mail import CustomArg, Mail

    marker = uuid.uuid4().hex
    mail = Mail(
        from_email="notify@example.com",
        to_emails="reader@example.com",
        subject=f"probe {marker}",
        plain_text_content="hello",
    )
    mail.custom_arg = CustomArg("probe", marker)
    client = SendGridAPIClient(
        api_key=services["DARWIN_NOTIFY_SENDGRID_API_KEY"],
        host=services["DARWIN_NOTIFY_SENDGRID_HOST"],
    )
    before = len(sendgrid_sink.records())
    counts = sendgrid_sink.counts()

    response = client.send(mail)

    assert response.status_code == 202
    message_id = response.headers["X-Message-Id"]
    assert message_id
    records = sendgrid_sink.new_records(before)
    assert len(records) == 1
    [record] = records
    assert record["provider"] == "sendgrid"
    assert record["status"] == 202
    assert record["message_id"] == message_id
    assert record["to"] == ["reader@example.com"]
    assert record["subject"] == f"probe {marker}"
    assert record["custom_args"] == {"probe": marker}
    assert record["body"]["from"]["email"] == "notify@example.com"
    after = sendgrid_sink.counts()
    assert after["count"] == counts["count"] + 1
    assert after["accepted"] == counts["accepted"] + 1


def test_sendgrid_sink_refuses_bad_requests(services: dict[str, str], sendgrid_sink: Sink) -> None:
    before = len(sendgrid_sink.records())

    unauthenticated = sendgrid_post(services, mail_body(uuid.uuid4().hex), api_key="")
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["errors"]

    no_recipients = mail_body(uuid.uuid4().hex)
    no_recipients["personalizations"] = []
    invalid = sendgrid_post(services, no_recipients)
    assert invalid.status_code == 400
    assert {e["field"] for e in invalid.json()["errors"]} == {"personalizations"}

    no_content = mail_body(uuid.uuid4().hex)
    del no_content["content"]
    del no_content["from"]
    invalid = sendgrid_post(services, no_content)
    assert invalid.status_code == 400
    assert {e["field"] for e in invalid.json()["errors"]} == {"content", "from.email"}

    records = sendgrid_sink.new_records(before, expect=3)
    assert [r["status"] for r in records] == [401, 400, 400]
    assert all(r["message_id"] is None for r in records)


def test_sendgrid_sink_fault_modes(services: dict[str, str], sendgrid_sink: Sink) -> None:
    from python_http_client.exceptions import HTTPError
    from sendgrid import SendGridAPIClient

    client = SendGridAPIClient(
        api_key=services["DARWIN_NOTIFY_SENDGRID_API_KEY"],
        host=services["DARWIN_NOTIFY_SENDGRID_HOST"],
    )
    before = len(sendgrid_sink.records())
    sendgrid_sink.control(fail=2, status=429)
    for _ in range(2):
        with pytest.raises(HTTPError) as excinfo:
            client.send(mail_body(uuid.uuid4().hex))
        assert excinfo.value.status_code == 429
        assert excinfo.value.headers["Retry-After"] == "1"
    assert client.send(mail_body(uuid.uuid4().hex)).status_code == 202
    assert [r["status"] for r in sendgrid_sink.new_records(before, expect=3)] == [429, 429, 202]

    # Accepted, but the client times out first and cannot know it.
    before = len(sendgrid_sink.records())
    marker = uuid.uuid4().hex
    sendgrid_sink.control(accept_then_delay=1, seconds=2)
    with pytest.raises(requests.Timeout):
        sendgrid_post(services, mail_body(marker), timeout=0.5)
    [record] = sendgrid_sink.new_records(before)
    assert (record["status"], record["custom_args"]) == (202, {"probe": marker})
    assert record["message_id"]

    before = len(sendgrid_sink.records())
    sendgrid_sink.control(delay_then_reject=1, seconds=0.5, status=503)
    started = time.monotonic()
    refused = sendgrid_post(services, mail_body(uuid.uuid4().hex))
    assert refused.status_code == 503
    assert time.monotonic() - started >= 0.5
    assert [r["status"] for r in sendgrid_sink.new_records(before)] == [503]

    sendgrid_sink.control(fail=5, status=500)
    assert len(sendgrid_sink.control(reset=True)["pending"]) == 0
    assert sendgrid_post(services, mail_body(uuid.uuid4().hex)).status_code == 202


def twilio_client(services: dict[str, str]) -> Any:
    from twilio.rest import Client

    client = Client(
        services["DARWIN_NOTIFY_TWILIO_ACCOUNT_SID"], services["DARWIN_NOTIFY_TWILIO_AUTH_TOKEN"]
    )
    client.api.base_url = services["DARWIN_NOTIFY_SMS_BASE_URL"]
    return client


def sms_messages_url(services: dict[str, str]) -> str:
    return (
        f"{services['DARWIN_NOTIFY_SMS_BASE_URL']}/2010-04-01/Accounts/"
        f"{services['DARWIN_NOTIFY_TWILIO_ACCOUNT_SID']}/Messages.json"
    )


def sms_auth(services: dict[str, str]) -> tuple[str, str]:
    return services["DARWIN_NOTIFY_TWILIO_ACCOUNT_SID"], services["DARWIN_NOTIFY_TWILIO_AUTH_TOKEN"]


def test_sms_sink_accepts_a_message_from_the_twilio_client(
    services: dict[str, str], sms_sink: Sink
) -> None:
    client = twilio_client(services)
    text = f"probe {uuid.uuid4().hex}"
    before = len(sms_sink.records())
    counts = sms_sink.counts()

    message = client.messages.create(to="+447700900123", from_="+15005550006", body=text)

    assert message.sid.startswith("SM") and len(message.sid) == 34
    assert message.status == "queued"
    assert message.to == "+447700900123"
    assert message.body == text
    assert message.num_segments == "1"
    assert message.account_sid == services["DARWIN_NOTIFY_TWILIO_ACCOUNT_SID"]
    records = sms_sink.new_records(before)
    assert len(records) == 1
    [record] = records
    assert record["provider"] == "sms"
    assert (record["status"], record["message_id"]) == (201, message.sid)
    assert (record["to"], record["body"]) == ("+447700900123", text)
    after = sms_sink.counts()
    assert after["count"] == counts["count"] + 1
    assert after["accepted"] == counts["accepted"] + 1


def test_sms_sink_refuses_bad_requests(services: dict[str, str], sms_sink: Sink) -> None:
    from twilio.base.exceptions import TwilioRestException

    client = twilio_client(services)
    before = len(sms_sink.records())
    with pytest.raises(TwilioRestException) as excinfo:
        client.messages.create(to="+447700900123", from_="+15005550006", body="")
    assert (excinfo.value.status, excinfo.value.code) == (400, 21602)

    url, auth = sms_messages_url(services), sms_auth(services)
    missing_to = requests.post(
        url, data={"From": "+15005550006", "Body": "hi"}, auth=auth, timeout=5
    )
    assert missing_to.status_code == 400
    assert missing_to.json()["code"] == 21604
    unauthenticated = requests.post(
        url, data={"To": "+447700900123", "From": "+15005550006", "Body": "hi"}, timeout=5
    )
    assert unauthenticated.status_code == 401

    records = sms_sink.new_records(before, expect=3)
    assert [r["status"] for r in records] == [400, 400, 401]


def test_sms_sink_fault_modes(services: dict[str, str], sms_sink: Sink) -> None:
    from twilio.base.exceptions import TwilioRestException

    client = twilio_client(services)
    before = len(sms_sink.records())
    sms_sink.control(fail=1, status=500)
    with pytest.raises(TwilioRestException) as excinfo:
        client.messages.create(to="+447700900123", from_="+15005550006", body="one")
    assert excinfo.value.status == 500
    accepted = client.messages.create(to="+447700900123", from_="+15005550006", body="two")
    records = sms_sink.new_records(before, expect=2)
    assert [(r["status"], r["body"]) for r in records] == [(500, "one"), (201, "two")]
    assert records[1]["message_id"] == accepted.sid

    before = len(sms_sink.records())
    sms_sink.control(fail=1, status=429)
    url, auth = sms_messages_url(services), sms_auth(services)
    form = {"To": "+447700900123", "From": "+15005550006", "Body": "three"}
    throttled = requests.post(url, data=form, auth=auth, timeout=5)
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "1"

    sms_sink.control(accept_then_delay=1, seconds=2)
    with pytest.raises(requests.Timeout):
        requests.post(url, data={**form, "Body": "four"}, auth=auth, timeout=0.5)
    records = sms_sink.new_records(before, expect=2)
    assert [(r["status"], r["body"]) for r in records] == [(429, "three"), (201, "four")]
