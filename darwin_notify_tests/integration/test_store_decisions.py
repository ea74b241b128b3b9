"""Change decisions on the PostgreSQL store: the first decision of a change stands."""

import pytest

from darwin_notify_assets.storage.store import NotificationStore
from darwin_notify_tests.conftest import PARTITION
from darwin_notify_tests.integration.conftest import Stack
from darwin_notify_tests.storage.test_store import _change, _save

pytestmark = pytest.mark.integration


def test_the_first_decision_of_a_change_stands_on_postgresql(stack: Stack) -> None:
    store = NotificationStore.open(stack.env["DARWIN_NOTIFY_STORE_URL"])
    try:
        against, fired, other = (_change(f"People:{i}:s4:insert:v") for i in (138, 139, 140))
        assert _save(store, fired=[fired], skipped=[against]) == 1
        # A later read decides the other way round on both, and sees one new change.
        assert _save(store, fired=[_change(against.event_key, "later"), other]) == 1
        assert _save(store, skipped=[_change(fired.event_key, "later")]) == 0
        rows = store.db.query("SELECT event_key, partition_key FROM change_event ORDER BY 1")
        decisions = store.db.query(
            "SELECT event_key, partition_key, fired FROM change_decision ORDER BY 1"
        )
        keys = [against.event_key, fired.event_key, other.event_key, "never read"]
        decided = store.decided_event_keys(keys)
    finally:
        store.close()
    assert rows == [(fired.event_key, PARTITION), (other.event_key, PARTITION)]
    assert decisions == [
        (against.event_key, PARTITION, False),
        (fired.event_key, PARTITION, True),
        (other.event_key, PARTITION, True),
    ]
    assert decided == {against.event_key, fired.event_key, other.event_key}
