"""The whole chain, end to end, on the small seed: through Dagster in process, and through the
plain stages where a test needs to reach inside (a redelivered job, a worker that died)."""

import json
import re
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from dagster import ExecuteInProcessResult

from darwin_notify_assets.bus.base import InProcessBus, Job, JobKind, make_jobs, run_consumers
from darwin_notify_assets.delivery.senders import FileOutboxEmailSender, FileOutboxSmsSender
from darwin_notify_assets.delivery.workers import RenderWorker, SendWorker
from darwin_notify_assets.domain.candidates import build_candidates
from darwin_notify_assets.domain.messages import FINAL_STATUSES
from darwin_notify_assets.domain.pipeline import (
    Runtime,
    agent_years,
    load_schedules,
    stage_agent_totals,
    stage_candidates,
    stage_change_window,
    stage_deliver,
    stage_render,
)
from darwin_notify_assets.errors import ProviderOutcomeUnknown
from darwin_notify_assets.sample import seed
from darwin_notify_tests.conftest import (
    ASSET_CHAIN,
    EmbeddedEnv,
    RecordingSender,
    SenderRecorder,
    build_env,
    install_recording_senders,
    materialization_metadata,
)

FINAL = {str(s) for s in FINAL_STATUSES}


@dataclass
class Processed:
    env: EmbeddedEnv
    recorder: SenderRecorder
    results: list[ExecuteInProcessResult]

    @property
    def calls(self) -> dict[str, list]:
        return self.recorder.for_home(self.env.home)


@pytest.fixture(scope="module")
def recorder_mp() -> Iterator[tuple[pytest.MonkeyPatch, SenderRecorder]]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp, install_recording_senders(mp)


@pytest.fixture(scope="module")
def processed(tmp_path_factory, recorder_mp) -> Iterator[Processed]:
    """Three windows of the small seed, each applied to darwin.db and then run through Dagster."""
    mp, recorder = recorder_mp
    env = build_env(tmp_path_factory.mktemp("pipeline") / "home", mp, windows=3)
    results = [env.run_window(i) for i in range(3)]
    try:
        yield Processed(env, recorder, results)
    finally:
        env.close()


def messages(env: EmbeddedEnv, where: str = "1 = 1", params=()) -> list[dict[str, Any]]:
    return env.store_rows(
        "SELECT m.*, c.schedule_id, c.record_id, c.recipient_kind, c.recipient_id, c.agent_id "
        f"FROM message m JOIN candidate c ON c.candidate_id = m.candidate_id WHERE {where} "
        "ORDER BY m.message_id",
        params,
    )


def outbox_state(env: EmbeddedEnv) -> dict[Path, tuple[int, bytes]]:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in env.outbox_files()}


def outbox_key(path: Path) -> str:
    if path.suffix == ".eml":
        return BytesParser(policy=policy.default).parsebytes(path.read_bytes())[
            "X-Darwin-Notify-Key"
        ]
    return json.loads(path.read_text(encoding="utf-8"))["key"]


def store_state(env: EmbeddedEnv) -> dict[str, list]:
    return {
        t: env.store_rows(f"SELECT * FROM {t} ORDER BY 1")
        for t in ("change_event", "candidate", "message", "message_event")
    }


