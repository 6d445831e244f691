"""What happened to a table since a build read it, told from its Iceberg snapshots' summaries.

A build records, per table it reads, the table's id (``table_uuid``) and the snapshot that was current
when it started (:func:`observe`); the next build walks the table's snapshots from the current one back
to that one and classifies what lies between (:func:`classify`):

* ``nothing`` — the same snapshot (or only commits that added no rows);
* ``append_only`` — only appends (``added-records`` counted);
* ``rewrite_same_rows`` — files rewritten with the same rows: an Iceberg ``replace`` whose added and
  deleted record counts are equal, or a run of our own compaction's commits (``writer`` =
  ``maintain:compact``: a delete and an append of the same rows, one transaction) that nets to zero;
* ``changed`` — rows deleted or overwritten (a deletion job, a record table's upsert, an overwrite);
* ``unknown`` — what cannot be told: nothing recorded, the table recreated (another ``table_uuid``),
  the recorded snapshot not an ancestor of the current one (a rollback), or the snapshots in between
  expired (the chain back breaks before reaching it), or a summary that does not say.

Expiring a snapshot clears its child's parent id, so a chain that ends (no parent) at a snapshot that is
not the table's first (sequence number 1) was cut by expiry: what happened there is ``unknown``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from customer_context.ports import JsonObject, JsonValue

if TYPE_CHECKING:
    from pyiceberg.table import Table
    from pyiceberg.table.snapshots import Snapshot, Summary

# Our compaction's commits (govern/maintain.py) carry this ``writer`` summary property.
COMPACTION_WRITER = "maintain:compact"


class Change(enum.StrEnum):
    """What happened to a table since a build read it."""

    NOTHING = "nothing"
    APPEND_ONLY = "append_only"
    REWRITE_SAME_ROWS = "rewrite_same_rows"
    CHANGED = "changed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Observed:
    """A table as a build found it: its id and current snapshot (``None``: no such table, or no snapshot)."""

    uuid: str | None
    snapshot: int | None

    def to_dict(self) -> JsonObject:
        """JSON-ready."""
        return {"uuid": self.uuid, "snapshot": self.snapshot}

    @classmethod
    def from_dict(cls, data: JsonValue) -> Observed | None:
        """What :meth:`to_dict` wrote; ``None`` when it is not that."""
        if not isinstance(data, dict):
            return None
        uuid, snapshot = data.get("uuid"), data.get("snapshot")
        if (uuid is not None and not isinstance(uuid, str)) or (snapshot is not None and not isinstance(snapshot, int)):
            return None
        return cls(uuid, snapshot)


@dataclass(frozen=True)
class TableChange:
    """A table's change since the recorded snapshot, with a one-line reason."""

    change: Change
    reason: str
    added_rows: int = 0

    @property
    def unchanged_rows(self) -> bool:
        """Whether the table holds the same rows as when it was recorded (nothing, or a rewrite of the same rows)."""
        return self.change in (Change.NOTHING, Change.REWRITE_SAME_ROWS)

    def to_dict(self) -> JsonObject:
        """JSON-ready."""
        return {"change": self.change.value, "reason": self.reason,
                **({"added_rows": self.added_rows} if self.change is Change.APPEND_ONLY else {})}


def observe(table: Table | None) -> Observed:
    """``table`` (a pyiceberg table with current metadata, or ``None`` when it does not exist) as it is now."""
    if table is None:
        return Observed(None, None)
    snapshot = table.current_snapshot()
    return Observed(str(table.metadata.table_uuid), snapshot.snapshot_id if snapshot is not None else None)


