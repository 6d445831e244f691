"""Scores inside built snapshots: a lake whose purchase histories have a known frequency, recency and T
(simulated from the BG/NBD and Gamma-Gamma processes, with a fixed seed) is built, and every customer's
``churn_risk``, ``p_alive``, expected orders and LTV in their snapshot are checked against the reference
implementation (the ``lifetimes`` package: its own fit, and its formulas with our fitted parameters). A
second build within ``scores.refit_every`` reuses the parameters."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from customer_context.assemble.build import build_context
from customer_context.spec import DEFAULT_SPEC, parse_spec
from customer_context.stores.context_store import MemoryContextStore

from tests.helpers.lake import AS_OF, ev, write_events

# The build's clock: midnight of AS_OF's day. Purchases are at noon n days before AS_OF, so in days from
# the first purchase's day: recency = first - last, T = first (the build counts whole days of purchases).
CLOCK = AS_OF.replace(hour=0)
HORIZON_DAYS = 365.0  # scores.horizon of the default spec
CUSTOMERS = 150


def _histories(seed: int = 12) -> list[list[tuple[int, float]]]:
    """Per customer, purchases as (days before AS_OF, revenue), first purchase first, one per day at most.

    Each customer buys at a Poisson rate λ ~ Gamma(0.8, rate 15) per day and drops out after a purchase
    with probability p ~ Beta(1, 3) (BG/NBD); each purchase's value z ~ Gamma(6, rate ν), ν ~ Gamma(4, rate
    20) (Gamma-Gamma). First purchases fall 30-300 days before the clock.
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(CUSTOMERS):
        lam, drop, nu = rng.gamma(0.8, 1 / 15), rng.beta(1.0, 3.0), rng.gamma(4.0, 1 / 20)
        days = [int(rng.integers(30, 300))]
        t = float(days[0])
        while True:
            t -= rng.exponential(1 / lam)
            if t < 1:
                break
            if int(t) < days[-1]:
                days.append(int(t))
            if rng.random() < drop:
                break
        out.append([(d, round(float(rng.gamma(6.0, 1 / nu)), 2)) for d in days])
    return out


def _summary(histories: list[list[tuple[int, float]]], shift: int = 0) -> dict[str, np.ndarray]:
    """Frequency, recency, T (days) and mean repeat value, by hand, at ``shift`` days after CLOCK."""
    return {
        "x": np.array([len(h) - 1 for h in histories], float),
        "t_x": np.array([h[0][0] - h[-1][0] for h in histories], float),
        "T": np.array([h[0][0] + shift for h in histories], float),
        "m": np.array([np.mean([v for _, v in h[1:]]) if len(h) > 1 else 0.0 for h in histories]),
    }


def _purchases(histories: list[list[tuple[int, float]]], who: range) -> list[dict[str, Any]]:
    return [ev("track", days, userId=f"c{i}", event="Order Completed", properties={"revenue": revenue})
            for i in who for days, revenue in histories[i]]