def node_metadata(result: ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    [mat] = result.asset_materializations_for_node(asset)
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


# -- the happy path -----------------------------------------------------------------------------
def test_windows_are_processed_in_order(processed):
    env = processed.env
    assert [r.success for r in processed.results] == [True, True, True]
    runs = env.store_rows("SELECT partition_key, detected_at FROM window_run ORDER BY detected_at")
    assert [r["partition_key"] for r in runs] == [env.key(i) for i in range(3)]
    tags = [r.dagster_run.tags.get("dagster/partition") for r in processed.results]
    assert tags == [env.key(i)[:10] for i in range(3)]
    windows = [r.dagster_run.tags.get("darwin_notify/windows") for r in processed.results]
    assert windows == [env.key(i)[11:] for i in range(3)]
    for i, result in enumerate(processed.results):
        for asset in ASSET_CHAIN:
            [mat] = result.asset_materializations_for_node(asset)
            assert mat.partition == env.key(i)[:10]
            if asset != "notification_schedules":
                assert mat.metadata["first_window"].value == env.key(i)


def test_every_candidate_ends_in_a_final_status(processed):
    env = processed.env
    rows = env.store_rows(
        "SELECT c.candidate_key, m.status, m.reason FROM candidate c "
        "LEFT JOIN message m ON m.candidate_id = c.candidate_id"
    )
    assert len(rows) > 20
    assert [r for r in rows if r["status"] not in FINAL] == []
    not_sent = [r for r in rows if r["status"] != "sent"]
    assert not_sent and all(r["reason"] for r in not_sent)
    for result in processed.results:
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert checks == {
            "replica_caught_up": True,
            "agent_totals_fresh": True,
            "no_duplicate_sends": True,
            "no_missed_notifications": True,
        }


def test_each_sent_message_has_exactly_one_outbox_file_and_one_provider_call(processed):
    env = processed.env
    sent = messages(env, "m.status = ?", ["sent"])
    files = env.outbox_files()
    assert len(files) == len(sent) > 0
    assert sorted(outbox_key(p) for p in files) == sorted(m["candidate_key"] for m in sent)
    calls = processed.calls
    called = [m.message_id for ch in ("email", "sms") for m in calls[ch]]
    assert sorted(called) == sorted(m["message_id"] for m in sent)
    assert all(m["provider_message_id"] for m in sent)
    assert env.store_rows("SELECT COUNT(*) AS n FROM message_event WHERE to_status = 'sent'")[0][
        "n"
    ] == len(sent)


def test_materializations_carry_their_counts(processed):
    env = processed.env
    for i, result in enumerate(processed.results):
        key = env.key(i)
        change = node_metadata(result, "change_window")
        [run] = env.store_rows("SELECT rows_read FROM window_run WHERE partition_key = ?", [key])
        assert change["rows_read"] == run["rows_read"] > 0
        for name in ("events_detected", "events_new", "duplicates_prevented", "tables_read"):
            assert name in change
        cands = node_metadata(result, "candidate_notifications")
        n_cands = len(env.store_rows("SELECT 1 FROM candidate WHERE partition_key = ?", [key]))
        assert cands["candidates_new"] == n_cands
        assert "duplicates_prevented" in cands
        delivery = node_metadata(result, "delivery_log")
        sent = len(messages(env, "m.partition_key = ? AND m.status = 'sent'", [key]))
        assert delivery["sent"] == sent > 0
        # no provider has called back in the embedded tier: nothing folded yet
        assert delivery["delivery_outcomes"] == {key: {}}
        schedules = node_metadata(result, "notification_schedules")
        assert schedules["active_schedules"] == len(seed.SAMPLE_SCHEDULES)
        assert schedules["rejected_schedules"] == 0
    latest = materialization_metadata(env.instance, "delivery_log", env.key(2))
    assert latest["sent"] == len(
        messages(env, "m.partition_key = ? AND m.status = 'sent'", [env.key(2)])
    )
    totals = materialization_metadata(env.instance, "agent_totals", env.key(2))
    assert totals["agents_touched"] >= totals["totals_written"] > 0
    # whose year it is: each agent's own, and every sample office has a valid zone
    assert (totals["year_time_zone"], totals["agents_in_default_zone"]) == ("agent", 0)


def test_rendered_count_is_the_number_of_messages_actually_rendered(processed):
    env = processed.env
    for i, result in enumerate(processed.results):
        meta = node_metadata(result, "rendered_messages")
        rows = messages(env, "m.partition_key = ?", [env.key(i)])
        rendered = [m for m in rows if m["status"] not in ("suppressed", "render_failed")]
        suppressed = [m for m in rows if m["status"] == "suppressed"]
        assert suppressed, "the seeded window has no suppressed message"
        assert meta["rendered"] == len(rendered), (
            f"window {env.key(i)}: 'rendered' counts suppressed messages too"
        )


@pytest.mark.parametrize(
    ("asset", "counts"),
    [
        ("rendered_messages", ("rendered", "suppressed", "render_failed")),
        ("delivery_log", ("sent", "failed", "suppressed")),
    ],
)
def test_status_counts_are_present_even_when_zero(processed, asset, counts):
    for result in processed.results:
        meta = node_metadata(result, asset)
        missing = [c for c in counts if not isinstance(meta.get(c), int)]
        assert missing == [], f"{asset} metadata lacks counts {missing}: {sorted(meta)}"


def _money_in(text: str, label: str) -> Decimal:
    match = re.search(rf"^- {label}: \$([\d,]+(?:\.\d\d)?)$", text, re.MULTILINE)
    assert match, f"{label!r} not in {text!r}"
    return Decimal(match.group(1).replace(",", ""))


def test_deal_posted_emails_show_totals_that_include_the_window(processed):
    env = processed.env
    posted = messages(env, "c.schedule_id = 3 AND m.status = 'sent'")
    assert posted, "no deal-posted email in the seeded windows"
    keys = [env.key(j) for j in range(len(env.changes))]
    for m in posted:
        [msg] = env.store_rows(
            "SELECT text_body FROM message WHERE message_id = ?", [m["message_id"]]
        )
        text = msg["text_body"]
        # the deal's property, the related record the sample model names `property`
        [place] = env.source_rows(
            'SELECT p."Address", p."City" FROM "Deal" d '
            'JOIN "Property" p ON p."PropertyID" = d."PropertyID" WHERE d."DealID" = ?',
            [int(m["record_id"])],
        )
        assert f"Deal {int(m['record_id'])} on {place['Address']}, {place['City']} closed" in text
        window = env.window(keys.index(m["partition_key"]))
        # every deal of the agent posted in the agent's year (its office's time zone, the
        # sample's totals.year_time_zone) up to the end of the message's window
        [office] = env.source_rows(
            'SELECT o."TimeZone" FROM "Agent" a JOIN "Office" o ON o."OfficeID" = a."OfficeID" '
            'WHERE a."AgentID" = ?',
            [m["agent_id"]],
        )
        zone = ZoneInfo(office["TimeZone"])
        local_year = window.end.replace(tzinfo=UTC).astimezone(zone).year
        year_start = datetime(local_year, 1, 1, tzinfo=zone).astimezone(UTC)
        deals = env.source_rows(
            'SELECT "SalePrice", "GrossCommission" FROM "Deal" WHERE "AgentID" = ? '
            'AND "PostDate" >= ? AND "PostDate" < ?',
            [
                m["agent_id"],
                year_start.strftime("%Y-%m-%d %H:%M:%S.%f"),
                window.end.strftime("%Y-%m-%d %H:%M:%S.%f"),
            ],
        )
        assert int(re.search(r"^- Deals posted: (\d+)$", text, re.M).group(1)) == len(deals) > 0
        assert _money_in(text, "Sales volume") == sum(
            (Decimal(str(d["SalePrice"])) for d in deals), Decimal(0)
        )
        assert _money_in(text, "Gross commission") == sum(
            (Decimal(str(d["GrossCommission"])) for d in deals), Decimal(0)
        )


def test_each_agent_s_year_begins_in_its_office_s_time_zone(embedded_env):
    env = embedded_env
    source = env.home / "darwin.db"
    # an office whose zone is not an IANA name: its agents' year is the default zone's
    with sqlite3.connect(source) as conn:
        conn.execute('UPDATE "Office" SET "TimeZone" = ? WHERE "OfficeID" = 1', ["Nowhere/Else"])
    offices = {
        r["AgentID"]: r["TimeZone"]
        for r in env.source_rows(
            'SELECT a."AgentID", o."TimeZone" FROM "Agent" a '
            'JOIN "Office" o ON o."OfficeID" = a."OfficeID"'
        )
    }
    # 05:30 UTC on January 1: the year has begun in New York, not yet in Chicago
    moment = datetime(2027, 1, 1, 5, 30)
    years, defaulted = agent_years(env.runtime(), sorted(offices), moment)
    assert set(years) == set(offices)
    assert defaulted == sum(1 for name in offices.values() if name == "Nowhere/Else") > 0
    for agent, name in offices.items():
        zone = ZoneInfo(name if name != "Nowhere/Else" else env.settings.default_time_zone)
        local = moment.replace(tzinfo=UTC).astimezone(zone).year
        start = datetime(local, 1, 1, tzinfo=zone).astimezone(UTC).replace(tzinfo=None)
        assert years[agent] == (local, start), (agent, name)
    assert {year for year, _ in years.values()} == {2026, 2027}
    assert "Nowhere/Else" in offices.values()


def test_a_rerun_of_a_partition_sends_nothing_new(processed):
    env = processed.env
    outbox = outbox_state(env)
    store = store_state(env)
    calls = {ch: len(v) for ch, v in processed.calls.items()}
    for i in (1, 0):
        result = env.run_window(i)  # already applied: reruns read the same replica
        assert result.success
        assert node_metadata(result, "change_window")["events_new"] == 0
        assert node_metadata(result, "candidate_notifications")["candidates_new"] == 0
        assert node_metadata(result, "delivery_log")["messages_queued_at_start"] == 0
        assert node_metadata(result, "delivery_log")["sent_in_this_run"] == 0
    assert {ch: len(v) for ch, v in processed.calls.items()} == calls
    assert outbox_state(env) == outbox
    after = store_state(env)
    for table in ("candidate", "message", "message_event"):
        assert after[table] == store[table], table
    # change events of the rerun windows were all known already
    assert len(after["change_event"]) == len(store["change_event"])


def test_an_unknown_outcome_is_counted_listed_and_never_resent(embedded_env, recorder_mp):
    _, recorder = recorder_mp
    env = embedded_env
    recorder.scripts_for(env.home)["email"].append(
        ProviderOutcomeUnknown("SendGrid did not answer in time")
    )
    result = env.run_window(0)
    assert result.success
    [unknown] = messages(env, "m.status = 'unknown'")
    assert "did not answer" in unknown["reason"]
    calls = recorder.for_home(env.home)
    assert [m.message_id for m in calls["email"]].count(unknown["message_id"]) == 1
    assert len(env.outbox_files()) == len(messages(env, "m.status = 'sent'"))
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["no_missed_notifications"].passed
    meta = node_metadata(result, "delivery_log")
    assert any(isinstance(v, str) and unknown["candidate_key"] in v for v in meta.values())
    assert env.run_window(0).success  # a rerun does not resend it
    assert [m.message_id for m in calls["email"]].count(unknown["message_id"]) == 1
    assert meta.get("unknown") == 1, (
        f"delivery_log's unknown count was replaced by the listing: {meta.get('unknown')!r}"
    )


# -- duplicate delivery and a dead worker, through the plain stages -------------------------
def _plain_runtime(env: EmbeddedEnv, calls: dict[str, list]) -> Runtime:
    rt = env.runtime(InProcessBus(retry_delay=0.01))
    outbox = Path(env.settings.outbox_dir)
    senders = {
        "email": RecordingSender(
            "email", FileOutboxEmailSender(outbox, "from@example.com"), calls=calls["email"]
        ),
        "sms": RecordingSender(
            "sms", FileOutboxSmsSender(outbox, "+13125550100"), calls=calls["sms"]
        ),
    }
    rt.senders_factory = lambda: senders
    return rt


def _run_stages(rt: Runtime, env: EmbeddedEnv, index: int, deliver: bool = True):
    env.apply(index)
    window = env.window(index)
    loaded = load_schedules(rt.replica)
    stage_change_window(rt, window, loaded)
    stage_agent_totals(rt, window)
    stage_candidates(rt, window, loaded)
    stage_render(rt, window, loaded)
    if deliver:
        stage_deliver(rt, window)
    return loaded


def test_a_duplicate_job_delivery_changes_nothing(embedded_env):
    env = embedded_env
    calls: dict[str, list] = {"email": [], "sms": []}
    rt = _plain_runtime(env, calls)
    loaded = _run_stages(rt, env, 0)
    key = env.key(0)
    outbox, store = outbox_state(env), store_state(env)
    n_calls = len(calls["email"]) + len(calls["sms"])
    assert n_calls == len(messages(env, "m.status = 'sent'")) > 0

    candidate_ids = [r["candidate_id"] for r in store["candidate"]]
    message_ids = [r["message_id"] for r in store["message"]]
    render_jobs = list(make_jobs(JobKind.RENDER, key, candidate_ids, 7))
    send_jobs = list(make_jobs(JobKind.SEND, key, message_ids, 7))
    bus = rt.bus
    assert isinstance(bus, InProcessBus)
    for job in render_jobs + send_jobs:
        bus.redeliver(job)
    renderer = RenderWorker(
        env.replica(), env.store(), loaded.schedules, loaded.templates, env.settings.window_minutes
    )
    sender = SendWorker(env.store(), rt.senders_factory(), concurrency=2)
    try:
        for kind, handler, jobs in (
            (JobKind.RENDER, renderer, render_jobs),
            (JobKind.SEND, sender, send_jobs),
        ):
            handled: list[Job] = []

            def counting(job, handler=handler, handled=handled):
                handler(job)
                handled.append(job)

            assert run_consumers(
                bus,
                kind,
                lambda counting=counting: counting,
                2,
                done=lambda handled=handled, jobs=jobs: len(handled) == len(jobs),
                timeout=20,
            )
        # and the workers' handlers called directly, twice
        for job in render_jobs:
            assert renderer.handle(job) == 0
            assert renderer.handle(job) == 0
        for job in send_jobs:
            assert sender.handle(job) == {}
            assert sender.handle(job) == {}
    finally:
        sender.close()
    assert len(calls["email"]) + len(calls["sms"]) == n_calls
    assert outbox_state(env) == outbox
    assert store_state(env) == store


def test_a_claim_that_never_finished_becomes_unknown_and_is_not_resent(embedded_env):
    env = embedded_env
    calls: dict[str, list] = {"email": [], "sms": []}
    rt = _plain_runtime(env, calls)
    _run_stages(rt, env, 0, deliver=False)
    queued = [m["message_id"] for m in messages(env, "m.status = 'queued'")]
    assert len(queued) >= 2
    # a worker claimed the first message, handed it to the provider, then died
    store = env.store()
    [claimed] = store.claim(queued[:1])
    store.mark_requested(claimed.claim_token, [claimed.message_id])
    store.db.execute(
        "UPDATE message SET updated_at = ? WHERE message_id = ?",
        ["2000-01-01 00:00:00.000000", claimed.message_id],
    ).close()
    store.db.commit()
    stage_deliver(rt, env.window(0))
    [dead] = messages(env, "m.message_id = ?", [claimed.message_id])
    assert dead["status"] == "unknown"
    assert dead["reason"]
    called = [m.message_id for ch in calls.values() for m in ch]
    assert claimed.message_id not in called
    assert sorted(called) == sorted(queued[1:])
    assert {m["status"] for m in messages(env, "m.message_id != ?", [claimed.message_id])} <= (
        FINAL - {"unknown"}
    )


def test_a_claim_never_handed_to_the_provider_is_queued_again_and_sent_once(embedded_env):
    env = embedded_env
    calls: dict[str, list] = {"email": [], "sms": []}
    rt = _plain_runtime(env, calls)
    _run_stages(rt, env, 0, deliver=False)
    queued = [m["message_id"] for m in messages(env, "m.status = 'queued'")]
    assert len(queued) >= 2
    # a worker claimed the first message, then died before its request (its job is gone)
    store = env.store()
    [claimed] = store.claim(queued[:1])
    store.db.execute(
        "UPDATE message SET updated_at = ? WHERE message_id = ?",
        ["2000-01-01 00:00:00.000000", claimed.message_id],
    ).close()
    store.db.commit()
    stage_deliver(rt, env.window(0))
    [again] = messages(env, "m.message_id = ?", [claimed.message_id])
    assert again["status"] == "sent"
    called = [m.message_id for ch in calls.values() for m in ch]
    assert sorted(called) == sorted(queued)
    assert store.duplicate_sends() == []


# -- bad input never stops the line ------------------------------------------------------------
SMS_TEMPLATE_ID, BROKEN_MERGE_TEMPLATE_ID = 6, 7
SMS_SCHEDULE, BROKEN_MERGE_SCHEDULE, BAD_CRITERIA_SCHEDULE = 6, 7, 8


def _bad_customize(db, dataset, changes):
    """Break the Welcome template, add an SMS fan-out, a template with a missing merge field
    and a schedule naming an unknown column."""
    from datetime import datetime

    ts = db.ts(datetime(2026, 2, 1))
    db.execute(
        'UPDATE "NotificationTemplate" SET "HtmlBody" = ? WHERE "TemplateID" = 4',
        ["<p>Hi {% if %}{{ FirstName }}</p>"],
    ).close()
    insert = (
        'INSERT INTO "NotificationTemplate" ("TemplateID", "Name", "Subject", "HtmlBody", '
        '"TextBody", "SmsBody", "ModifiedDate") VALUES (?, ?, ?, ?, ?, ?, ?)'
    )
    db.execute(
        insert,
        [
            SMS_TEMPLATE_ID,
            "New listing SMS",
            None,
            None,
            None,
            "{{ recipient.FirstName }}: new listing at {{ Address }}, {{ City }} "
            "for {{ ListPrice|money }}",
            ts,
        ],
    ).close()
    db.execute(
        insert,
        [
            BROKEN_MERGE_TEMPLATE_ID,
            "Broken merge",
            "Removed: {{ Address }}",
            "<p>{{ NoSuchField }}</p>",
            "{{ Address }}",
            None,
            ts,
        ],
    ).close()
    cols = seed.COLUMNS["NotificationSchedule"]
    rows = [
        (
            SMS_SCHEDULE,
            "New listing SMS",
            "Property",
            "insert",
            "CreateDate",
            None,
            json.dumps([{"column": "Status", "op": "eq", "value": "Active"}]),
            "sms",
            "agent_contacts",
            SMS_TEMPLATE_ID,
            "record",
            0,
            1,
            ts,
        ),
        (
            BROKEN_MERGE_SCHEDULE,
            "Listing removed (broken)",
            "Property",
            "delete",
            "DeletedDate",
            None,
            "[]",
            "email",
            "agent",
            BROKEN_MERGE_TEMPLATE_ID,
            "change",
            0,
            1,
            ts,
        ),
        (
            BAD_CRITERIA_SCHEDULE,
            "Bad criteria",
            "Property",
            "insert",
            "CreateDate",
            None,
            json.dumps([{"column": "NoSuchColumn", "op": "eq", "value": 1}]),
            "email",
            "agent",
            1,
            "record",
            0,
            1,
            ts,
        ),
    ]
    for row in rows:
        db.execute(
            f'INSERT INTO "NotificationSchedule" ({", ".join(db.quote(c) for c in cols)}) '
            f"VALUES ({', '.join('?' for _ in cols)})",
            list(row),
        ).close()
    # Gather the deliberately bad contacts under the agent of a listing of window 0, so its
    # fan-out reaches every kind of bad input.
    listing = _stable_new_listing(changes[0])
    bad = [
        p["PeopleID"]
        for p in dataset.records("People")
        if p["FirstName"] in seed.MARKUP_NAMES
        or p["Email"] in seed.INVALID_EMAILS
        or p["MobilePhone"] in seed.INVALID_PHONES
        or p["LastName"] in ("Optout", "Noaddress")
    ]
    for pid in bad:
        db.execute(
            'UPDATE "People" SET "AgentID" = ? WHERE "PeopleID" = ?', [listing.row["AgentID"], pid]
        ).close()


def _stable_new_listing(wc: seed.WindowChanges) -> seed.Insert:
    """The first new listing of the window that nothing else touches in that window."""
    for op in wc.operations:
        if isinstance(op, seed.Insert) and op.kind == seed.ChangeKind.NEW_LISTING:
            pid = op.key
            if not any(
                o is not op and getattr(o, "key", None) == pid and o.table == "Property"
                for o in wc.operations
            ):
                return op
    raise AssertionError("window 0 has no untouched new listing")


@dataclass
class BadRun:
    env: EmbeddedEnv
    results: list[ExecuteInProcessResult]
    listing: seed.Insert


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory, recorder_mp) -> Iterator[BadRun]:
    mp, _ = recorder_mp
    env = build_env(
        tmp_path_factory.mktemp("bad") / "home", mp, windows=2, customize=_bad_customize
    )
    results = [env.run_window(i) for i in range(2)]
    try:
        yield BadRun(env, results, _stable_new_listing(env.changes[0]))
    finally:
        env.close()


