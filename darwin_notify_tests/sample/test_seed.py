"""The sample darwin.Cloud schema and its deterministic data generator."""

import json
import re
import time
from datetime import date, datetime, timedelta
from decimal import Decimal

import jinja2
import jinja2.meta
import jinja2.sandbox
import phonenumbers
import pytest

from darwin_notify_assets.domain.model import load_model
from darwin_notify_assets.sample import seed
from darwin_notify_assets.sample.seed import (
    COLUMNS,
    KEY_COLUMNS,
    LOOKUP_COLUMNS,
    TABLES,
    WATCH_COLUMNS,
    ChangeKind,
    Delete,
    Insert,
    SeedSize,
    Update,
)
from darwin_notify_assets.storage import sqlfiles
from darwin_notify_assets.storage.db import Database, connect

START = datetime(2025, 3, 10, 14, 0)
OPERATORS = {
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
RENDER_CONTEXT = {"record", "agent", "office", "recipient", "change", "totals", "window"}


@pytest.fixture
def sqlite_db(tmp_path):
    db = connect(f"sqlite:///{tmp_path / 'darwin.db'}")
    yield db
    db.close()


@pytest.fixture(scope="module")
def small_base() -> seed.Dataset:
    return seed.generate_base(SeedSize.small(), seed=7, start=START)


@pytest.fixture(scope="module")
def small_changes(small_base) -> list[seed.WindowChanges]:
    return seed.generate_changes(small_base, seed=7, start=START, windows=6)


# -- schema ----------------------------------------------------------------------------------
def _sqlite_indexes(db: Database, table: str) -> dict[str, list[str]]:
    indexes = {}
    for row in db.query(f"PRAGMA index_list({db.quote(table)})"):
        name = row[1]
        cols = [r[2] for r in db.query(f"PRAGMA index_info({db.quote(name)})")]
        indexes[name] = cols
    return indexes


def test_sqlite_schema_has_every_table_and_column(sqlite_db):
    seed.create_schema(sqlite_db)
    seed.create_schema(sqlite_db)  # re-runnable
    tables = {r[0] for r in sqlite_db.query("SELECT name FROM sqlite_master WHERE type='table'")}
    assert set(TABLES) <= tables
    for table in TABLES:
        info = sqlite_db.query(f"PRAGMA table_info({sqlite_db.quote(table)})")
        assert tuple(r[1] for r in info) == COLUMNS[table], table
        assert [r[1] for r in info if r[5]] == [KEY_COLUMNS[table]], table


def test_sqlite_schema_indexes_every_watch_and_lookup_column(sqlite_db):
    seed.create_schema(sqlite_db)
    for table in TABLES:
        leading = {cols[0] for cols in _sqlite_indexes(sqlite_db, table).values()}
        wanted = set(WATCH_COLUMNS[table]) | set(LOOKUP_COLUMNS.get(table, ()))
        assert wanted <= leading, f"{table}: no index leads with {wanted - leading}"


def test_sqlite_watch_range_read_uses_an_index(sqlite_db):
    seed.create_schema(sqlite_db)
    plan = sqlite_db.query(
        'EXPLAIN QUERY PLAN SELECT * FROM "Property" '
        'WHERE "ModifiedDate" >= ? AND "ModifiedDate" < ?',
        [sqlite_db.ts(START), sqlite_db.ts(START + timedelta(minutes=5))],
    )
    assert any("IX_Property_ModifiedDate" in str(row) for row in plan), plan


@pytest.mark.parametrize("dialect", ["postgresql", "mssql"])
def test_server_schemas_declare_the_same_tables_columns_and_indexes(dialect):
    text = sqlfiles.read_sample_schema(dialect)
    statements = sqlfiles.split_script(dialect, text)
    q = '"' if dialect == "postgresql" else ""
    prefix = "" if dialect == "postgresql" else "dbo."
    for table in TABLES:
        create = [
            s for s in statements if re.search(rf"CREATE TABLE .*{prefix}{q}{table}{q} \(", s)
        ]
        assert len(create) == 1, f"{dialect}: CREATE TABLE {table}"
        body = create[0]
        declared = re.findall(rf"^\s+{q}(\w+){q} \w", body, flags=re.MULTILINE)
        declared = [c for c in declared if c != "CONSTRAINT"]
        assert tuple(declared) == COLUMNS[table], f"{dialect}: columns of {table}"
        assert re.search(rf"PRIMARY KEY (CLUSTERED )?\({q}{KEY_COLUMNS[table]}{q}\)", body)
        for column in set(WATCH_COLUMNS[table]) | set(LOOKUP_COLUMNS.get(table, ())):
            index = rf"CREATE INDEX .*ON {prefix}{q}{table}{q} \({q}{column}{q}[,)]"
            assert re.search(index, text), f"{dialect}: no index on {table}.{column}"
    if dialect == "mssql":
        assert all("IDENTITY" not in s for s in statements)
        assert all(("IF OBJECT_ID" in s or "IF NOT EXISTS" in s) for s in statements)
    else:
        assert all("IF NOT EXISTS" in s for s in statements)


# -- determinism -----------------------------------------------------------------------------
def test_same_seed_gives_identical_data_and_changes(small_base, small_changes):
    again = seed.generate_base(SeedSize.small(), seed=7, start=START)
    assert again == small_base
    assert seed.generate_changes(again, seed=7, start=START, windows=6) == small_changes


def test_different_seed_gives_different_data(small_base, small_changes):
    other = seed.generate_base(SeedSize.small(), seed=8, start=START)
    assert other.rows("People") != small_base.rows("People")
    assert other.rows("Property") != small_base.rows("Property")
    assert seed.generate_changes(small_base, seed=8, start=START, windows=6) != small_changes


def test_sizes():
    assert SeedSize.small().contacts < SeedSize.demo().contacts
    big = SeedSize.scaled(100_000)
    assert big.contacts == 100_000 and big.agents > 1000 and big.deals <= big.properties
    with pytest.raises(ValueError):
        SeedSize(offices=1, agents=1, contacts=1, properties=1, deals=2)


def test_base_counts_match_the_size(small_base):
    size = small_base.size
    counts = small_base.counts()
    assert counts["Office"] == size.offices
    assert counts["Agent"] == size.agents
    assert counts["People"] == size.contacts
    assert counts["Property"] == size.properties
    assert counts["Deal"] == size.deals
    assert counts["NotificationTemplate"] == counts["NotificationSchedule"] == 5
    for table in TABLES:
        keys = [r[0] for r in small_base.rows(table)]
        assert len(keys) == len(set(keys)), table


# -- timestamps ------------------------------------------------------------------------------
def test_base_timestamps_lie_before_start(small_base):
    for table in TABLES:
        for record in small_base.records(table):
            for column in WATCH_COLUMNS[table]:
                value = record[column]
                assert value is None or value < START, (table, column, record)
            assert record[COLUMNS[table][-1]] is not None


def test_changes_lie_strictly_inside_their_windows(small_changes):
    assert [w.start for w in small_changes] == [
        START + timedelta(minutes=5 * i) for i in range(len(small_changes))
    ]
    for window in small_changes:
        assert window.end - window.start == timedelta(minutes=5)
        assert window.operations, "every window has changes"
        instants = [op.at for op in window.operations]
        assert instants == sorted(instants)
        for op in window.operations:
            assert window.start < op.at < window.end, op
            if isinstance(op, Insert):
                assert op.row["CreateDate"] == op.row["ModifiedDate"] == op.at
            elif isinstance(op, Update):
                assert op.values["ModifiedDate"] == op.at
                assert op.changed_columns(), op
                post = op.values.get("PostDate")
                assert post is None or window.start < post < window.end


def test_changes_cover_every_kind_and_columns_other_than_price(small_changes):
    kinds = {op.kind for w in small_changes for op in w.operations}
    assert kinds == set(ChangeKind)
    property_updates = [
        op
        for w in small_changes
        for op in w.operations
        if isinstance(op, Update) and op.table == "Property"
    ]
    changed = [set(op.changed_columns()) for op in property_updates]
    assert any("ListPrice" not in c and ("Status" in c or "City" in c) for c in changed)
    for op in property_updates:
        if op.kind is ChangeKind.PRICE_DROP:
            assert op.values["ListPrice"] < op.old["ListPrice"]
        if op.kind is ChangeKind.PRICE_INCREASE:
            assert op.values["ListPrice"] > op.old["ListPrice"]
    for op in (op for w in small_changes for op in w.operations):
        if op.kind is ChangeKind.NEW_LISTING:
            assert op.row["Status"] == "Active"
        if op.kind is ChangeKind.DEAL_POSTED:
            assert op.old["PostDate"] is None and op.values["PostDate"] == op.at
        if isinstance(op, Delete):
            assert op.table == "Property" and op.row["PropertyID"] == op.key
            assert op.deleted_record() == (op.deleted_record_id, "Property", op.key, op.at)


def test_changes_refuse_to_start_before_the_base(small_base):
    with pytest.raises(ValueError):
        seed.generate_changes(small_base, seed=7, start=START - timedelta(hours=1), windows=1)


def test_intensity_scales_the_number_of_changes(small_base):
    calm = seed.generate_changes(small_base, seed=1, start=START, windows=4, intensity=0.5)
    busy = seed.generate_changes(small_base, seed=1, start=START, windows=4, intensity=4)
    assert sum(len(w.operations) for w in busy) > 3 * sum(len(w.operations) for w in calm)


# -- realistic and deliberately bad data ---------------------------------------------------------
def test_offices_span_several_time_zones():
    offices = seed.generate_base(SeedSize.demo(), seed=1, start=START).records("Office")
    assert len({o["TimeZone"] for o in offices}) == 5
    assert {"America/New_York", "America/Chicago", "America/Phoenix"} <= {
        o["TimeZone"] for o in offices
    }


def test_dataset_contains_the_deliberate_bad_rows(small_base):
    people = small_base.records("People")
    emails = {p["Email"] for p in people}
    phones = {p["MobilePhone"] for p in people}
    first_names = {p["FirstName"] for p in people}
    names = " ".join(f"{p['FirstName']} {p['LastName']}" for p in people)
    assert set(seed.INVALID_EMAILS) <= emails
    assert set(seed.INVALID_PHONES) <= phones
    assert set(seed.MARKUP_NAMES) <= first_names
    for text in ("José", "Zoë", "李"):
        assert text in names
    assert any(p["Email"] is None and p["MobilePhone"] is None and p["EmailOptIn"] for p in people)
    agents = small_base.records("Agent")
    assert any(not a["IsActive"] for a in agents)
    assert any(a["MobilePhone"] is None for a in agents)
    assert any(not a["FirstName"].isascii() for a in agents)


def test_phone_numbers_are_valid_e164_except_the_deliberate_ones():
    base = seed.generate_base(SeedSize.demo(), seed=3, start=START)
    phones = [p["MobilePhone"] for p in base.records("People") + base.records("Agent")]
    for phone in phones:
        if phone is None or phone in seed.INVALID_PHONES:
            continue
        assert re.fullmatch(r"\+1\d{10}", phone), phone
        assert phonenumbers.is_valid_number(phonenumbers.parse(phone)), phone
    for phone in seed.INVALID_PHONES:
        assert not _valid_us_phone(phone), phone


def _valid_us_phone(text: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(text, "US"))
    except phonenumbers.NumberParseException:
        return False


def test_opt_in_shares_and_money_are_plausible():
    base = seed.generate_base(SeedSize.demo(), seed=5, start=START)
    people = base.records("People")
    email_share = sum(bool(p["EmailOptIn"]) for p in people) / len(people)
    sms_share = sum(bool(p["SmsOptIn"]) for p in people) / len(people)
    assert 0.80 < email_share < 0.90 and 0.54 < sms_share < 0.66
    properties = {p["PropertyID"]: p for p in base.records("Property")}
    assert {p["Status"] for p in properties.values()} == set(seed.PROPERTY_STATUSES)
    deals = base.records("Deal")
    assert any(d["PostDate"] is None for d in deals) and any(d["PostDate"] for d in deals)
    for deal in deals:
        assert isinstance(deal["SalePrice"], Decimal) and isinstance(deal["CloseDate"], date)
        rate = deal["GrossCommission"] / deal["SalePrice"]
        assert Decimal("0.0249") < rate < Decimal("0.0301")
        status = properties[deal["PropertyID"]]["Status"]
        assert status == ("Sold" if deal["PostDate"] else "Pending")
        assert deal["AgentID"] == properties[deal["PropertyID"]]["AgentID"]


# -- schedules and templates ---------------------------------------------------------------------
def _template_env() -> jinja2.Environment:
    env = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=True)
    env.filters["money"] = lambda v: f"${Decimal(v):,.0f}"
    env.filters["date"] = lambda v: v.strftime("%b %d, %Y")
    return env


