"""The kill-before-commit scenario carried on to maintenance: the data files the killed ingest left
behind are deleted by ``maintain`` once they are past the retention, every committed row is still
readable, and the accounting invariant still holds."""

from __future__ import annotations

import multiprocessing as mp
import time
import types
from pathlib import Path
from typing import Any

import pytest
from customer_context.govern import maintain as maintain_module
from customer_context.govern.maintain import maintain
from customer_context_devtools.local import lambda_runtime

from tests.helpers.accounting import assert_accounted
from tests.reliability.test_ingest_faults import _killed_before_commit, _parquet_files, _sqs_event

WEEK = 7 * 86400


def _rows(lakehouse: Any) -> list[tuple[Any, ...]]:
    data = lakehouse.scan("events", selected_fields=("message_id", "event", "user_id")).to_pylist()
    return sorted((r["message_id"], r["event"], r["user_id"]) for r in data)


def _clock_moved(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """maintain (only) sees a clock ``seconds`` ahead: the files on disk look that much older."""
    shim = types.SimpleNamespace(**{n: getattr(time, n) for n in dir(time) if not n.startswith("__")})
    shim.time = lambda: time.time() + seconds
    monkeypatch.setattr(maintain_module, "time", shim)


@pytest.mark.slow
def test_orphans_of_a_killed_ingest_are_removed_by_maintenance_and_nothing_is_lost(
        tmp_path: Path, lakehouse: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "data"
    lakehouse.table("events")
    event, ids = _sqs_event("orphan", 200)
    # Given an ingest killed after writing its data files, before its commit …
    child = mp.get_context("spawn").Process(target=_killed_before_commit, args=(str(data_dir), event))
    child.start()
    child.join(120)
    assert child.exitcode == 137
    orphans = set(_parquet_files(data_dir))
    assert orphans, "the crash should have left data files behind"
    # … and SQS redelivering the batch to a healthy ingest
    assert lambda_runtime.invoke("ingest", event) == {"batchItemFailures": []}
    committed = set(_parquet_files(data_dir)) - orphans
    assert committed
    rows = _rows(lakehouse)
    assert len(rows) == 200

    # When maintenance runs within the retention, the orphans are kept (they look like an in-flight commit's)
    report = maintain(lakehouse, retain_seconds=WEEK)
    assert report["events"]["orphans_removed"] == 0
    assert all(p.exists() for p in orphans)

    # When it runs again once they are past the retention (the clock moved 8 days forward)
    _clock_moved(monkeypatch, 8 * 86400)
    report = maintain(lakehouse, retain_seconds=WEEK)
    # Then every file of the killed process is deleted, and only those: the committed files stay
    assert report["events"]["orphans_removed"] >= len(orphans)
    assert not any(p.exists() for p in orphans)
    assert all(p.exists() for p in committed)
    # And every committed row is still readable, each accepted event there exactly once
    assert _rows(lakehouse) == rows
    assert_accounted(lakehouse, ids, rejected_count=0)
    # A second pass has nothing left to do
    assert maintain(lakehouse, retain_seconds=WEEK)["events"]["orphans_removed"] == 0
