"""Serving benchmark: fetch handler overhead, latency over HTTP, cold import, event-to-visible freshness.

    python bench/serve.py [--requests 2000]

* **handler overhead** — the fetch handler invoked in-process with API Gateway events, the store
  answered from memory (no network): what our code adds per request (p50 / p99);
* **over HTTP** — the same requests through the local stack (HTTP server → API Gateway event →
  handler → DynamoDB on moto's server over loopback);
* **cold import** — a fresh interpreter importing the fetch handler, next to the floor: ``import
  boto3`` plus Powertools' ``APIGatewayHttpResolver`` (median of several runs);
* **freshness** — an event sent to collect until a fetch shows it in ``recent_events``.

Results go to ``bench/results/serve.json``. Ratios are what to compare: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
FETCH_APP = ROOT / "functions" / "fetch_context" / "app.py"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def _summary(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": _pct(ms, 0.50), "p99_ms": _pct(ms, 0.99), "mean_ms": round(statistics.fmean(ms), 3),
            "n": len(ms)}


def _doc(n_traits: int = 20) -> str:
    return json.dumps({
        "profile_id": "p1", "profile": {"identifiers": {"email": ["ada@example.com"], "user_id": ["u_000001"]}},
        "scores": {"churn_risk": 0.12, "p_alive": 0.88, "expected_orders_365d": 3.1, "ltv_365d": 410.5,
                   "repeat_purchases": 4},
        "traits": {f"t{i}": i for i in range(n_traits)} | {"orders_90d": 2, "lifetime_revenue": 512.4},
        "records": {"crm_contacts": {"contact_id": "C-1", "lifecycle_stage": "customer"}},
        "interactions": [{"table": "support_tickets", "channel": "chat", "status": "open", "subject": "Refund",
                          "body": "Where is my refund? " * 10}],
        "recent_events": [{"type": "track", "event": "Product Viewed", "timestamp": f"2026-11-24T10:{m:02d}:00Z",
                           "properties": '{"category":"shoes"}'} for m in range(20)],
        "built_at": "2026-11-24T12:00:00+00:00", "data_as_of": "2026-11-24T11:59:00+00:00"})


def _fetch_handler(doc: str) -> Any:
    """The real fetch handler over an in-memory store holding one customer (``doc``) and the sample
    events' consumer key."""
    sys.path.insert(0, str(ROOT))
    from customer_context import wiring
    from customer_context.serve.consumers import consumer_item, hash_key
    from customer_context.stores.context_store import MemoryContextStore, SnapshotItem
    from customer_context_devtools.local.lambda_runtime import load_module

    store = MemoryContextStore()
    store.put_consumer(hash_key("ck_sample_consumer_key"), consumer_item("bench", ["*"], []))
    store.put_snapshots([SnapshotItem("p1", doc, "h", 1, "2026-11-24T12:00:00+00:00", "2026-11-24T11:59:00+00:00")])
    store.put_aliases([("email", "ada@example.com", "p1"), ("user_id", "u_000001", "p1")])
    if hasattr(wiring.context_store, "cache_clear"):  # not yet swapped for a memory store by an earlier call
        wiring.reload_from_environment()
    wiring.context_store = lambda: store  # type: ignore[assignment]
    wiring.write_keys = lambda: None  # type: ignore[assignment]
    return load_module("fetch_context")


