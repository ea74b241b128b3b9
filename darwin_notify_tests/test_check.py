"""``darwin-notify check``: the source model and the schedules against the replica's catalog."""

import pytest

from darwin_notify_assets import cli
from darwin_notify_assets.domain.model import SAMPLE_MODEL, load_model
from darwin_notify_assets.domain.pipeline import load_schedules
from darwin_notify_assets.sample import seed
from darwin_notify_assets.storage.replica import ReplicaReader

SAMPLE = SAMPLE_MODEL.read_text(encoding="utf-8")


@pytest.fixture
def broken_model(embedded_env, tmp_path, monkeypatch):
    """The sample model with a Deal watch column and the contacts' SMS opt-in misspelt."""
    path = tmp_path / "broken.model.yaml"
    path.write_text(
        SAMPLE.replace(
            "[CreateDate, ModifiedDate, PostDate]", "[CreateDate, ModifiedDate, PostDat]"
        ).replace("sms: SmsOptIn", "sms: SmsOptInn"),
        encoding="utf-8",
    )
    monkeypatch.setenv("DARWIN_NOTIFY_SOURCE_MODEL", str(path))
    return path


def test_check_passes_on_the_sample(embedded_env, capsys):
    capsys.readouterr()
    assert cli.main(["check"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"ok: {len(seed.SAMPLE_SCHEDULES)} schedule(s) would run"
    )


def test_check_names_each_problem_and_exits_1(broken_model, capsys):
    capsys.readouterr()
    assert cli.main(["check"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert "model tables.Deal: column Deal.PostDat does not exist on the replica" in lines
    assert (
        "model recipients.contact: column People.SmsOptInn does not exist on the replica" in lines
    )
    assert lines[-1].endswith("would run") and "problem(s)" in lines[-1]


def test_only_what_depends_on_the_broken_part_is_skipped(broken_model, embedded_env):
    replica = ReplicaReader.open(embedded_env.settings.replica_url, model=load_model(broken_model))
    try:
        loaded = load_schedules(replica)
    finally:
        replica.close()
    skipped = {r.schedule_id for r in loaded.rejected}
    # Deal is broken (its watch column), and so is People (the contacts' SMS opt-in): every
    # schedule on Deal, on People, to contacts or showing totals (a Deal ledger) is skipped.
    expected = {
        s["ScheduleID"]
        for s in seed.SAMPLE_SCHEDULES
        if s["IsActive"]
        and (
            s["SourceTable"] in ("Deal", "People")
            or s["Audience"] != "agent"
            or s["UsesAgentTotals"]
        )
    }
    assert expected and skipped == expected
    assert {s.schedule_id for s in loaded.schedules.schedules}.isdisjoint(expected)
    assert loaded.schedules.schedules
    assert loaded.as_metadata()["model_problems"].count("does not exist") == 2


def test_a_bad_model_file_answers_in_one_line(tmp_path, monkeypatch, capsys):
    path = tmp_path / "bad.model.yaml"
    path.write_text(SAMPLE.replace("key: DealID", "kee: DealID"), encoding="utf-8")
    monkeypatch.setenv("DARWIN_NOTIFY_SOURCE_MODEL", str(path))
    assert cli.main(["check"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"darwin-notify check: {path}:") and "tables.Deal.kee" in err


def test_check_names_a_merge_field_query_whose_file_is_missing(
    embedded_env, tmp_path, monkeypatch, capsys
):
    from darwin_notify_tests.delivery.test_merge_fields import (
        model_with_merge_fields,
        name_queries,
    )

    monkeypatch.setenv("DARWIN_NOTIFY_SOURCE_MODEL", str(model_with_merge_fields(tmp_path)))
    queries = tmp_path / "queries"
    queries.mkdir()
    monkeypatch.setenv("DARWIN_NOTIFY_MERGE_FIELDS_DIR", str(queries))
    name_queries(embedded_env.source, templates={1: "office_counts", 2: "office_counts"})
    capsys.readouterr()
    assert cli.main(["check"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [
        "schedule 1 (New listing), 2 (Price drop): merge-field query 'office_counts' not found: "
        f"no file {queries}/office_counts.sql",
        f"1 problem(s); {len(seed.SAMPLE_SCHEDULES)} schedule(s) would run",
    ]
    (queries / "office_counts.sql").write_text("SELECT value AS record_id FROM json_each(?)")
    assert cli.main(["check"]) == 0


def test_check_names_a_time_zone_value_that_is_no_iana_zone(embedded_env, capsys):
    import sqlite3

    with sqlite3.connect(embedded_env.home / "darwin.db") as conn:
        conn.execute('UPDATE "Office" SET "TimeZone" = ? WHERE "OfficeID" = 2', ["Mars/Olympus"])
    capsys.readouterr()
    assert cli.main(["check"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    # both kinds read the office's zone: named once
    assert lines[:-1] == [
        "recipients.agent.time_zone: Office.TimeZone holds 'Mars/Olympus', which is not an IANA "
        "time zone; its recipients are decided in UTC (DARWIN_NOTIFY_DEFAULT_TIME_ZONE)"
    ]
    assert lines[-1] == f"1 problem(s); {len(seed.SAMPLE_SCHEDULES)} schedule(s) would run"
