"""Load benchmark: the collect API on the local stack at the highest rate it sustains, held for 60 s.

    python bench/load.py [--hold 60] [--start 4] [--max-steps 6] [--step-seconds 8] [--rate R] [--out F]

Traffic is SDK-shaped (``bench/load_locust.py``): half ``POST /v1/batch`` with 5-25 events, half
one event per call on ``POST /v1/<type>``, demo events (``customer_context_devtools.demo``) each with a new
unique messageId, Basic auth with a write key. Locust drives it headless, in a subprocess (gevent
patches the interpreter it runs in; the stack runs here, in this process, in threads).

1. **Find the rate** — on a fresh local stack, short steps: the request rate doubles until a step
   fails, then bisects between the last good and first bad rate. A step is
   sustained when no request failed (non-200, timeout, an event not accepted), p99 latency stays
   under ``--p99-bound-ms`` (a growing queue of requests shows there first) and no answer took longer
   than a user's pacing interval (4 s), so every user kept its schedule: the target rate was offered
   and served throughout. The highest sustained rate is kept (``--rate`` skips this).
2. **Hold it** — ``--hold`` seconds at that rate, on the same stack (on a fresh one if a ramp request
   failed: its events may or may not have landed, which would blur the accounting).
3. **Account** — ingest drains the queue; every messageId the stack acknowledged (warm-up, ramp and
   hold) must be in ``events`` (``tests/helpers/accounting.py``: exactly once after dedupe, nothing
   else landed, nothing rejected).

The target is asserted to be a loopback address before any request. Results go to
``bench/results/load.json``; the machine is shared, so the rate is this machine's at that time.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LOCUSTFILE = ROOT / "bench" / "load_locust.py"
WRITE_KEY = "wk_load_bench"
USER_RATE = 0.25  # requests per second of one locust user: answers up to 4 s late still keep the pace
BATCH_SHARE = 0.5


def machine() -> dict[str, Any]:
    """The machine, as the other bench/results files describe it (plus its load when measured)."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_1m_at_start": round(os.getloadavg()[0], 2)}


def assert_loopback(url: str) -> None:
    """Refuse any target but a loopback IP address (a name could resolve anywhere)."""
    host = urlsplit(url).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"load target must be a loopback address, got {host!r}")


def write_pool(path: Path, customers: int = 2000) -> int:
    """Demo events (valid ones only) as JSON lines: the driver cycles through them."""
    from customer_context_devtools.demo.generate import DemoConfig, generate_events

    n = 0
    with path.open("w") as fh:
        for event in generate_events(DemoConfig(customers=customers, bad_event_rate=0.0, seed=11)):
            fh.write(json.dumps(event) + "\n")
            n += 1
    return n


def _percentile(histogram: dict[float, int], q: float) -> float:
    total = sum(histogram.values())
    rank, seen = math.ceil(q * total), 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value
    return max(histogram)


def _answers(path: Path) -> list[tuple[float, list[str]]]:
    """The driver's record: (time answered, messageIds) per request."""
    if not path.is_file():
        return []
    return [(float(t), ids) for t, *ids in (line.split() for line in path.read_text().splitlines() if line)]


SHAPE = {"batch_share": str(BATCH_SHARE), "batch_events": "5-25"}  # the traffic's shape (main sets it)


