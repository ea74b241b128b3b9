"""The webhook service over HTTP: signed provider events stored once, folded in any order,
refused when forged, stale or unsigned; SMS replies; one-click unsubscribe; the claim-time
check of every opt-out."""

import time
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.storage.store import NotificationStore
from darwin_notify_assets.webhooks.signatures import UnsubscribeTokens
from darwin_notify_tests.conftest import make_messages
from darwin_notify_tests.webhooks.conftest import UNSUBSCRIBE_SECRET, Hooks, http


def sent(store: NotificationStore, n: int, prefix: str, channel: str = "email") -> list[int]:
    ids = make_messages(store, n, prefix=prefix, channel=channel)
    store.claim(ids)
    store.finish([(m, MessageStatus.SENT, None, f"prov-{m}") for m in ids])
    return ids


def event(mid: int, kind: str, ts: int, **extra: object) -> dict[str, object]:
    # A fresh sg_event_id every time: SendGrid may change it when it retries.
    return {
        "email": f"addr{mid}@example.com",
        "event": kind,
        "timestamp": ts,
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": f"sg-{mid}",
        "darwin_notify_message_id": str(mid),
        **extra,
    }


def rows(store: NotificationStore, sql: str, params: list[object] | None = None) -> list[tuple]:
    store.db.rollback()
    return store.db.query(sql, params or [])


def status_of(store: NotificationStore, mid: int) -> str:
    return rows(store, "SELECT status FROM message WHERE message_id = ?", [mid])[0][0]


def test_health_reports_the_store_reachable(hooks: Hooks):
    answer = http("GET", hooks.service.url + "/healthz")
    assert (answer.status, answer.json()["status"]) == (200, "ok")


@pytest.mark.parametrize("repeats", [3, 46])
def test_a_repeated_event_is_stored_once(hooks: Hooks, repeats: int):
    [mid] = sent(hooks.store, 1, "r")
    ts = int(time.time())
    for _ in range(repeats):
        answer = hooks.sendgrid([event(mid, "delivered", ts)])
        assert answer.status == 200
    assert rows(hooks.store, "SELECT COUNT(*) FROM delivery_event") == [(1,)]
    assert hooks.store.delivery_state(mid) == ("delivered", 1)


def test_events_in_any_order_never_move_the_delivery_state_back(hooks: Hooks):
    a, b, c = sent(hooks.store, 3, "o")
    ts = int(time.time())
    # b: processed, delivered, opened arriving backwards; c: bounced, then a late deferral.
    assert hooks.sendgrid([event(b, "open", ts + 3), event(b, "delivered", ts + 2)]).status == 200
    assert hooks.sendgrid([event(b, "processed", ts + 1), event(a, "processed", ts)]).status == 200
    assert hooks.sendgrid([event(c, "bounce", ts + 5, reason="550 no such user")]).status == 200
    assert hooks.sendgrid([event(c, "deferred", ts + 1, attempt="1", response="421")]).status == 200
    assert hooks.store.delivery_state(a) == ("processed", 1)
    assert hooks.store.delivery_state(b) == ("opened", 3)
    assert hooks.store.delivery_state(c) == ("bounced", 2)
    # two deferrals of one message differ by their attempt: both are kept
    for attempt in ("1", "2", "2"):
        hooks.sendgrid([event(a, "deferred", ts + 9, attempt=attempt, response="421")])
    assert rows(
        hooks.store, "SELECT COUNT(*) FROM delivery_event WHERE event_type = 'deferred'"
    ) == [(3,)]
    assert hooks.store.delivery_counts("2026-03-02-14:00") == {
        "bounced": 1,
        "deferred": 1,
        "opened": 1,
    }


