"""Quiet hours and daily caps: the claim defers (producer), the delivery step queues again once
due (consumer), each message is sent once; the recipient's time zone comes from the source
model, in the sample's shape and in the CRM's."""

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from dagster import DagsterInstance, SkipReason, build_sensor_context

from darwin_notify_assets.bus.base import Job, JobKind
from darwin_notify_assets.config import Settings
from darwin_notify_assets.defs.notifications.sensors import DEFERRED_TAG, deferred_messages_sensor
from darwin_notify_assets.defs.resources import PipelineResource, StoreResource
from darwin_notify_assets.delivery.rules import Claimable, QuietHours, SendRules
from darwin_notify_assets.delivery.workers import SendWorker
from darwin_notify_assets.domain.audit import accounted_for
from darwin_notify_assets.domain.model import check_model, load_model, parse_model
from darwin_notify_assets.errors import ConfigurationError
from darwin_notify_assets.storage.store import NotificationStore, utcnow
from darwin_notify_assets.testing.senders import RecordingSender
from darwin_notify_tests.conftest import PARTITION, make_messages, sqlite_rows
from darwin_notify_tests.mssql.server import STORE_DIALECTS, connect_server, dialect_store


@pytest.fixture(params=STORE_DIALECTS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotificationStore]:
    """An empty store: a SQLite file, and the SQL Server of the executed tier when one is
    named (``make test-mssql``), so that the claim's deferral, its locks and the release run
    on T-SQL too."""
    with dialect_store(request.param, tmp_path / "store.db") as s:
        yield s


@pytest.fixture
def other_connection(store: NotificationStore, tmp_path: Path) -> Callable[[], NotificationStore]:
    """Opens another connection to ``store``'s database (another worker's)."""
    if store.db.dialect == "mssql":
        return lambda: NotificationStore(connect_server())
    return lambda: NotificationStore.open(f"sqlite:///{tmp_path / 'store.db'}")


QUIET = SendRules.from_values({"sms": "21:00-08:00", "email": "21:00-08:00"}, {})


def utc(*parts: int) -> datetime:
    return datetime(*parts)  # naive UTC, as the store keeps it


def one(zone: str | None, channel: str = "sms", mid: int = 1, to: str = "+13125550101"):
    return Claimable(mid, channel, to, zone)


# -- the rules themselves ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("now", "zone", "until"),
    [
        # 04:30 UTC in March: 22:30 in Chicago (CST, -6), quiet until 08:00 CST = 14:00 UTC
        (utc(2026, 3, 2, 4, 30), "America/Chicago", utc(2026, 3, 2, 14, 0)),
        # the same instant is 05:30 in Berlin (CET, +1): quiet until 08:00 CET = 07:00 UTC
        (utc(2026, 3, 2, 4, 30), "Europe/Berlin", utc(2026, 3, 2, 7, 0)),
        # the night Chicago springs forward (2026-03-08 02:00): 01:30 CST, the quiet hours
        # end at 08:00 CDT (-5) = 13:00 UTC, not 14:00
        (utc(2026, 3, 8, 7, 30), "America/Chicago", utc(2026, 3, 8, 13, 0)),
        # Berlin's (2026-03-29 02:00): 01:30 CET, quiet until 08:00 CEST (+2) = 06:00 UTC
        (utc(2026, 3, 29, 0, 30), "Europe/Berlin", utc(2026, 3, 29, 6, 0)),
        # Chicago falls back (2026-11-01): 23:00 CDT the evening before, until 08:00 CST
        (utc(2026, 11, 1, 4, 0), "America/Chicago", utc(2026, 11, 1, 14, 0)),
    ],
)
def test_a_message_due_in_quiet_hours_waits_until_they_end_in_the_recipients_zone(now, zone, until):
    [d] = QUIET.decide([one(zone)], now)
    assert d.until == until
    assert f"quiet hours 21:00-08:00 for sms in {zone}" in d.reason
    assert f"{until:%Y-%m-%d %H:%M} UTC" in d.reason