def test_bad_schedules_are_reported_by_name_and_the_others_run(bad_run):
    assert all(r.success for r in bad_run.results)
    meta = node_metadata(bad_run.results[0], "notification_schedules")
    assert meta["rejected_schedules"] == 2
    # 1, 2, 3, 5, the two added that are valid, and Welcome, whose template does not
    # compile: it keeps running so its messages end render_failed instead of being lost.
    assert meta["active_schedules"] == 7
    rejected = meta["rejected"]
    assert "Welcome" in rejected  # the template that does not compile, by name
    assert "Bad criteria" in rejected and "NoSuchColumn" in rejected
    latest = materialization_metadata(
        bad_run.env.instance, "notification_schedules", bad_run.env.key(1)
    )
    assert latest["rejected_schedules"] == 2


def test_other_messages_go_out_despite_bad_input(bad_run):
    env = bad_run.env
    rows = messages(env)
    assert [m for m in rows if m["status"] not in FINAL] == []
    sent_by_schedule = {
        s: sum(1 for m in rows if m["schedule_id"] == s and m["status"] == "sent")
        for s in (1, 2, 5, SMS_SCHEDULE)
    }
    assert all(sent_by_schedule.values()), sent_by_schedule
    assert not [m for m in rows if m["schedule_id"] == BAD_CRITERIA_SCHEDULE]
    welcome = [m for m in rows if m["schedule_id"] == 4]
    assert welcome, "the seeded windows add contacts who opted in"
    for m in welcome:
        assert m["status"] == "render_failed"
        assert "Welcome" in m["reason"] and "line" in m["reason"]
    for result in bad_run.results:
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert checks["no_missed_notifications"] and checks["no_duplicate_sends"]
    assert len(env.outbox_files()) == sum(1 for m in rows if m["status"] == "sent")