def test_sample_schedules_reference_templates_and_existing_columns(small_base):
    templates = {t["TemplateID"]: t for t in small_base.records("NotificationTemplate")}
    schedules = small_base.records("NotificationSchedule")
    assert [s["ScheduleID"] for s in schedules] == [1, 2, 3, 4, 5]
    assert sorted(templates) == [1, 2, 3, 4, 5]
    for s in schedules:
        assert s["TemplateID"] in templates
        assert s["SourceTable"] in COLUMNS
        assert s["EventType"] in {"insert", "update", "delete"}
        assert s["Channel"] in {"email", "sms"}
        assert s["Audience"] in {"agent", "record_contact", "agent_contacts"}
        assert s["DedupeScope"] in {"record", "change", "window"}
        assert isinstance(s["UsesAgentTotals"], bool) and s["IsActive"] is True
        watched = "DeletedRecord" if s["EventType"] == "delete" else s["SourceTable"]
        assert s["WatchColumn"] in WATCH_COLUMNS[watched]
        for column in filter(None, (s["ChangedColumns"] or "").split(",")):
            assert column.strip() in COLUMNS[s["SourceTable"]]
        for criterion in json.loads(s["Criteria"]):
            assert criterion["column"] in COLUMNS[s["SourceTable"]]
            assert criterion["op"] in OPERATORS
        template = templates[s["TemplateID"]]
        if s["Channel"] == "sms":
            assert template["SmsBody"]
        else:
            assert template["Subject"] and template["HtmlBody"] and template["TextBody"]


