"""The typed resources: secrets bound as EnvVar, one connection per execution, the store's
schema created once per process, and the replica guard of ``change_window`` through a fake."""

from datetime import timedelta

from dagster import DagsterInstance, EnvVar

from darwin_notify_assets.defs.notifications.runs import run_window
from darwin_notify_assets.defs.resources import ReplicaResource, StoreResource, resources_from_env
from darwin_notify_assets.storage.replica import ReplicaReader, ReplicaWatermark
from darwin_notify_assets.storage.store import NotificationStore
from darwin_notify_tests.conftest import materialization_metadata

SECRET = "pw-7f3c1e-never-shown"


def test_secrets_are_bound_as_env_vars_and_never_as_values(monkeypatch):
    env = {
        "DARWIN_NOTIFY_REPLICA_URL": "postgresql://reader@db:5432/darwin",
        "DARWIN_NOTIFY_REPLICA_PASSWORD": SECRET,
        "DARWIN_NOTIFY_STORE_PASSWORD": SECRET,
        "DARWIN_NOTIFY_SENDGRID_API_KEY": SECRET,
        "DARWIN_NOTIFY_TWILIO_ACCOUNT_SID": "AC1",
        "DARWIN_NOTIFY_TWILIO_AUTH_TOKEN": SECRET,
    }
    resources = resources_from_env(env)
    assert resources["replica"].password == EnvVar("DARWIN_NOTIFY_REPLICA_PASSWORD")
    assert resources["store"].password == EnvVar("DARWIN_NOTIFY_STORE_PASSWORD")
    assert resources["senders"].sendgrid_api_key == EnvVar("DARWIN_NOTIFY_SENDGRID_API_KEY")
    assert resources["senders"].twilio_auth_token == EnvVar("DARWIN_NOTIFY_TWILIO_AUTH_TOKEN")
    for resource in resources.values():
        assert SECRET not in repr(resource) and SECRET not in str(resource.model_dump())
    # Unset secrets stay unset: the embedded default needs none.
    bare = resources_from_env({})
    assert bare["replica"].password is None and bare["senders"].sendgrid_api_key is None


class LaggingReplica(ReplicaResource):
    """The environment's replica, reporting that it applied only up to a given moment."""

    applied_iso: str

    def open(self) -> ReplicaReader:
        reader = super().open()
        from datetime import datetime

        applied = datetime.fromisoformat(self.applied_iso)

        def watermark() -> ReplicaWatermark:
            return ReplicaWatermark(applied, "0/1", "0/0", True, applied, "streaming")

        reader.watermark = watermark  # type: ignore[method-assign]
        return reader


def test_change_window_refuses_a_window_the_replica_has_not_applied(embedded_env):
    env = embedded_env
    env.apply(0)
    window = env.window(0)
    short = window.end + timedelta(seconds=10)  # grace is 30 s
    base = resources_from_env()
    resources = {
        **base,
        "replica": LaggingReplica(url=base["replica"].url, applied_iso=short.isoformat()),
    }
    with DagsterInstance.ephemeral() as instance:
        result = run_window(env.key(0), instance, resources)
        assert not result.success
        [failure] = [e for e in result.all_events if e.is_step_failure]
        assert failure.step_key == "change_window"
        message = failure.step_failure_data.error.message
        assert "20s short" in message and "replay paused" in message
    # Nothing was read or recorded: the window is not marked as read, no event exists.
    assert env.store_rows("SELECT COUNT(*) AS n FROM window_run")[0]["n"] == 0
    assert env.store_rows("SELECT COUNT(*) AS n FROM change_event")[0]["n"] == 0
    # Once the replica has applied end plus grace, the same window runs.
    caught_up = window.end + timedelta(seconds=30)
    resources["replica"] = LaggingReplica(
        url=base["replica"].url, applied_iso=caught_up.isoformat()
    )
    with DagsterInstance.ephemeral() as instance:
        assert run_window(env.key(0), instance, resources).success
        meta = materialization_metadata(instance, "change_window", env.key(0))
        assert meta["replica_state"] == "streaming"
    [row] = env.store_rows("SELECT replica_state FROM window_run")
    assert row["replica_state"] == "streaming, replay paused"


def test_one_connection_per_execution_and_the_schema_created_once(embedded_env, monkeypatch):
    env = embedded_env
    calls = {"ensure_schema": 0, "replica_open": 0}
    real_ensure, real_open = NotificationStore.ensure_schema, ReplicaReader.open

    def counting_ensure(self):
        calls["ensure_schema"] += 1
        return real_ensure(self)

    def counting_open(cls, *args, **kwargs):
        calls["replica_open"] += 1
        return real_open(*args, **kwargs)

    monkeypatch.setattr(NotificationStore, "ensure_schema", counting_ensure)
    monkeypatch.setattr(ReplicaReader, "open", classmethod(counting_open))
    from darwin_notify_assets.defs import resources as resources_module

    monkeypatch.setattr(resources_module, "_SCHEMA_READY", set())
    env.apply(0)
    env.apply(1)
    assert env.run_window(0).success
    assert env.run_window(1).success
    assert calls["ensure_schema"] == 1
    # One replica connection per run for the six steps, plus one per inline render worker.
    inline = env.settings.inline_workers
    assert calls["replica_open"] <= 2 * (1 + inline)


def test_the_store_resource_is_a_context_manager(tmp_path):
    with StoreResource(url=f"sqlite:///{tmp_path / 'store.db'}") as store:
        assert store.store.last_window() is None
        first = store.store
        assert store.store is first
    assert store._store is None


def test_the_replica_resource_reads_merge_field_queries_from_the_configured_folder(
    embedded_env, tmp_path
):
    from darwin_notify_assets.storage.sqlfiles import sample_merge_fields

    env = {"DARWIN_NOTIFY_REPLICA_URL": embedded_env.settings.replica_url}
    with resources_from_env(env)["replica"] as default:
        assert default.reader.merge_fields_dir == sample_merge_fields("sqlite")
    env["DARWIN_NOTIFY_MERGE_FIELDS_DIR"] = str(tmp_path)
    with resources_from_env(env)["replica"] as configured:
        assert configured.reader.merge_fields_dir == tmp_path
        assert "no file" in (configured.reader.merge_field_problem("agent_active_listings") or "")
