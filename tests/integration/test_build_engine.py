"""The build computes only through its engine (assemble/engine.py's BuildEngine) and lands only through its
lander: an engine that wraps DuckDBEngine and records what it is asked lands the same documents, asked in the
stages' order."""

from __future__ import annotations

import json
from typing import Any

from customer_context.assemble.build import build_context
from customer_context.assemble.duckdb_engine import DuckDBEngine
from customer_context.assemble.engine import BuildEngine
from customer_context.spec import DEFAULT_SPEC, parse_spec
from customer_context.stores.context_store import MemoryContextStore

from tests.helpers.lake import AS_OF, ev, write_events

SPEC = parse_spec(DEFAULT_SPEC.read_text())
# one slice: each stage's calls, in order
STAGES = [
    ["load_events", "load_records"],  # read
    ["identity_inputs", "assign_profiles", "attribute_rows"],  # identity
    ["compute_traits"],  # traits
    ["purchase_summary", "store_scores"],  # scores
    ["load_previous", "render_slice", "slice_documents", "drop_slice", "changed_profiles"],  # snapshots
    ["moved_aliases", "orphan_aliases", "merged_profiles"],  # landing
    ["profile_state"],  # commit
    ["close"],
]


class RecordingEngine:
    """DuckDBEngine, noting each method asked for (only the BuildEngine protocol's are reachable)."""

    def __init__(self, memory_limit: str | None) -> None:
        self.inner: BuildEngine = DuckDBEngine(memory_limit)
        asked.clear()

    def __getattr__(self, name: str) -> Any:
        assert name in BuildEngine.__dict__, f"the build asked the engine for {name}, not in BuildEngine"
        asked.append(name)
        return getattr(self.inner, name)


asked: list[str] = []


def _docs(store: MemoryContextStore) -> dict[str, Any]:
    return {i["profile_id"]: {n: v for n, v in json.loads(i["doc"]).items() if n != "built_at"}
            for k, i in store.items.items() if k[1] == "snapshot"}


def test_a_build_goes_through_the_engine_in_stage_order(lakehouse: Any, tmp_path: Any) -> None:
    write_events(lakehouse, [
        ev("identify", 9, userId="u1", anonymousId="a1", traits={"email": "u1@x.io"}),
        ev("track", 8, userId="u1", event="Order Completed", properties={"revenue": 10}),
        ev("page", 7, anonymousId="a2", name="Home"),
    ])
    recorded = MemoryContextStore()
    report = build_context(lakehouse, recorded, SPEC, as_of=AS_OF, engine_type=RecordingEngine)
    assert asked == [call for stage in STAGES for call in stage]
    assert report.changed_profiles == report.profiles == 2
    # the same documents as the default engine lands (into another store, from the state before the first)
    from customer_context.config import Settings
    from customer_context.stores.iceberg import Lakehouse

    other = Lakehouse.from_settings(Settings.from_env({"CUSTOMER_CONTEXT_DATA_DIR": str(tmp_path / "other")}))
    write_events(other, [
        ev("identify", 9, userId="u1", anonymousId="a1", traits={"email": "u1@x.io"}),
        ev("track", 8, userId="u1", event="Order Completed", properties={"revenue": 10}),
        ev("page", 7, anonymousId="a2", name="Home"),
    ])
    plain = MemoryContextStore()
    build_context(other, plain, SPEC, as_of=AS_OF)
    assert sorted(map(json.dumps, _docs(recorded).values())) == sorted(map(json.dumps, _docs(plain).values()))
