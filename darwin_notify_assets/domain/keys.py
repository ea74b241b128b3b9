"""Record keys: a table's primary key is one column or several, and a record's key one value.

A record id is what darwin-notify keeps of a record's key: for a single-column key, the
column's integer value (written as its plain decimal text where text is needed, so candidate
and dedupe keys read ``Property:42``); for a composite key, the key's values in the model's
column order as a compact JSON array (``[1042,3]``, ``[1042,"B"]``), which no two different
keys share and which never looks like a plain number. The store keeps both as text.
"""

import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

# A record id: an int (single-column key) or the JSON text of a composite key's values.
RecordId = int | str

# The store's record_id columns hold at most this many characters.
MAX_RECORD_ID = 200


def columns(key: str | Sequence[str]) -> tuple[str, ...]:
    """A key's columns, in order."""
    return (key,) if isinstance(key, str) else tuple(key)


def _value(value: Any) -> Any:
    """A key value as JSON keeps it: integral numbers as ints, timestamps as ISO text."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | str) or value is None:
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def encode(values: Sequence[Any]) -> RecordId:
    """The record id of a key's values (one value: the integer itself)."""
    if len(values) == 1:
        return int(values[0])
    if any(v is None for v in values):
        raise ValueError(f"a composite key has no NULL part: {list(values)!r}")
    text = json.dumps([_value(v) for v in values], separators=(",", ":"), ensure_ascii=False)
    if len(text) > MAX_RECORD_ID:
        raise ValueError(
            f"a composite key's text is {len(text)} characters; the store keeps {MAX_RECORD_ID}"
        )
    return text


def record_id(row: Mapping[str, Any], key: str | Sequence[str]) -> RecordId:
    """The record id of ``row`` under ``key`` (one column or several)."""
    if isinstance(key, str):
        return int(row[key])
    return encode([row[c] for c in key])


def decode(rid: RecordId, width: int) -> tuple[Any, ...]:
    """A record id's key values (``width`` columns)."""
    if width == 1:
        return (int(rid),)
    values = json.loads(rid) if isinstance(rid, str) else None
    if not isinstance(values, list) or len(values) != width:
        raise ValueError(f"record id {rid!r} is not a key of {width} columns")
    return tuple(values)


def stored(rid: RecordId) -> str:
    """A record id as the store's text columns hold it."""
    return str(rid)


def from_stored(value: Any) -> RecordId:
    """A record id read back from the store (a store created with integer columns gives an
    int; the text of a plain number is a single-column key's)."""
    if isinstance(value, int):
        return value
    text = str(value)
    # A composite key's form is a JSON array; anything else is a single key's decimal text.
    return text if text.startswith("[") else int(text)
