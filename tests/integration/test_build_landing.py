"""Landing against what the serving store really holds: a store that lost items is landed again, a dry
run changes nothing anywhere, and what the store cannot hold is quarantined while the rest lands."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from customer_context.assemble.build import build_context
from customer_context.assemble.records import load_file
from customer_context.spec import DEFAULT_SPEC, parse_spec
from customer_context.stores.context_store import DynamoContextStore, MemoryContextStore

from tests.helpers.lake import AS_OF, ev, write_events

SPEC = parse_spec(DEFAULT_SPEC.read_text())


def _lake(lakehouse: Any) -> None:
    write_events(lakehouse, [
        ev("identify", 9, userId="u1", anonymousId="a1", traits={"email": "ann@x.io"}),
        ev("track", 8, userId="u1", event="Order Completed", properties={"revenue": 10}),
        ev("identify", 7, userId="u2", anonymousId="a2", traits={"email": "bob@x.io"}),
        ev("page", 6, anonymousId="a3", name="Pricing"),
    ])


def _served(store: MemoryContextStore) -> dict[tuple[str, str], dict[str, Any]]:
    """Every snapshot and alias item (not the marker, consumers …)."""
    return {k: v for k, v in store.items.items() if k[1] in ("snapshot", "alias")}


def test_a_store_that_lost_everything_gets_every_snapshot_and_alias_again(lakehouse: Any) -> None:
    _lake(lakehouse)
    first_store = MemoryContextStore()
    first = build_context(lakehouse, first_store, SPEC, as_of=AS_OF)
    assert first.relanded is None and first.changed_profiles == 3
    # Given the serving store was emptied (a restarted local stack, a recreated table)
    store = MemoryContextStore()
    # When the next build runs with no new data
    second = build_context(lakehouse, store, SPEC, as_of=AS_OF)
    # Then it says why, and lands everything the first one did, with the same versions and contents
    assert second.relanded and "no landing marker" in second.relanded
    assert second.changed_profiles == 0
    assert set(_served(store)) == set(_served(first_store))
    for key, item in _served(first_store).items():
        again = store.items[key]
        assert {k: v for k, v in again.items() if k not in ("built_at", "doc")} == {
            k: v for k, v in item.items() if k not in ("built_at", "doc")}
    # And the history holds each version once (what landed again unchanged is not repeated)
    assert lakehouse.scan("context_snapshots").num_rows == 3
    # And a third build finds the store in step: nothing written
    third = build_context(lakehouse, store, SPEC, as_of=AS_OF)
    assert third.relanded is None and third.items_written == 0


def test_a_store_that_lost_items_behind_an_intact_marker_is_found_by_the_sample(lakehouse: Any) -> None:
    _lake(lakehouse)
    store = MemoryContextStore()
    build_context(lakehouse, store, SPEC, as_of=AS_OF)
    # Given the snapshot items are gone but the marker is still there (items deleted by hand, a partial restore)
    for key in [k for k in store.items if k[1] == "snapshot"]:
        del store.items[key]
    # When the next build runs
    report = build_context(lakehouse, store, SPEC, as_of=AS_OF)
    # Then the sampled check sees it and everything lands again
    assert report.relanded and "lost items" in report.relanded
    assert sum(1 for k in store.items if k[1] == "snapshot") == 3


def test_reland_forces_everything_and_a_store_in_step_gets_nothing(lakehouse: Any) -> None:
    _lake(lakehouse)
    store = MemoryContextStore()
    build_context(lakehouse, store, SPEC, as_of=AS_OF)
    assert build_context(lakehouse, store, SPEC, as_of=AS_OF).items_written == 0
    forced = build_context(lakehouse, store, SPEC, as_of=AS_OF, reland=True)
    assert forced.relanded == "asked for (reland)" and forced.items_written == len(_served(store))


def _fingerprint(data_dir: Path) -> dict[str, Any]:
    """Every file of the warehouse (path → SHA-256) and every row of the SQLite catalog."""
    files = {str(p.relative_to(data_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(data_dir.rglob("*")) if p.is_file() and p.name != "catalog.db"}
    with sqlite3.connect(data_dir / "catalog.db") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        rows = {t: sorted(db.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables}
    return {"files": files, "catalog": rows}


def test_a_dry_run_changes_no_table_and_no_store_item(lakehouse: Any, tmp_path: Path) -> None:
    _lake(lakehouse)
    store = MemoryContextStore()
    build_context(lakehouse, store, SPEC, as_of=AS_OF)
    # Given a CRM row loaded after the last build, for a customer already served
    load_file(lakehouse, SPEC, "imports/crm_contacts/crm.csv",
              b"contact_id,email,full_name,lifecycle_stage,account_manager,updated_at\n"
              b"C-1,ann@x.io,Ann,vip,Tom,2026-11-20T00:00:00Z\n")
    data_dir = tmp_path / "data"
    before, items_before = _fingerprint(data_dir), repr(sorted(store.items.items()))
    # When a dry run builds (landing into the store it is given, as the CLI gives an in-memory one)
    dry_store = MemoryContextStore()
    dry = build_context(lakehouse, dry_store, SPEC, as_of=AS_OF, commit=False)
    # Then it saw the change …
    assert dry.dry_run and dry.changed_profiles == 1
    # … and no file, catalog row or served item changed
    assert _fingerprint(data_dir) == before
    assert repr(sorted(store.items.items())) == items_before
    assert dry_store.get_landing_marker() is None
    # And the next real build lands the CRM row
    real = build_context(lakehouse, store, SPEC, as_of=AS_OF)
    assert real.changed_profiles == 1 and real.relanded is None
    doc = json.loads(store.get_snapshot(store.resolve("email", "ann@x.io"))["doc"])
    assert doc["records"]["crm_contacts"]["lifecycle_stage"] == "vip"


def test_an_identifier_the_store_cannot_hold_is_quarantined_and_everything_else_lands(lakehouse: Any) -> None:
    # Given an identify whose email trait (an identifier the spec reads from traits) is 1,024 characters and
    # 3,072 bytes: collect accepts any trait, and the store's keys are at most 2,048 bytes
    long_id = "€" * 1020 + "@x.io"
    _lake(lakehouse)
    write_events(lakehouse, [ev("identify", 5, userId="u9", anonymousId="a9", traits={"email": long_id})])
    store = MemoryContextStore()
    # When the build lands
    report = build_context(lakehouse, store, SPEC, as_of=AS_OF)
    # Then the alias it cannot hold is reported (type and profile, never the value) and everything else lands
    assert len(report.quarantined) == 1
    [refused] = report.quarantined
    assert refused["kind"] == "alias" and refused["identifier_type"] == "email"
    assert "3,074 bytes" in refused["reason"] and "2,048" in refused["reason"]
    assert long_id not in json.dumps(report.to_dict(), ensure_ascii=False)
    profile = store.resolve("user_id", "u9")
    assert profile == store.resolve("anonymous_id", "a9") and store.get_snapshot(profile) is not None
    assert store.resolve("email", "ann@x.io") is not None and sum(1 for k in store.items if k[1] == "snapshot") == 4
    # And the next build neither fails nor lands everything again over it
    again = build_context(lakehouse, store, SPEC, as_of=AS_OF)
    assert again.relanded is None and again.items_written == 0


def test_dynamodb_lands_the_batch_around_an_item_it_cannot_hold(aws: str) -> None:
    import boto3
    from customer_context.stores.context_store import Refused
    from customer_context_devtools.local.template import resource_properties

    props = resource_properties("ContextTable")
    boto3.client("dynamodb").create_table(TableName="ctx-limits", KeySchema=props["KeySchema"],
                                          AttributeDefinitions=props["AttributeDefinitions"],
                                          BillingMode="PAY_PER_REQUEST")
    store = DynamoContextStore(boto3.resource("dynamodb").Table("ctx-limits"))
    # Given 25 aliases — one BatchWriteItem — one of whose keys is over DynamoDB's 2,048 bytes
    aliases = [("user_id", f"u{n}", "p1") for n in range(24)] + [("user_id", "€" * 1024, "p2")]
    refused: list[Refused] = []
    # When they are written
    written = store.put_aliases(aliases, refused)
    # Then the 24 others land and the one is handed back with the reason
    assert written == 24 and [r.profile_id for r in refused] == ["p2"]
    assert store.resolve_many([(t, v) for t, v, _ in aliases[:24]]) == {(t, v): p for t, v, p in aliases[:24]}
    # And lookups and deletes of a key no item can have answer "not found" instead of failing
    assert store.resolve("user_id", "€" * 1024) is None
    assert store.delete_aliases([("user_id", "€" * 1024)]) == 0
    # Without a list to hand it back to, the store refuses with a reason
    from customer_context.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="2,048"):
        store.put_aliases([("user_id", "€" * 1024, "p2")])


def test_a_state_with_many_rows_per_profile_heals_and_full_recomputes(lakehouse: Any) -> None:
    import pyarrow as pa

    _lake(lakehouse)
    store = MemoryContextStore()
    build_context(lakehouse, store, SPEC, as_of=AS_OF)
    # Given the state an unchecked sql trait used to leave: every profile's row many times over
    state = lakehouse.scan("profile_state")
    lakehouse.overwrite("profile_state", pa.concat_tables([state] * 50))
    # When the next build runs, it reads each profile once and changes nothing
    again = build_context(lakehouse, store, SPEC, as_of=AS_OF)
    assert again.changed_profiles == 0 and again.items_written == 0
    assert lakehouse.scan("profile_state").num_rows == 3
    # And a full build lands everything again (same versions: nothing changed)
    full = build_context(lakehouse, store, SPEC, as_of=AS_OF, full=True)
    assert full.relanded == "a full build" and full.items_written == len(_served(store))
    assert sorted(r["version"] for r in lakehouse.scan("profile_state").to_pylist()) == [1, 1, 1]
