"""Merge-field queries: a deployment's own SQL returning extra fields for a batch of records.

A query is the file ``NAME.sql`` in the merge-fields folder (``DARWIN_NOTIFY_MERGE_FIELDS_DIR``;
by default the sample's ``sample/merge_fields/<dialect>``), written in the replica's dialect. It
is one read-only statement, a ``SELECT`` (or ``WITH ... SELECT``; on SQL Server also
``EXEC schema.procedure ?``), with exactly one parameter: the record ids of the batch as a
JSON array in text (``[17,42]``). Every row it returns has the column ``record_id``; the
other columns are the merge fields of that record. For a table whose key is composite, the
parameter is a JSON array of the keys' values (``[[1042,1],[1042,2]]``) and each row carries
the key's columns, by the model's names, instead of ``record_id``. docs/source-model.md has
examples.
"""

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from darwin_notify_assets.domain import keys
from darwin_notify_assets.domain.keys import RecordId
from darwin_notify_assets.domain.privacy import mask_text
from darwin_notify_assets.errors import MergeFieldError

RECORD_ID = "record_id"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_BLOCK_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_LINE_COMMENT = re.compile(r"--[^\n]*")
# String literals and quoted identifiers, taken out before the statement's words are read.
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\[[^\]]*\]")
_WRITES = re.compile(
    r"\b(INSERT|UPDATE|DELETE|MERGE|DROP|ALTER|CREATE|TRUNCATE|GRANT|REVOKE|INTO)\b",
    re.IGNORECASE,
)
# A driver's prefixes (``[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]``, ``[42703]``).
_DRIVER_PREFIX = re.compile(r"^(?:\s*\[[^\]]*\])+\s*")
_MESSAGE_QUOTED = re.compile(r"(['\"])([^'\"\n]*)\1")


def query_text(directory: Path, dialect: str, name: str) -> str:
    """The statement of query ``name``, checked; MergeFieldError says what is wrong."""
    if not _NAME.fullmatch(name):
        raise MergeFieldError(
            f"merge-field query {name!r} is not a query name (letters, digits and _)"
        )
    path = directory / f"{name}.sql"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MergeFieldError(f"merge-field query {name!r} not found: no file {path}") from None
    except OSError as exc:
        raise MergeFieldError(
            f"merge-field query {name!r}: cannot read {path} ({exc.strerror})"
        ) from None
    return checked(text, dialect, name)


def checked(text: str, dialect: str, name: str) -> str:
    """The statement without its comments, if it is one read-only statement with one ``?``."""
    # Comment lines go (a driver that looks at a statement's first word must see it).
    body = _BLOCK_COMMENT.sub(" ", text)
    body = "\n".join(ln for ln in body.splitlines() if not ln.strip().startswith("--"))
    body = body.strip().rstrip(";").strip()
    bare = _LINE_COMMENT.sub(" ", _QUOTED.sub("''", body))
    words = bare.split()
    first = words[0].upper() if words else ""
    allowed = ("SELECT", "WITH") + (("EXEC", "EXECUTE") if dialect == "mssql" else ())
    problem = None
    if first not in allowed:
        problem = f"must be one {' or '.join(allowed)} statement, not {first or 'empty'}"
    elif ";" in bare:
        problem = "must be one statement"
    elif (write := _WRITES.search(bare)) is not None:
        problem = f"must only read (it says {write.group(1).upper()})"
    elif bare.count("?") != 1:
        problem = f"takes the record ids as its one parameter (?), not {bare.count('?')}"
    if problem:
        raise MergeFieldError(f"merge-field query {name!r} {problem}")
    return body


def ids_parameter(ids: Sequence[RecordId], width: int = 1) -> str:
    """The one parameter: the distinct record ids, ascending, as a JSON array (of arrays of
    the key's values, for a composite key of ``width`` columns)."""
    if width == 1:
        return json.dumps(sorted({int(i) for i in ids}), separators=(",", ":"))
    values = [list(keys.decode(i, width)) for i in sorted({str(i) for i in ids})]
    return json.dumps(values, separators=(",", ":"), ensure_ascii=False)


def keyed(
    rows: Sequence[dict[str, Any]], name: str, key: Sequence[str] | None = None
) -> dict[RecordId, dict[str, Any]]:
    """The rows by their ``record_id`` (whatever case the database gives the column), or by
    the columns of a composite ``key``."""
    if key is not None:
        return _keyed_composite(rows, name, tuple(key))
    out: dict[RecordId, dict[str, Any]] = {}
    for row in rows:
        key = next((k for k in row if k.lower() == RECORD_ID), None)
        if key is None:
            raise MergeFieldError(
                f"merge-field query {name!r} returns no column {RECORD_ID} "
                f"(it returns {', '.join(row) or 'no columns'})"
            )
        try:
            rid = int(row[key])
        except (TypeError, ValueError):
            raise MergeFieldError(
                f"merge-field query {name!r} returns a {RECORD_ID} that is not a number"
            ) from None
        if rid in out:
            raise MergeFieldError(
                f"merge-field query {name!r} returns more than one row for record {rid}"
            )
        out[rid] = {k: v for k, v in row.items() if k != key}
    return out


def _keyed_composite(
    rows: Sequence[dict[str, Any]], name: str, key: tuple[str, ...]
) -> dict[RecordId, dict[str, Any]]:
    out: dict[RecordId, dict[str, Any]] = {}
    for row in rows:
        names = {k.lower(): k for k in row}
        missing = [c for c in key if c.lower() not in names]
        if missing:
            raise MergeFieldError(
                f"merge-field query {name!r} returns no column {', '.join(missing)} of the key "
                f"(it returns {', '.join(row) or 'no columns'})"
            )
        found = [names[c.lower()] for c in key]
        try:
            rid = keys.encode([row[c] for c in found])
        except ValueError as exc:
            raise MergeFieldError(f"merge-field query {name!r}: {exc}") from None
        if rid in out:
            raise MergeFieldError(
                f"merge-field query {name!r} returns more than one row for record {rid}"
            )
        out[rid] = {k: v for k, v in row.items() if k not in found}
    return out


def database_message(exc: BaseException, sql: str) -> str:
    """The database's own message, first line, as it may be shown: addresses and numbers
    masked, and a quoted word that is not in the query's own text (a value of a row, as in a
    failed conversion) replaced by ``…``, while the query's names it quotes stay."""
    args: tuple[Any, ...] = tuple(exc.args)
    # pyodbc: (SQLSTATE, message); sqlite3 and others: (message,).
    raw = args[1] if len(args) >= 2 and isinstance(args[1], str) else str(exc)
    first = _DRIVER_PREFIX.sub("", raw.strip()).splitlines()[0] if raw.strip() else ""
    first = first.strip().rstrip(";").strip() or type(exc).__name__
    known = sql.lower()

    def keep_or_hide(match: re.Match[str]) -> str:
        quote, inner = match.group(1), match.group(2)
        shown = inner if inner and inner.lower() in known else "…"
        return f"{quote}{shown}{quote}"

    return _MESSAGE_QUOTED.sub(keep_or_hide, mask_text(first))