def test_outside_quiet_hours_nothing_waits_and_other_channels_are_untouched():
    # 15:00 UTC: 09:00 in Chicago, 16:00 in Berlin
    now = utc(2026, 3, 2, 15, 0)
    assert QUIET.decide([one("America/Chicago"), one("Europe/Berlin", mid=2)], now) == []
    sms_only = SendRules.from_values({"sms": "21:00-08:00"}, {})
    night = utc(2026, 3, 2, 4, 0)
    held = sms_only.decide([one("UTC", "email", 1), one("UTC", "sms", 2)], night)
    assert [d.message_id for d in held] == [2]


def test_quiet_hours_within_a_day_and_their_edges():
    lunch = QuietHours.parse("12:00-13:30", "X")
    assert not lunch.contains(datetime(2026, 1, 1, 11, 59))
    assert lunch.contains(datetime(2026, 1, 1, 12, 0))
    assert lunch.contains(datetime(2026, 1, 1, 13, 29))
    assert not lunch.contains(datetime(2026, 1, 1, 13, 30))
    night = QuietHours.parse("21:00-08:00", "X")
    assert night.contains(datetime(2026, 1, 1, 21, 0)) and night.contains(datetime(2026, 1, 1, 7))
    assert not night.contains(datetime(2026, 1, 1, 8, 0))


def test_an_unknown_or_invalid_time_zone_is_decided_in_the_default_zone_and_says_so():
    rules = SendRules.from_values({"sms": "21:00-08:00"}, {}, "America/New_York")
    # 03:00 UTC = 22:00 in New York (EST)
    now = utc(2026, 1, 10, 3, 0)
    bad, missing = rules.decide([one("Mars/Olympus"), one(None, mid=2)], now)
    assert bad.until == missing.until == utc(2026, 1, 10, 13, 0)
    assert "time zone 'Mars/Olympus' is not an IANA name" in bad.reason
    assert "decided in America/New_York (DARWIN_NOTIFY_DEFAULT_TIME_ZONE)" in bad.reason
    assert "the recipient has no time zone" in missing.reason


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DARWIN_NOTIFY_QUIET_HOURS_SMS": "9pm-8am"}, "must look like 21:00-08:00"),
        ({"DARWIN_NOTIFY_QUIET_HOURS_EMAIL": "08:00-08:00"}, "starts and ends at the same"),
        ({"DARWIN_NOTIFY_DAILY_CAP_SMS": "-1"}, "DAILY_CAP_SMS must be 0 (no cap) or more"),
        ({"DARWIN_NOTIFY_DEFAULT_TIME_ZONE": "Chicago"}, "must be an IANA time zone"),
    ],
)
def test_bad_settings_are_one_clear_error(env, message):
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env(env)


def test_by_default_there_are_no_rules():
    rules = Settings.from_env({}).send_rules
    assert not rules.active and rules.channels == {}


def test_a_cap_counts_earlier_sends_of_the_local_day_and_the_batch_in_order():
    rules = SendRules.from_values({}, {"sms": 2})
    # 10:00 UTC = 04:00 in Chicago: its local day began at 06:00 UTC
    now = utc(2026, 3, 2, 10, 0)
    a, b = "+13125550101", "+13125550102"
    sent = {("sms", a): [utc(2026, 3, 2, 5, 59), utc(2026, 3, 2, 6, 30)], ("sms", b): []}
    batch = [one("America/Chicago", mid=i, to=to) for i, to in ((1, a), (2, b), (3, b), (4, b))]
    held = rules.decide(batch, now, sent)
    # a: one send today (05:59 UTC was yesterday in Chicago), so one more may go; b: two
    assert [d.message_id for d in held] == [4]
    held_a = rules.decide([one("America/Chicago", mid=9, to=a)] * 2, now, sent)
    assert len(held_a) == 1
    # the next local day starts at midnight in Chicago: 06:00 UTC
    assert held[0].until == utc(2026, 3, 3, 6, 0)
    assert "daily cap of 2 sms message(s) per recipient reached in America/Chicago" in (
        held[0].reason
    )


def test_a_message_over_the_cap_goes_when_the_next_day_s_quiet_hours_end():
    rules = SendRules.from_values({"sms": "21:00-08:00"}, {"sms": 1})
    now = utc(2026, 3, 2, 12, 0)  # 13:00 in Berlin
    sent = {("sms", "+13125550101"): [utc(2026, 3, 2, 9, 0)]}
    [d] = rules.decide([one("Europe/Berlin")], now, sent)
    assert d.until == utc(2026, 3, 3, 7, 0)  # 08:00 CET, not midnight


