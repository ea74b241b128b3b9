"""Schedules: criteria operators and the validation that rejects a bad schedule by name."""

import json
from datetime import datetime
from decimal import Decimal

import pytest

from darwin_notify_assets.domain.schedules import (
    OPERATORS,
    Audience,
    Channel,
    Criterion,
    DedupeScope,
    EventType,
    build_schedule_set,
    same_value,
)
from darwin_notify_assets.sample import seed

ALL_OPERATORS = {
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "in",
    "not_in",
    "is_null",
    "not_null",
    "changed",
    "increased",
    "decreased",
}


def test_the_operator_vocabulary_is_the_documented_one():
    assert set(OPERATORS) == ALL_OPERATORS


# (op, new value, old value, criterion value, expected)
CASES = [
    # equality across Decimal, numeric text (as last-seen values keep it), int and float
    ("eq", Decimal("350000.00"), None, 350000, True),
    ("eq", "350000.00", None, 350000, True),
    ("eq", 350000.0, None, Decimal("350000"), True),
    ("eq", Decimal("0.10"), None, 0.1, True),
    ("eq", "Active", None, "Active", True),
    ("eq", "Active", None, "active", False),
    ("eq", 1, None, True, True),  # SQLite keeps booleans as 0/1
    ("eq", 0, None, True, False),
    ("eq", None, None, "Active", False),
    ("ne", Decimal("99.99"), None, 100, True),
    ("ne", "100", None, 100, False),
    ("ne", "Sold", None, "Active", True),
    # ordering is numeric for numbers and numeric text, never lexicographic
    ("lt", Decimal("99.5"), None, "100", True),
    ("lt", "1000", None, "999", False),
    ("lt", 5.5, None, Decimal("5.50"), False),
    ("lt", None, None, 5, False),
    ("le", "5.50", None, 5.5, True),
    ("le", Decimal("5.51"), None, 5.5, False),
    ("gt", "10", None, 9, True),
    ("gt", Decimal("9"), None, "10", False),
    ("gt", 10.25, None, Decimal("10.2"), True),
    ("ge", "10.00", None, 10, True),
    ("ge", 9.99, None, 10, False),
    ("ge", None, None, 0, False),
    # membership
    ("in", Decimal("5.0"), None, [5, 6], True),
    ("in", "Pending", None, ["Active", "Pending"], True),
    ("in", "Sold", None, ["Active", "Pending"], False),
    ("in", "7", None, [5, 6], False),
    ("not_in", "Sold", None, ["Active", "Pending"], True),
    ("not_in", 6.0, None, [5, "6"], False),
    # nulls
    ("is_null", None, None, None, True),
    ("is_null", "", None, None, False),
    ("is_null", 0, None, None, False),
    ("not_null", "2026-03-02 14:01:00.000000", None, None, True),
    ("not_null", None, None, None, False),
    # changes against the previous (last-seen) value
    ("changed", 100, Decimal("100.00"), None, False),
    ("changed", "100.00", 100, None, False),
    ("changed", 101, 100, None, True),
    ("changed", 1, None, None, True),
    ("changed", None, 1, None, True),
    ("changed", None, None, None, False),
    ("changed", "Austin", "Dallas", None, True),
    ("increased", "200000", Decimal("199999.99"), None, True),
    ("increased", 200000.0, "200000.00", None, False),
    ("increased", Decimal("199000"), 200000, None, False),
    ("increased", None, 100, None, False),
    ("increased", 100, None, None, False),
    ("decreased", 349000, "350000.00", None, True),
    ("decreased", 1.1, Decimal("1.2"), None, True),
    ("decreased", Decimal("350000.00"), 350000, None, False),
    ("decreased", 351000, "350000", None, False),
    ("decreased", 100, None, None, False),
]


@pytest.mark.parametrize(("op", "new", "old", "value", "expected"), CASES)
def test_criterion_operators(op, new, old, value, expected):
    criterion = Criterion(column="C", op=op, value=value)
    old_row = None if old is None else {"C": old}
    assert criterion.matches({"C": new}, old_row) is expected


@pytest.mark.parametrize("op", sorted(ALL_OPERATORS))
def test_every_operator_is_exercised(op):
    assert any(case[0] == op for case in CASES)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (Decimal("1.10"), "1.1", True),
        (True, 1, True),
        (False, 0, True),
        (False, None, False),
        ("abc", "abc", True),
        ("abc", "ABC", False),
        (None, None, True),
    ],
)
def test_same_value(a, b, expected):
    assert same_value(a, b) is expected


# -- validation ----------------------------------------------------------------------------------
def _template_rows():
    names = seed.COLUMNS["NotificationTemplate"]
    return [dict(zip(names, row, strict=True)) for row in seed.template_rows(datetime(2026, 1, 1))]


def _schedule_row(**overrides):
    row = {**seed.SAMPLE_SCHEDULES[0], "ScheduleID": 90, "Name": "Probe"}
    row.update(overrides)
    if not isinstance(row.get("Criteria"), str) and row.get("Criteria") is not None:
        row["Criteria"] = json.dumps(row["Criteria"])
    return row


