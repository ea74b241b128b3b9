"""DedupeScope ``window``: one digest per recipient per window, listing all its records."""

from collections import defaultdict
from dataclasses import replace
from datetime import datetime

from darwin_notify_assets.sample import seed
from darwin_notify_tests.conftest import sqlite_rows

DIGEST_SCHEDULE = 60
DIGEST_TEMPLATE = 60


def _add_digest(db, dataset, changes):
    """New listings of a window, in one email per agent; each window's listings all go to one
    agent, so a digest has several records to list."""
    for i, wc in enumerate(changes):
        listings = [
            o for o in wc.operations if isinstance(o, seed.Insert) and o.table == "Property"
        ]
        agent = listings[0].row["AgentID"]
        ops = tuple(
            replace(o, row={**o.row, "AgentID": agent}) if o in listings else o
            for o in wc.operations
        )
        changes[i] = replace(wc, operations=ops)
    ts = db.ts(datetime(2026, 2, 1))
    db.execute(
        'INSERT INTO "NotificationTemplate" ("TemplateID", "Name", "Subject", "HtmlBody", '
        '"TextBody", "SmsBody", "ModifiedDate") VALUES (?, ?, ?, ?, ?, ?, ?)',
        [
            DIGEST_TEMPLATE,
            "Listings digest",
            "{{ records|length }} new listing(s)",
            "<ul>{% for r in records %}<li>[{{ r.PropertyID }}]</li>{% endfor %}</ul>",
            "{% for r in records %}[{{ r.PropertyID }}] {% endfor %}",
            None,
            ts,
        ],
    ).close()
    db.execute(
        'INSERT INTO "NotificationSchedule" ("ScheduleID", "Name", "SourceTable", "EventType", '
        '"WatchColumn", "ChangedColumns", "Criteria", "Channel", "Audience", "TemplateID", '
        '"DedupeScope", "UsesAgentTotals", "IsActive", "ModifiedDate") '
        "VALUES (?, ?, 'Property', 'insert', 'CreateDate', NULL, '[]', 'email', 'agent', ?, "
        "'window', 0, 1, ?)",
        [DIGEST_SCHEDULE, "Listings digest", DIGEST_TEMPLATE, ts],
    ).close()


def test_one_digest_per_agent_per_window_lists_every_listing(env_factory) -> None:
    env = env_factory(windows=2, customize=_add_digest)
    for i in range(2):
        assert env.run_window(i).success
    db = env.home / "store.db"
    for i in range(2):
        # Independently: the window's new listings per agent, from the seed's operations.
        expected = defaultdict(set)
        for op in env.changes[i].operations:
            if op.table == "Property" and op.kind.value == "new_listing":
                expected[int(op.row["AgentID"])].add(int(op.row["PropertyID"]))
        rows = sqlite_rows(
            db,
            "SELECT c.agent_id, m.status, m.text_body, m.subject FROM message m "
            "JOIN candidate c ON c.candidate_id = m.candidate_id "
            "WHERE c.schedule_id = ? AND c.partition_key = ?",
            [DIGEST_SCHEDULE, env.key(i)],
        )
        assert max(len(v) for v in expected.values()) >= 2, "a digest must list several"
        assert sorted(r["agent_id"] for r in rows) == sorted(expected)
        for r in rows:
            if r["status"] != "sent":
                continue
            listed = {int(x) for x in r["text_body"].replace("[", " ").replace("]", " ").split()}
            assert listed == expected[r["agent_id"]]
            assert r["subject"].startswith(f"{len(expected[r['agent_id']])} new listing")
