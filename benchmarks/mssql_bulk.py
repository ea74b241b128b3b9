"""The store's bulk insert-if-absent on a SQL Server, in rows per second.

On the server the executed tier names (``DARWIN_NOTIFY_TEST_MSSQL_URL`` and
``DARWIN_NOTIFY_TEST_MSSQL_PASSWORD``; its ``dbo`` store tables are dropped and recreated):
``--rows`` candidates inserted, the same again (all present), then one message per candidate,
and the same again. Each step is one store call, timed from the call to its commit; the rows
present afterwards are counted, so a form that loses rows shows it. A JSON line at the end
holds the figures.

    PYTHONPATH=. .venv/bin/python benchmarks/mssql_bulk.py --rows 10000
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from darwin_notify_assets.domain.messages import MessageStatus  # noqa: E402
from darwin_notify_assets.storage.db import connect  # noqa: E402
from darwin_notify_assets.storage.store import (  # noqa: E402
    CandidateRow,
    NotificationStore,
    OutboundMessage,
)

STORE_TABLES = ("candidate", "message", "message_event")
PARTITION = "2026-03-02-14:00"


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def timed(label: str, rows: int, call, figures: dict) -> object:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - start
    figures[label] = {
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds),
    }
    out(f"{label:<28} {rows:>7} rows {seconds:>8.2f} s {rows / seconds:>9.0f} rows/s")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10000)
    args = parser.parse_args()
    url = os.environ.get("DARWIN_NOTIFY_TEST_MSSQL_URL")
    if not url:
        sys.stderr.write("DARWIN_NOTIFY_TEST_MSSQL_URL names no SQL Server\n")
        return 2
    db = connect(url, password=os.environ.get("DARWIN_NOTIFY_TEST_MSSQL_PASSWORD"))
    store = NotificationStore(db)
    with db.transaction():
        for table in STORE_TABLES:
            db.execute(f"DELETE FROM dbo.{table}").close()
    store.ensure_schema()
    n = args.rows
    candidates = [
        CandidateRow(
            f"1:Property:{i}:v1:email:contact:{i}",
            PARTITION,
            1,
            "email",
            i,
            "Property",
            i,
            i % 50 + 1,
            "contact",
            i,
            i % 2 == 0,
        )
        for i in range(n)
    ]
    figures: dict = {"server": str(db.scalar("SELECT @@VERSION")).splitlines()[0]}
    ids: list[int] = []
    timed(
        "insert_candidates (new)",
        n,
        lambda: store.insert_candidates(candidates, on_inserted=ids.extend),
        figures,
    )
    timed("insert_candidates (present)", n, lambda: store.insert_candidates(candidates), figures)
    keys = dict(db.query("SELECT candidate_id, candidate_key FROM dbo.candidate"))
    messages = [
        OutboundMessage(
            cid,
            keys[cid],
            PARTITION,
            "email",
            MessageStatus.QUEUED,
            to_address=f"c{cid}@example.com",
            subject="Price change: 12 Elm Street",
            html_body="<p>" + "The price of the listing you follow changed. " * 8 + "</p>",
            text_body="The price of the listing you follow changed. " * 8,
        )
        for cid in sorted(keys)
    ]
    timed("insert_messages (new)", len(messages), lambda: store.insert_messages(messages), figures)
    timed(
        "insert_messages (present)", len(messages), lambda: store.insert_messages(messages), figures
    )
    present = {table: int(db.scalar(f"SELECT COUNT(*) FROM dbo.{table}")) for table in STORE_TABLES}
    figures["present"] = present
    figures["ids_returned"] = len(ids)
    out(f"present afterwards: {present}; ids returned: {len(ids)} (of {n})")
    out(json.dumps(figures))
    db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
