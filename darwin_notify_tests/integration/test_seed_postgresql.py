"""The sample darwin.Cloud written to the real PostgreSQL primary through pyodbc."""

import uuid

import pytest

from darwin_notify_assets.sample import seed
from darwin_notify_assets.sample.seed import SeedSize
from darwin_notify_assets.storage.db import connect
from darwin_notify_tests.sample.test_seed import START, _count

pytestmark = pytest.mark.integration


def test_seed_postgresql_primary(services: dict[str, str]) -> None:
    url = services.get("DARWIN_NOTIFY_PRIMARY_ADMIN_URL")
    if not url:
        pytest.fail(
            "DARWIN_NOTIFY_PRIMARY_ADMIN_URL is not set: start the services with `make services-up`"
        )
    db = connect(url, password_env="DARWIN_NOTIFY_PRIMARY_PASSWORD")
    schema = f"test_seed_{uuid.uuid4().hex[:12]}"
    try:
        # A private schema keeps this test away from the demo's tables in the same database.
        db.execute(f"CREATE SCHEMA {schema}").close()
        db.execute(f"SET search_path TO {schema}").close()
        db.commit()
        summary = seed.seed_database(db, SeedSize.small(), seed=5, start=START, windows=2)
        base = seed.generate_base(SeedSize.small(), seed=5, start=START)
        ops = summary.totals_by_operation()
        assert _count(db, "People") == base.counts()["People"] + ops.get("People.insert", 0)
        schedules = db.query_dicts('SELECT * FROM "NotificationSchedule" ORDER BY "ScheduleID"')
        assert [s["ScheduleID"] for s in schedules] == [1, 2, 3, 4, 5]
        assert schedules[2]["UsesAgentTotals"] in (True, 1)
        posted = db.scalar('SELECT COUNT(*) FROM "Deal" WHERE "PostDate" >= ?', [START])
        assert posted == ops.get("Deal.update", 0)
        indexes = {
            r[0]
            for r in db.query("SELECT indexname FROM pg_indexes WHERE schemaname = ?", [schema])
        }
        assert "IX_Deal_PostDate" in indexes and "IX_DeletedRecord_DeletedDate" in indexes
    finally:
        db.rollback()
        db.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE").close()
        db.commit()
        db.close()
