"""The build's plan: no work when nothing the documents depend on changed since the last build, a full build
(and why) otherwise; what a build read is committed with its state, never before."""

from __future__ import annotations

from typing import Any

import pytest
from customer_context.assemble import build
from customer_context.assemble.build import BUILD_INPUTS, build_context
from customer_context.govern.maintain import compact
from customer_context.spec import DEFAULT_SPEC, parse_spec
from customer_context.stores.context_store import MemoryContextStore

from tests.helpers.lake import AS_OF, ev, order, write_events
from tests.helpers.served import served

SPEC = parse_spec(DEFAULT_SPEC.read_text())


def _shop(lakehouse: Any, prefix: str = "u", n: int = 4) -> None:
    write_events(lakehouse, [order(f"{prefix}{i}", 3 + i, 10 + i) for i in range(n)]
                 + [ev("identify", 2, userId=f"{prefix}{i}", traits={"email": f"{prefix}{i}@x.io"}) for i in range(n)])


def test_a_build_with_nothing_new_does_no_work(lakehouse: Any) -> None:
    _shop(lakehouse)
    store = MemoryContextStore()
    first = build_context(lakehouse, store, SPEC, as_of=AS_OF)
    assert first.plan["mode"] == "full" and first.plan["reasons"] == ["no earlier build recorded what it read"]
    before = served(store)
    state = lakehouse.table("profile_state").current_snapshot().snapshot_id
    lines: list[str] = []
    again = build_context(lakehouse, store, SPEC, as_of=AS_OF, progress=lines.append)
    # Then it reads nothing, lands nothing, commits nothing, and says so in one line
    assert again.plan["mode"] == "nothing_new", again.plan
    assert list(again.timings_s) == ["plan"] and again.items_written == 0
    assert lines[0].startswith("plan: incremental build: nothing new since the last build (")
    assert lakehouse.table("profile_state").current_snapshot().snapshot_id == state
    assert served(store) == before
    assert (again.events, again.profiles, again.as_of) == (first.events, first.profiles, first.as_of)
    assert again.plan["tables"]["events"] == {"change": "nothing", "reason": again.plan["tables"]["events"]["reason"]}


def test_appended_rows_make_an_incremental_build_that_says_so(lakehouse: Any) -> None:
    _shop(lakehouse)
    store = MemoryContextStore()
    build_context(lakehouse, store, SPEC, as_of=AS_OF)
    _shop(lakehouse, "v", 3)
    report = build_context(lakehouse, store, SPEC, as_of=AS_OF)
    assert report.plan["mode"] == "incremental"
    assert report.plan["reasons"] == ["events gained 6 rows"]
    assert report.plan["tables"]["events"]["added_rows"] == 6
    assert report.plan["touched_profiles"] == 3 and report.changed_profiles == 3
    assert (report.events, report.profiles) == (14, 7)
    assert build_context(lakehouse, store, SPEC, as_of=AS_OF).plan["mode"] == "nothing_new"


def test_a_compaction_forces_nothing(lakehouse: Any) -> None:
    for prefix in "abc":
        _shop(lakehouse, prefix, 2)
    store = MemoryContextStore()
    build_context(lakehouse, store, SPEC, as_of=AS_OF)
    assert compact(lakehouse, "events", min_files=2)["partitions"]
    report = build_context(lakehouse, store, SPEC, as_of=AS_OF)
    assert report.plan["mode"] == "nothing_new", report.plan
    assert report.plan["tables"]["events"]["change"] == "rewrite_same_rows"
    assert "rewritten" in report.plan["reasons"][0]