def drive(url: str, rate: float, seconds: float, workdir: Path, pool: Path, run_id: str) -> dict[str, Any]:
    """Locust, headless in a subprocess, at ``rate`` requests per second for ``seconds``."""
    assert_loopback(url)
    users = max(1, math.ceil(rate / USER_RATE))
    spawn_s = 1 / USER_RATE  # users start spread over one period: no burst of first requests
    prefix = workdir / run_id
    acked, uncertain = Path(f"{prefix}.acked"), Path(f"{prefix}.uncertain")
    env = dict(os.environ, LOAD_EVENTS=str(pool), LOAD_WRITE_KEY=WRITE_KEY, LOAD_RUN_ID=run_id,
               LOAD_USER_RATE=str(rate / users), LOAD_BATCH_SHARE=SHAPE["batch_share"],
               LOAD_BATCH_EVENTS=SHAPE["batch_events"],
               LOAD_ACKED=str(acked), LOAD_UNCERTAIN=str(uncertain))
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
               "--users", str(users), "--spawn-rate", f"{users / spawn_s:g}", "--run-time", f"{seconds + spawn_s:g}s",
               "--stop-timeout", "35", "--reset-stats", "--only-summary", "--loglevel", "WARNING",
               "--csv", str(prefix), "--json-file", str(prefix), "--exit-code-on-error", "0"]
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 90, check=False)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"locust exited {done.returncode}: {done.stderr[-2000:]}")
    entries = json.loads(Path(f"{prefix}.json").read_text())
    histogram: dict[float, int] = {}
    for entry in entries:
        for value, count in entry["response_times"].items():
            histogram[float(value)] = histogram.get(float(value), 0) + count
    requests_n = sum(e["num_requests"] for e in entries)
    failures = sum(e["num_failures"] for e in entries)
    start = min((e["start_time"] for e in entries), default=0.0)
    last = max((e["last_request_timestamp"] or 0.0 for e in entries), default=0.0)
    measured_s = max(last - start, 1e-9)  # stats reset once all users were spawned: steady state only
    answered, failed = _answers(acked), _answers(uncertain)
    acked_ids = [i for _, ids in answered for i in ids]
    uncertain_ids = [i for _, ids in failed for i in ids]
    in_window = sum(len(ids) for t, ids in answered if start <= t <= last)
    by_route = {e["name"]: {"requests": e["num_requests"], "failures": e["num_failures"]} for e in entries}
    failure_examples = []
    failures_csv = Path(f"{prefix}_failures.csv")
    if failures_csv.is_file():
        failure_examples = failures_csv.read_text().splitlines()[1:4]
    return {
        "target_requests_per_s": rate,
        "users": users,
        "requests": requests_n,  # after the spawn period, like the rates and latencies
        "requests_total": len(answered) + len(failed),
        "errors": len(failed),  # over the whole run (locust's own count starts after the spawn period)
        "errors_after_spawn": failures,
        "requests_per_s": round(requests_n / measured_s, 1),
        "events_acknowledged": len(acked_ids),
        "events_per_s": round(in_window / measured_s, 1),
        "measured_s": round(measured_s, 1),
        "latency_ms": {
            "p50": _percentile(histogram, 0.50) if histogram else None,
            "p95": _percentile(histogram, 0.95) if histogram else None,
            "p99": _percentile(histogram, 0.99) if histogram else None,
            "max": round(max((e["max_response_time"] or 0.0 for e in entries), default=0.0), 1),
        },
        "by_route": by_route,
        "failure_examples": failure_examples,
        "duration_s": round(wall, 1),
        "_acked": acked_ids,
        "_uncertain": uncertain_ids,
    }


def sustained(step: dict[str, Any], p99_bound_ms: float) -> bool:
    """No error, p99 latency bounded, and no answer slower than a user's pacing interval: a locust user
    only falls behind its schedule when an answer takes longer, so the target rate was offered and
    served throughout (the achieved rate over a short window is reported, too noisy to judge by)."""
    latency = step["latency_ms"]
    return (step["errors"] == 0 and step["errors_after_spawn"] == 0 and latency["p99"] is not None
            and latency["p99"] <= p99_bound_ms and latency["max"] < 1000 / USER_RATE)


def _public(step: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in step.items() if not k.startswith("_")}