def test_a_missing_merge_field_fails_only_that_message(bad_run):
    env = bad_run.env
    broken = messages(env, "c.schedule_id = ?", [BROKEN_MERGE_SCHEDULE])
    assert broken, "no listing was removed in the seeded windows"
    for m in broken:
        assert m["status"] == "render_failed"
        assert "Broken merge" in m["reason"] and "NoSuchField" in m["reason"]
        [twin] = messages(env, "c.schedule_id = 5 AND c.record_id = ?", [m["record_id"]])
        assert twin["status"] == "sent"


def _expected(channel: str, person: dict[str, Any]) -> tuple[str, str | None]:
    """The outcome the seed's data calls for, decided from the seed's own constants."""
    if channel == "email":
        if not person["EmailOptIn"]:
            return "suppressed", "opted in"
        if person["Email"] is None:
            return "suppressed", "no email address"
        if person["Email"] in seed.INVALID_EMAILS:
            return "suppressed", "invalid email address"
        return "sent", None
    if not person["SmsOptIn"]:
        return "suppressed", "opted in"
    if person["MobilePhone"] is None:
        return "suppressed", "no mobile phone number"
    if person["MobilePhone"] in seed.INVALID_PHONES:
        return "suppressed", "invalid phone number"
    return "sent", None


def test_each_contact_of_a_fan_out_ends_in_its_own_status(bad_run):
    env = bad_run.env
    pid, agent = bad_run.listing.key, bad_run.listing.row["AgentID"]
    people = {
        int(p["PeopleID"]): p
        for p in env.source_rows('SELECT * FROM "People" WHERE "AgentID" = ?', [agent])
    }
    kinds = {
        "markup": any(p["FirstName"] in seed.MARKUP_NAMES for p in people.values()),
        "bad email": any(p["Email"] in seed.INVALID_EMAILS for p in people.values()),
        "bad phone": any(p["MobilePhone"] in seed.INVALID_PHONES for p in people.values()),
        "opted out": any(not p["EmailOptIn"] for p in people.values()),
        "no address": any(p["Email"] is None for p in people.values()),
    }
    assert all(kinds.values()), kinds
    for schedule, channel in ((1, "email"), (SMS_SCHEDULE, "sms")):
        got = {
            m["recipient_id"]: m
            for m in messages(env, "c.schedule_id = ? AND c.record_id = ?", [schedule, pid])
        }
        assert set(got) == set(people), channel
        for person_id, person in people.items():
            status, reason = _expected(channel, person)
            m = got[person_id]
            assert m["status"] == status, (channel, person, m["reason"])
            if reason:
                assert reason in m["reason"], (channel, person, m["reason"])
            else:
                assert m["reason"] is None


