"""Customer-base models for churn risk and lifetime value: BG/NBD and Gamma-Gamma, in numpy only.

* **BG/NBD** (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while alive a customer
  buys at Poisson rate λ ~ Gamma(r, α); after each *repeat* purchase they drop out with probability
  p ~ Beta(a, b). Fitted by maximum likelihood on per-customer ``frequency`` x (number of repeat
  purchases), ``recency`` t_x (age at the last purchase, 0 when x = 0) and ``T`` (age at the end of
  the observation window), all ages measured from the customer's first purchase in one time unit
  (days, weeks, ...). α and every horizon are in that unit.
* **Gamma-Gamma** (Fader, Hardie & Lee 2005, "RFM and CLV"): transaction values z ~ Gamma(p, ν) with
  ν ~ Gamma(q, γ); fitted on customers with x > 0 and their mean *repeat* transaction value m_x. The
  parameter γ is called ``v`` here (as in the ``lifetimes`` package).

``churn_risk = 1 − P(alive)``; ``LTV(horizon) = E[purchases in (T, T + horizon]] × E[M]``, optionally
discounted per period.

No scipy here (the Lambda package is size-bound): the optimiser is a box-bounded BFGS on the log of
the parameters with analytic gradients; log-gamma and digamma *differences* over integer
frequencies are exact cumulative sums (Σ log(r + k), Σ 1/(r + k)), and for non-integer arguments
``math.lgamma`` runs over the unique values only. Time and money are rescaled to O(1) for the fit
and the parameters scaled back, so results do not depend on the units. A fit of 1M customers takes
a few seconds on one core.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from customer_context.ports import JsonObject

__all__ = [
    "BGNBDParams",
    "GammaGammaParams",
    "ScoreFitError",
    "bgnbd_log_likelihood",
    "churn_risk",
    "customer_lifetime_value",
    "expected_average_value",
    "expected_purchases",
    "fit_bgnbd",
    "fit_from_csv",
    "fit_gamma_gamma",
    "gamma_gamma_log_likelihood",
    "p_alive",
]

ArrayLike = Any  # numpy array, list of floats or a scalar

MIN_CUSTOMERS_BGNBD = 4
MIN_REPEAT_BUYERS_GG = 2
_LOG_BOUND = 25.0  # fitted (rescaled) parameters are kept in [e^-25, e^25] ...
R_MAX = 100.0  # ... and BG/NBD's r ≤ 100: purchase rates that alike (CV 10 %) are a flat ridge of the likelihood
_BG_HI = np.array([math.log(R_MAX), _LOG_BOUND, _LOG_BOUND, _LOG_BOUND])
_GTOL = 1e-9  # max |∂(mean NLL)/∂ log θ| at convergence
_LOOSE_GTOL = 1e-5  # accepted when the objective can no longer decrease (floating-point floor)
_CUMSUM_MAX_X = 1_000_000  # integer frequencies up to this use exact cumulative sums


class ScoreFitError(ValueError):
    """Input data a model cannot be fitted on, or a fit that did not converge (the message says which)."""


@dataclass(frozen=True)
class BGNBDParams:
    """BG/NBD parameters: purchase rate λ ~ Gamma(shape r, rate alpha), dropout p ~ Beta(a, b).

    ``alpha`` is in the time unit of the data the model was fitted on (E[λ] = r / alpha per unit).
    """

    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True)
class GammaGammaParams:
    """Gamma-Gamma spend parameters: z ~ Gamma(shape p, rate ν), ν ~ Gamma(shape q, rate v).

    ``v`` is γ of Fader & Hardie, in the currency unit of the data; the population mean transaction
    value is ``p * v / (q - 1)`` (finite only when q > 1).
    """

    p: float
    q: float
    v: float


# --------------------------------------------------------------------------------------------- special functions


def _digamma(x: np.ndarray) -> np.ndarray:
    """ψ(x) for x > 0, vectorised: recurrence up to x ≥ 10, then the asymptotic series (error ~1e-15)."""
    x = np.array(x, dtype=float, copy=True)
    acc = np.zeros_like(x)
    small = x < 10.0
    while np.any(small):
        acc[small] -= 1.0 / x[small]
        x[small] += 1.0
        small = x < 10.0
    inv2 = 1.0 / (x * x)
    series = inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 * (1 / 252 - inv2 * (1 / 240 - inv2 * (
        1 / 132 - inv2 * (691 / 32760 - inv2 / 12))))))
    return acc + np.log(x) - 0.5 / x - series


def _lgamma(x: np.ndarray) -> np.ndarray:
    """log Γ(x) elementwise with ``math.lgamma`` over the unique values only."""
    x = np.asarray(x, dtype=float)
    uniq, inv = np.unique(x, return_inverse=True)
    return np.array([math.lgamma(v) for v in uniq.tolist()], dtype=float)[inv].reshape(x.shape)


class _Pochhammer:
    """log Γ(s + x) − log Γ(s) and ψ(s + x) − ψ(s) for many s on a fixed set of frequencies x ≥ 0.

    Integer frequencies use exact cumulative sums Σ_{k<x} log(s + k) and Σ_{k<x} 1/(s + k): no
    cancellation however large s is. Other frequencies fall back to lgamma / digamma.
    """

    def __init__(self, x: np.ndarray) -> None:
        self.x = np.asarray(x, dtype=float)
        xmax = float(self.x.max()) if self.x.size else 0.0
        self.integer = bool(np.all(self.x == np.round(self.x))) and xmax <= _CUMSUM_MAX_X
        if self.integer:
            self.idx = self.x.astype(np.int64)
            self.k = np.arange(int(xmax), dtype=float)

    def log(self, s: float) -> np.ndarray:
        if self.integer:
            return np.concatenate(([0.0], np.cumsum(np.log(s + self.k))))[self.idx]
        return _lgamma(s + self.x) - math.lgamma(s)

    def psi(self, s: float) -> np.ndarray:
        if self.integer:
            return np.concatenate(([0.0], np.cumsum(1.0 / (s + self.k))))[self.idx]
        return _digamma(s + self.x) - _digamma(np.array([s]))[0]


# --------------------------------------------------------------------------------------------- validation


def _array(name: str, values: ArrayLike) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ScoreFitError(f"{name}: not numeric ({exc})") from None
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ScoreFitError(f"{name}: value {float(arr[bad[0]])!r} at index {int(bad[0])} is not a finite number")
    neg = np.flatnonzero(arr < 0)
    if neg.size:
        raise ScoreFitError(f"{name}: negative value {float(arr[neg[0]])!r} at index {int(neg[0])}")
    return arr


def _rft(frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, t_x, age = _array("frequency", frequency), _array("recency", recency), _array("T", T)
    if not x.size == t_x.size == age.size:
        raise ScoreFitError(f"frequency, recency and T differ in length ({x.size}, {t_x.size}, {age.size})")
    late = np.flatnonzero(t_x > age * (1 + 1e-12))
    if late.size:
        i = int(late[0])
        raise ScoreFitError(f"recency > T at index {i} (recency {float(t_x[i])!r}, T {float(age[i])!r}); "
                            f"{late.size} customer(s) in all")
    return x, t_x, age


# --------------------------------------------------------------------------------------------- optimiser


def _bfgs(fun: Callable[[np.ndarray], tuple[float, np.ndarray]], u0: np.ndarray, *, hi: np.ndarray,
          H0: np.ndarray | None = None, max_iter: int = 400) -> tuple[np.ndarray, float, bool, np.ndarray]:
    """Minimise ``fun`` (value, gradient) over the box [−_LOG_BOUND, hi] by projected BFGS.

    Armijo backtracking; a step changes no parameter by more than a factor e^3; a failed line search
    retries once from steepest descent. Floating-point warnings of wild trial points are silenced: such
    a point has a non-finite value and is rejected.

    Args:
        fun: objective returning (value, gradient).
        u0: starting point.
        hi: upper bounds of the (log) parameters.
        H0: initial inverse-Hessian estimate (e.g. from a fit on a sample); identity when omitted.
        max_iter: iteration cap.

    Returns:
        (argmin, value, converged, inverse-Hessian estimate). Converged: the projected gradient is
        below _GTOL, or the objective can no longer decrease while it is below _LOOSE_GTOL.
    """
    lo = -_LOG_BOUND
    u = np.clip(np.asarray(u0, dtype=float), lo, hi)
    eye = np.eye(u.size)

    def projected(u: np.ndarray, g: np.ndarray) -> np.ndarray:
        pinned = ((u <= lo) & (g > 0)) | ((u >= hi) & (g < 0))
        return np.where(pinned, 0.0, g)

    def finite(f: float, g: np.ndarray) -> bool:
        return bool(np.isfinite(f) and np.all(np.isfinite(g)))

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        f, g = fun(u)
        if not finite(f, g):
            return u, float("inf"), False, eye
        H = eye.copy() if H0 is None else np.array(H0, dtype=float)
        fresh = H0 is None
        for _ in range(max_iter):
            pg = projected(u, g)
            if float(np.max(np.abs(pg))) < _GTOL:
                return u, f, True, H
            d = -(H @ pg)
            d[pg == 0] = 0.0
            if float(d @ pg) >= 0:
                H, fresh = eye.copy(), True
                d = -pg
            biggest = float(np.max(np.abs(d)))
            if biggest > 3.0:
                d *= 3.0 / biggest
            step, accepted = 1.0, False
            while step > 1e-14:
                un = np.clip(u + step * d, lo, hi)
                fn, gn = fun(un)
                if finite(fn, gn) and fn <= f + 1e-4 * float(g @ (un - u)):
                    accepted = True
                    break
                step *= 0.5
            if not accepted or fn >= f:
                if accepted:  # no progress at all: take the point, judge the gradient there
                    u, f, g = un, fn, gn
                if not fresh:
                    H, fresh = eye.copy(), True
                    continue
                break
            s, y = un - u, gn - g
            sy = float(s @ y)
            if sy > 1e-12 * float(np.linalg.norm(s) * np.linalg.norm(y)):
                if fresh:
                    H = eye * (sy / float(y @ y))
                rho = 1.0 / sy
                V = eye - rho * np.outer(s, y)
                H = V @ H @ V.T + rho * np.outer(s, s)
                fresh = False
            u, f, g = un, fn, gn
    return u, f, float(np.max(np.abs(projected(u, g)))) < _LOOSE_GTOL, H


def _best_fit(fun: Callable[[np.ndarray], tuple[float, np.ndarray]], starts: Sequence[np.ndarray], *,
              hi: np.ndarray, H0: np.ndarray | None = None, enough: int = 2) -> tuple[np.ndarray, np.ndarray] | None:
    """(argmin, inverse Hessian) of the lowest converged optimum, trying starts until ``enough`` converged."""
    found: list[tuple[float, np.ndarray, np.ndarray]] = []
    for start in starts:
        u, f, ok, H = _bfgs(fun, start, hi=hi, H0=H0)
        if ok:
            found.append((f, u, H))
            if len(found) >= enough:
                break
    if not found:
        return None
    _, u, H = min(found, key=lambda item: item[0])
    return u, H


# --------------------------------------------------------------------------------------------- BG/NBD


class _BGNBDData:
    """Per-customer arrays rescaled by ``scale`` and split into x = 0 / x > 0, prepared once per fit."""

    def __init__(self, x: np.ndarray, t_x: np.ndarray, age: np.ndarray, scale: float) -> None:
        self.n = x.size
        self.scale = scale
        ux, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
        self.ux, self.counts = ux, counts.astype(float)
        self.poch = _Pochhammer(ux)
        pos = x > 0
        self.T0 = age[~pos] / scale
        self.T = age[pos] / scale
        self.t = t_x[pos] / scale
        self.x = x[pos]
        upos = ux > 0
        self.first_pos = int(np.argmax(upos)) if upos.any() else ux.size
        self.inv = inv[pos] - self.first_pos  # index into the positive unique values
        self.ux_pos = ux[upos]

    def nll(self, u: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean negative log-likelihood and its gradient w.r.t. log(r, α', a, b) (α' = α / scale)."""
        r, alpha, a, b = np.exp(u)
        poch = self.poch
        cnt = self.counts
        # x-only terms over the unique frequencies
        lr, pr = poch.log(r), poch.psi(r)
        lb, pb = poch.log(b), poch.psi(b)
        lab, pab = poch.log(a + b), poch.psi(a + b)
        ll = float(cnt @ (lr + lb - lab)) + self.n * r * math.log(alpha)
        g_r = float(cnt @ pr) + self.n * math.log(alpha)
        g_alpha = self.n * r / alpha
        g_a = -float(cnt @ pab)
        g_b = float(cnt @ (pb - pab))
        # x = 0: (alpha / (alpha + T))^r
        if self.T0.size:
            aT0 = alpha + self.T0
            ll -= r * float(np.log(aT0).sum())
            g_r -= float(np.log(aT0).sum())
            g_alpha -= r * float((1.0 / aT0).sum())
        # x > 0: A3 = -(r+x) log(α+T); A4 = log a - log(b+x-1) - (r+x) log(α+t_x); log(e^A3 + e^A4)
        if self.x.size:
            log_bx1 = np.log(b + self.ux_pos - 1.0)
            aT, at = alpha + self.T, alpha + self.t
            lT, lt = np.log(aT), np.log(at)
            rx = r + self.x
            d = (math.log(a) - log_bx1)[self.inv] + rx * (lT - lt)
            e = np.exp(-np.abs(d))
            ll += float((-rx * lT).sum() + np.maximum(d, 0.0).sum() + np.log1p(e).sum())
            w = np.where(d >= 0, 1.0 / (1.0 + e), e / (1.0 + e))  # weight of the "dropped out" term
            g_r -= float(((1.0 - w) * lT + w * lt).sum())
            g_alpha -= float((rx * ((1.0 - w) / aT + w / at)).sum())
            w_by_x = np.bincount(self.inv, weights=w, minlength=self.ux_pos.size)
            g_a += float(w.sum()) / a
            g_b -= float(w_by_x @ (1.0 / (b + self.ux_pos - 1.0)))
        theta = np.array([r, alpha, a, b])
        grad = np.array([g_r, g_alpha, g_a, g_b])
        return -ll / self.n, theta * (-grad / self.n)