# -- the claim defers, the delivery step releases, each is sent once ---------------------------
def _with_zone(store: NotificationStore, ids: list[int], zone: str | None) -> None:
    for mid in ids:
        store.db.execute("UPDATE message SET recipient_tz = ? WHERE message_id = ?", [zone, mid])
    store.db.commit()


def _row(store: NotificationStore, mid: int) -> dict:
    r = store.db.query_dicts("SELECT * FROM message WHERE message_id = ?", [mid])[0]
    store.db.commit()
    return r


def _history(store: NotificationStore, mid: int) -> list[tuple]:
    rows = store.db.query(
        "SELECT from_status, to_status FROM message_event WHERE message_id = ? "
        "ORDER BY message_event_id",
        [mid],
    )
    store.db.commit()
    return rows


def _worker(store: NotificationStore, sender: RecordingSender, rules: SendRules, now) -> SendWorker:
    return SendWorker(
        store, {sender.channel: sender}, concurrency=2, rules=rules, clock=lambda: now
    )


def test_the_claim_defers_messages_in_quiet_hours_and_sends_the_others(store):
    chicago, berlin = make_messages(store, 2, prefix="c", channel="sms")
    _with_zone(store, [chicago], "America/Chicago")
    _with_zone(store, [berlin], "Europe/Berlin")
    sender = RecordingSender("sms")
    # 03:30 UTC: 21:30 in Chicago (quiet), 04:30 in Berlin (quiet); 12:00 UTC neither
    w = _worker(store, sender, QUIET, utc(2026, 3, 2, 3, 30))
    try:
        assert w.handle(Job(JobKind.SEND, PARTITION, (chicago, berlin))) == {}
    finally:
        w.close()
    assert sender.calls == []
    rows = {mid: _row(store, mid) for mid in (chicago, berlin)}
    assert {r["status"] for r in rows.values()} == {"deferred"}
    assert str(rows[chicago]["deferred_until"]).startswith("2026-03-02 14:00")
    assert str(rows[berlin]["deferred_until"]).startswith("2026-03-02 07:00")
    assert "quiet hours 21:00-08:00 for sms in America/Chicago" in rows[chicago]["reason"]
    assert _history(store, chicago) == [(None, "queued"), ("queued", "deferred")]
    # a deferred message is not claimed by a redelivered job
    assert store.claim([chicago, berlin]) == []


def test_due_deferred_messages_are_queued_again_and_sent_exactly_once(store):
    chicago, berlin = make_messages(store, 2, channel="sms")
    _with_zone(store, [chicago], "America/Chicago")
    _with_zone(store, [berlin], "Europe/Berlin")
    night = utc(2026, 3, 2, 3, 30)
    assert store.claim([chicago, berlin], QUIET, now_utc=night) == []
    # 07:30 UTC: Berlin's quiet hours ended at 07:00; Chicago's end at 14:00
    assert store.due_deferred_windows(utc(2026, 3, 2, 7, 30)) == {PARTITION: 1}
    assert store.release_deferred(PARTITION, utc(2026, 3, 2, 7, 30)) == [berlin]
    assert _row(store, chicago)["status"] == "deferred"
    sender = RecordingSender("sms")
    morning = utc(2026, 3, 2, 7, 30)
    w = _worker(store, sender, QUIET, morning)
    try:
        assert w.handle(Job(JobKind.SEND, PARTITION, (chicago, berlin))) == {"sent": 1}
        # the job again (a redelivery): nothing more
        assert w.handle(Job(JobKind.SEND, PARTITION, (chicago, berlin))) == {}
    finally:
        w.close()
    assert [m.message_id for m in sender.calls] == [berlin]
    assert _history(store, berlin) == [
        (None, "queued"),
        ("queued", "deferred"),
        ("deferred", "queued"),
        ("queued", "sending"),
        ("sending", "sent"),
    ]
    assert store.duplicate_sends(PARTITION) == []
    assert _row(store, chicago)["status"] == "deferred"
    assert store.deferred_summary() == (1, utc(2026, 3, 2, 14, 0))


