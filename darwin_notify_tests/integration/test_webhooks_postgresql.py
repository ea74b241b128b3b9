"""The webhook service on the integration tier's PostgreSQL store: concurrent repeats of one
event through several connections stored once, reordered events folded, forged ones refused."""

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from darwin_notify_assets.config import TWILIO_AUTH_TOKEN_ENV, UNSUBSCRIBE_SECRET_ENV
from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.storage.db import connect
from darwin_notify_assets.storage.store import NotificationStore
from darwin_notify_assets.webhooks.service import RunningService
from darwin_notify_tests.conftest import make_messages
from darwin_notify_tests.webhooks.conftest import (
    AUTH_TOKEN,
    UNSUBSCRIBE_SECRET,
    Hooks,
    make_settings,
)
from darwin_notify_tests.webhooks.test_service import event, sent

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_hooks(
    services: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Hooks]:
    monkeypatch.setenv(TWILIO_AUTH_TOKEN_ENV, AUTH_TOKEN)
    monkeypatch.setenv(UNSUBSCRIBE_SECRET_ENV, UNSUBSCRIBE_SECRET)
    url = services["DARWIN_NOTIFY_STORE_URL"]
    schema = f"webhook_probe_{uuid.uuid4().hex[:10]}"

    def open_store() -> NotificationStore:
        db = connect(url)
        db.execute(f"SET search_path TO {schema}").close()
        db.commit()
        return NotificationStore(db)

    admin = connect(url)
    admin.execute(f"CREATE SCHEMA {schema}").close()
    admin.commit()
    store = open_store()
    store.ensure_schema()
    key = ec.generate_private_key(ec.SECP256R1())
    settings = make_settings("postgresql://unused", key, tmp_path)
    service = RunningService(settings, open_store=open_store)
    service.start()
    try:
        yield Hooks(service, key, store)
    finally:
        service.stop()
        store.close()
        admin.execute(f"DROP SCHEMA {schema} CASCADE").close()
        admin.commit()
        admin.close()


def test_46_concurrent_repeats_are_stored_once_and_order_does_not_matter(pg_hooks: Hooks):
    store = pg_hooks.store
    a, b = sent(store, 2, "pg")
    ts = int(time.time())
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda _: pg_hooks.sendgrid([event(a, "delivered", ts)]).status, range(46))
        )
    assert answers == [200] * 46
    for kind, at in (("click", 4), ("processed", 1), ("delivered", 2), ("spamreport", 5)):
        assert pg_hooks.sendgrid([event(b, kind, ts + at)]).status == 200
    store.db.rollback()
    assert store.db.scalar("SELECT COUNT(*) FROM delivery_event") == 5
    assert store.delivery_state(a) == ("delivered", 1)
    assert store.delivery_state(b) == ("spam_report", 4)
    # the spam report suppressed the address for the next claim
    [later] = make_messages(store, 1, prefix="pg-later")
    store.db.execute(
        "UPDATE message SET to_address = ? WHERE message_id = ?", [f"addr{b}@example.com", later]
    ).close()
    store.db.commit()
    assert store.claim([later]) == []
    store.db.rollback()
    assert store.db.scalar("SELECT status FROM message WHERE message_id = ?", [later]) == str(
        MessageStatus.SUPPRESSED
    )


def test_forged_and_stale_events_are_refused_on_postgresql(pg_hooks: Hooks):
    [mid] = sent(pg_hooks.store, 1, "pgf")
    other = ec.generate_private_key(ec.SECP256R1())
    assert pg_hooks.sendgrid([event(mid, "bounce", int(time.time()))], key=other).status == 403
    assert pg_hooks.sendgrid([event(mid, "bounce", int(time.time()))], timestamp=1).status == 403
    pg_hooks.store.db.rollback()
    assert pg_hooks.store.db.scalar("SELECT COUNT(*) FROM delivery_event") == 0
    assert pg_hooks.store.suppressions() == []
