"""A build that fails half-way through landing leaves the served state consistent, and the next
run converges to what an uninterrupted build lands."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from customer_context.assemble.build import build_context
from customer_context.spec import DEFAULT_SPEC, parse_spec
from customer_context.stores.context_store import MemoryContextStore, Refused, SnapshotItem

from tests.helpers.lake import AS_OF, ev, write_events

SPEC = parse_spec(DEFAULT_SPEC.read_text())


class FlakyStore(MemoryContextStore):
    """Dies after writing ``budget`` snapshot items, like a Lambda timing out mid-landing."""

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget = budget

    def put_snapshots(self, items: Iterable[SnapshotItem], refused: list[Refused] | None = None) -> int:
        n = 0
        for item in items:
            if self.budget <= 0:
                raise TimeoutError("landing interrupted")
            self.budget -= 1
            n += super().put_snapshots([item], refused)
        return n


def _content(store: MemoryContextStore) -> dict[Any, Any]:
    # the build times (built_at; changed_at, when each field last changed), and the landing marker's generation
    # (a new id per build), differ between the two runs
    return {key: {k: v for k, v in item.items() if k not in ("built_at", "changed_at", "doc", "generation")} | (
        {"hash": item["content_hash"]} if "content_hash" in item else {})
        for key, item in store.items.items()}


def test_interrupted_landing_converges_on_rerun(lakehouse: Any, tmp_path: Any) -> None:
    write_events(lakehouse, [ev("track", d, event="Order Completed", userId=f"u{d}", properties={"revenue": d})
                             for d in range(1, 8)])
    # Given a build that dies after landing 3 of 7 snapshots
    flaky = FlakyStore(budget=3)
    with pytest.raises(TimeoutError):
        build_context(lakehouse, flaky, SPEC, as_of=AS_OF)
    # Then what is served is a consistent subset (whole items, nothing half-written)
    assert sum(1 for k in flaky.items if k[1] == "snapshot") == 3
    # When the next scheduled run lands into the same store
    flaky.budget = 10**6
    report = build_context(lakehouse, flaky, SPEC, as_of=AS_OF)
    # Then it lands everything, and the store equals the one an uninterrupted build produces
    reference = MemoryContextStore()
    from customer_context.config import Settings
    from customer_context.stores.iceberg import Lakehouse

    other = Lakehouse.from_settings(Settings.from_env({"CUSTOMER_CONTEXT_DATA_DIR": str(tmp_path / "ref")}))
    write_events(other, [ev("track", d, event="Order Completed", userId=f"u{d}", properties={"revenue": d},
                            messageId=f"ref{d}") for d in range(1, 8)])
    build_context(other, reference, SPEC, as_of=AS_OF)
    assert report.changed_profiles == 7
    assert _content(flaky) == _content(reference)
