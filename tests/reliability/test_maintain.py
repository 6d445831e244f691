"""maintain: compaction keeps every row (even with an ingest committing in the middle of it), expiry and orphans."""

from __future__ import annotations

import time
from typing import Any

from customer_context.govern.maintain import compact, expire_snapshots, maintain, remove_orphans

from tests.helpers.lake import ev, write_events


def _rows(lakehouse: Any) -> list[tuple[Any, ...]]:
    data = lakehouse.scan("events", selected_fields=("message_id", "event", "user_id", "properties")).to_pylist()
    return sorted((r["message_id"], r["event"], r["user_id"], r["properties"]) for r in data)


class _WriterCommitsFirst:
    """The table compaction rewrites, with another writer's append committed between compaction's read of
    the partition and its overwrite commit — the overlap a running ingest makes likely, made certain —
    on the first ``times`` attempts; every refused overwrite is kept."""

    def __init__(self, table: Any, writer: Any, added: list[dict[str, Any]], refused: list[Exception],
                 times: int) -> None:
        self._table, self._writer, self._added, self._refused, self._times = table, writer, added, refused, times

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)

    def overwrite(self, *args: Any, **kwargs: Any) -> Any:
        n = len(self._refused)
        if n < self._times:
            batch = [ev("track", 1, userId=f"late{n}", event="Late", properties={"n": n})]
            write_events(self._writer, batch)  # lands in the very partition being rewritten
            self._added.extend(batch)
        try:
            return self._table.overwrite(*args, **kwargs)
        except Exception as exc:
            self._refused.append(exc)
            raise


def test_compaction_keeps_every_row_when_an_ingest_commits_between_its_read_and_its_commit(
        lakehouse: Any, monkeypatch: Any) -> None:
    from customer_context.config import Settings
    from customer_context.stores.iceberg import Lakehouse, _is_conflict

    # Given a day partition of 200 small files (one per ingest commit)
    for n in range(200):
        write_events(lakehouse, [ev("track", 1, userId=f"u{n}", event="Viewed", properties={"n": n, "i": i})
                                 for i in range(3)])
    before_rows = _rows(lakehouse)
    files_before = len(lakehouse.table("events").scan().plan_files())
    assert files_before >= 200
    # and another writer (another process in production: its own catalog connection and table objects)
    other = Lakehouse.from_settings(Settings.from_env())
    added: list[dict[str, Any]] = []
    refused: list[Exception] = []
    commit = lakehouse._commit
    monkeypatch.setattr(lakehouse, "_commit", lambda name, operation: commit(
        name, lambda table: operation(_WriterCommitsFirst(table, other, added, refused, times=2))))
    # When compaction runs, and twice the writer commits to the partition after compaction read it
    done = compact(lakehouse, "events", min_files=10)
    # Then both overwrites built on the stale read were refused as conflicts, and the third went through
    assert len(added) == 2 and len(refused) == 2, (added, refused)
    assert all(_is_conflict(exc) for exc in refused), refused
    # And every row is still there exactly once — the old ones and those committed in between
    after = _rows(lakehouse)
    assert len(after) == len(before_rows) + len(added)
    assert set(before_rows) <= set(after)
    assert {r[0] for r in after} >= {e["messageId"] for e in added}
    # And the partition is one file
    assert done["partitions"] == 1 and done["rows"] == len(after) and done["files_after"] == 1, done


def test_expiry_and_orphan_removal_keep_the_current_data(lakehouse: Any, tmp_path: Any) -> None:
    for n in range(12):
        write_events(lakehouse, [ev("track", 1, userId=f"u{n}", event="Viewed")])
    compact(lakehouse, "events", min_files=10)
    rows = _rows(lakehouse)
    table = lakehouse.table("events")
    assert len(table.snapshots()) > 1
    # A stray file in the data folder (e.g. from a writer that died before its commit)
    stray = tmp_path / "data" / "warehouse" / "customer_context" / "events" / "data" / "stray.parquet"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"not referenced")
    # With a retention in the future nothing is old enough: nothing is removed
    assert remove_orphans(lakehouse, "events", retain_seconds=3600) == 0 and stray.exists()
    # With no retention, old snapshots go, and so do the files nothing references any more
    assert expire_snapshots(lakehouse, "events", retain_seconds=0) >= 1
    removed = remove_orphans(lakehouse, "events", retain_seconds=0)
    assert removed >= 12 and not stray.exists()
    assert len(lakehouse.table("events").snapshots()) == 1
    assert _rows(lakehouse) == rows
    report = maintain(lakehouse)
    assert set(report) == set(lakehouse.table_names())


def test_maintain_handler_with_the_schedule_sample(lakehouse: Any, monkeypatch: Any) -> None:
    from customer_context_devtools.local import lambda_runtime

    from tests.conftest import load_event

    for n in range(3):
        write_events(lakehouse, [ev("track", 1, userId=f"u{n}", event="Viewed")])
    monkeypatch.setenv("CUSTOMER_CONTEXT_COMPACT_MIN_FILES", "2")
    from customer_context import wiring

    wiring.reload_from_environment()
    result = lambda_runtime.invoke("maintain", load_event("maintain_schedule.json"))
    assert result["tables"]["events"]["partitions"] == 1 and result["tables"]["events"]["files_after"] == 1