def test_an_event_resolves_an_unknown_message_as_sent(hooks: Hooks):
    ids = make_messages(hooks.store, 1, prefix="u")
    hooks.store.claim(ids)
    hooks.store.finish([(ids[0], MessageStatus.UNKNOWN, "timed out", None)])
    assert hooks.sendgrid([event(ids[0], "processed", int(time.time()))]).status == 200
    assert status_of(hooks.store, ids[0]) == "sent"
    history = rows(
        hooks.store,
        "SELECT from_status, to_status, reason FROM message_event WHERE message_id = ? "
        "ORDER BY message_event_id",
        ids,
    )
    assert history[-1][:2] == ("unknown", "sent")
    assert "processed" in history[-1][2]


def test_forged_stale_unsigned_or_tampered_requests_are_refused_and_nothing_recorded(
    hooks: Hooks,
):
    [mid] = sent(hooks.store, 1, "f")
    now = int(time.time())
    other = ec.generate_private_key(ec.SECP256R1())
    batch = [event(mid, "delivered", now)]
    assert hooks.sendgrid(batch, key=other).status == 403
    assert hooks.sendgrid(batch, timestamp=now - 301).status == 403
    assert hooks.sendgrid(batch, timestamp=now + 301).status == 403
    assert hooks.sendgrid(batch, signed=False).status == 403
    tampered = [event(mid, "bounce", now)]
    assert hooks.sendgrid(tampered, body=b'[{"event":"bounce"}]').status == 403
    assert rows(hooks.store, "SELECT COUNT(*) FROM delivery_event") == [(0,)]
    assert hooks.store.delivery_state(mid) is None
    # a signature a little old is still within the tolerance
    assert hooks.sendgrid(batch, timestamp=now - 240).status == 200


def test_a_store_that_cannot_take_the_event_answers_503_and_the_retry_is_stored(
    hooks: Hooks,
):
    [mid] = sent(hooks.store, 1, "s")
    batch = [event(mid, "delivered", int(time.time()))]
    hooks.store.db.execute("DROP TABLE delivery_event")
    hooks.store.db.commit()
    assert hooks.sendgrid(batch).status == 503
    assert hooks.store.delivery_state(mid) is None
    hooks.store.ensure_schema()
    assert hooks.sendgrid(batch).status == 200
    assert hooks.store.delivery_state(mid) == ("delivered", 1)


def test_a_bounce_suppresses_the_address_at_the_next_claim(hooks: Hooks):
    [mid] = sent(hooks.store, 1, "b")
    queued = make_messages(hooks.store, 2, prefix="b2")
    # make_messages addresses: "<prefix><i>@example.com"; the bounce names b0's address.
    hooks.store.db.execute(
        "UPDATE message SET to_address = ? WHERE message_id = ?", ["B0@Example.com", queued[0]]
    )
    hooks.store.db.commit()
    ev = event(mid, "bounce", int(time.time()), reason="550 5.1.1 unknown user")
    ev["email"] = "b0@example.com"
    assert hooks.sendgrid([ev]).status == 200
    claimed = hooks.store.claim(queued)
    assert [m.message_id for m in claimed] == [queued[1]]
    assert status_of(hooks.store, queued[0]) == "suppressed"
    reason = rows(hooks.store, "SELECT reason FROM message WHERE message_id = ?", [queued[0]])
    assert reason == [("the provider reported a bounce",)]


def test_sms_status_callbacks_are_verified_and_recorded_once(hooks: Hooks):
    [mid] = sent(hooks.store, 1, "t", channel="sms")
    path = f"/webhooks/sms/status?m={mid}"
    params = {"MessageSid": "SM1", "MessageStatus": "delivered", "To": "+13125550000"}
    for _ in range(3):
        assert hooks.twilio(path, params).status == 200
    assert hooks.twilio(path, {**params, "MessageStatus": "sent"}).status == 200
    assert hooks.twilio(path, {**params, "MessageStatus": "undelivered"}, token="x").status == 403
    assert hooks.twilio(path, {**params, "MessageStatus": "failed"}, signed=False).status == 403
    assert rows(hooks.store, "SELECT COUNT(*) FROM delivery_event") == [(2,)]
    assert hooks.store.delivery_state(mid) == ("delivered", 2)
    # tied by the provider's SID when our id is not in the URL
    assert (
        hooks.twilio(
            "/webhooks/sms/status",
            {"MessageSid": f"prov-{mid}", "MessageStatus": "undelivered", "ErrorCode": "30003"},
        ).status
        == 200
    )
    assert hooks.store.delivery_state(mid) == ("bounced", 3)