def test_markup_in_a_contact_name_is_escaped_in_html_and_plain_in_text(bad_run):
    env = bad_run.env
    pid = bad_run.listing.key
    script = "<script>alert(1)</script>"
    people = env.source_rows(
        'SELECT "PeopleID" FROM "People" WHERE "FirstName" = ? AND "EmailOptIn" = 1', [script]
    )
    assert people
    for person in people:
        [m] = env.store_rows(
            "SELECT m.* FROM message m JOIN candidate c ON c.candidate_id = m.candidate_id "
            "WHERE c.schedule_id = 1 AND c.record_id = ? AND c.recipient_id = ?",
            [pid, person["PeopleID"]],
        )
        assert m["status"] == "sent"
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in m["html_body"]
        assert script not in m["html_body"]
        assert f"Hi {script}," in m["text_body"]
        [path] = [p for p in env.outbox_files() if outbox_key(p) == m["candidate_key"]]
        parsed = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        parts = {p.get_content_type(): p.get_content() for p in parsed.iter_parts()}
        assert script not in parts["text/html"]
        assert script in parts["text/plain"]


def test_a_template_syntax_error_keeps_its_notifications_as_render_failed(bad_run):
    """A broken template must not lose the notifications it would have sent: each one is kept
    with a terminal status and the compiler's reason (architecture, invariant 7)."""
    env = bad_run.env
    welcomes = set()
    for i in range(len(env.changes)):
        w = env.window(i)
        lo = (w.start - env.settings.lookback).strftime("%Y-%m-%d %H:%M:%S.%f")
        hi = w.end.strftime("%Y-%m-%d %H:%M:%S.%f")
        welcomes |= {
            int(p["PeopleID"])
            for p in env.source_rows(
                'SELECT "PeopleID" FROM "People" WHERE "CreateDate" >= ? AND "CreateDate" < ? '
                'AND "EmailOptIn" = 1',
                [lo, hi],
            )
        }
    assert welcomes, "no opted-in contact was created in the seeded windows"
    got = {m["record_id"]: m for m in messages(env, "c.schedule_id = 4")}
    assert set(got) == welcomes, "the Welcome notifications of these contacts were dropped"
    for m in got.values():
        assert m["status"] == "render_failed"
        assert "Welcome" in m["reason"]