def _reference(bg: dict[str, float], gg: dict[str, float], s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """P(alive), expected orders over the horizon and LTV from lifetimes' formulas with the given parameters."""
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    bgf, ggf = BetaGeoFitter(), GammaGammaFitter()
    bgf.params_ = pd.Series({k: bg[k] for k in ("r", "alpha", "a", "b")})
    ggf.params_ = pd.Series({k: gg[k] for k in ("p", "q", "v")})
    alive = np.asarray(bgf.conditional_probability_alive(s["x"], s["t_x"], s["T"]), float)
    orders = np.asarray(bgf.conditional_expected_number_of_purchases_up_to_time(HORIZON_DAYS, s["x"], s["t_x"],
                                                                                s["T"]), float)
    value = np.asarray(ggf.conditional_expected_average_profit(pd.Series(s["x"]), pd.Series(s["m"])), float)
    return {"p_alive": alive, "expected_orders": orders, "ltv": orders * value}


def _served_scores(store: MemoryContextStore) -> list[dict[str, Any]]:
    out = []
    for i in range(CUSTOMERS):
        profile = store.resolve("user_id", f"c{i}")
        assert profile, f"c{i} has no alias"
        item = store.get_snapshot(profile)
        assert item is not None
        out.append(json.loads(item["doc"])["scores"])
    return out


def _assert_served(served: list[dict[str, Any]], expected: dict[str, np.ndarray], s: dict[str, np.ndarray]) -> None:
    """Each snapshot's scores equal the reference values, as the snapshot rounds them (3 and 2 decimals)."""
    for i, doc in enumerate(served):
        where = f"c{i} (x={s['x'][i]:g}, t_x={s['t_x'][i]:g}, T={s['T'][i]:g})"
        assert doc["repeat_purchases"] == s["x"][i], where
        assert doc["p_alive"] == pytest.approx(expected["p_alive"][i], abs=5e-4 + 1e-9), where
        if s["x"][i] > 0:
            assert doc["churn_risk"] == pytest.approx(1 - expected["p_alive"][i], abs=5e-4 + 1e-9), where
        else:  # alive by construction under BG/NBD: no risk is shown rather than 0
            assert doc["churn_risk"] is None, where
        assert doc["expected_orders_365d"] == pytest.approx(expected["expected_orders"][i], abs=5e-3 + 1e-9), where
        assert doc["ltv_365d"] == pytest.approx(expected["ltv"][i], abs=5e-3 + 1e-9), where


def test_snapshots_carry_the_reference_scores_and_a_second_build_reuses_the_parameters(lakehouse: Any) -> None:
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    spec = parse_spec(DEFAULT_SPEC.read_text())
    assert spec.scores.refit_every == "1d" and spec.scores.horizon == "365d"
    # Given a lake of purchase histories with known frequency, recency and T
    histories = _histories()
    write_events(lakehouse, _purchases(histories, range(CUSTOMERS)))
    first = _summary(histories)
    repeat = first["x"] > 0
    assert 0 < int(repeat.sum()) < CUSTOMERS  # one-time buyers and repeat buyers, both
    # When the context is built
    store = MemoryContextStore()
    report = build_context(lakehouse, store, spec, as_of=CLOCK)
    # Then the parameters are the maximum-likelihood fit lifetimes finds on the same summaries
    assert report.scores["refitted"] is True and report.scores["buyers"] == CUSTOMERS
    bg, gg = report.scores["bgnbd"], report.scores["gamma_gamma"]
    reference_bg = BetaGeoFitter().fit(first["x"], first["t_x"], first["T"]).params_
    reference_gg = GammaGammaFitter().fit(first["x"][repeat], first["m"][repeat]).params_
    for name in ("r", "alpha", "a", "b"):
        assert bg[name] == pytest.approx(reference_bg[name], rel=1e-4), name
    for name in ("p", "q", "v"):
        assert gg[name] == pytest.approx(reference_gg[name], rel=1e-3), name
    # And every customer's snapshot carries churn risk, P(alive), expected orders and LTV as lifetimes
    # computes them for that customer's frequency, recency and T with these parameters
    _assert_served(_served_scores(store), _reference(bg, gg, first), first)

    # Given a day later, 40 customers bought again (a refit would move the parameters)
    write_events(lakehouse, [ev("track", 0, userId=f"c{i}", event="Order Completed", properties={"revenue": 25.0})
                             for i in range(40)])
    for i in range(40):
        histories[i].append((0, 25.0))
    second = _summary(histories, shift=1)
    refit = BetaGeoFitter().fit(second["x"], second["t_x"], second["T"]).params_
    assert abs(refit["r"] - bg["r"]) > 1e-3 * bg["r"]
    # When the context is built again within scores.refit_every
    again = build_context(lakehouse, store, spec, as_of=CLOCK + timedelta(days=1))
    # Then the parameters are reused, not refitted, and score_models still holds the one fit
    assert again.scores["refitted"] is False
    assert again.scores["bgnbd"] == bg and again.scores["gamma_gamma"] == gg
    assert lakehouse.scan("score_models").num_rows == 1
    # And the snapshots carry the new summaries scored with those same parameters
    _assert_served(_served_scores(store), _reference(bg, gg, second), second)
