"""What happened to a table since a build read it, told from the Iceberg snapshots of a real (SQLite
catalog) lakehouse: appends, our compaction, a record table's upsert, a deletion, expiry, a rollback, a
recreated table."""

from __future__ import annotations

from typing import Any

from customer_context.assemble.changes import Change, Observed, classify, observe
from customer_context.assemble.records import load_file
from customer_context.govern.maintain import compact
from customer_context.spec import DEFAULT_SPEC, parse_spec

from tests.helpers.lake import ev, write_events

SPEC = parse_spec(DEFAULT_SPEC.read_text())


def _events(lakehouse: Any, n: int, user: str = "u") -> None:
    write_events(lakehouse, [ev("track", 1 + i % 3, userId=f"{user}{i}", event="Product Viewed") for i in range(n)])


def _now(lakehouse: Any, name: str = "events") -> Observed:
    return observe(lakehouse.table(name) if lakehouse.exists(name) else None)


def test_the_same_snapshot_is_nothing_and_appends_are_counted(lakehouse: Any) -> None:
    _events(lakehouse, 3)
    seen = _now(lakehouse)
    assert classify(lakehouse.table("events"), seen).change is Change.NOTHING
    _events(lakehouse, 2)
    _events(lakehouse, 5)
    change = classify(lakehouse.table("events"), seen)
    assert (change.change, change.added_rows) == (Change.APPEND_ONLY, 7)
    assert "7 rows" in change.reason


def test_a_table_absent_then_appended_counts_every_row(lakehouse: Any) -> None:
    seen = _now(lakehouse)
    assert seen == Observed(None, None)
    assert classify(None, seen).change is Change.NOTHING
    _events(lakehouse, 4)
    change = classify(lakehouse.table("events"), seen)
    assert (change.change, change.added_rows) == (Change.APPEND_ONLY, 4)


def test_our_compaction_rewrites_the_same_rows(lakehouse: Any) -> None:
    for _ in range(3):
        _events(lakehouse, 3)
    seen = _now(lakehouse)
    done = compact(lakehouse, "events", min_files=2)
    assert done["partitions"] >= 1
    change = classify(lakehouse.table("events"), seen)
    assert change.change is Change.REWRITE_SAME_ROWS, change
    # an append after the compaction is still just an append
    _events(lakehouse, 2)
    change = classify(lakehouse.table("events"), seen)
    assert (change.change, change.added_rows) == (Change.APPEND_ONLY, 2)


def test_a_replace_with_equal_counts_rewrites_and_a_deletion_changes(lakehouse: Any) -> None:
    _events(lakehouse, 4)
    seen = _now(lakehouse)
    table = lakehouse.table("events")
    # an Iceberg replace (what other engines' compaction commits) is told by its counts
    from pyiceberg.table.snapshots import Operation, Summary

    class Replaced:
        def __init__(self, snapshot: Any, added: int, deleted: int) -> None:
            self.snapshot_id, self.parent_snapshot_id = snapshot.snapshot_id + 1, snapshot.snapshot_id
            self.summary = Summary(Operation.REPLACE, **{"added-records": str(added), "deleted-records": str(deleted)})

    class Metadata:
        def __init__(self, uuid: Any) -> None:
            self.table_uuid = uuid

    class Replacing:
        def __init__(self, added: int, deleted: int) -> None:
            self.metadata = Metadata(table.metadata.table_uuid)
            self.head = Replaced(table.current_snapshot(), added, deleted)

        def current_snapshot(self) -> Any:
            return self.head

        def snapshots(self) -> list[Any]:
            return [*table.snapshots(), self.head]

    assert classify(Replacing(4, 4), seen).change is Change.REWRITE_SAME_ROWS
    assert classify(Replacing(4, 3), seen).change is Change.CHANGED
    # a deletion (what a regulation's clean-up commits) changes rows
    lakehouse.update("events", lambda t: t.delete("user_id = 'u1'"))
    change = classify(lakehouse.table("events"), seen)
    assert change.change is Change.CHANGED and "deleted" in change.reason


def test_a_record_tables_upsert_changes_it(lakehouse: Any) -> None:
    csv = b"contact_id,email,full_name,lifecycle_stage,account_manager,updated_at\n" \
          b"c1,a@x.io,Ada,lead,bo,2026-11-01T00:00:00Z\n"
    load_file(lakehouse, SPEC, "imports/crm_contacts/a.csv", csv)
    seen = _now(lakehouse, "crm_contacts")
    again = csv.replace(b"lead", b"customer").replace(b"11-01", b"11-02")
    load_file(lakehouse, SPEC, "imports/crm_contacts/b.csv", again)
    change = classify(lakehouse.table("crm_contacts"), seen)
    assert change.change is Change.CHANGED, change


def test_an_expired_recorded_snapshot_is_unknown_unless_the_chain_reaches_the_tables_first(lakehouse: Any) -> None:
    _events(lakehouse, 1)
    first = _now(lakehouse)
    _events(lakehouse, 1)
    seen = _now(lakehouse)
    _events(lakehouse, 2)
    _events(lakehouse, 3)
    # nothing was recorded as current (an empty table): a chain back to the table's first snapshot counts every row
    assert classify(lakehouse.table("events"), Observed(first.uuid, None)).added_rows == 7
    # the recorded snapshot expired: the oldest kept one after it is not the table's first
    lakehouse.table("events").maintenance.expire_snapshots().by_ids([seen.snapshot]).commit()
    table = lakehouse.table("events")
    assert first.snapshot in {s.snapshot_id for s in table.snapshots()}
    change = classify(table, seen)
    assert change.change is Change.UNKNOWN and "expired" in change.reason, change
    # and counting from an empty table cannot reach the first snapshot either
    assert classify(table, Observed(first.uuid, None)).change is Change.UNKNOWN


def test_a_rollback_a_recreated_table_and_nothing_recorded_are_unknown(lakehouse: Any) -> None:
    _events(lakehouse, 2)
    before = _now(lakehouse)
    _events(lakehouse, 2)
    seen = _now(lakehouse)
    table = lakehouse.table("events")
    table.manage_snapshots().rollback_to_snapshot(before.snapshot).commit()
    _events(lakehouse, 1)  # history goes on from the rolled-back snapshot
    change = classify(lakehouse.table("events"), seen)
    assert change.change is Change.UNKNOWN and "ancestor" in change.reason, change

    assert classify(lakehouse.table("events"), None).change is Change.UNKNOWN
    lakehouse.catalog.drop_table((lakehouse.namespace, "events"))
    lakehouse._tables.clear()
    assert classify(None, seen).change is Change.UNKNOWN
    _events(lakehouse, 2)
    change = classify(lakehouse.table("events"), seen)
    assert change.change is Change.UNKNOWN and "recreated" in change.reason, change