def _sample_rows():
    return [{**s, "Criteria": json.dumps(s["Criteria"])} for s in seed.SAMPLE_SCHEDULES]


CATALOG = {t: seed.COLUMNS[t] for t in ("Office", "Agent", "People", "Property", "Deal")}


def test_the_sample_schedules_are_all_valid():
    built = build_schedule_set(_sample_rows(), _template_rows(), CATALOG)
    assert built.rejected == ()
    by_id = {s.schedule_id: s for s in built.schedules}
    assert set(by_id) == {s["ScheduleID"] for s in seed.SAMPLE_SCHEDULES}
    price_drop = by_id[2]
    assert price_drop.event_type is EventType.UPDATE
    assert price_drop.changed_columns == ("ListPrice",)
    assert price_drop.channel is Channel.SMS
    assert price_drop.audience is Audience.AGENT
    assert price_drop.dedupe_scope is DedupeScope.CHANGE
    assert price_drop.needs_previous_values
    assert by_id[5].watch_column == "DeletedDate"
    assert built.source_tables == ("Deal", "People", "Property")
    assert built.delete_tables == ("Property",)
    assert built.uses_agent_totals


BAD = [
    pytest.param(
        {"Criteria": [{"column": "NoSuchColumn", "op": "eq", "value": 1}]},
        ["unknown column", "Property.NoSuchColumn"],
        id="unknown-column",
    ),
    pytest.param(
        {"Criteria": [{"column": "ListPrice", "op": "between", "value": [1, 2]}]},
        ["unknown operator", "between"],
        id="unknown-operator",
    ),
    pytest.param(
        {"SourceTable": "Listing"}, ["unknown source table", "Listing"], id="unknown-table"
    ),
    pytest.param({"Criteria": '[{"column": "Status", "op": '}, ["not valid JSON"], id="bad-json"),
    pytest.param({"Criteria": '{"column": "Status"}'}, ["JSON list"], id="criteria-not-a-list"),
    pytest.param({"TemplateID": 99}, ["unknown template", "99"], id="missing-template"),
    pytest.param(
        {"WatchColumn": "UpdatedOn"},
        ["watch column", "Property.UpdatedOn"],
        id="unknown-watch-column",
    ),
    pytest.param(
        {"ChangedColumns": "ListPrice, Colour"},
        ["changed column", "Property.Colour"],
        id="unknown-changed-column",
    ),
    pytest.param(
        {"ChangedColumns": "ListPrice"}, ["ChangedColumns"], id="changed-columns-on-insert"
    ),
    pytest.param(
        {"Criteria": [{"column": "Status", "op": "in", "value": "Active"}]},
        ["list value"],
        id="in-without-list",
    ),
    pytest.param(
        {"Criteria": [{"column": "Status", "op": "eq"}]}, ["needs a value"], id="missing-value"
    ),
    pytest.param({"EventType": "upsert"}, ["upsert"], id="unknown-event-type"),
    pytest.param({"Channel": "fax"}, ["fax"], id="unknown-channel"),
    pytest.param({"Audience": "record_contact"}, ["record_contact"], id="audience-without-contact"),
    pytest.param({"Channel": "sms"}, ["no SMS body"], id="sms-with-email-template"),
]


@pytest.mark.parametrize(("overrides", "reason_parts"), BAD)
def test_a_bad_schedule_is_rejected_by_name_while_the_others_stay(overrides, reason_parts):
    bad = _schedule_row(**overrides)
    built = build_schedule_set([*_sample_rows(), bad], _template_rows(), CATALOG)
    assert [s.schedule_id for s in built.schedules] == [
        s["ScheduleID"] for s in seed.SAMPLE_SCHEDULES
    ]
    assert len(built.rejected) == 1
    rejected = built.rejected[0]
    assert rejected.schedule_id == 90
    assert rejected.name == "Probe"
    assert "Probe" in rejected.reason and "90" in rejected.reason
    for part in reason_parts:
        assert part in rejected.reason, rejected.reason


def test_several_bad_schedules_are_each_reported():
    bad = [
        _schedule_row(
            ScheduleID=91, Name="Bad column", Criteria=[{"column": "Nope", "op": "eq", "value": 1}]
        ),
        _schedule_row(
            ScheduleID=92, Name="Bad op", Criteria=[{"column": "City", "op": "like", "value": "A%"}]
        ),
        _schedule_row(ScheduleID=93, Name="Bad table", SourceTable="Listings"),
    ]
    built = build_schedule_set([*_sample_rows(), *bad], _template_rows(), CATALOG)
    assert {r.schedule_id: r.name for r in built.rejected} == {
        91: "Bad column",
        92: "Bad op",
        93: "Bad table",
    }
    assert len(built.schedules) == len(seed.SAMPLE_SCHEDULES)
