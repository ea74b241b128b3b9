"""Rows sent to PostgreSQL as one array parameter per column come back exactly as given."""

import uuid
from datetime import datetime
from decimal import Decimal

import pytest

from darwin_notify_assets.errors import ConfigurationError
from darwin_notify_assets.storage.db import Database, connect

pytestmark = pytest.mark.integration

TRICKY_TEXT = [
    "plain",
    "",
    "NULL",
    'a "quoted" word',
    'back\\slash and \\" both',
    "comma, {braces} and (parens)",
    "line\nbreak\ttab",
    "  spaces kept  ",
    "Ünïcødé – 東京 🏠",
    None,
]


@pytest.fixture
def db(services: dict[str, str]):
    conn = connect(services["DARWIN_NOTIFY_STORE_URL"])
    table = f"array_probe_{uuid.uuid4().hex[:10]}"
    conn.execute(
        f'CREATE TABLE {table} (id BIGINT PRIMARY KEY, "Label" VARCHAR(80), body TEXT, '
        "flag BOOLEAN, amount NUMERIC(14, 2), at TIMESTAMP, score DOUBLE PRECISION)"
    ).close()
    conn.commit()
    yield conn, table
    conn.rollback()
    conn.execute(f"DROP TABLE {table}").close()
    conn.commit()
    conn.close()


def _rows(offset: int = 0) -> list[tuple]:
    return [
        (
            offset + i,
            text if text is None else f"L{text}"[:80],
            text,
            [True, False, None][i % 3],
            [Decimal("1234567.89"), Decimal("-0.01"), None][i % 3],
            [datetime(2026, 3, 2, 14, 5, 7, 123456), None, datetime(2026, 1, 1)][i % 3],
            [1.5, -2.25e10, None][i % 3],
        )
        for i, text in enumerate(TRICKY_TEXT)
    ]


def _read(conn: Database, table: str) -> list[tuple]:
    rows = [
        tuple(r)
        for r in conn.query(
            f'SELECT id, "Label", body, flag, amount, at, score FROM {table} ORDER BY id'
        )
    ]
    conn.commit()
    return rows


COLUMNS = ("id", '"Label"', "body", "flag", "amount", "at", "score")
ARRAYS = "?::bigint[], ?::varchar(80)[], ?::text[], ?::boolean[], ?::numeric(14,2)[], " + (
    "?::timestamp[], ?::double precision[]"
)


def test_insert_rows_round_trips_every_kind_of_value(db) -> None:
    conn, table = db
    assert conn.insert_rows(table, COLUMNS, _rows()) == len(TRICKY_TEXT)
    conn.commit()
    assert _read(conn, table) == _rows()


def test_a_bulk_insert_if_absent_skips_present_keys_and_counts_the_rest(db) -> None:
    conn, table = db
    sql = (
        f"INSERT INTO {table} ({', '.join(COLUMNS)}) SELECT * FROM unnest({ARRAYS}) "
        "ON CONFLICT (id) DO NOTHING"
    )
    assert conn.bulk_execute(sql, _rows()) == len(TRICKY_TEXT)
    conn.commit()
    assert _read(conn, table) == _rows()
    assert conn.bulk_execute(sql, _rows()[:3] + _rows(100)[:2]) == 2
    conn.commit()
    assert len(_read(conn, table)) == len(TRICKY_TEXT) + 2


def test_a_bulk_upsert_replaces_the_other_columns(db) -> None:
    conn, table = db
    conn.insert_rows(table, COLUMNS, _rows())
    changed = [(r[0], "new", r[2][::-1] if r[2] else r[2], *r[3:]) for r in _rows()]
    sets = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:])
    sql = (
        f"INSERT INTO {table} ({', '.join(COLUMNS)}) SELECT * FROM unnest({ARRAYS}) "
        f"ON CONFLICT (id) DO UPDATE SET {sets}"
    )
    conn.bulk_execute(sql, changed)
    conn.commit()
    assert _read(conn, table) == changed


def test_an_unknown_column_is_a_clear_error(db) -> None:
    conn, table = db
    with pytest.raises(ConfigurationError, match="no column"):
        conn.insert_rows(table, ("id", "nope"), [(1, 2)])
