"""Record ids: a single-column key keeps its integer (and so its decimal text in candidate and
event keys); a composite key is the JSON array of its values, which no other key shares."""

from datetime import datetime
from decimal import Decimal

import pytest

from darwin_notify_assets.domain import keys


def test_a_single_key_is_its_integer_and_reads_back_the_same() -> None:
    assert keys.record_id({"PropertyID": 42}, "PropertyID") == 42
    assert keys.record_id({"PropertyID": Decimal("42")}, "PropertyID") == 42
    assert keys.stored(42) == "42"
    assert keys.from_stored("42") == 42 and keys.from_stored(42) == 42
    assert keys.decode(42, 1) == (42,)


@pytest.mark.parametrize(
    ("values", "text"),
    [
        ((1042, 3), "[1042,3]"),
        ((1042, "B"), '[1042,"B"]'),
        ((Decimal("7"), "a,b"), '[7,"a,b"]'),
        (("1", 2), '["1",2]'),
        ((5, datetime(2026, 5, 4, 9, 0)), '[5,"2026-05-04 09:00:00.000000"]'),
    ],
)
def test_a_composite_key_is_the_json_array_of_its_values(values, text) -> None:
    row = {"A": values[0], "B": values[1]}
    rid = keys.record_id(row, ("A", "B"))
    assert rid == text
    assert keys.from_stored(keys.stored(rid)) == rid
    assert keys.decode(rid, 2) == tuple(keys._value(v) for v in values)


def test_different_composite_keys_never_share_a_form() -> None:
    forms = {
        keys.encode(v) for v in [(1, 23), (12, 3), ("1", 23), (1, "23"), ("1,2", 3), ("1", "2,3")]
    }
    assert len(forms) == 6
    assert all(isinstance(keys.from_stored(f), str) for f in forms)


def test_a_composite_key_refuses_null_parts_and_overlong_text() -> None:
    with pytest.raises(ValueError, match="no NULL part"):
        keys.encode([1, None])
    with pytest.raises(ValueError, match="characters; the store keeps 200"):
        keys.encode([1, "x" * 300])
    with pytest.raises(ValueError, match="not a key of 3 columns"):
        keys.decode("[1,2]", 3)