def test_maintain_runs_on_a_fresh_lakehouse_and_after_a_build(lakehouse: Any) -> None:
    from customer_context.assemble.build import build_context
    from customer_context.spec import DEFAULT_SPEC, parse_spec
    from customer_context.stores.context_store import MemoryContextStore

    # Given a lakehouse with no tables at all
    assert maintain(lakehouse, min_files=2) == {}
    # And then after one ordinary build, whose identity_rejected_edges snapshot holds no data file
    write_events(lakehouse, [ev("identify", 2, userId="u1", anonymousId="a1"),
                             ev("track", 1, userId="u1", event="Viewed")])
    build_context(lakehouse, MemoryContextStore(), parse_spec(DEFAULT_SPEC.read_text()))
    assert lakehouse.table("identity_rejected_edges").current_snapshot() is not None
    assert lakehouse.scan("identity_rejected_edges").num_rows == 0
    # When maintenance runs over every table
    report = maintain(lakehouse, min_files=2)
    # Then it completes for each of them, the empty one included
    assert report["identity_rejected_edges"]["partitions"] == 0
    assert set(report) == set(lakehouse.table_names())


def test_a_writer_and_a_reader_keep_working_after_maintenance_deleted_what_they_had_seen(
        lakehouse: Any, monkeypatch: Any) -> None:
    from customer_context.config import Settings
    from customer_context.stores.iceberg import Lakehouse

    from tests.reliability.test_kill_then_maintain import _clock_moved

    # Given a warm writer (another process in production: its own catalog and cached table objects) that has
    # committed once, and more small commits by other writers
    warm = Lakehouse.from_settings(Settings.from_env())
    write_events(warm, [ev("track", 1, userId="w0", event="Viewed")])
    for n in range(5):
        write_events(lakehouse, [ev("track", 1, userId=f"u{n}", event="Viewed")])
    seen_by_warm = warm._tables["events"].metadata.current_snapshot_id
    # When maintenance runs long enough after (the clock 8 days ahead): compaction, expiry, orphan removal
    _clock_moved(monkeypatch, 8 * 86400)
    report = maintain(lakehouse, min_files=2)
    assert report["events"]["partitions"] == 1 and report["events"]["orphans_removed"] >= 1
    assert seen_by_warm not in {s.snapshot_id for s in lakehouse.table("events").snapshots()}
    # Then the warm writer's next commit lands (its stale metadata is reloaded, not a FileNotFoundError)
    write_events(warm, [ev("track", 1, userId="w1", event="Viewed")])
    users = {r["user_id"] for r in lakehouse.scan("events", selected_fields=("user_id",)).to_pylist()}
    assert users == {"w0", "w1", *(f"u{n}" for n in range(5))}
    # And a long-lived reader sees the current rows, not the snapshot it first loaded
    write_events(lakehouse, [ev("track", 1, userId="late", event="Viewed")])
    fresh = {r["user_id"] for r in warm.table("events").scan(selected_fields=("user_id",)).to_arrow().to_pylist()}
    assert "late" in fresh and fresh == users | {"late"}


def test_retention_below_the_floor_is_refused(lakehouse: Any) -> None:
    import pytest
    from customer_context.config import MIN_RETENTION_SECONDS, Settings
    from customer_context.errors import ConfigError

    with pytest.raises(ConfigError, match="below the floor"):
        maintain(lakehouse, retain_seconds=0)
    with pytest.raises(ConfigError, match="CUSTOMER_CONTEXT_SNAPSHOT_RETENTION_SECONDS"):
        Settings.from_env({"CUSTOMER_CONTEXT_SNAPSHOT_RETENTION_SECONDS": str(MIN_RETENTION_SECONDS - 1)})


def test_a_snapshot_is_kept_for_the_retention_after_it_was_replaced_however_old_it_is(
        lakehouse: Any, monkeypatch: Any) -> None:
    import types

    import pyiceberg.table.snapshots as snapshots_module

    from tests.reliability.test_kill_then_maintain import _clock_moved

    # Given a snapshot made now, and replaced by a compaction 8 days later (its readers started a moment ago)
    for n in range(3):
        write_events(lakehouse, [ev("track", 1, userId=f"u{n}", event="Viewed")])
    old = lakehouse.table("events").current_snapshot().snapshot_id
    later = types.SimpleNamespace(time=lambda: time.time() + 8 * 86400)
    monkeypatch.setattr(snapshots_module, "time", later)
    compact(lakehouse, "events", min_files=2)
    assert lakehouse.table("events").current_snapshot().snapshot_id != old
    # When maintenance runs then (8 days after the first snapshot, a moment after the compaction)
    _clock_moved(monkeypatch, 8 * 86400)
    expire_snapshots(lakehouse, "events", retain_seconds=7 * 86400)
    # Then the replaced snapshot is still there: it stopped being current less than the retention ago
    assert old in {s.snapshot_id for s in lakehouse.table("events").snapshots()}
    # And once the retention has passed since it was replaced, it is expired
    _clock_moved(monkeypatch, 16 * 86400)
    assert expire_snapshots(lakehouse, "events", retain_seconds=7 * 86400) >= 1
    assert old not in {s.snapshot_id for s in lakehouse.table("events").snapshots()}