def test_materialization_counts_cover_the_bad_input(bad_run):
    env = bad_run.env
    for i, result in enumerate(bad_run.results):
        rendered = node_metadata(result, "rendered_messages")
        rows = messages(env, "m.partition_key = ?", [env.key(i)])
        suppressed = sum(1 for m in rows if m["status"] == "suppressed")
        assert rendered.get("suppressed", 0) == suppressed
        failed = sum(1 for m in rows if m["status"] == "render_failed")
        assert rendered.get("render_failed", 0) == failed
        if failed or suppressed:
            assert rendered["not_sendable"] != "(none)"


class _HintBus(InProcessBus):
    """An in-process bus whose idle hint the test sets."""

    def __init__(self, hint):
        super().__init__()
        self.hint = hint

    def idle(self, kind):
        return self.hint


def test_a_waiting_stage_asks_the_store_when_the_bus_turns_idle_and_seldom_otherwise():
    from darwin_notify_assets.domain.pipeline import _Completion

    asked = []

    def remaining() -> int:
        asked.append(1)
        return 0 if bus.hint else 3

    bus = _HintBus(False)
    done = _Completion(bus, JobKind.RENDER, remaining, store_every=60)
    assert done() is False and len(asked) == 1  # the first look asks the store
    assert [done() for _ in range(20)] == [False] * 20 and len(asked) == 1
    bus.hint = True
    assert done() is True and len(asked) == 2  # turned idle: asked at once

    unknown = _HintBus(None)  # a bus that cannot tell: the store is asked every second
    done = _Completion(unknown, JobKind.RENDER, lambda: asked.append(1) or 1, store_every=60)
    done()
    before = len(asked)
    assert [done() for _ in range(5)] == [False] * 5 and len(asked) == before


