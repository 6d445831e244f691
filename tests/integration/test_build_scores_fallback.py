"""A score model the data cannot fit never stops a build: the last good parameters are kept, else the
scores are left empty, with the reason in the build report."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from customer_context.assemble.build import build_context
from customer_context.spec import DEFAULT_SPEC, parse_spec
from customer_context.stores.context_store import MemoryContextStore

from tests.helpers.lake import AS_OF, ev, write_events

SPEC = parse_spec(DEFAULT_SPEC.read_text())


def _order(customer: str, days_ago: float, revenue: float) -> dict[str, Any]:
    return ev("track", days_ago, userId=customer, event="Order Completed", properties={"revenue": revenue})


# (first purchase, days ago; recency in days; repeat purchases) of a shop three days old where most customers
# bought the same way: BG/NBD's optimiser converges from none of its starting points on these histories
YOUNG_SHOP = [(3, 2, 2), (1, 1, 1), (1, 1, 1), (1, 1, 1), (1, 0, 0), (3, 3, 2), (3, 0, 0), (2, 0, 0), (1, 1, 1),
              (1, 1, 1), (1, 0, 0), (2, 0, 0), (2, 0, 0), (2, 0, 0), (1, 1, 1), (1, 1, 1), (3, 2, 1), (3, 0, 0),
              (1, 0, 0), (1, 0, 0), (2, 2, 1), (2, 1, 1), (3, 0, 0), (2, 0, 0), (2, 2, 1), (2, 1, 1), (2, 1, 1),
              (2, 0, 0), (1, 0, 0), (3, 2, 2), (3, 2, 1), (3, 2, 2), (3, 3, 2), (1, 1, 1), (1, 0, 0)]


def _young_shop(lakehouse: Any, prefix: str = "y", days: float = 0.0) -> None:
    """The histories of YOUNG_SHOP as orders (``days`` later than AS_OF when negative)."""
    orders = []
    for n, (first, recency, repeats) in enumerate(YOUNG_SHOP):
        between = list(range(first - 1, first - recency, -1))[:max(repeats - 1, 0)]
        days_ago = [first, *between, first - recency] if repeats else [first]
        orders += [_order(f"{prefix}{n}", d + days, 20) for d in days_ago]
    write_events(lakehouse, orders)


def _scores(store: MemoryContextStore) -> list[dict[str, Any]]:
    return [json.loads(i["doc"])["scores"] for k, i in store.items.items() if k[1] == "snapshot"]


def test_a_fit_that_does_not_converge_leaves_scores_empty_and_the_build_serves(lakehouse: Any) -> None:
    # Given a young shop's purchase histories and no parameters fitted before
    _young_shop(lakehouse)
    store = MemoryContextStore()
    # When the build runs
    report = build_context(lakehouse, store, SPEC, as_of=AS_OF)
    # Then it completes and serves every customer, with empty scores and the reason in the report
    assert "did not converge" in report.scores["skipped"] and report.scores["refitted"] is False
    served = _scores(store)
    assert len(served) == len(YOUNG_SHOP)
    assert all(s["churn_risk"] is None and s["ltv_365d"] is None for s in served)
    assert not lakehouse.exists("score_models") or lakehouse.scan("score_models").num_rows == 0


def test_a_fit_that_does_not_converge_keeps_the_last_good_parameters(lakehouse: Any, monkeypatch: Any) -> None:
    from customer_context.assemble import build

    # Given parameters fitted on an established shop (repeat buyers at different paces, spend that varies) …
    orders = []
    for n in range(40):
        first = 300 - n * 5
        orders += [_order(f"old{n}", first - k * (3 + n % 7), 10 + (n * 7 + k * 3) % 40) for k in range(1 + n % 4)]
    write_events(lakehouse, orders)
    store = MemoryContextStore()
    first = build_context(lakehouse, store, SPEC, as_of=AS_OF)
    assert first.scores["refitted"] is True and "r" in first.scores["bgnbd"] and "p" in first.scores["gamma_gamma"]
    # … and, past refit_every, new data the optimiser cannot fit on (patched: a fit that fails as the young shop's)
    from customer_context.assemble import scores

    def fails(*args: Any, **kwargs: Any) -> Any:
        raise scores.ScoreFitError("BG/NBD: the optimizer did not converge from any starting point")

    monkeypatch.setattr(scores, "fit_bgnbd", fails)
    monkeypatch.setattr(scores, "fit_gamma_gamma", lambda *a, **k: (_ for _ in ()).throw(
        scores.ScoreFitError("monetary_value is 20 for every repeat buyer")))
    from datetime import UTC, datetime

    monkeypatch.setattr(build, "datetime", _Clock(datetime.now(UTC) + timedelta(days=2)))  # past refit_every (1d)
    _young_shop(lakehouse, days=-2)
    # When the next build runs
    report = build_context(lakehouse, store, SPEC, as_of=AS_OF + timedelta(days=2))
    # Then it completes with the last good parameters, and says so
    assert report.scores["bgnbd"] == first.scores["bgnbd"]
    assert report.scores["gamma_gamma"] == first.scores["gamma_gamma"]
    assert "kept the parameters fitted at" in report.scores["bgnbd_not_refitted"]
    assert "kept the parameters fitted at" in report.scores["gamma_gamma_not_refitted"]
    assert report.scores["refitted"] is False
    young = [s for s in _scores(store) if s["repeat_purchases"] == 1]
    assert young and all(isinstance(s["churn_risk"], float) and isinstance(s["ltv_365d"], float) for s in young)


class _Clock:
    """``datetime`` as the build module sees it, with ``now`` fixed (the build's refit_every clock)."""

    def __init__(self, now: Any) -> None:
        import datetime as real

        self._real, self._now = real.datetime, now

    def now(self, tz: Any = None) -> Any:
        return self._now

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)