@pytest.mark.parametrize(("change", "reason"), [
    ("spec", "the spec changed"),
    ("code", "the code changed since the last build"),
    ("full", "--full"),
    ("reland", "asked to land everything again (reland)"),
    ("clock", "the clock moved from"),
    ("deletion", "a deletion job finished since the last build"),
    ("suppression", "identifiers were suppressed since the last build"),
    ("marker", "the serving store has no landing marker"),
    ("lost", "the serving store lost items"),
    ("records", "crm_contacts gained 1 row"),
    ("state", "identity_graph: rows deleted or overwritten"),
])
def test_what_makes_a_full_build(lakehouse: Any, monkeypatch: pytest.MonkeyPatch, change: str, reason: str) -> None:
    _shop(lakehouse)
    store = MemoryContextStore()
    build_context(lakehouse, store, SPEC, as_of=AS_OF)
    spec, kwargs = SPEC, {"as_of": AS_OF}
    if change == "spec":
        spec = parse_spec(DEFAULT_SPEC.read_text().replace("max_bytes: 350000", "max_bytes: 340000"))
        assert spec != SPEC
    elif change == "code":
        monkeypatch.setattr(build, "code_hash", lambda: "another release")
    elif change in ("full", "reland"):
        kwargs[change] = True
    elif change == "clock":
        kwargs["as_of"] = AS_OF.replace(hour=13)
    elif change == "deletion":
        store.bump_deletion_generation()
    elif change == "suppression":
        from customer_context.govern.suppression import suppression_hash

        store.put_suppressions([suppression_hash("k", "user_id", "u1")], "r1", delete=True)
        kwargs["pii_key"] = "k"
    elif change == "marker":
        del store.items[("landing", "marker")]
    elif change == "lost":
        del store.items[next(k for k in store.items if k[1] == "snapshot")]
    elif change == "records":
        from customer_context.assemble.records import load_file

        load_file(lakehouse, SPEC, "imports/crm_contacts/a.csv",
                  b"contact_id,email,full_name,lifecycle_stage,account_manager,updated_at\n"
                  b"c1,u1@x.io,Ada,lead,bo,2026-11-01T00:00:00Z\n")
    elif change == "state":
        lakehouse.update("identity_graph", lambda t: t.delete("identifier_type = 'email'"))
    report = build_context(lakehouse, store, spec, **kwargs)
    assert report.plan["mode"] == "full"
    assert any(r.startswith(reason) for r in report.plan["reasons"]), report.plan["reasons"]
    assert "read" in report.timings_s


def test_without_as_of_the_clock_is_the_newest_events_floored(lakehouse: Any) -> None:
    _shop(lakehouse)
    store = MemoryContextStore()
    first = build_context(lakehouse, store, SPEC)
    again = build_context(lakehouse, store, SPEC)
    assert again.plan["mode"] == "nothing_new", again.plan
    assert again.as_of == first.as_of and again.data_as_of == first.data_as_of


@pytest.mark.parametrize("stage", ["landing", "identity_graph", "profile_state"])
def test_what_was_read_is_committed_with_the_state_so_a_build_killed_before_it_reruns_from_it(
        lakehouse: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, stage: str) -> None:
    _shop(lakehouse)
    store = MemoryContextStore()
    build_context(lakehouse, store, SPEC, as_of=AS_OF)
    recorded = lakehouse.table("profile_state").current_snapshot().summary.additional_properties[BUILD_INPUTS]
    _shop(lakehouse, "v", 2)
    # Given a build killed half-way through landing, or in its commit step (before or after the identity graph)
    overwrite, put = type(lakehouse).overwrite, type(store).put_snapshots

    def killed(self: Any, name: str, *args: Any, **kwargs: Any) -> None:
        if name == stage:
            raise KeyboardInterrupt("killed")
        overwrite(self, name, *args, **kwargs)

    def killed_landing(self: Any, items: Any, *args: Any, **kwargs: Any) -> int:
        put(self, list(items)[:1], *args, **kwargs)
        raise KeyboardInterrupt("killed")

    if stage == "landing":
        monkeypatch.setattr(type(store), "put_snapshots", killed_landing)
    else:
        monkeypatch.setattr(type(lakehouse), "overwrite", killed)
    with pytest.raises(KeyboardInterrupt):
        build_context(lakehouse, store, SPEC, as_of=AS_OF)
    monkeypatch.setattr(type(lakehouse), "overwrite", overwrite)
    monkeypatch.setattr(type(store), "put_snapshots", put)
    # Then the last build's record is still the one in force: the rerun builds on it incrementally, unless the
    # killed build marked its landing or committed some of its state (then in full)
    assert lakehouse.table("profile_state").current_snapshot().summary.additional_properties[BUILD_INPUTS] == recorded
    rerun = build_context(lakehouse, store, SPEC, as_of=AS_OF)
    assert "events gained 4 rows" in rerun.plan["reasons"]
    assert rerun.plan["mode"] == ("incremental" if stage == "landing" else "full")
    assert any(r.startswith("identity_graph:") for r in rerun.plan["reasons"]) == (stage == "profile_state")
    # and serves what an uninterrupted run serves
    from customer_context.config import Settings
    from customer_context.stores.iceberg import Lakehouse

    other = Lakehouse.from_settings(Settings.from_env({"CUSTOMER_CONTEXT_DATA_DIR": str(tmp_path / "ref")}))
    reference = MemoryContextStore()
    _shop(other)
    build_context(other, reference, SPEC, as_of=AS_OF)
    _shop(other, "v", 2)
    build_context(other, reference, SPEC, as_of=AS_OF)
    assert served(store) == served(reference)
    assert build_context(lakehouse, store, SPEC, as_of=AS_OF).plan["mode"] == "nothing_new"