def _count(summary: Summary | None, key: str) -> int | None:
    value = summary.additional_properties.get(key) if summary is not None else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def classify(table: Table | None, recorded: Observed | None) -> TableChange:
    """What happened to ``table`` (a pyiceberg table, ``None`` when it does not exist) since ``recorded``
    (``None``: nothing was recorded)."""
    if recorded is None:
        return TableChange(Change.UNKNOWN, "no snapshot recorded by the last build")
    now = observe(table)
    if now.snapshot is None:
        if recorded.snapshot is None:
            return TableChange(Change.NOTHING, "empty then and now")
        return TableChange(Change.UNKNOWN, "the table is gone or empty now" if now.uuid is None or now.uuid
                           == recorded.uuid else "the table was recreated")
    if recorded.uuid is not None and now.uuid != recorded.uuid:
        return TableChange(Change.UNKNOWN, "the table was recreated (another table uuid)")
    if now.snapshot == recorded.snapshot:
        return TableChange(Change.NOTHING, f"still at snapshot {now.snapshot}")
    # the snapshots since the recorded one, newest first, following parent ids from the current one
    assert table is not None
    by_id = {s.snapshot_id: s for s in table.snapshots()}
    chain: list[Any] = []
    sid: int | None = now.snapshot
    while sid is None or sid != recorded.snapshot:
        if sid is None:
            # the chain ends: at the table's first snapshot, or where expiry cut it (expiring a snapshot clears
            # its child's parent id)
            if recorded.snapshot is not None and recorded.snapshot in by_id:
                return TableChange(Change.UNKNOWN, f"snapshot {recorded.snapshot} is not an ancestor of the current "
                                                   "one (rolled back?)")
            if not chain or not _first(chain[-1]):
                return TableChange(Change.UNKNOWN, "snapshots since the recorded one were expired (the oldest kept "
                                                   "is not the table's first): what changed cannot be told")
            if recorded.snapshot is not None:
                return TableChange(Change.UNKNOWN, f"snapshot {recorded.snapshot} is not in the table's history")
            break  # nothing was recorded as current (empty table): every snapshot is new
        snapshot = by_id.get(sid)
        if snapshot is None:
            return TableChange(Change.UNKNOWN, f"snapshots since {recorded.snapshot} were expired (snapshot {sid} "
                                               "is gone): what changed cannot be told")
        chain.append(snapshot)
        sid = snapshot.parent_snapshot_id
    return _summarise(list(reversed(chain)))


def _summarise(snapshots: list[Snapshot]) -> TableChange:
    """The change made by ``snapshots`` (oldest first)."""
    added = 0
    rewritten = 0
    i = 0
    while i < len(snapshots):
        snapshot = snapshots[i]
        summary = snapshot.summary
        if summary is None:
            return TableChange(Change.UNKNOWN, f"snapshot {snapshot.snapshot_id} has no summary")
        operation = str(getattr(summary.operation, "value", summary.operation))
        if summary.additional_properties.get("writer") == COMPACTION_WRITER:
            # one compaction's delete and append (and the next ones') are consecutive: they must net to zero rows
            run = [snapshot]
            while i + len(run) < len(snapshots) and _writer(snapshots[i + len(run)]) == COMPACTION_WRITER:
                run.append(snapshots[i + len(run)])
            plus = [_count(s.summary, "added-records") or 0 for s in run]
            minus = [_count(s.summary, "deleted-records") or 0 for s in run]
            if sum(plus) != sum(minus):
                return TableChange(Change.CHANGED, f"a compaction changed the row count (+{sum(plus):,} "
                                                   f"-{sum(minus):,} rows)")
            rewritten += sum(plus)
            i += len(run)
            continue
        gained, lost = _count(summary, "added-records"), _count(summary, "deleted-records") or 0
        if operation == "append":
            if lost:
                return TableChange(Change.CHANGED,
                                   f"an append deleted {lost:,} rows (snapshot {snapshot.snapshot_id})")
            if gained is None:
                return TableChange(Change.UNKNOWN, f"append {snapshot.snapshot_id} does not say how many rows it added")
            added += gained
        elif operation == "replace":
            if gained is None or gained != lost:
                return TableChange(Change.CHANGED, f"a replace changed the row count (+{gained or 0:,} -{lost:,} rows)")
            rewritten += gained
        elif operation in ("delete", "overwrite"):
            return TableChange(Change.CHANGED, f"rows deleted or overwritten ({operation}: +{gained or 0:,} "
                                               f"-{lost:,} rows, snapshot {snapshot.snapshot_id})")
        else:
            return TableChange(Change.UNKNOWN, f"operation {operation!r} of snapshot {snapshot.snapshot_id}")
        i += 1
    if added:
        return TableChange(Change.APPEND_ONLY, f"gained {added:,} row{'s' if added != 1 else ''}", added)
    if rewritten:
        return TableChange(Change.REWRITE_SAME_ROWS, f"files rewritten, the same {rewritten:,} rows")
    return TableChange(Change.NOTHING, f"{len(snapshots)} commits that added no rows")


def _first(snapshot: Any) -> bool:
    """Whether ``snapshot`` is its table's first: the first commit of a format v2 table has sequence number 1
    (a v1 table's snapshots have none, so this cannot be told there)."""
    return snapshot.parent_snapshot_id is None and getattr(snapshot, "sequence_number", None) == 1


def _writer(snapshot: Any) -> str | None:
    return snapshot.summary.additional_properties.get("writer") if snapshot.summary is not None else None