def _stack(data_dir: Path, pool: Path) -> tuple[Any, list[str]]:
    """A fresh local stack, warmed: one batch collected and ingested, so the handlers are imported (a
    warm Lambda) before any timing. Returns the stack and the warm-up's acknowledged messageIds."""
    import base64
    import urllib.request

    from customer_context_devtools.local.stack import LocalStack

    started = time.monotonic()
    stack = LocalStack(data_dir, write_keys={WRITE_KEY: "load"}).start()
    assert_loopback(stack.url)
    with pool.open() as fh:
        batch = [json.loads(next(fh)) | {"messageId": f"warm-{data_dir.name}-{i}"} for i in range(10)]
    request = urllib.request.Request(
        f"{stack.url}/v1/batch", data=json.dumps({"batch": batch}).encode(), method="POST",
        headers={"content-type": "application/json",
                 "authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    assert answer["accepted"] == len(batch) and not answer["rejected"], answer
    if not stack.wait_for_ingest(120):
        raise RuntimeError("the warm-up batch was not ingested within 120 s")
    print(f"  stack started and warmed in {time.monotonic() - started:.1f} s", flush=True)
    return stack, [e["messageId"] for e in batch]


def next_rate(low: float, high: float, tolerance: float) -> float | None:
    """The next rate to try, given the highest sustained (``low``, 0: none yet) and the lowest not
    sustained (``high``, inf: none yet): double until one fails, then bisect; ``None`` when done."""
    if high == math.inf:
        return low * 2
    if low == 0:
        return None if high <= 1 else max(1.0, round(high / 2))
    if high - low <= max(1.0, tolerance * low):
        return None
    return float(round((low + high) / 2))


def find_rate(stack: Any, start: float, max_steps: int, step_seconds: float, workdir: Path, pool: Path,
              p99_bound_ms: float, tolerance: float = 0.2) -> tuple[float | None, list[dict[str, Any]]]:
    """Short steps: from ``start`` requests per second, doubling until a step is not sustained, then
    bisecting to within ``tolerance``; at most ``max_steps`` steps, each from a drained queue."""
    low, high, tried = 0.0, math.inf, []
    rate: float | None = start
    while rate is not None and len(tried) < max_steps:
        step = drive(stack.url, rate, step_seconds, workdir, pool, f"ramp{len(tried)}")
        step["sustained"] = sustained(step, p99_bound_ms)
        tried.append(step)
        print(f"  step {rate:g} req/s: {step['requests_per_s']} req/s, {step['errors']} errors, "
              f"p99 {step['latency_ms']['p99']} ms -> {'ok' if step['sustained'] else 'not sustained'}", flush=True)
        if step["sustained"]:
            low = rate
        else:
            high = rate
        rate = next_rate(low, high, tolerance)
        stack.wait_for_ingest(60)  # each step starts from the same state: an empty queue
    return (low or None), tried


def hold(stack: Any, rate: float, seconds: float, workdir: Path, pool: Path, drain_timeout: float,
         p99_bound_ms: float, earlier_ids: list[str]) -> dict[str, Any]:
    """``seconds`` at ``rate``, then drain ingest and account for every event acknowledged by this
    stack (``earlier_ids``: the warm-up's and the ramp's)."""
    sys.path.insert(0, str(ROOT))
    from customer_context import wiring

    from tests.helpers.accounting import assert_accounted, landed

    step = drive(stack.url, rate, seconds, workdir, pool, "hold")
    started = time.monotonic()
    drained = stack.wait_for_ingest(drain_timeout)
    drain_s = time.monotonic() - started
    lakehouse = wiring.lakehouse()
    events, rejected = landed(lakehouse)
    acked = set(step["_acked"]) | set(earlier_ids)
    raw_rows = lakehouse.scan("events").num_rows if "events" in lakehouse.table_names() else 0
    try:
        assert_accounted(lakehouse, acked, rejected_count=0)
        accounting = "ok"
    except AssertionError as exc:
        accounting = f"failed: {exc}"
    return _public(step) | {
        "kept_pace": sustained(step, p99_bound_ms),
        "drained": drained,
        "drain_s": round(drain_s, 1),
        "dlq_messages": stack.dlq_depth(),
        "acknowledged_events": len(acked),
        "acknowledged_before_hold": len(set(earlier_ids)),
        "accounted_events": len(acked & events.keys()),
        "events_lost": len(acked - events.keys()),
        "unexpected_events": len(events.keys() - acked),
        "rejected_events": len(rejected),
        "duplicate_rows": raw_rows - len(events),
        "uncertain_events": len(step["_uncertain"]),
        "accounting": accounting,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hold", type=float, default=60.0, help="seconds at the found rate")
    parser.add_argument("--start", type=float, default=4.0, help="first request rate of the ramp")
    parser.add_argument("--max-steps", type=int, default=6, help="ramp steps at most")
    parser.add_argument("--step-seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=float, help="hold this rate, no ramp")
    parser.add_argument("--p99-bound-ms", type=float, default=2000.0)
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "load.json")
    parser.add_argument("--batch-share", type=float, default=BATCH_SHARE, help="share of requests to /v1/batch")
    parser.add_argument("--batch-events", default=SHAPE["batch_events"],
                        help="events per batch: a range (5-25) or a number")
    parser.add_argument("--aim", type=float, default=100.0, help="requests per second the local stack should hold")
    args = parser.parse_args()
    SHAPE.update(batch_share=str(args.batch_share), batch_events=args.batch_events)
    # as in the tests: the handlers' INFO line per request would measure stdout, not the API
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")

    description = machine()
    with tempfile.TemporaryDirectory(prefix="cc-bench-load-") as tmp:
        workdir = Path(tmp)
        pool = workdir / "events.jsonl"
        pool_size = write_pool(pool, customers=500)
        ramp: list[dict[str, Any]] = []
        rate = args.rate
        stack, earlier = _stack(workdir / "stack", pool)
        try:
            if rate is None:
                print("finding the sustainable rate", flush=True)
                rate, ramp = find_rate(stack, args.start, args.max_steps, args.step_seconds, workdir, pool,
                                       args.p99_bound_ms)
                if rate is None:
                    rate = min(s["target_requests_per_s"] for s in ramp)
                    print(f"  no step sustained: holding the lowest tried, {rate:g} req/s", flush=True)
                if any(s["_uncertain"] for s in ramp):
                    # a failed request's events may or may not have landed: hold on a fresh stack
                    stack.stop()
                    stack, earlier = _stack(workdir / "hold-stack", pool)
                else:
                    earlier += [i for s in ramp for i in s["_acked"]]
            print(f"holding {rate:g} req/s for {args.hold:g} s", flush=True)
            held = hold(stack, rate, args.hold, workdir, pool, args.drain_timeout, args.p99_bound_ms, earlier)
        finally:
            stack.stop()

    result = {
        "benchmark": "load",
        "machine": description,
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "target": "collect API of the local stack on 127.0.0.1 (customer_context_devtools.local.stack.LocalStack)",
        "driver": {"tool": "locust (headless subprocess, FastHttpUser)", "user_requests_per_s": USER_RATE,
                   "batch_share": args.batch_share, "batch_events": args.batch_events, "event_pool": pool_size,
                   "routes": ["POST /v1/batch", "POST /v1/<type>"]},
        "criteria": {"errors": 0, "p99_ms_max": args.p99_bound_ms, "max_ms_below": 1000 / USER_RATE},
        "rate_held_requests_per_s": rate,
        "local_stack": {
            "sustained_requests_per_s": rate if held["kept_pace"] else max(
                [s["target_requests_per_s"] for s in ramp if s.get("sustained")], default=0.0),
            "achieved_requests_per_s_in_hold": held["requests_per_s"],
            "held_s": args.hold,
            "kept_pace": held["kept_pace"],
            "lost": held["events_lost"],
            "accounting": held["accounting"],
            "p99_ms": held["latency_ms"]["p99"],
            "p99_criterion_ms": args.p99_bound_ms,
            "p99_within_criterion": held["latency_ms"]["p99"] is not None
            and held["latency_ms"]["p99"] <= args.p99_bound_ms,
            "aim": f">= {args.aim:g} requests/s held {args.hold:g} s, nothing lost, p99 < {args.p99_bound_ms:g} ms",
            "aim_reached": bool(held["kept_pace"] and rate >= args.aim and held["events_lost"] == 0
                                and held["accounting"] == "ok"),
        },
        "hold": held,
        "ramp": [_public(s) for s in ramp],
    }
    description["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: held[k] for k in ("requests_per_s", "events_per_s", "errors", "latency_ms", "events_lost",
                                            "accounting")}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