def test_stop_opts_a_number_out_start_back_in_help_answers(hooks: Hooks):
    path = "/webhooks/sms/inbound"
    [first, second] = make_messages(hooks.store, 2, prefix="n", channel="sms")
    number = rows(hooks.store, "SELECT to_address FROM message WHERE message_id = ?", [first])
    number = number[0][0]
    answer = hooks.twilio(path, {"From": number, "Body": " stop ", "MessageSid": "SMin1"})
    assert answer.status == 200 and b"<Response>" in answer.body
    assert [m.message_id for m in hooks.store.claim([first, second])] == [second]
    assert status_of(hooks.store, first) == "suppressed"
    [third] = make_messages(hooks.store, 1, prefix="m", channel="sms")
    hooks.store.db.execute(
        "UPDATE message SET to_address = ? WHERE message_id = ?", [number, third]
    )
    hooks.store.db.commit()
    assert hooks.twilio(path, {"From": number, "Body": "START"}).status == 200
    assert [m.message_id for m in hooks.store.claim([third])] == [third]
    help_answer = hooks.twilio(path, {"From": number, "Body": "help"})
    assert b"<Message>darwin-notify notifications." in help_answer.body
    assert hooks.twilio(path, {"From": number, "Body": "STOP"}, token="forged").status == 403


def test_one_click_unsubscribe_suppresses_the_schedule_at_the_claim(hooks: Hooks):
    [mine, other_recipient] = make_messages(hooks.store, 2, prefix="x")
    [rendered_before] = make_messages(hooks.store, 1, prefix="y")  # recipient 0, schedule 1
    token = UnsubscribeTokens(UNSUBSCRIBE_SECRET).token(mine)
    url = f"{hooks.service.url}/u/{token}"
    page = http("GET", url)
    assert page.status == 200 and b"<form method='post'>" in page.body
    assert b"x0@example.com" not in page.body  # masked
    assert rows(hooks.store, "SELECT COUNT(*) FROM suppression") == [(0,)]  # GET changes nothing
    answer = http(
        "POST",
        url,
        b"List-Unsubscribe=One-Click",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status == 200
    claimed = hooks.store.claim([rendered_before, other_recipient])
    assert [m.message_id for m in claimed] == [other_recipient]
    assert status_of(hooks.store, rendered_before) == "suppressed"
    reason = rows(hooks.store, "SELECT reason FROM message WHERE message_id = ?", [rendered_before])
    assert reason == [("unsubscribed from schedule 1 (link)",)]
    assert http("GET", url[:-3] + "AAA").status == 404
    assert http("POST", f"{hooks.service.url}/u/{token}x", b"").status == 404


def test_the_backlog_query_counts_events_and_sent_messages_no_event_reached(hooks: Hooks):
    from datetime import timedelta

    from darwin_notify_assets.storage.store import utcnow

    a, b = sent(hooks.store, 2, "k")
    start = utcnow() - timedelta(minutes=1)
    assert hooks.sendgrid([event(a, "delivered", int(time.time()))]).status == 200
    backlog = hooks.store.webhook_backlog(start, utcnow() + timedelta(seconds=1))
    assert backlog["events_received"] == 1
    assert backlog["newest_event_at"] is not None and backlog["newest_event_at"] >= start
    assert backlog["sent_without_event"] == 1  # b
    assert hooks.store.sent_without_delivery("2026-03-02-14:00", utcnow()) == 1
    assert hooks.store.webhook_backlog(utcnow(), start)["sent_without_event"] == 0
