"""Candidates: deterministic idempotency keys per DedupeScope, audience fan-out, and
insert-if-absent."""

import dataclasses
import json
from datetime import datetime

import pytest

from darwin_notify_assets.domain.candidates import build_candidates, candidate_key
from darwin_notify_assets.domain.detect import detect_changes
from darwin_notify_assets.domain.pipeline import load_schedules
from darwin_notify_assets.domain.schedules import DedupeScope, Schedule, build_schedule_set
from darwin_notify_assets.sample import seed
from darwin_notify_assets.storage.store import ChangeEvent

CATALOG = {t: seed.COLUMNS[t] for t in ("Office", "Agent", "People", "Property", "Deal")}


@pytest.fixture(scope="module")
def sample() -> dict[int, Schedule]:
    names = seed.COLUMNS["NotificationTemplate"]
    templates = [dict(zip(names, r, strict=True)) for r in seed.template_rows(datetime(2026, 1, 1))]
    rows = [{**s, "Criteria": json.dumps(s["Criteria"])} for s in seed.SAMPLE_SCHEDULES]
    built = build_schedule_set(rows, templates, CATALOG)
    return {s.schedule_id: s for s in built.schedules}


def event(
    record_id=42,
    version="2026-03-02 14:01:00.000000",
    partition="2026-03-02-14:00",
    schedule_id=2,
    event_type="update",
) -> ChangeEvent:
    return ChangeEvent(
        event_key=f"Property:{record_id}:s{schedule_id}:{event_type}:{version}",
        partition_key=partition,
        schedule_id=schedule_id,
        source_table="Property",
        record_id=record_id,
        event_type=event_type,
        version=version,
        agent_id=3,
        contact_id=None,
        old_values=None,
        row_values=None,
        event_id=1,
    )


def keys(schedule: Schedule, scope: DedupeScope, events, recipient=7) -> list[str]:
    s = dataclasses.replace(schedule, dedupe_scope=scope)
    return [candidate_key(s, e, "contact", recipient) for e in events]


def test_keys_are_deterministic(sample):
    for scope in DedupeScope:
        a = keys(sample[2], scope, [event()])
        b = keys(sample[2], scope, [event()])
        assert a == b


def test_record_scope_is_once_per_record_ever(sample):
    later_change = event(version="2026-03-02 14:07:00.000000", partition="2026-03-02-14:05")
    (same,) = set(keys(sample[2], DedupeScope.RECORD, [event(), later_change]))
    (other_record,) = keys(sample[2], DedupeScope.RECORD, [event(record_id=43)])
    (other_recipient,) = keys(sample[2], DedupeScope.RECORD, [event()], recipient=8)
    assert len({same, other_record, other_recipient}) == 3


def test_change_scope_is_once_per_change(sample):
    first, rerun, later = keys(
        sample[2],
        DedupeScope.CHANGE,
        [
            event(),
            event(partition="2026-03-02-14:05"),  # the same change re-read by the lookback
            event(version="2026-03-02 14:07:00.000000", partition="2026-03-02-14:05"),
        ],
    )
    assert first == rerun
    assert later != first


def test_window_scope_is_one_digest_per_recipient_per_window(sample):
    a, b, next_window = keys(
        sample[2],
        DedupeScope.WINDOW,
        [
            event(record_id=1),
            event(record_id=2),
            event(record_id=1, partition="2026-03-02-14:05"),
        ],
    )
    assert a == b
    assert next_window != a
    (other_recipient,) = keys(sample[2], DedupeScope.WINDOW, [event(record_id=1)], recipient=8)
    assert other_recipient != a


def test_keys_name_their_schedule_and_recipient_kind(sample):
    s = sample[2]
    e = event()
    assert candidate_key(s, e, "agent", 3) != candidate_key(s, e, "contact", 3)
    other = dataclasses.replace(s, schedule_id=9)
    assert candidate_key(s, e, "agent", 3) != candidate_key(other, e, "agent", 3)


# -- against the seeded data -----------------------------------------------------------------
def _detect_and_build(env, index=0):
    env.apply(index)
    rt = env.runtime()
    loaded = load_schedules(rt.replica)
    window = env.window(index)
    detect_changes(rt.replica, rt.store, loaded.schedules, window, env.settings.lookback)
    return (
        rt,
        loaded,
        build_candidates(rt.replica, rt.store, loaded.schedules, window.partition_key),
    )


def test_agent_contacts_fan_out_gives_one_candidate_per_contact_of_the_agent(embedded_env):
    env = embedded_env
    _, _, result = _detect_and_build(env)
    new_listings = env.store_rows(
        "SELECT event_id, record_id, agent_id FROM change_event WHERE schedule_id = 1"
    )
    assert new_listings, "the seeded window has no new listing"
    for e in new_listings:
        contacts = {
            int(r["PeopleID"])
            for r in env.source_rows(
                'SELECT "PeopleID" FROM "People" WHERE "AgentID" = ?', [e["agent_id"]]
            )
        }
        got = env.store_rows(
            "SELECT recipient_kind, recipient_id, candidate_key FROM candidate WHERE event_id = ?",
            [e["event_id"]],
        )
        assert {r["recipient_kind"] for r in got} == {"contact"}
        assert sorted(r["recipient_id"] for r in got) == sorted(contacts)
        assert len({r["candidate_key"] for r in got}) == len(got)
    assert result.by_schedule[1] == len(
        env.store_rows("SELECT 1 FROM candidate WHERE schedule_id = 1")
    )


def test_agent_and_record_contact_audiences(embedded_env):
    env = embedded_env
    _detect_and_build(env)
    rows = env.store_rows(
        "SELECT c.schedule_id, c.recipient_kind, c.recipient_id, e.agent_id, e.contact_id, "
        "e.source_table, e.record_id FROM candidate c JOIN change_event e "
        "ON e.event_id = c.event_id WHERE c.schedule_id IN (2, 3, 4, 5)"
    )
    assert rows
    for r in rows:
        if r["schedule_id"] == 4:  # welcome: the new contact itself
            assert (r["recipient_kind"], r["recipient_id"]) == ("contact", r["record_id"])
        else:  # the record's agent
            assert (r["recipient_kind"], r["recipient_id"]) == ("agent", r["agent_id"])
            if r["source_table"] == "Property" and r["schedule_id"] != 5:
                [prop] = env.source_rows(
                    'SELECT "AgentID" FROM "Property" WHERE "PropertyID" = ?', [r["record_id"]]
                )
                assert prop["AgentID"] == r["agent_id"]


def test_building_twice_inserts_nothing_new(embedded_env):
    env = embedded_env
    rt, loaded, first = _detect_and_build(env)
    assert first.inserted > 0
    before = env.store_rows("SELECT * FROM candidate ORDER BY candidate_id")
    second = build_candidates(rt.replica, rt.store, loaded.schedules, env.key(0))
    assert second.inserted == 0
    assert env.store_rows("SELECT * FROM candidate ORDER BY candidate_id") == before
    # and a re-detection (the next window's lookback) leads to no new candidate either
    detect_changes(rt.replica, rt.store, loaded.schedules, env.window(0), env.settings.lookback)
    third = build_candidates(rt.replica, rt.store, loaded.schedules, env.key(0))
    assert third.inserted == 0
    assert len(env.store_rows("SELECT * FROM candidate")) == len(before)