@pytest.mark.parametrize("schedule_id", [1, 2, 3, 4, 5])
def test_templates_use_only_the_render_context(small_base, schedule_id):
    schedule = next(
        s for s in small_base.records("NotificationSchedule") if s["ScheduleID"] == schedule_id
    )
    template = next(
        t
        for t in small_base.records("NotificationTemplate")
        if t["TemplateID"] == schedule["TemplateID"]
    )
    env = _template_env()
    # and the related records the sample model names for the table
    related = set(load_model().relations.related.get(schedule["SourceTable"], {}))
    allowed = set(COLUMNS[schedule["SourceTable"]]) | RENDER_CONTEXT | related
    for part in ("Subject", "HtmlBody", "TextBody", "SmsBody"):
        if template[part]:
            names = jinja2.meta.find_undeclared_variables(env.parse(template[part]))
            assert names <= allowed, (part, names - allowed)
            if not schedule["UsesAgentTotals"]:
                assert "totals" not in names


def test_price_drop_sms_renders_short(small_base, small_changes):
    template = small_base.records("NotificationTemplate")[1]["SmsBody"]
    env = _template_env()
    sms = env.from_string(template)
    agents = {a["AgentID"]: a for a in small_base.records("Agent")}
    drops = [op for w in small_changes for op in w.operations if op.kind is ChangeKind.PRICE_DROP]
    assert drops
    properties = {p["PropertyID"]: p for p in small_base.records("Property")}
    for w in small_changes:
        for op in w.operations:
            if isinstance(op, Insert) and op.table == "Property":
                properties[op.key] = dict(op.row)
            elif isinstance(op, Update) and op.table == "Property":
                properties[op.key].update(op.values)
                if op.kind is ChangeKind.PRICE_DROP:
                    record = properties[op.key]
                    agent = agents[record["AgentID"]]
                    text = sms.render(
                        **record,
                        record=record,
                        recipient=agent,
                        agent=agent,
                        change={"event": "update", "old": op.old},
                    )
                    assert "was $" in text and len(text) <= 160, text


