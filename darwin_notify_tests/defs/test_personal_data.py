"""Personal data never reaches what the Dagster UI shows: every materialization's and every
check's metadata is searched for the recipients' addresses, numbers and names."""

import re

from dagster import DagsterEventType, EventRecordsFilter

from darwin_notify_tests.conftest import build_env, materialization_metadata


def _mangle_addresses(db, dataset, changes):
    # Every contact's address is invalid in a way that the reason quotes back: each message to
    # a contact ends suppressed with its address in the store's reason.
    db.execute("""UPDATE "People" SET "Email" = 'x ' || "Email" """).close()
    db.execute("""UPDATE "Agent" SET "MobilePhone" = '+1 312 ' || "AgentID" || '99 9' """).close()


def _ui_text(instance) -> str:
    parts = []
    for kind in (
        DagsterEventType.ASSET_MATERIALIZATION,
        DagsterEventType.ASSET_CHECK_EVALUATION,
        DagsterEventType.STEP_FAILURE,
    ):
        for record in instance.get_event_records(EventRecordsFilter(event_type=kind)):
            entry = record.event_log_entry
            parts.append(str(entry.dagster_event.event_specific_data))
            parts.append(entry.user_message or "")
    return "\n".join(parts)


def test_no_address_phone_or_name_in_any_metadata(tmp_path, monkeypatch):
    env = build_env(tmp_path / "home", monkeypatch, windows=2, customize=_mangle_addresses)
    try:
        for i in range(2):
            assert env.run_window(i).success
        reasons = env.store_rows("SELECT reason FROM message WHERE status = 'suppressed'")
        quoted = [r["reason"] for r in reasons if "@" in (r["reason"] or "")]
        assert quoted, "the test needs suppressed messages whose reason quotes an address"
        text = _ui_text(env.instance)
        assert "not_sendable" in text
        assert "message_preview" in text
        people = env.source_rows('SELECT "Email", "MobilePhone", "LastName" FROM "People"')
        agents = env.source_rows('SELECT "Email", "MobilePhone", "LastName" FROM "Agent"')
        for row in people + agents:
            for value in (row["Email"], row["MobilePhone"]):
                if value:
                    core = value.removeprefix("x ")
                    assert core not in text, f"{core!r} shown in the UI"
        preview = materialization_metadata(env.instance, "rendered_messages")["message_preview"]
        assert "```" in preview and "***" in preview
        shown = set(re.findall(r"[^\W\d_]+", preview))
        names = env.source_rows('SELECT "FirstName", "LastName" FROM "People"') + env.source_rows(
            'SELECT "FirstName", "LastName" FROM "Agent"'
        )
        templates = env.source_rows('SELECT * FROM "NotificationTemplate"')
        literal = " ".join(str(v) for t in templates for v in t.values() if isinstance(v, str))
        for row in names:
            for name in (row["FirstName"], row["LastName"]):
                # A name that is also a word the templates write themselves is not data.
                if name and len(name) > 1 and name not in literal:
                    assert name not in shown, f"name {name!r} shown in a preview"
    finally:
        env.close()
