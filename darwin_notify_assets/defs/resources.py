"""The Dagster resource that opens darwin-notify's parts: replica, store, bus and senders."""

from dagster import ConfigurableResource

from darwin_notify_assets.config import Settings
from darwin_notify_assets.domain.pipeline import Runtime


class DarwinNotifyResource(ConfigurableResource):
    """Where the replica, the store, the bus and the providers are.

    Values left empty come from the ``DARWIN_NOTIFY_*`` environment (see the README). Secrets
    (passwords, API keys, tokens) are never configuration: they are read from the environment
    when a connection opens, so they never show in the UI, in run config or in metadata.
    """

    home: str = ""
    replica_url: str = ""
    store_url: str = ""
    kafka_bootstrap: str = ""
    inline_workers: int = -1

    def settings(self) -> Settings:
        overrides: dict[str, object] = {
            k: v
            for k, v in {
                "home": self.home,
                "replica_url": self.replica_url,
                "store_url": self.store_url,
                "kafka_bootstrap": self.kafka_bootstrap,
            }.items()
            if v
        }
        if self.inline_workers >= 0:
            overrides["inline_workers"] = self.inline_workers
        return Settings.from_env(overrides=overrides)

    def runtime(self) -> Runtime:
        return Runtime.from_settings(self.settings())