# -- writing -----------------------------------------------------------------------------------
def _count(db: Database, table: str) -> int:
    return db.scalar(f"SELECT COUNT(*) FROM {db.quote(table)}")


def test_seed_database_writes_the_expected_rows(sqlite_db):
    summary = seed.seed_database(sqlite_db, SeedSize.small(), seed=11, start=START, windows=4)
    base = seed.generate_base(SeedSize.small(), seed=11, start=START)
    assert dict(summary.base_rows) == base.counts()
    ops = summary.totals_by_operation()
    assert len(summary.windows) == 4
    assert _count(sqlite_db, "People") == base.counts()["People"] + ops.get("People.insert", 0)
    assert _count(sqlite_db, "Property") == (
        base.counts()["Property"] + ops.get("Property.insert", 0) - ops.get("Property.delete", 0)
    )
    assert _count(sqlite_db, "Deal") == base.counts()["Deal"] + ops.get("Deal.insert", 0)
    assert _count(sqlite_db, "DeletedRecord") == (
        base.counts()["DeletedRecord"] + ops.get("Property.delete", 0)
    )
    assert sum(summary.totals_by_kind().values()) == sum(ops.values())
    for table in ("Office", "Agent", "NotificationTemplate", "NotificationSchedule"):
        assert _count(sqlite_db, table) == base.counts()[table]
    report = json.loads(json.dumps(summary.as_dict()))
    assert report["totals_by_operation"] == ops and len(report["windows"]) == 4