def test_a_daily_cap_counts_the_sends_every_worker_recorded_in_the_store(store, other_connection):
    rules = SendRules.from_values({}, {"email": 2})
    ids = make_messages(store, 5)
    store.db.execute("UPDATE message SET to_address = 'same@example.com'").close()
    store.db.commit()
    _with_zone(store, ids, "Europe/Berlin")
    now = utc(2026, 3, 2, 12, 0)
    other = other_connection()
    sender = RecordingSender("email")
    try:
        # one send recorded by another worker's connection, this morning
        first = SendWorker(other, {"email": sender}, concurrency=1, rules=rules, clock=lambda: now)
        try:
            assert first.handle(Job(JobKind.SEND, PARTITION, (ids[0],))) == {"sent": 1}
        finally:
            first.close()
        w = _worker(store, sender, rules, now)
        try:
            assert w.handle(Job(JobKind.SEND, PARTITION, tuple(ids[1:]))) == {"sent": 1}
        finally:
            w.close()
    finally:
        other.close()
    assert [m.message_id for m in sender.calls] == ids[:2]
    held = [_row(store, mid) for mid in ids[2:]]
    assert {r["status"] for r in held} == {"deferred"}
    # the next local day in Berlin starts at 23:00 UTC
    assert {str(r["deferred_until"])[:16] for r in held} == {"2026-03-02 23:00"}
    assert "daily cap of 2 email message(s) per recipient" in held[0]["reason"]