# -- standing workers: render jobs leave with the candidates ----------------------------------
class _Standing:
    """A render and a send worker consuming the bus on their own threads, as the
    ``darwin-notify worker`` processes do."""

    def __init__(self, env: EmbeddedEnv, rt: Runtime, loaded):
        self.stop = threading.Event()
        self.renderer = RenderWorker(
            env.replica(),
            env.store(),
            loaded.schedules,
            loaded.templates,
            env.settings.window_minutes,
        )
        self.sender = SendWorker(env.store(), rt.senders_factory(), concurrency=2)
        self.threads = [
            threading.Thread(target=rt.bus.consume, args=(kind, handler, self.stop), daemon=True)
            for kind, handler in ((JobKind.RENDER, self.renderer), (JobKind.SEND, self.sender))
        ]
        for t in self.threads:
            t.start()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)
        self.sender.close()


def _standing_window(env: EmbeddedEnv, calls: dict[str, list]):
    """Window 0 detected and its totals computed, with standing workers on the bus."""
    rt = _plain_runtime(env, calls)
    rt.settings = replace(rt.settings, inline_workers=0, stage_timeout_seconds=60)
    env.apply(0)
    window = env.window(0)
    loaded = load_schedules(rt.replica)
    workers = _Standing(env, rt, loaded)
    stage_change_window(rt, window, loaded)
    stage_agent_totals(rt, window)
    return rt, window, loaded, workers


