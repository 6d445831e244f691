"""Ingest benchmark: events/s through collect (in-process) and through ingest into Iceberg, next to
a raw pyarrow Parquet write of the same rows, all measured in one run on the same data.

Run with ``make bench`` (or ``python bench/ingest.py [--events N]``); writes
``bench/results/ingest.json``. Never a timed assertion in a test: the machines are shared and
noisy, so compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")

RESULTS = Path(__file__).resolve().parent / "results"


def _events(n: int) -> list[dict[str, Any]]:
    from customer_context.demo.generate import DemoConfig, generate_events

    out: list[dict[str, Any]] = []
    for event in generate_events(DemoConfig(customers=max(10, n // 10), seed=11, bad_event_rate=0.0)):
        event.pop("_bad", None)
        out.append(event)
        if len(out) == n:
            break
    return out


def _best_of(runs: int, fn: Any) -> tuple[float, list[float]]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), times


def bench(n_events: int, batch_size: int, runs: int) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from customer_context.collect.ingest import IngestBatch
    from customer_context.collect.service import Limits, TrackingRequest, collect
    from customer_context.config import Settings
    from customer_context.stores.iceberg import Lakehouse
    from customer_context.stores.keys import StaticWriteKeys
    from customer_context.stores.queue import MemoryEventQueue
    from customer_context.stores.tables import TABLES

    events = _events(n_events)
    limits = Limits(10 << 20, 4 << 20, 256 * 1024)
    keys = StaticWriteKeys({"wk": "bench"})
    auth = {"authorization": "Basic " + base64.b64encode(b"wk:").decode(), "content-type": "application/json"}
    bodies = [json.dumps({"batch": events[i:i + batch_size]}).encode() for i in range(0, len(events), batch_size)]

    # 1. collect, in-process (validation, stamping, packing; the queue is an in-memory list)
    queue = MemoryEventQueue()

    def run_collect() -> None:
        queue.bodies.clear()
        for body in bodies:
            collect(TrackingRequest("batch", body, auth, "127.0.0.1", "bench"), write_keys=keys, queue=queue,
                    spool=None, limits=limits)

    collect_s, collect_runs = _best_of(runs, run_collect)
    messages = list(queue.bodies)

    # 2. ingest: queue messages -> rows -> one Iceberg append (SQLite catalog, file warehouse)
    # 3. floor: the same rows, already as Arrow, written by pyarrow to one Parquet file
    work = Path(tempfile.mkdtemp(prefix="cc-bench-"))
    try:
        def run_ingest() -> None:
            data = work / f"lake-{time.perf_counter_ns()}"
            settings = Settings.from_env({"CUSTOMER_CONTEXT_DATA_DIR": str(data)})
            lakehouse = Lakehouse.from_settings(settings)
            lakehouse.table("events")  # table creation is not part of the steady state
            batch = IngestBatch(spool=None)
            t0 = time.perf_counter()
            for body in messages:
                batch.add(body)
            batch.commit(lakehouse)
            timings.append(time.perf_counter() - t0)

        timings: list[float] = []
        for _ in range(runs):
            run_ingest()
        ingest_s = min(timings)

        batch = IngestBatch(spool=None)
        for body in messages:
            batch.add(body)
        schema = TABLES["events"].schema.as_arrow()
        rows = batch.rows.events
        t0 = time.perf_counter()
        table = pa.Table.from_pylist(rows, schema=schema)
        to_arrow_s = time.perf_counter() - t0

        def run_parquet() -> None:
            pq.write_table(table, work / "floor.parquet", compression="zstd")

        parquet_s, parquet_runs = _best_of(runs, run_parquet)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    return {
        "events": len(events),
        "batch_size": batch_size,
        "runs": runs,
        "queue_messages": len(messages),
        "collect_events_per_s": round(len(events) / collect_s),
        "ingest_events_per_s": round(len(events) / ingest_s),
        "raw_parquet_write_events_per_s": round(len(events) / parquet_s),
        "ingest_vs_raw_parquet": round(parquet_s / ingest_s, 3),
        "breakdown_s": {
            "collect_best": round(collect_s, 4),
            "collect_median": round(statistics.median(collect_runs), 4),
            "ingest_best": round(ingest_s, 4),
            "rows_to_arrow": round(to_arrow_s, 4),
            "raw_parquet_best": round(parquet_s, 4),
            "raw_parquet_median": round(statistics.median(parquet_runs), 4),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=100, help="events per collect request (SDK default 100)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"ingest benchmark: {args.events:,} events, best of {args.runs} …", flush=True)
    result = {
        "benchmark": "ingest",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **bench(args.events, args.batch_size, args.runs),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ingest.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
