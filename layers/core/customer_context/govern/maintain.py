"""maintain: compaction of small files, snapshot expiry and orphan-file removal for every table.

* **compaction** — ingest commits once per SQS batch, so partitions collect many small files. A
  partition with at least ``min_files`` files is rewritten as one: its rows are read and written
  back with an overwrite of that partition, in one commit that asserts the snapshot it read. If an
  ingest commits to the table meanwhile, the commit fails, the partition is read again and the
  rewrite retried — rows committed beside it are never lost, and row counts and content stay equal.
* **snapshot expiry** — snapshots that stopped being the current one more than ``retain_seconds`` ago
  are expired (the current one never). Counting from when a snapshot was *replaced*, not from when it
  was made, matters: a compaction replaces a snapshot that may be days old, and a reader that planned
  its scan on it a moment ago must still find its files.
* **orphan files** — files under the table's location that no snapshot references and that are
  older than ``retain_seconds`` (so never an in-flight commit's) are deleted.

The retention has a floor (:data:`~customer_context.config.MIN_RETENTION_SECONDS`, one hour): every
function finishes well within it, so no commit or read in flight loses the files it started from.
Writers whose cached metadata maintenance made stale reload it and retry (``Lakehouse._commit``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from customer_context.stores import row_filters

if TYPE_CHECKING:
    from customer_context.stores.iceberg import Lakehouse as IcebergLakehouse  # commits through its retry loop

DAY_MS = 86_400_000


def _partition_filter(table: Any, partition: dict[str, Any]) -> Any:
    """A row filter selecting one partition (identity and day transforms)."""
    from pyiceberg.expressions import AlwaysTrue, And
    from pyiceberg.transforms import DayTransform, IdentityTransform

    expr: Any = AlwaysTrue()
    schema = table.schema()
    for field in table.spec().fields:
        source = schema.find_field(field.source_id).name
        value = partition.get(field.name)
        if value is None:
            term: Any = row_filters.is_null(source)
        elif isinstance(field.transform, DayTransform):
            day = value if isinstance(value, date) else date(1970, 1, 1) + timedelta(days=int(value))
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            term = And(row_filters.at_least(source, start.isoformat()),
                       row_filters.below(source, (start + timedelta(days=1)).isoformat()))
        elif isinstance(field.transform, IdentityTransform):
            term = row_filters.equal(source, value)
        else:
            raise ValueError(f"{table.name()}: partition transform {field.transform} is not supported by compaction")
        expr = And(expr, term)
    return expr


def _data_files(table: Any) -> list[dict[str, Any]]:
    """The current snapshot's data files, each as its partition (field name → value); none for a table
    without a snapshot or whose snapshot holds no files (``table.inspect.files()`` fails on those)."""
    if table.current_snapshot() is None:
        return []
    names = [field.name for field in table.spec().fields]
    return [{name: task.file.partition[i] for i, name in enumerate(names)} for task in table.scan().plan_files()]


def compact(lakehouse: IcebergLakehouse, name: str, min_files: int = 10) -> dict[str, int]:
    """Rewrite each partition holding at least ``min_files`` data files as one; returns counts."""
    table = lakehouse.table(name)
    groups: dict[str, list[dict[str, Any]]] = {}
    for partition in _data_files(table):
        groups.setdefault(repr(sorted(partition.items())), []).append(partition)
    out = {"partitions": 0, "files_before": 0, "files_after": 0, "rows": 0}
    for group in groups.values():
        if len(group) < min_files:
            continue
        expr = _partition_filter(table, group[0])
        rows: list[int] = []

        def rewrite(t: Any, expr: Any = expr, rows: list[int] = rows) -> None:
            data = t.scan(row_filter=expr).to_arrow()  # read at the snapshot this commit will assert
            rows.append(data.num_rows)
            t.overwrite(data, overwrite_filter=expr, snapshot_properties={"writer": "maintain:compact"})

        lakehouse._commit(name, rewrite)
        out["partitions"] += 1
        out["files_before"] += len(group)
        out["rows"] += rows[-1]
    table = lakehouse.table(name)
    out["files_after"] = len(_data_files(table)) if out["partitions"] else 0
    return out


def _replaced_at(table: Any) -> dict[int, int]:
    """When each snapshot stopped being the current one (ms), from the table's snapshot log; a snapshot
    never current (not in the log) counts from its own time."""
    replaced = {s.snapshot_id: s.timestamp_ms for s in table.snapshots()}
    log = table.metadata.snapshot_log
    for entry, successor in zip(log, log[1:], strict=False):
        if entry.snapshot_id != successor.snapshot_id:
            replaced[entry.snapshot_id] = successor.timestamp_ms
    return replaced


def expire_snapshots(lakehouse: IcebergLakehouse, name: str, retain_seconds: int) -> int:
    """Expire the snapshots replaced longer ago than the retention (never the current one); returns how many."""
    table = lakehouse.table(name)
    current = table.current_snapshot()
    if current is None:
        return 0
    cutoff = int((time.time() - retain_seconds) * 1000)
    old = [sid for sid, replaced in _replaced_at(table).items() if replaced < cutoff and sid != current.snapshot_id]
    if old:
        table.maintenance.expire_snapshots().by_ids(old).commit()
    return len(old)


def remove_orphans(lakehouse: IcebergLakehouse, name: str, retain_seconds: int) -> int:
    """Delete files under the table's data and metadata folders that no snapshot references and that
    are older than the retention; returns how many."""
    from pyarrow import fs

    from customer_context.govern.deletion import referenced_files

    table = lakehouse.table(name)
    keep = referenced_files(table)
    keep.add(table.metadata_location)
    # the table's own FileIO knows its storage's endpoint and credentials (catalog properties such as
    # s3.endpoint); a filesystem made from the URI alone would only know the default AWS endpoint
    from pyiceberg.io.pyarrow import PyArrowFileIO

    io = table.io
    if not isinstance(io, PyArrowFileIO):
        raise TypeError(f"{name}: orphan files are listed through pyarrow's file systems, not {type(io).__name__}")
    scheme, netloc, root = io.parse_location(table.location(), io.properties)
    filesystem = io.fs_by_scheme(scheme, netloc)
    cutoff = time.time() - retain_seconds
    removed = 0
    scheme = table.location().split("://", 1)[0] + "://" if "://" in table.location() else ""
    for folder in ("data", "metadata"):
        try:
            infos = filesystem.get_file_info(fs.FileSelector(f"{root}/{folder}", recursive=True))
        except FileNotFoundError:
            continue
        for info in infos:
            if info.type != fs.FileType.File or info.mtime is None or info.mtime.timestamp() > cutoff:
                continue
            uri = scheme + info.path if scheme else info.path
            if uri in keep or info.path in keep or info.path.endswith(".metadata.json"):
                continue  # metadata.json files are the catalog's history: left to the catalog
            filesystem.delete_file(info.path)
            removed += 1
    return removed


def maintain(lakehouse: IcebergLakehouse, *, min_files: int = 10, retain_seconds: int = 7 * 86400,
             progress: Callable[[str], None] | None = None) -> dict[str, dict[str, int]]:
    """Compact, expire and clean every table; returns what was done per table.

    Raises:
        ConfigError: ``retain_seconds`` is below the floor (see the module docstring).
    """
    from customer_context.config import MIN_RETENTION_SECONDS
    from customer_context.errors import ConfigError

    if retain_seconds < MIN_RETENTION_SECONDS:
        raise ConfigError(f"retention: {retain_seconds} seconds is below the floor of {MIN_RETENTION_SECONDS}: "
                          "a commit or read in flight could lose the files it started from")
    report: dict[str, dict[str, int]] = {}
    for name in lakehouse.table_names():
        done = compact(lakehouse, name, min_files)
        done["snapshots_expired"] = expire_snapshots(lakehouse, name, retain_seconds)
        done["orphans_removed"] = remove_orphans(lakehouse, name, retain_seconds)
        report[name] = done
        if progress:
            progress(f"{name}: {done}")
    return report