def bgnbd_log_likelihood(params: BGNBDParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> float:
    """Total BG/NBD log-likelihood of the data (in its own time unit; no penalty).

    Args:
        params: the model.
        frequency: repeat purchases per customer.
        recency: age at the last purchase.
        T: age at the end of the observation window.

    Returns:
        Σ log L over customers (Fader, Hardie & Lee 2005, eq. 6).
    """
    x, t_x, age = _rft(frequency, recency, T)
    if x.size == 0:
        return 0.0
    data = _BGNBDData(x, t_x, age, 1.0)
    u = np.log([params.r, params.alpha, params.a, params.b])
    f, _ = data.nll(u)
    return -f * x.size


def _penalized(nll: Callable[[np.ndarray], tuple[float, np.ndarray]], penalizer: float,
               pen_scale: np.ndarray) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """Objective on log-parameters ``u``: the negative log-likelihood plus ``penalizer × Σθ²`` (θ in the
    data's units, ``θ = exp(u) × pen_scale``), with its gradient."""
    def fun(u: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = nll(u)
        if penalizer:
            theta = np.exp(u) * pen_scale
            f += penalizer * float(theta @ theta)
            g = g + 2.0 * penalizer * theta * theta
        return f, g
    return fun


def fit_bgnbd(frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, *, penalizer: float = 0.0) -> BGNBDParams:
    """Fit BG/NBD by maximum likelihood.

    Args:
        frequency: repeat purchases per customer (purchases − 1), ≥ 0.
        recency: age at the last purchase (0 when frequency is 0), ≤ T.
        T: age at the end of the observation window, in the same unit as recency.
        penalizer: L2 penalty on the parameters, as in ``lifetimes``: the objective is the mean negative
            log-likelihood + penalizer × (r² + α² + a² + b²), with α in the data's unit. 0 = plain MLE.

    Returns:
        The fitted parameters (α in the data's time unit).

    Raises:
        ScoreFitError: bad input (negative, non-finite, recency > T, lengths differ), fewer than 4
            customers, no repeat buyer, or no convergence.
    """
    x, t_x, age = _rft(frequency, recency, T)
    if x.size < MIN_CUSTOMERS_BGNBD:
        raise ScoreFitError(f"too few customers to fit BG/NBD: {x.size} (at least {MIN_CUSTOMERS_BGNBD})")
    if not np.any(x > 0):
        raise ScoreFitError("no repeat buyers (every frequency is 0): BG/NBD cannot be fitted")
    if penalizer < 0:
        raise ScoreFitError(f"penalizer must be ≥ 0, got {penalizer}")
    scale = float(age.max())
    if scale <= 0:
        raise ScoreFitError("every T is 0: no observation time")
    full = _BGNBDData(x, t_x, age, scale)
    # the penalty is on the parameters in the data's units: α = α' × scale
    pen_scale = np.array([1.0, scale, 1.0, 1.0])

    def objective(data: _BGNBDData) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
        return _penalized(data.nll, penalizer, pen_scale)

    rate = max(float(x.mean()), 1e-3) / max(float(age.mean()) / scale, 1e-6)  # repeat purchases per scaled unit
    starts = [np.log([r, r / rate, a, b]) for r, a, b in ((1.0, 1.0, 1.0), (0.3, 0.8, 3.0), (3.0, 0.3, 1.0),
                                                           (0.1, 2.0, 10.0))]
    best = None
    if x.size > 200_000:  # explore from two starts on a sample, polish on everything with its curvature
        rng = np.random.default_rng(20050101)
        pick = rng.choice(x.size, 200_000, replace=False)
        if np.any(x[pick] > 0):
            found = _best_fit(objective(_BGNBDData(x[pick], t_x[pick], age[pick], scale)), starts, hi=_BG_HI)
            if found is not None:
                best = _best_fit(objective(full), [found[0]], hi=_BG_HI, H0=found[1], enough=1)
    if best is None:  # the first start converged is kept; the others are tried only if it does not converge
        best = _best_fit(objective(full), starts, hi=_BG_HI, enough=1)
    if best is None:
        raise ScoreFitError("BG/NBD: the optimizer did not converge from any starting point")
    r, alpha, a, b = np.exp(best[0])
    return BGNBDParams(r=float(r), alpha=float(alpha * scale), a=float(a), b=float(b))


def _log_odds_dropped(params: BGNBDParams, x: np.ndarray, t_x: np.ndarray, age: np.ndarray) -> np.ndarray:
    """log[(a / (b + x − 1)) ((α + T) / (α + t_x))^(r + x)] for x > 0, −inf for x = 0."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    pos = x > 0
    safe = np.where(pos, b + x - 1.0, 1.0)
    d = math.log(a) - np.log(safe) + (r + x) * (np.log(alpha + age) - np.log(alpha + t_x))
    return np.where(pos, d, -np.inf)


def _broadcast(*values: ArrayLike) -> list[np.ndarray]:
    return [np.asarray(v, dtype=float) for v in np.broadcast_arrays(*[np.asarray(v, dtype=float) for v in values])]


def p_alive(params: BGNBDParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> np.ndarray:
    """P(alive | x, t_x, T) under BG/NBD (Fader, Hardie & Lee 2005, eq. 11).

    A customer with x = 0 has P(alive) = 1 exactly: in BG/NBD dropout happens only right after a
    repeat purchase. For x > 0 it falls as T − t_x grows, and even at t_x = T it is
    (b + x − 1) / (a + b + x − 1) < 1.

    Args:
        params: fitted BG/NBD.
        frequency: repeat purchases.
        recency: age at the last purchase.
        T: age now (same unit as the fit).

    Returns:
        Probabilities in (0, 1], broadcast over the inputs.
    """
    x, t_x, age = _broadcast(frequency, recency, T)
    d = _log_odds_dropped(params, x, t_x, age)
    return np.exp(-np.logaddexp(0.0, d))


def churn_risk(params: BGNBDParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> np.ndarray:
    """1 − P(alive): see :func:`p_alive` (0 for customers with no repeat purchase)."""
    x, t_x, age = _broadcast(frequency, recency, T)
    d = _log_odds_dropped(params, x, t_x, age)
    return np.exp(d - np.logaddexp(0.0, d))


def _series(first: np.ndarray, ratio: Callable[[int, np.ndarray], np.ndarray], *, log_space: bool,
            max_terms: int) -> tuple[np.ndarray, np.ndarray]:
    """Σ_{n≥1} term_n with term_{n+1} = term_n × ratio(n, active): (sum, Σ |term_n|), vectorised.

    With ``log_space`` the terms are positive and carried as logarithms (``first`` is log term_1), so
    huge or tiny intermediate terms neither overflow nor underflow. An entry stops once the terms shrink
    geometrically and the rest is below 1e-17 of its sum; the active set is compacted as entries finish.
    """
    size = first.size
    total, absolute = np.zeros(size), np.zeros(size)
    idx = np.arange(size)
    term = first.astype(float).copy()
    s = np.exp(term) if log_space else term.copy()
    a = np.abs(s)
    n = 1
    while idx.size:
        r = ratio(n, idx)
        term = term + np.log(r) if log_space else term * r
        value = np.exp(term) if log_space else term
        s = s + value
        a = a + np.abs(value)
        n += 1
        if n % 4 == 0 or n > max_terms:
            mag = np.abs(r)
            rest = np.abs(value) * mag / np.maximum(1.0 - mag, 1e-300)
            done = ((mag < 1.0) & (rest <= 1e-17 * np.maximum(np.abs(s), 1e-300))) | (value == 0) | ~np.isfinite(s)
            if np.any(done):
                total[idx[done]], absolute[idx[done]] = s[done], a[done]
                keep = ~done
                idx, term, s, a = idx[keep], term[keep], s[keep], a[keep]
            if idx.size and n > max_terms:
                raise ValueError(f"expected_purchases: the hypergeometric series did not converge in {max_terms} "
                                 "terms (a horizon far longer than the customers' ages?)")
    return total, absolute


def _alive_expectation(params: BGNBDParams, t: np.ndarray, x: np.ndarray, age: np.ndarray, *,
                       max_terms: int = 2_000_000) -> np.ndarray:
    """E[Y(t) | alive, x, T] = ((a + b + x − 1) / (a − 1)) (1 − ((α+T)/(α+T+t))^(r+x) 2F1(r+x, b+x; a+b+x−1; z)).

    z = t / (α + T + t). Two summations of the same quantity:

    * Euler's transform, 2F1(A, B; C; z) = (1 − z)^(C−A−B) 2F1(C − A, C − B; C; z), folds the power in:
      C [(1 − (1 − z)^(a−1)) / (a − 1) − (1 − z)^(a−1) Σ_{n≥1} (a+b−1−r)_n (a)_{n−1} z^n / ((C+1)_{n−1} n!)]
      (C = a + b + x − 1), whose terms all have one sign when r ≤ a + b − 1 and which converges fast for
      any x; exact at a = 1;
    * when r is large against a + b its terms alternate and cancel, so those entries use the direct
      series, all of whose terms are positive, summed in log space:
      [C (1 − (1 − z)^(r+x)) − Σ_{n≥1} (1 − z)^(r+x) (r+x)_n (b+x)_n z^n / ((C+1)_{n−1} n!)] / (a − 1).
    """
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    out = np.zeros(x.shape)
    z = t / (alpha + age + t)
    live = z > 0
    z, xs = z[live], x[live]
    C = a + b + xs - 1.0
    A = a + b - 1.0 - r
    eps = a - 1.0
    log1mz = np.log1p(-z)
    head = -np.expm1(eps * log1mz) / eps if eps != 0.0 else -log1mz  # (1 − (1 − z)^(a−1)) / (a − 1)
    power = np.exp(eps * log1mz)
    result = np.full(z.shape, np.nan)
    # Euler's terms reach about e^(|A| z) (A < 0: cancelling) or e^(a z) (huge a: overflowing)
    euler = (max(-A, 0.0, a - 1.0) * z) <= 25.0
    if np.any(euler):
        ze, Ce = z[euler], C[euler]
        with np.errstate(over="ignore", invalid="ignore"):
            S, absolute = _series(A * ze, lambda n, i: (A + n) * (eps + n) * ze[i] / ((Ce[i] + n) * (n + 1)),
                                  log_space=False, max_terms=max_terms)
            value = Ce * head[euler] - power[euler] * S
            noise = 4e-16 * (np.abs(Ce * head[euler]) + power[euler] * absolute)
        good = np.isfinite(value) & (noise <= 1e-10 * np.abs(value))
        value[~good] = np.nan
        result[euler] = value
    direct = ~np.isfinite(result)
    if np.any(direct) and eps == 0.0:  # the direct form divides by a − 1: nudge a by 1 ulp-scale both ways
        lo = _alive_expectation(BGNBDParams(r, alpha, a - 1e-7, b), t[live][direct], xs[direct], age[live][direct])
        hi = _alive_expectation(BGNBDParams(r, alpha, a + 1e-7, b), t[live][direct], xs[direct], age[live][direct])
        result[direct] = 0.5 * (lo + hi)
    elif np.any(direct):
        zd, Cd, xd = z[direct], C[direct], xs[direct]
        k, B = r + xd, b + xd
        lpow = k * log1mz[direct]
        W, _ = _series(lpow + np.log(k * B * zd),
                       lambda n, i: (k[i] + n) * (B[i] + n) * zd[i] / ((Cd[i] + n) * (n + 1)),
                       log_space=True, max_terms=max_terms)
        result[direct] = (Cd * -np.expm1(lpow) - W) / eps
    out[live] = result
    return out


def _shares_keys(*columns: np.ndarray) -> bool:
    """Whether a sample of 5,000 rows already repeats ≥ 5 % of its key tuples (then grouping pays)."""
    pick = np.random.default_rng(0).choice(columns[0].size, min(5000, columns[0].size), replace=False)
    keys = np.stack([c[pick] for c in columns], axis=1)
    return np.unique(keys, axis=0).shape[0] <= 0.95 * pick.size


def expected_purchases(params: BGNBDParams, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike,
                       T: ArrayLike) -> np.ndarray:
    """E[Y(t) | x, t_x, T]: expected purchases in the next ``t`` time units (Fader, Hardie & Lee 2005, eq. 10).

    Equals P(alive) × E[Y(t) | alive, x, T]; the Gaussian hypergeometric function is summed as a series
    (see :func:`_alive_expectation`), once per distinct (x, T, t) when customers share them.

    Args:
        params: fitted BG/NBD.
        t: horizon (same unit as the fit), ≥ 0; scalar or per customer.
        frequency: repeat purchases.
        recency: age at the last purchase.
        T: age now.

    Returns:
        Expected purchase counts, broadcast over the inputs.
    """
    tt, x, t_x, age = _broadcast(t, frequency, recency, T)
    if np.any(tt < 0):
        raise ValueError("expected_purchases: t must be ≥ 0")
    shape = x.shape
    tt, x, t_x, age = tt.reshape(-1), x.reshape(-1), t_x.reshape(-1), age.reshape(-1)
    if x.size > 1000 and _shares_keys(x, age, tt):  # customers with the same (x, T, t) share the series
        order = np.lexsort((tt, age, x))
        xs, ags, ts = x[order], age[order], tt[order]
        new = np.ones(x.size, dtype=bool)
        new[1:] = (xs[1:] != xs[:-1]) | (ags[1:] != ags[:-1]) | (ts[1:] != ts[:-1])
        if new.sum() < 0.7 * x.size:
            group = np.empty(x.size, dtype=np.int64)
            group[order] = np.cumsum(new) - 1
            first = order[new]
            alive_value = _alive_expectation(params, tt[first], x[first], age[first])[group]
        else:
            alive_value = _alive_expectation(params, tt, x, age)
    else:
        alive_value = _alive_expectation(params, tt, x, age)
    return (alive_value * p_alive(params, x, t_x, age)).reshape(shape)


# --------------------------------------------------------------------------------------------- Gamma-Gamma


class _GGData:
    def __init__(self, x: np.ndarray, m: np.ndarray, scale: float) -> None:
        self.n = x.size
        m = m / scale
        ux, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
        self.ux, self.inv, self.counts = ux, inv, counts.astype(float)
        self.x = x
        self.xm = x * m
        self.s_xlm = float((x * (np.log(m) + np.log(x))).sum())
        self.s_lm = float(np.log(m).sum())

    def nll(self, u: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean negative log-likelihood and its gradient w.r.t. log(p, q, v)."""
        p, q, v = np.exp(u)
        px = p * self.ux
        cnt = self.counts
        lg = _lgamma(np.concatenate((px + q, px)))
        k = px.size
        ll = float(cnt @ (lg[:k] - lg[k:])) - self.n * math.lgamma(q) + self.n * q * math.log(v)
        ll += p * self.s_xlm - self.s_lm
        lxm = np.log(self.xm + v)
        s_x_lxm = float(self.x @ lxm)
        s_lxm = float(lxm.sum())
        ll -= p * s_x_lxm + q * s_lxm
        dg = _digamma(np.concatenate((px + q, px, [q])))
        g_p = float(cnt @ (self.ux * (dg[:k] - dg[k:2 * k]))) + self.s_xlm - s_x_lxm
        g_q = float(cnt @ dg[:k]) - self.n * dg[-1] + self.n * math.log(v) - s_lxm
        g_v = self.n * q / v - float(((p * self.x + q) / (self.xm + v)).sum())
        theta = np.array([p, q, v])
        return -ll / self.n, theta * (-np.array([g_p, g_q, g_v]) / self.n)


def _gg_inputs(frequency: ArrayLike, monetary_value: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x, m = _array("frequency", frequency), _array("monetary_value", monetary_value)
    if x.size != m.size:
        raise ScoreFitError(f"frequency and monetary_value differ in length ({x.size}, {m.size})")
    keep = x > 0
    x, m, where = x[keep], m[keep], np.flatnonzero(keep)
    zero = np.flatnonzero(m <= 0)
    if zero.size:
        raise ScoreFitError(f"monetary_value must be > 0 for repeat buyers: {float(m[zero[0]])!r} at index "
                            f"{int(where[zero[0]])}")
    return x, m


def gamma_gamma_log_likelihood(params: GammaGammaParams, frequency: ArrayLike, monetary_value: ArrayLike) -> float:
    """Total Gamma-Gamma log-likelihood of the mean values of the customers with frequency > 0."""
    x, m = _gg_inputs(frequency, monetary_value)
    if x.size == 0:
        return 0.0
    f, _ = _GGData(x, m, 1.0).nll(np.log([params.p, params.q, params.v]))
    return -f * x.size


def fit_gamma_gamma(frequency: ArrayLike, monetary_value: ArrayLike, *, penalizer: float = 0.0) -> GammaGammaParams:
    """Fit Gamma-Gamma by maximum likelihood on the customers with frequency > 0.

    Args:
        frequency: repeat purchases per customer (rows with 0 are ignored).
        monetary_value: each customer's mean repeat transaction value (> 0 where frequency > 0;
            anything where frequency is 0).
        penalizer: L2 penalty, as in ``lifetimes``: mean NLL + penalizer × (p² + q² + v²), v in the data's
            currency unit.

    Returns:
        The fitted parameters (v in the data's currency unit).

    Raises:
        ScoreFitError: bad input, fewer than 2 repeat buyers, or no convergence.
    """
    x, m = _gg_inputs(frequency, monetary_value)
    if x.size == 0:
        raise ScoreFitError("no repeat buyers (frequency > 0): Gamma-Gamma cannot be fitted")
    if x.size < MIN_REPEAT_BUYERS_GG:
        raise ScoreFitError(f"too few repeat buyers to fit Gamma-Gamma: {x.size} (at least {MIN_REPEAT_BUYERS_GG})")
    if penalizer < 0:
        raise ScoreFitError(f"penalizer must be ≥ 0, got {penalizer}")
    scale = float(m.mean())
    if float(m.max() - m.min()) <= 1e-9 * scale:
        raise ScoreFitError(f"monetary_value is {scale:g} for every repeat buyer: with no spread in spend the "
                            "Gamma-Gamma likelihood has no maximum (use the value itself)")
    data = _GGData(x, m, scale)
    pen_scale = np.array([1.0, 1.0, scale])

    fun = _penalized(data.nll, penalizer, pen_scale)
    starts = [np.log(s) for s in ((1.0, 1.0, 1.0), (5.0, 3.0, 10.0), (0.5, 5.0, 2.0), (20.0, 20.0, 20.0))]
    best = _best_fit(fun, starts, hi=np.full(3, _LOG_BOUND), enough=1)
    if best is None:
        raise ScoreFitError("Gamma-Gamma: the optimizer did not converge from any starting point")
    p, q, v = np.exp(best[0])
    return GammaGammaParams(p=float(p), q=float(q), v=float(v * scale))


def expected_average_value(params: GammaGammaParams, frequency: ArrayLike, monetary_value: ArrayLike) -> np.ndarray:
    """E[M | p, q, v, x, m_x]: a customer's expected mean transaction value.

    ((q − 1) / (p x + q − 1)) · (v p / (q − 1)) + (p x / (p x + q − 1)) · m_x: the population mean
    v p / (q − 1) shrunk towards the customer's own mean as x grows. For x = 0 it is the population mean
    (m_x is ignored).

    Args:
        params: fitted Gamma-Gamma.
        frequency: repeat purchases.
        monetary_value: the customer's mean repeat transaction value.

    Returns:
        Expected values, broadcast over the inputs.

    Raises:
        ScoreFitError: q ≤ 1 (the population mean is infinite) and a customer with p x + q ≤ 1.
    """
    p, q, v = params.p, params.q, params.v
    x, m = _broadcast(frequency, monetary_value)
    m = np.where(x > 0, m, 0.0)
    denom = p * x + q - 1.0
    if np.any(denom <= 0):
        raise ScoreFitError(f"Gamma-Gamma q = {q:.4g} ≤ 1: the expected spend of customers with few purchases "
                            "is infinite")
    return (v * p + p * x * m) / denom


# --------------------------------------------------------------------------------------------- CLV


def customer_lifetime_value(bg: BGNBDParams, gg: GammaGammaParams, frequency: ArrayLike, recency: ArrayLike,
                            T: ArrayLike, monetary_value: ArrayLike, horizon: float, discount_rate: float = 0.0,
                            *, discount_period: float = 1.0) -> np.ndarray:
    """Expected value of each customer's purchases over the next ``horizon`` time units.

    Without discounting: E[Y(horizon) | x, t_x, T] × E[M | x, m_x]. With ``discount_rate`` d > 0 the
    horizon is cut into periods of ``discount_period`` time units (the last one may be shorter) and the
    value expected in period k is divided by (1 + d)^k (end-of-period; the short last period uses its
    fractional end). E.g. fitted in days, ``discount_period=30, discount_rate=0.01`` discounts 1 % per
    30 days. Cost: one :func:`expected_purchases` per period.

    Args:
        bg: fitted BG/NBD.
        gg: fitted Gamma-Gamma.
        frequency: repeat purchases.
        recency: age at the last purchase.
        T: age now.
        monetary_value: mean repeat transaction value (ignored where frequency is 0).
        horizon: time units ahead (same unit as the fit), ≥ 0.
        discount_rate: per-period discount rate, > −1; 0 (default) = no discounting.
        discount_period: length of one discount period in time units (default 1).

    Returns:
        Lifetime values in the currency of ``monetary_value``.
    """
    if horizon < 0:
        raise ValueError(f"horizon must be ≥ 0, got {horizon}")
    if discount_rate <= -1:
        raise ValueError(f"discount_rate must be > −1, got {discount_rate}")
    if discount_period <= 0:
        raise ValueError(f"discount_period must be > 0, got {discount_period}")
    value = expected_average_value(gg, frequency, monetary_value)
    if discount_rate == 0 or horizon == 0:
        return expected_purchases(bg, horizon, frequency, recency, T) * value
    periods = max(1, math.ceil(horizon / discount_period - 1e-9))
    total: np.ndarray | float = 0.0
    previous: np.ndarray | float = 0.0
    for k in range(1, periods + 1):
        end = min(k * discount_period, horizon)
        cumulative = expected_purchases(bg, end, frequency, recency, T)
        total = total + (cumulative - previous) / (1.0 + discount_rate) ** (end / discount_period)
        previous = cumulative
    return np.asarray(total) * value


# --------------------------------------------------------------------------------------------- CSV


REQUIRED_COLUMNS = ("frequency", "recency", "T")


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ScoreFitError(f"{path}: empty file (expected a header with {', '.join(REQUIRED_COLUMNS)})") from None
        for name in REQUIRED_COLUMNS:
            if name not in header:
                raise ScoreFitError(f"{path}: missing column {name!r} (found: {', '.join(header) or 'none'})")
        wanted = [*REQUIRED_COLUMNS, *(["monetary_value"] if "monetary_value" in header else [])]
        pos = {name: header.index(name) for name in wanted}
        cols: dict[str, list[float]] = {name: [] for name in wanted}
        for row_no, row in enumerate(reader, start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            values: dict[str, float] = {}
            for name in wanted:
                raw = row[pos[name]].strip() if pos[name] < len(row) else ""
                if name == "monetary_value" and raw == "" and values.get("frequency") == 0:
                    values[name] = 0.0
                    continue
                try:
                    value = float(raw)
                except ValueError:
                    raise ScoreFitError(f"{path}: row {row_no} (line {reader.line_num}), column {name!r}: "
                                        f"{raw!r} is not a number") from None
                if not math.isfinite(value) or value < 0:
                    raise ScoreFitError(f"{path}: row {row_no} (line {reader.line_num}), column {name!r}: "
                                        f"{raw!r} must be a finite number ≥ 0")
                values[name] = value
            if values["recency"] > values["T"]:
                raise ScoreFitError(f"{path}: row {row_no} (line {reader.line_num}): recency {values['recency']:g} "
                                    f"> T {values['T']:g}")
            for name in wanted:
                cols[name].append(values[name])
    return {name: np.array(vals, dtype=float) for name, vals in cols.items()}


def fit_from_csv(path: str | Path) -> JsonObject:
    """Fit BG/NBD (and Gamma-Gamma when there is a ``monetary_value`` column) on a per-customer CSV.

    Args:
        path: CSV with a header and columns ``frequency``, ``recency``, ``T`` and optionally
            ``monetary_value`` (others are ignored), one row per customer. An empty ``monetary_value``
            is allowed where frequency is 0.

    Returns:
        ``{"bgnbd": {r, alpha, a, b}, "gamma_gamma": {p, q, v} or None, "customers": n,
        "repeat_customers": k, "log_likelihood": total BG/NBD log-likelihood}``.

    Raises:
        ScoreFitError: unreadable data (the column, row and line are named) or a fit that fails.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            if b"\0" in fh.read(8192):
                raise ScoreFitError(f"{path}: a binary file, not a CSV")
        cols = _read_csv(path)
    except OSError as exc:
        raise ScoreFitError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except csv.Error as exc:
        raise ScoreFitError(f"{path}: not a valid CSV ({exc})") from None
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise ScoreFitError(f"{path}: not a UTF-8 text CSV (byte {exc.start} is {byte:#04x})") from None
    bg = fit_bgnbd(cols["frequency"], cols["recency"], cols["T"])
    gg = fit_gamma_gamma(cols["frequency"], cols["monetary_value"]) if "monetary_value" in cols else None
    return {
        "bgnbd": {"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b},
        "gamma_gamma": None if gg is None else {"p": gg.p, "q": gg.q, "v": gg.v},
        "customers": int(cols["frequency"].size),
        "repeat_customers": int((cols["frequency"] > 0).sum()),
        "log_likelihood": bgnbd_log_likelihood(bg, cols["frequency"], cols["recency"], cols["T"]),
    }