def test_applied_windows_are_found_by_watch_column_range(sqlite_db):
    base = seed.generate_base(SeedSize.small(), seed=2, start=START)
    seed.create_schema(sqlite_db)
    seed.write_base(sqlite_db, base)
    windows = seed.generate_changes(base, seed=2, start=START, windows=3)
    for window in windows:
        seed.apply_window(sqlite_db, window)
    db = sqlite_db
    for window in windows:
        bounds = [db.ts(window.start), db.ts(window.end)]
        touched = {
            (op.table, op.key) for op in window.operations if isinstance(op, Insert | Update)
        }
        deleted = {op.key for op in window.operations if isinstance(op, Delete)}
        found = set()
        for table in ("People", "Property", "Deal"):
            key = db.quote(KEY_COLUMNS[table])
            rows = db.query(
                f"SELECT {key} FROM {db.quote(table)} WHERE {db.quote('ModifiedDate')} >= ? "
                f"AND {db.quote('ModifiedDate')} < ?",
                bounds,
            )
            found |= {(table, r[0]) for r in rows}
        # A row touched again in a later window moved on, or is gone.
        later = {
            (op.table, op.key) for w in windows if w.start > window.start for op in w.operations
        }
        gone_now = {("Property", k) for k in deleted}
        expected = touched - later - gone_now
        assert expected <= found
        gone = db.query(
            'SELECT "RecordID" FROM "DeletedRecord" WHERE "DeletedDate" >= ? AND "DeletedDate" < ?',
            bounds,
        )
        assert {r[0] for r in gone} == deleted
    # Batching inserts, then updates, then deletes ends where one-by-one replay ends.
    state = {t: {r[0]: list(r) for r in base.rows(t)} for t in ("People", "Property", "Deal")}
    for op in (op for w in windows for op in w.operations):
        if isinstance(op, Insert):
            state[op.table][op.key] = [op.row[c] for c in COLUMNS[op.table]]
        elif isinstance(op, Update):
            for column, value in op.values.items():
                state[op.table][op.key][COLUMNS[op.table].index(column)] = value
        else:
            del state[op.table][op.key]
    for table, rows in state.items():
        expected = [[_as_sqlite(db, v) for v in row] for row in sorted(rows.values())]
        stored = db.query(f"SELECT * FROM {db.quote(table)} ORDER BY 1")
        got = [[Decimal(str(v)) if isinstance(v, float | int) else v for v in r] for r in stored]
        assert got == expected, table


def _as_sqlite(db: Database, value):
    """A generated value as the SQLite replica returns it (numbers compared as Decimal)."""
    if isinstance(value, datetime):
        return db.ts(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool | int | Decimal):
        return Decimal(int(value) if isinstance(value, bool) else value)
    return value


def test_generate_base_is_fast_enough_for_benchmarks():
    began = time.perf_counter()
    base = seed.generate_base(SeedSize.scaled(20_000), seed=1, start=START)
    assert base.counts()["People"] == 20_000
    assert time.perf_counter() - began < 5
