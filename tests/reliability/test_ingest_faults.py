"""Ingest under faults: killed before the commit, and concurrent commits (Iceberg optimistic concurrency)."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path
from typing import Any

import pytest
from customer_context import envelope
from customer_context_devtools.local.sqs_trigger import sqs_event

from tests.helpers.accounting import assert_accounted, landed

STAMP = {"receivedAt": "2026-11-24T12:00:00.000Z", "sourceId": "web", "timestamp": "2026-11-24T11:59:00.000Z"}


def _sqs_event(prefix: str, n: int, per_message: int = 50) -> tuple[dict[str, Any], list[str]]:
    ids = [f"{prefix}-{i}" for i in range(n)]
    messages = []
    for start in range(0, n, per_message):
        events = [envelope.dumps({"type": "track", "event": "Viewed", "userId": f"u{i % 7}", "messageId": mid, **STAMP})
                  for i, mid in enumerate(ids[start:start + per_message])]
        messages.append({"MessageId": f"{prefix}-msg-{start}", "ReceiptHandle": "rh", "MD5OfBody": "x",
                         "Body": envelope.body_of(events, []), "Attributes": {"ApproximateReceiveCount": "1"}})
    return sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:q", "us-east-1"), ids


def _child_env(data_dir: str) -> None:
    os.environ["CUSTOMER_CONTEXT_DATA_DIR"] = data_dir
    os.environ["CUSTOMER_CONTEXT_CATALOG_TYPE"] = "sql"
    os.environ["POWERTOOLS_TRACE_DISABLED"] = "true"
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    os.environ["POWERTOOLS_LOG_LEVEL"] = "ERROR"


def _killed_before_commit(data_dir: str, event: dict[str, Any]) -> None:
    """Child: ingest, but the process dies after the data files are written, before the commit."""
    _child_env(data_dir)
    from pyiceberg.catalog.sql import SqlCatalog

    def die(*_: Any, **__: Any) -> None:
        os._exit(137)  # like SIGKILL / a Lambda timeout: no cleanup, no exception handling

    SqlCatalog.commit_table = die  # type: ignore[method-assign]
    from customer_context_devtools.local import lambda_runtime

    lambda_runtime.invoke("ingest", event)


def _ingest_racing(data_dir: str, event: dict[str, Any], barrier: Any, calls: Any) -> None:
    """Child: ingest; its first commit waits for the other child, so both commit on the same base."""
    _child_env(data_dir)
    from pyiceberg.catalog.sql import SqlCatalog

    original = SqlCatalog.commit_table
    state = {"first": True}

    def racing(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.put(os.getpid())
        if state["first"]:
            state["first"] = False
            barrier.wait(timeout=60)
        return original(self, *args, **kwargs)

    SqlCatalog.commit_table = racing  # type: ignore[method-assign]
    from customer_context_devtools.local import lambda_runtime

    lambda_runtime.invoke("ingest", event)


def _parquet_files(data_dir: Path) -> list[Path]:
    return list((data_dir / "warehouse").rglob("*.parquet"))


@pytest.mark.slow
def test_killed_between_data_files_and_commit_then_redelivered(tmp_path: Path, lakehouse: Any) -> None:
    data_dir = tmp_path / "data"
    lakehouse.table("events")  # the table exists before the crash, as in production
    event, ids = _sqs_event("kill", 200)
    # Given an ingest process that dies after writing its data files but before committing
    ctx = mp.get_context("spawn")
    child = ctx.Process(target=_killed_before_commit, args=(str(data_dir), event))
    child.start()
    child.join(120)
    assert child.exitcode == 137
    # Then the files are on disk but orphaned: no committed row references them
    orphans = _parquet_files(data_dir)
    assert orphans, "the crash should have left data files behind"
    assert landed(lakehouse)[0] == {}

    # When SQS redelivers the batch (twice: at-least-once delivery may repeat)
    from customer_context_devtools.local import lambda_runtime

    for _ in range(2):
        assert lambda_runtime.invoke("ingest", event) == {"batchItemFailures": []}
    # Then every event is there exactly once after the read-time dedupe, nothing lost
    assert_accounted(lakehouse, ids, rejected_count=0)
    assert lakehouse.scan("events").num_rows == 400  # two deliveries stored, deduped on read


@pytest.mark.slow
def test_two_ingests_committing_at_once_both_land(tmp_path: Path, lakehouse: Any) -> None:
    data_dir = tmp_path / "data"
    lakehouse.table("events")
    first, first_ids = _sqs_event("a", 300)
    second, second_ids = _sqs_event("b", 300)
    ctx = mp.get_context("spawn")
    barrier, calls = ctx.Barrier(2), ctx.Queue()
    # Given two ingest invocations whose commits start from the same table version
    children = [ctx.Process(target=_ingest_racing, args=(str(data_dir), ev, barrier, calls))
                for ev in (first, second)]
    for child in children:
        child.start()
    for child in children:
        child.join(180)
    assert [c.exitcode for c in children] == [0, 0]
    commits = []
    while not calls.empty():
        commits.append(calls.get())
    # Then one of them conflicted and retried (3 commit attempts in all), and both batches are present
    assert len(commits) >= 3, f"expected a conflict and a retry, saw {len(commits)} commit attempts"
    assert_accounted(lakehouse, first_ids + second_ids, rejected_count=0)


def test_stale_table_commit_is_retried(lakehouse: Any, caplog: pytest.LogCaptureFixture) -> None:
    import pyarrow as pa
    from customer_context.collect.ingest import event_to_row

    def rows(prefix: str) -> pa.Table:
        items = [event_to_row({"type": "track", "event": "x", "userId": "u", "messageId": f"{prefix}{i}", **STAMP})
                 for i in range(3)]
        return pa.Table.from_pylist(items, schema=lakehouse.arrow_schema("events"))

    # Given a writer holding a stale view of the table while another writer commits
    stale = lakehouse.table("events")
    lakehouse.catalog.load_table((lakehouse.namespace, "events")).append(rows("other"))
    lakehouse._tables["events"] = stale
    # When it appends
    caplog.set_level("INFO")
    lakehouse.append("events", rows("mine"))
    # Then the conflict was seen and retried (pyiceberg's own retry first, ours beyond it),
    # and both appends survive
    assert any("concurrent update" in r.getMessage() or "commit conflict" in r.getMessage() for r in caplog.records)
    assert lakehouse.scan("events").num_rows == 6
