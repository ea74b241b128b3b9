"""The send path commits per group of requests, not per request: a job of 100 messages costs
at most about 100 / (request group / 2) commits (each stamp carries the outcomes back so far, and
the budget's tokens when there is one), and the threads find their next request stamped."""

import math
import threading
import time

import pytest

from darwin_notify_assets.bus.base import Job, JobKind
from darwin_notify_assets.delivery.senders import Sender, SendResult
from darwin_notify_assets.delivery.throttle import ProviderBudget
from darwin_notify_assets.delivery.workers import GROUP_PER_THREAD, SendWorker
from darwin_notify_assets.domain.messages import MessageStatus
from darwin_notify_assets.storage.store import NotificationStore, OutboundMessage
from darwin_notify_tests.conftest import PARTITION, make_messages

BATCH, CONCURRENCY = 100, 8


class SlowProvider(Sender):
    provider = "slow"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.busy = 0
        self.most_busy = 0

    def send(self, message: OutboundMessage) -> SendResult:
        with self.lock:
            self.busy += 1
            self.most_busy = max(self.most_busy, self.busy)
        time.sleep(0.003)
        with self.lock:
            self.busy -= 1
        return SendResult(provider_message_id=f"p{message.message_id}")


@pytest.mark.parametrize("budgeted", [False, True], ids=["no budget", "budget"])
def test_a_job_commits_once_per_group_of_requests(store: NotificationStore, monkeypatch, budgeted):
    ids = make_messages(store, BATCH)
    provider = SlowProvider()
    budgets = {}
    if budgeted:
        budgets = {"email": ProviderBudget(store, "email:slow", rate=100_000, burst=10_000)}
    worker = SendWorker(store, {"email": provider}, concurrency=CONCURRENCY, budgets=budgets)
    commits = []
    real_commit = store.db.commit
    monkeypatch.setattr(store.db, "commit", lambda: (commits.append(1), real_commit()))
    try:
        counts = worker.handle(Job(JobKind.SEND, PARTITION, tuple(ids)))
    finally:
        worker.close()
    assert counts == {str(MessageStatus.SENT): BATCH}
    group = GROUP_PER_THREAD * CONCURRENCY
    assert worker.request_group == group
    # the claim, the first stamp (the threads and the group ahead: 40), one each time half a
    # group has room (60 left: 4), the outcomes left at the end (at most two more commits)
    assert len(commits) <= 1 + 1 + math.ceil((BATCH - CONCURRENCY - group) / (group // 2)) + 2
    assert len(commits) <= 8, len(commits)
    assert provider.most_busy == CONCURRENCY


def test_a_budget_smaller_than_a_group_makes_the_group_smaller(store: NotificationStore):
    budget = ProviderBudget(store, "email:slow", rate=3)
    worker = SendWorker(store, {"email": SlowProvider()}, concurrency=CONCURRENCY,
                        budgets={"email": budget})  # fmt: skip
    worker.close()
    assert worker.request_group == 3


def test_the_request_group_is_a_setting_that_reaches_the_send_workers(tmp_path, monkeypatch):
    from darwin_notify_assets.config import Settings
    from darwin_notify_assets.delivery import workers
    from darwin_notify_assets.errors import ConfigurationError

    env = {"DARWIN_NOTIFY_HOME": str(tmp_path), "DARWIN_NOTIFY_SEND_REQUEST_GROUP": "-1"}
    with pytest.raises(ConfigurationError, match="DARWIN_NOTIFY_SEND_REQUEST_GROUP must be 0"):
        Settings.from_env(env)
    settings = Settings.from_env({**env, "DARWIN_NOTIFY_SEND_REQUEST_GROUP": "24"})
    assert settings.send_request_group == 24
    made = []
    real = workers.SendWorker.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(workers.SendWorker, "__init__", spy)
    from darwin_notify_assets.domain import pipeline

    class Stop(Exception):
        pass

    def first_handler(rt, kind, handler_factory, *rest, **kw):
        handler_factory([])
        raise Stop

    monkeypatch.setattr(pipeline, "_wait_or_work", first_handler)
    rt = pipeline.Runtime.from_settings(settings)
    try:
        with pytest.raises(Stop):
            pipeline.stage_deliver(rt, pipeline.Window.from_key(PARTITION, 5))
    finally:
        rt.close()
    assert [w.request_group for w in made] == [24]
