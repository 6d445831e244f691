"""Property test: one bad customer never changes another customer's traits or scores.

Builds of the same shop with and without one more customer whose purchases carry arbitrary invalid inputs
(revenues that are no positive number, currencies without a rate, times never trusted) give every other customer
exactly the same traits and scores; the bad customer's own scores are null.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from customer_context.assemble.build import build_context
from customer_context.config import Settings
from customer_context.spec import DEFAULT_SPEC, parse_spec
from customer_context.stores.context_store import MemoryContextStore
from customer_context.stores.iceberg import Lakehouse
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.helpers.lake import AS_OF, established_shop, ev, order, write_events

SPEC = parse_spec(DEFAULT_SPEC.read_text())
# builds are real (a lakehouse and DuckDB each): few examples, always the same ones
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

Documents = dict[str, dict[str, Any]]


def _build(folder: Path, events: list[dict[str, Any]]) -> Documents:
    """Each customer's traits and scores after a build of ``events`` in a new lakehouse under ``folder``."""
    lakehouse = Lakehouse.from_settings(Settings.from_env({"CUSTOMER_CONTEXT_DATA_DIR": str(folder)}))
    write_events(lakehouse, events)
    store = MemoryContextStore()
    build_context(lakehouse, store, SPEC, as_of=AS_OF)
    docs = [json.loads(i["doc"]) for k, i in store.items.items() if k[1] == "snapshot"]
    return {d["profile"]["identifiers"]["user_id"][0]: {"traits": d["traits"], "scores": d["scores"]} for d in docs}


def _shop() -> list[dict[str, Any]]:
    views = [ev("track", 3 + n % 20, userId=f"old{n}", event="Product Viewed", properties={"category": c})
             for n in range(40) for c in ("Toys", "Home")[: 1 + n % 2]]
    return [*established_shop(), *views]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Documents:
    return _build(tmp_path_factory.mktemp("baseline"), _shop())


BAD_REVENUES = [-30, 0, None, "1,234.50", "NaN", "Infinity", "", " 12", "1_000", 1e308, 6e28, True, {"amount": 5}]
GOOD_REVENUES = [25, "12.50", 1e3]
BAD_TIMES = ["9999-12-31T00:00:00Z", "0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "2099-01-01T00:00:00Z"]

purchases = st.fixed_dictionaries({
    "days_ago": st.integers(1, 200),
    "revenue": st.sampled_from([*BAD_REVENUES, *GOOD_REVENUES]),
    "currency": st.sampled_from([None, "USD", "usd ", "XYZ", "JPY"]),
    "time": st.one_of(st.none(), st.sampled_from(BAD_TIMES)),
})


def _invalid(p: dict[str, Any]) -> bool:
    """Whether the models cannot take this purchase (the rule the build applies, read from its definition)."""
    revenue, currency = p["revenue"], p["currency"]
    positive = revenue in GOOD_REVENUES and not isinstance(revenue, bool)
    return not positive or currency not in (None, "USD", "usd ") or p["time"] is not None


def _event(p: dict[str, Any]) -> dict[str, Any]:
    properties = {} if p["currency"] is None else {"currency": p["currency"]}
    event = order("bad", p["days_ago"], ... if p["revenue"] is None else p["revenue"], properties=properties)
    return {**event, "timestamp": p["time"]} if p["time"] else event


@SETTINGS
@given(st.lists(purchases, min_size=1, max_size=4), st.lists(st.sampled_from(["Toys", "Home", "1e308"]), max_size=3))
def test_one_bad_customer_never_changes_another_customers_traits_or_scores(
        baseline: Documents, bought: list[dict[str, Any]], viewed: list[str]) -> None:
    assume(any(_invalid(p) for p in bought))
    bad = [_event(p) for p in bought]
    bad += [ev("track", 2, userId="bad", event="Product Viewed", properties={"category": c}) for c in viewed]
    with tempfile.TemporaryDirectory(prefix="bad-customer-") as folder:
        after = _build(Path(folder), [*_shop(), *bad])
    assert {c: d for c, d in after.items() if c != "bad"} == baseline
    assert all(v is None for v in after["bad"]["scores"].values())