def _time_handler(app: Any, event: dict[str, Any], requests_n: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Latency summary of ``requests_n`` calls (after 50 to warm up), and the last response."""
    from customer_context_devtools.local.lambda_runtime import LocalLambdaContext

    context = LocalLambdaContext("fetch_context")
    for _ in range(50):  # warm
        app.lambda_handler(event, context)
    times = []
    for _ in range(requests_n):
        start = time.perf_counter()
        response = app.lambda_handler(event, context)
        times.append((time.perf_counter() - start) * 1000)
        assert response["statusCode"] == 200, response
    return _summary(times), response


def handler_overhead(requests_n: int) -> dict[str, Any]:
    """In-process: sample API Gateway events through the real handler, store in memory."""
    app = _fetch_handler(_doc())
    out: dict[str, Any] = {}
    for name in ("fetch_context_get", "fetch_context_text"):
        event = json.loads((ROOT / "events" / f"{name}.json").read_text())
        out[name.removeprefix("fetch_context_")] = _time_handler(app, event, requests_n)[0]
    return out


def _import_s(code: str) -> float:
    """Seconds a fresh interpreter takes to run ``code`` (imports only)."""
    script = f"import time; t = time.perf_counter()\n{code}\nprint(time.perf_counter() - t)"
    env = dict(os.environ, POWERTOOLS_TRACE_DISABLED="true", POWERTOOLS_METRICS_DISABLED="true")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def cold_import(runs: int = 9) -> dict[str, Any]:
    """The fetch handler's import next to the floor (boto3 + the Powertools resolver): best of ``runs``
    fresh interpreters each, alternating one and the other so both see the same machine load."""
    handler = (f"import importlib.util\nspec = importlib.util.spec_from_file_location('app', r'{FETCH_APP}')\n"
               "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)")
    floor = ("import boto3\nfrom aws_lambda_powertools.event_handler import APIGatewayHttpResolver\n"
             "APIGatewayHttpResolver(enable_validation=True)")
    # the handler imports boto3 on its first request rather than at import: count it, to compare like with like
    fetch, base, alone = [], [], []
    for _ in range(runs):
        fetch.append(_import_s(handler + "\nimport boto3"))
        base.append(_import_s(floor))
        alone.append(_import_s(handler))
    return {"fetch_handler_plus_boto3_s": round(min(fetch), 4), "floor_boto3_powertools_s": round(min(base), 4),
            "ratio": round(min(fetch) / min(base), 3), "fetch_handler_alone_s": round(min(alone), 4),
            "method": f"best of {runs} fresh interpreters each, alternating", "target_ratio_max": 1.2,
            "medians_s": {"fetch_handler_plus_boto3": round(statistics.median(fetch), 4),
                          "floor": round(statistics.median(base), 4)}}


def over_http(requests_n: int) -> dict[str, Any]:
    """Through the local stack: HTTP → handler → DynamoDB on moto; plus event-to-visible freshness."""
    import requests
    from customer_context_devtools.local.stack import LocalStack

    with tempfile.TemporaryDirectory(prefix="cc-bench-serve-") as tmp:
        stack = LocalStack(Path(tmp), write_keys={"wk_bench": "bench"}, batch_window=0.2)
        stack.start()
        try:
            session = requests.Session()
            session.headers["authorization"] = f"Bearer {stack.consumer_key}"
            batch = [{"type": "identify", "userId": "u1", "traits": {"email": "ada@example.com"}},
                     *({"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"revenue": 10 + i}}
                       for i in range(10))]
            requests.post(f"{stack.url}/v1/batch", json={"batch": batch}, auth=("wk_bench", ""),
                          timeout=10).raise_for_status()
            stack.wait_for_ingest(60)
            stack.build()
            url = f"{stack.url}/v1/context/email/ada@example.com"
            results: dict[str, Any] = {}
            for label, params in (("fields", {"fields": "traits.orders_90d,scores.churn_risk"}),
                                  ("text", {"format": "text", "max_tokens": 400}),
                                  ("with_recent_events", {"sections": "recent_events"})):
                for _ in range(20):
                    session.get(url, params=params, timeout=10)
                times = []
                for _ in range(requests_n // 4):
                    start = time.perf_counter()
                    answer = session.get(url, params=params, timeout=10)
                    times.append((time.perf_counter() - start) * 1000)
                    assert answer.status_code == 200, answer.text
                results[label] = _summary(times)
            fresh = []
            for i in range(20):
                marker = f"Bench Event {i}"
                start = time.perf_counter()
                requests.post(f"{stack.url}/v1/track", json={"userId": "u1", "event": marker},
                              auth=("wk_bench", ""), timeout=10).raise_for_status()
                while True:
                    got = session.get(url, params={"sections": "recent_events"}, timeout=10).json()
                    if got["context"]["recent_events"] and got["context"]["recent_events"][0].get("event") == marker:
                        break
                    if time.perf_counter() - start > 30:
                        raise RuntimeError("event not visible after 30 s")
                fresh.append((time.perf_counter() - start) * 1000)
            results["event_to_visible"] = _summary(fresh)
            results["event_to_visible_p99_s"] = round(results["event_to_visible"]["p99_ms"] / 1000, 3)
            return results
        finally:
            stack.stop()


# --- Feast peer (bench/peers/feast): our fetch handler vs get_online_features, the same 17 traits ---
FEAST_TRAITS = ("orders_90d", "revenue_90d", "lifetime_revenue", "average_order_value", "largest_order",
                "last_order_at", "first_seen_at", "last_seen_at", "plan", "name", "favourite_category",
                "categories_viewed_30d", "products_viewed_7d", "carts_abandoned_30d", "big_spender_orders",
                "uses_mobile_app", "days_since_last_order")


FEAST_DOC_TRAITS = {"orders_90d": 2, "revenue_90d": 181.2, "lifetime_revenue": 512.4, "average_order_value": 85.4,
                    "largest_order": 160.0, "last_order_at": "2026-11-20T10:00:00.000Z",
                    "first_seen_at": "2026-09-01T08:00:00.000Z", "last_seen_at": "2026-11-24T11:00:00.000Z",
                    "plan": "pro", "name": "Ada Lovelace", "favourite_category": "Shoes",
                    "categories_viewed_30d": ["Accessories", "Shoes"], "products_viewed_7d": 3,
                    "carts_abandoned_30d": 1, "big_spender_orders": 1, "uses_mobile_app": True,
                    "days_since_last_order": 4, "crm_stage": "customer", "account_manager": "Grace", "open_tickets": 0}


def feast_peer(requests_n: int) -> dict[str, Any]:
    """Our handler asked for ``fields=traits.<the 17>`` (in-process, store in memory) next to Feast's
    ``get_online_features`` of the same 17 features for one customer (in-process, SQLite online store
    materialized from size S's generated events; DynamoDB on moto's server too)."""
    import shutil

    from assemble import data_files, generate  # bench/ is on sys.path when run as a script
    from peers.feast.runner import run_peer

    doc = json.loads(_doc())
    doc["traits"] = FEAST_DOC_TRAITS
    app = _fetch_handler(json.dumps(doc))
    event = json.loads((ROOT / "events" / "fetch_context_get.json").read_text())
    fields = ",".join(f"traits.{t}" for t in FEAST_TRAITS)
    event["queryStringParameters"] = {"fields": fields, "format": "json"}
    event["rawQueryString"] = f"fields={fields}&format=json"
    ours, response = _time_handler(app, event, requests_n)
    served = json.loads(response["body"])["context"]["traits"]
    assert sorted(served) == sorted(FEAST_TRAITS), served
    work = Path(tempfile.mkdtemp(prefix="cc-bench-feast-"))
    try:
        generate(work / "lake", "S")
        peer = run_peer(data_files(work / "lake"), work / "feast", lookups=requests_n, dynamodb=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out: dict[str, Any] = {"features": len(FEAST_TRAITS), "fetch_fields_overhead": ours, "feast": peer}
    if "online" in peer:
        out["fetch_vs_feast"] = {q: round(peer["online"][q] / ours[q], 2) for q in ("p50_ms", "p99_ms")}
        if "online" in peer.get("dynamodb", {}):
            out["fetch_vs_feast_dynamodb_moto"] = {
                q: round(peer["dynamodb"]["online"][q] / ours[q], 2) for q in ("p50_ms", "p99_ms")}
    return out
# --- end Feast peer ---


def _fair_handler(store_path: Path, customers: int) -> tuple[Any, list[str]]:
    """The real fetch handler over a SQLite context store (bench/sqlite_store.py) of ``customers`` customers,
    each with the 17 traits, found by ``user_id``: the same kind and size of store as Feast's."""
    from customer_context.serve.consumers import consumer_item, hash_key
    from customer_context.stores.context_store import SnapshotItem
    from sqlite_store import SqliteContextStore

    store = SqliteContextStore(store_path)
    store.put_consumer(hash_key("ck_sample_consumer_key"), consumer_item("bench", ["*"], []))
    doc = json.loads(_doc())
    doc["traits"] = FEAST_DOC_TRAITS
    users = [f"u_{i:06d}" for i in range(customers)]
    for start in range(0, customers, 10_000):
        chunk = users[start:start + 10_000]
        store.put_snapshots([SnapshotItem(f"p{u}", json.dumps(doc | {"profile_id": f"p{u}"}), "h", 1,
                                          "2026-11-24T12:00:00+00:00", "2026-11-24T11:59:00+00:00") for u in chunk])
        store.put_aliases([("user_id", u, f"p{u}") for u in chunk])
    app = _fetch_handler(_doc())  # loads the handler; then point it at the SQLite store
    from customer_context import wiring

    wiring.context_store = lambda: store  # type: ignore[assignment]
    wiring.context_service.cache_clear()  # built over an earlier store by an earlier measurement
    wiring.consumers.cache_clear()
    return app, users


class _StoreClock:
    """Seconds spent inside a store's read calls (the round trips), so the handler's own overhead is the rest."""

    READS = ("resolve", "get_snapshot", "get_snapshots", "recent", "get_consumer")

    def __init__(self, store: Any) -> None:
        self.spent = self.spent_cpu = 0.0
        for name in self.READS:
            setattr(store, name, self._timed(getattr(store, name)))

    def _timed(self, call: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start, start_cpu = time.perf_counter(), time.thread_time()
            try:
                return call(*args, **kwargs)
            finally:
                self.spent_cpu += time.thread_time() - start_cpu
                self.spent += time.perf_counter() - start
        return timed


def _time_fair(app: Any, sample: list[dict[str, Any]], clock: _StoreClock, requests_n: int) -> dict[str, Any]:
    """The whole handler per call, and the same calls without the time spent in store reads (the overhead)."""
    from customer_context_devtools.local.lambda_runtime import LocalLambdaContext

    context = LocalLambdaContext("fetch_context")
    for e in sample[:50]:
        app.lambda_handler(e, context)
    times, overhead, store, overhead_cpu, cpu = [], [], [], [], time.process_time()
    for e in sample[50:]:
        clock.spent = clock.spent_cpu = 0.0
        start, start_cpu = time.perf_counter(), time.thread_time()
        response = app.lambda_handler(e, context)
        took_cpu = time.thread_time() - start_cpu
        took = time.perf_counter() - start
        times.append(took * 1000)
        overhead.append((took - clock.spent) * 1000)
        overhead_cpu.append((took_cpu - clock.spent_cpu) * 1000)
        store.append(clock.spent * 1000)
        assert response["statusCode"] == 200, response
        assert sorted(json.loads(response["body"])["context"]["traits"]) == sorted(FEAST_TRAITS)
    whole = _summary(times) | {"cpu_ms_per_call": round((time.process_time() - cpu) / requests_n * 1000, 3)}
    return {"whole": whole, "overhead": _summary(overhead) | {"cpu": _summary(overhead_cpu)},
            "store_reads": _summary(store)}


def feast_fair(requests_n: int, customers: int) -> dict[str, Any]:
    """Ours and Feast's, both in-process over a SQLite store of the same size (``customers`` customers, the
    same 17 traits), one random customer per call, in the same run. Ours asks ``fields=traits.<the 17>``
    through the whole handler (auth, validation, resolve, snapshot read, projection, JSON); its overhead is
    that minus the time spent in store reads, per call (what the aim compares with Feast's whole call). Ours
    is also measured with every request sent through the Powertools resolver (``resolver_path``: the handler
    as it was before ``GET /v1/context`` was answered directly), right after."""
    import random
    import shutil

    from assemble import data_files, generate  # bench/ is on sys.path when run as a script
    from peers.feast.runner import run_peer

    work = Path(tempfile.mkdtemp(prefix="cc-bench-fair-"))
    try:
        app, users = _fair_handler(work / "ours.sqlite", customers)
        from customer_context import wiring

        clock = _StoreClock(wiring.context_store())
        base = json.loads((ROOT / "events" / "fetch_context_get.json").read_text())
        fields = ",".join(f"traits.{t}" for t in FEAST_TRAITS)
        rng = random.Random(5)

        def event(user: str) -> dict[str, Any]:
            e = json.loads(json.dumps(base))
            e["rawPath"] = e["requestContext"]["http"]["path"] = f"/v1/context/user_id/{user}"
            e["pathParameters"] = {"identifier_type": "user_id", "identifier_value": user}
            e["queryStringParameters"] = {"fields": fields, "format": "json"}
            e["rawQueryString"] = f"fields={fields}&format=json"
            return e

        sample = [event(users[rng.randrange(len(users))]) for _ in range(requests_n + 50)]
        ours = _time_fair(app, sample, clock, requests_n)
        direct, app._direct_context = app._direct_context, (lambda event: None)  # every request via the resolver
        try:
            resolver = _time_fair(app, sample, clock, requests_n)
        finally:
            app._direct_context = direct
        generate(work / "lake", "S")
        peer = run_peer(data_files(work / "lake"), work / "feast", lookups=requests_n, min_customers=customers)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out: dict[str, Any] = {"store": "SQLite file on disk, both sides", "customers": customers,
                           "features": len(FEAST_TRAITS), "ours_in_process": ours["whole"],
                           "ours_overhead": ours["overhead"], "ours_store_reads": ours["store_reads"],
                           "resolver_path": {"whole": resolver["whole"], "overhead": resolver["overhead"]},
                           "method": "one run each, the direct path then the resolver path, the same requests; "
                                     "overhead = each call minus its time in store reads",
                           "feast": peer}
    if "online" in peer:
        feast_p = peer["online"]
        out["overhead_p99_ratio"] = round(feast_p["p99_ms"] / ours["overhead"]["p99_ms"], 2)
        out["overhead_p50_ratio"] = round(feast_p["p50_ms"] / ours["overhead"]["p50_ms"], 2)
        out["whole_handler_p99_ratio"] = round(feast_p["p99_ms"] / ours["whole"]["p99_ms"], 2)
        out["resolver_path_overhead_p99_ratio"] = round(feast_p["p99_ms"] / resolver["overhead"]["p99_ms"], 2)
        if "cpu" in feast_p:  # per-call CPU time: what the code costs, whatever else the machine runs
            out["overhead_p99_ratio_cpu"] = round(feast_p["cpu"]["p99_ms"] / ours["overhead"]["cpu"]["p99_ms"], 2)
            out["overhead_p50_ratio_cpu"] = round(feast_p["cpu"]["p50_ms"] / ours["overhead"]["cpu"]["p50_ms"], 2)
        out["target"] = "Feast's p99 / our overhead p99 >= 3 (overhead: everything but store round trips)"
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per in-process measurement")
    parser.add_argument("--no-feast", action="store_true", help="skip the Feast peer")  # Feast peer
    parser.add_argument("--customers", type=int, default=100_000, help="customers in both stores (fair peer)")
    args = parser.parse_args()
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    import warnings

    warnings.filterwarnings("ignore", message="No application metrics to publish")
    load_start = round(os.getloadavg()[0], 2)
    print("[serve] cold import …", flush=True)
    cold = cold_import()
    print(f"  {cold}", flush=True)
    print("[serve] local stack over HTTP …", flush=True)
    http = over_http(args.requests)
    print(f"  {http}", flush=True)
    print("[serve] handler overhead in-process …", flush=True)
    overhead = handler_overhead(args.requests)
    print(f"  {overhead}", flush=True)
    feast = {} if args.no_feast else {"feast_peer": feast_peer(args.requests)}  # Feast peer
    if not args.no_feast:
        print(f"[serve] fair Feast peer: both over SQLite, {args.customers:,} customers …", flush=True)
        feast["fetch_vs_feast_fair"] = feast_fair(args.requests, args.customers)
    print(f"  {feast}", flush=True)  # Feast peer
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps({
        "benchmark": "serve",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "loadavg_1m_at_start": load_start, "loadavg_1m_at_end": round(os.getloadavg()[0], 2)},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "handler_overhead": overhead, "over_http_local_stack": http, "cold_import": cold, **feast,
    }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