def test_two_callers_releasing_at_once_release_each_message_once(store, other_connection):
    ids = make_messages(store, 40, channel="sms")
    assert store.claim(ids, QUIET, now_utc=utc(2026, 3, 2, 23, 0)) == []
    stores = [other_connection() for _ in range(2)]
    released: list[list[int]] = [[], []]
    start = threading.Barrier(2)

    def release(i: int) -> None:
        start.wait()
        released[i] = stores[i].release_deferred(PARTITION, utc(2026, 3, 3, 9, 0))

    threads = [threading.Thread(target=release, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(released[0] + released[1]) == ids
        assert not set(released[0]) & set(released[1])
        # both send the same jobs at once: each message is sent by one of them, once
        sender = RecordingSender("sms")
        workers = [_worker(s, sender, QUIET, utc(2026, 3, 3, 9, 0)) for s in stores]
        go = threading.Barrier(2)

        def send(i: int) -> None:
            go.wait()
            workers[i].handle(Job(JobKind.SEND, PARTITION, tuple(ids)))

        threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for w in workers:
            w.close()
    finally:
        for s in stores:
            s.close()
    assert sorted(m.message_id for m in sender.calls) == ids
    assert store.duplicate_sends(PARTITION) == []
    events = store.db.query(
        "SELECT COUNT(*) FROM message_event WHERE to_status = 'queued' AND from_status = 'deferred'"
    )
    store.db.commit()
    assert events == [(40,)]


def test_a_deferred_message_waiting_for_its_time_is_accounted_for_and_a_stranded_one_is_not():
    waiting = {"status": "deferred", "deferred_until": utc(2026, 3, 2, 14, 0)}
    assert accounted_for(waiting, utc(2026, 3, 2, 13, 0))
    assert accounted_for(waiting, utc(2026, 3, 2, 14, 20))
    assert not accounted_for(waiting, utc(2026, 3, 2, 15, 0))
    assert not accounted_for({"status": "queued", "deferred_until": None})
    assert accounted_for({"status": "sent", "deferred_until": None})


# -- the sensor requests the delivery step of windows with due messages ------------------------
def test_the_sensor_requests_delivery_runs_for_windows_with_due_deferred_messages(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    resource = StoreResource(url=url)
    store = resource.open()
    try:
        ids = make_messages(store, 3, channel="sms")
        later = make_messages(store, 1, channel="sms", partition="2026-03-02-14:05", prefix="l")
        past = utcnow().replace(microsecond=0) - timedelta(days=2)
        # deferred at a time long past: due now
        assert store.claim(ids + later, QUIET, now_utc=past.replace(hour=23)) == []
    finally:
        store.close()
    resources = {"pipeline": PipelineResource(), "store": resource}
    with (
        DagsterInstance.ephemeral() as instance,
        build_sensor_context(instance=instance, resources=resources) as context,
    ):
        result = deferred_messages_sensor(context)
    requests = result.run_requests
    assert len(requests) == 1
    [request] = requests
    assert request.partition_key == "2026-03-02"
    assert request.tags[DEFERRED_TAG] == "true"
    assert request.tags["darwin_notify/windows"] == "14:00..14:05"
    assert [k.to_user_string() for k in request.asset_selection] == ["delivery_log"]


def test_the_sensor_says_when_the_first_deferred_message_may_go(tmp_path):
    resource = StoreResource(url=f"sqlite:///{tmp_path / 'store.db'}")
    resources = {"pipeline": PipelineResource(), "store": resource}
    with (
        DagsterInstance.ephemeral() as instance,
        build_sensor_context(instance=instance, resources=resources) as context,
    ):
        skipped = deferred_messages_sensor(context)
    assert isinstance(skipped, SkipReason) and "no message is deferred" in str(skipped.skip_message)
    store = resource.open()
    try:
        ids = make_messages(store, 2, channel="sms")
        now = utcnow().replace(microsecond=0)
        store.claim(ids, SendRules.from_values({"sms": "00:00-23:59"}, {}), now_utc=now)
        [until] = {_row(store, m)["deferred_until"] for m in ids}
    finally:
        store.close()
    with (
        DagsterInstance.ephemeral() as instance,
        build_sensor_context(instance=instance, resources=resources) as context,
    ):
        skipped = deferred_messages_sensor(context)
    assert isinstance(skipped, SkipReason)
    assert "no deferred message is due; 2 deferred, the first may go at" in str(
        skipped.skip_message
    )
    assert str(until)[:16] in str(skipped.skip_message)


# -- the recipient's time zone comes from the source model -------------------------------------
def test_both_models_say_where_each_recipient_kind_s_time_zone_is():
    sample = load_model()
    assert sample.agent.time_zone.office == "TimeZone"
    assert sample.contact.time_zone.office == "TimeZone"
    crm = load_model(Path(__file__).parents[1] / "crm" / "crm.model.yaml")
    # the CRM lists the foreign keys to its branch's TZ
    assert crm.agent.time_zone.column == crm.contact.time_zone.column == "TZ"
    assert [h.to for h in crm.agent.time_zone.via] == ["crm.Branch"]
    assert [h.to for h in crm.contact.time_zone.via] == ["crm.Broker", "crm.Branch"]


def _model_text(zone_line: str) -> str:
    text = (
        (Path(load_model.__code__.co_filename).parent.parent / "sample")
        .joinpath("darwin_cloud.model.yaml")
        .read_text()
    )
    return text.replace("    time_zone: {office: TimeZone}\n", zone_line, 1)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("    time_zone: {}\n", "time_zone names exactly one of column or office"),
        ("    time_zone: {column: A, office: B}\n", "exactly one of column or office"),
        ("    time_zone: {zone: A}\n", "time_zone.zone: Extra inputs are not permitted"),
    ],
)
def test_a_bad_time_zone_source_is_one_clear_error(line, message):
    with pytest.raises(ConfigurationError, match=message):
        parse_model(_model_text(line), "m.yaml")


def test_check_names_a_time_zone_column_the_database_lacks():
    model = parse_model(_model_text("    time_zone: {column: Zone}\n"), "m.yaml")
    columns = {
        "Agent": ["AgentID", "FirstName", "LastName", "Email", "MobilePhone", "IsActive"],
        "Office": ["OfficeID"],
    }
    problems = [str(p) for p in check_model(model, lambda t: columns.get(t, ["x"]))]
    assert "recipients.agent.time_zone: column Agent.Zone does not exist on the replica" in (
        problems
    )
    assert (
        "recipients.contact.time_zone: column Office.TimeZone does not exist on the replica"
        in problems
    )


def _expected_zones(rows: list[dict], agent_office, office_zone, contact_agent) -> None:
    assert rows
    for r in rows:
        agent = r["recipient_id"] if r["recipient_kind"] == "agent" else contact_agent[r["rid"]]
        assert r["recipient_tz"] == office_zone[agent_office[agent]], r


def test_rendering_stores_the_sample_office_time_zone_of_agents_and_contacts(embedded_env):
    env = embedded_env
    assert env.run_window(0).success
    db = env.home / "darwin.db"
    offices = {r["OfficeID"]: r["TimeZone"] for r in sqlite_rows(db, 'SELECT * FROM "Office"')}
    assert len(set(offices.values())) > 1
    agents = {r["AgentID"]: r["OfficeID"] for r in sqlite_rows(db, 'SELECT * FROM "Agent"')}
    contacts = {r["PeopleID"]: r["AgentID"] for r in sqlite_rows(db, 'SELECT * FROM "People"')}
    rows = env.store_rows(
        "SELECT c.recipient_kind, c.recipient_id, c.recipient_id AS rid, m.recipient_tz "
        "FROM message m JOIN candidate c ON c.candidate_id = m.candidate_id "
        "WHERE m.status IN ('sent', 'queued')"
    )
    assert {r["recipient_kind"] for r in rows} == {"agent", "contact"}
    _expected_zones(rows, agents, offices, contacts)


def test_rendering_stores_the_crm_branch_time_zone_of_brokers_and_clients(tmp_path, monkeypatch):
    from darwin_notify_tests.conftest import install_recording_senders, run_partition
    from darwin_notify_tests.crm import world
    from darwin_notify_tests.crm.test_crm_chain import build_crm_env

    env = build_crm_env(tmp_path / "home", monkeypatch)
    try:
        install_recording_senders(monkeypatch)
        world.apply_window(env.source, env.world.windows[0])
        assert run_partition(env.key(0), env.instance).success
        db = env.home / "darwin.db"
        branches = {r["BranchNo"]: r["TZ"] for r in sqlite_rows(db, 'SELECT * FROM "crm.Branch"')}
        brokers = {
            r["BrokerNo"]: r["BranchNo"] for r in sqlite_rows(db, 'SELECT * FROM "crm.Broker"')
        }
        clients = {
            r["ClientNo"]: r["BrokerNo"] for r in sqlite_rows(db, 'SELECT * FROM "crm.Client"')
        }
        rows = sqlite_rows(
            env.home / "store.db",
            "SELECT c.recipient_kind, c.recipient_id, c.recipient_id AS rid, m.recipient_tz "
            "FROM message m JOIN candidate c ON c.candidate_id = m.candidate_id "
            "WHERE m.status IN ('sent', 'queued')",
        )
    finally:
        env.source.close()
        env.instance.dispose()
    _expected_zones(rows, brokers, branches, clients)


# -- a store of the earlier schema is upgraded -------------------------------------------------
def _earlier_sqlite_schema() -> str:
    """store_schema.sql as it was before ``deferred``: the CHECK without it, no new columns."""
    from darwin_notify_assets.storage.sqlfiles import read_script

    text = read_script("sqlite", "store_schema.sql")
    text = text.replace("'render_failed', 'deferred')", "'render_failed')")
    lines = [
        ln
        for ln in text.splitlines()
        if "recipient_tz" not in ln
        and "deferred_until" not in ln
        and "(quiet hours" not in ln
        and "a deferred message may go" not in ln
    ]
    text = "\n".join(lines).replace(
        "    updated_at TEXT NOT NULL,\n);", "    updated_at TEXT NOT NULL\n);"
    )
    assert "deferred" not in text.split("CREATE TABLE IF NOT EXISTS message (")[1].split(");")[0]
    return text


def test_an_earlier_sqlite_store_is_rebuilt_with_the_new_check_and_keeps_its_rows(tmp_path):
    import sqlite3

    path = tmp_path / "store.db"
    conn = sqlite3.connect(path)
    conn.executescript(_earlier_sqlite_schema())
    conn.execute("ALTER TABLE message ADD COLUMN schedule_version TEXT")
    conn.execute(
        "INSERT INTO message (candidate_id, candidate_key, partition_key, channel, to_address, "
        "status, attempts, created_at, updated_at, schedule_version) VALUES "
        "(7, 'old', ?, 'sms', '+13125550101', 'sent', 1, '2026-01-01 00:00:00.000000', "
        "'2026-01-01 00:00:00.000000', 'v0')",
        [PARTITION],
    )
    conn.commit()
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE message SET status = 'deferred'")
    conn.rollback()
    conn.close()

    store = NotificationStore.open(f"sqlite:///{path}")
    try:
        store.ensure_schema()
        store.ensure_schema()  # re-runnable: nothing left to upgrade
        old = _row(store, 1)
        assert (old["candidate_key"], old["status"], old["schedule_version"]) == (
            "old",
            "sent",
            "v0",
        )
        assert old["recipient_tz"] is None and old["deferred_until"] is None
        ids = make_messages(store, 2, channel="sms")
        assert min(ids) > 1
        assert store.claim(ids, QUIET, now_utc=utc(2026, 3, 2, 23, 0)) == []
        assert {_row(store, m)["status"] for m in ids} == {"deferred"}
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            store.db.execute("UPDATE message SET status = 'bogus' WHERE message_id = 1")
        store.db.rollback()
        indexes = {r[1] for r in store.db.query("PRAGMA index_list(message)")}
        store.db.commit()
        assert {"message_partition_status", "message_claim", "message_recipient"} <= indexes
    finally:
        store.close()


# -- the send hot path -------------------------------------------------------------------------
def _claim_statements(store: NotificationStore, ids: list[int], rules, now) -> list[str]:
    statements: list[str] = []
    store.db.conn.set_trace_callback(statements.append)
    try:
        store.claim(ids, rules, now_utc=now)
    finally:
        store.db.conn.set_trace_callback(None)
    return [s for s in statements if not s.startswith(("BEGIN", "COMMIT"))]


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[NotificationStore]:
    s = NotificationStore.open(f"sqlite:///{tmp_path / 'trace.db'}")
    s.ensure_schema()
    try:
        yield s
    finally:
        s.close()


def test_rules_off_cost_the_claim_nothing_and_on_three_statements_per_batch_not_per_message(
    sqlite_store,
):
    # Counted with SQLite's statement trace.
    store = sqlite_store
    day = utc(2026, 3, 2, 15, 0)  # no quiet hours anywhere in Europe or the Americas
    small, large, plain, default = (
        make_messages(store, n, channel="sms", prefix=p)
        for n, p in ((3, "s"), (60, "l"), (3, "p"), (3, "d"))
    )
    for ids in (small, large):
        _with_zone(store, ids, "Europe/Berlin")
    without = _claim_statements(store, plain, None, day)
    # the default settings: no rules, not one statement more
    assert len(_claim_statements(store, default, Settings.from_env({}).send_rules, day)) == len(
        without
    )
    rules = SendRules.from_values({"sms": "21:00-08:00"}, {"sms": 5})
    with_small = _claim_statements(store, small, rules, day)
    with_large = _claim_statements(store, large, rules, day)
    # one read of the batch's channels, addresses and zones, one lock of its capped
    # recipients, one count of their sends of the day
    assert len(with_small) == len(without) + 3, with_small
    assert len(with_large) == len(with_small)


def cap_race(stores: list[NotificationStore], partition: str) -> RecordingSender:
    """Two workers, each with its own connection, claim halves of one recipient's ten SMS at
    the same moment under a cap of three."""
    ids = make_messages(stores[0], 10, channel="sms", partition=partition)
    stores[0].db.execute("UPDATE message SET to_address = '+13125550199'").close()
    stores[0].db.commit()
    rules = SendRules.from_values({}, {"sms": 3})
    sender = RecordingSender("sms")
    now = utc(2026, 3, 2, 15, 0)
    workers = [_worker(s, sender, rules, now) for s in stores]
    go = threading.Barrier(2)

    def send(i: int) -> None:
        go.wait()
        workers[i].handle(Job(JobKind.SEND, partition, tuple(ids[i::2])))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for w in workers:
            w.close()
    return sender


def test_two_workers_claiming_one_recipient_at_once_send_no_more_than_the_cap(
    store, other_connection
):
    other = other_connection()
    try:
        sender = cap_race([store, other], PARTITION)
    finally:
        other.close()
    assert len(sender.calls) == 3
    deferred = store.db.scalar("SELECT COUNT(*) FROM message WHERE status = 'deferred'")
    store.db.commit()
    assert deferred == 7