def test_with_standing_workers_render_jobs_leave_with_each_batch_of_candidates(embedded_env):
    env = embedded_env
    calls: dict[str, list] = {"email": [], "sms": []}
    rt, window, loaded, workers = _standing_window(env, calls)
    try:
        result = stage_candidates(rt, window, loaded)
        assert result.render_jobs > 0
        assert result.as_metadata()["render_jobs_published"] == result.render_jobs
        assert rt.bus.published[JobKind.RENDER] == result.render_jobs
        counts = stage_render(rt, window, loaded)
        assert counts["render_jobs"] == 0  # nothing left to publish
        stage_deliver(rt, window)
    finally:
        workers.close()
    assert rt.store.unrendered_count(env.key(0)) == 0
    sent = messages(env, "m.status = 'sent'")
    assert len(calls["email"]) + len(calls["sms"]) == len(sent) > 0


def test_with_standing_workers_candidates_without_jobs_get_them_once_the_bus_is_idle(
    embedded_env,
):
    env = embedded_env
    calls: dict[str, list] = {"email": [], "sms": []}
    rt, window, loaded, workers = _standing_window(env, calls)
    try:
        # As if the candidates step had stopped after its commits, before its jobs went out.
        build_candidates(rt.replica, rt.store, loaded.schedules, window.partition_key)
        left = rt.store.unrendered_count(env.key(0))
        assert left > 0 and rt.bus.published[JobKind.RENDER] == 0
        counts = stage_render(rt, window, loaded)
    finally:
        workers.close()
    assert counts["candidates_unrendered_at_start"] == left
    assert counts["render_jobs"] == rt.bus.published[JobKind.RENDER] > 0
    assert rt.store.unrendered_count(env.key(0)) == 0


def test_a_waiting_stage_republishes_left_work_when_idle_a_few_times_and_once_when_stalled():
    from darwin_notify_assets.domain.pipeline import _Completion

    republished: list[str] = []
    bus = _HintBus(True)
    done = _Completion(
        bus,
        JobKind.RENDER,
        lambda: 5,
        store_every=0,
        republish=lambda: republished.append("idle") or 1,
        log_progress=lambda _: None,
    )
    for _ in range(10):
        assert done() is False
    assert len(republished) == _Completion.max_republish

    republished.clear()
    busy = _HintBus(False)
    done = _Completion(
        busy,
        JobKind.RENDER,
        lambda: 5,
        store_every=0,
        republish=lambda: republished.append("stalled") or 1,
        log_progress=lambda _: None,
        stall_after=0,
    )
    for _ in range(10):
        assert done() is False
    assert republished == ["stalled"]
