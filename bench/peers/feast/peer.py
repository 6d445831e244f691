"""The Feast peer: the same per-customer features, computed, materialized and served the Feast way.

Run with the Feast virtualenv's interpreter (``bench/peers/feast/runner.py`` creates it):

    .venv-feast/bin/python bench/peers/feast/peer.py --work /tmp/w --events a.parquet b.parquet
    .venv-feast/bin/python bench/peers/feast/peer.py --work /tmp/w @files.txt     # one path a line

1. **features** — DuckDB runs ``features.sql`` over the events Parquet (the files our build and the
   DuckDB floor read) and writes one row per customer id (Feast does not aggregate events);
2. **apply** — ``FeatureStore.apply`` of ``features.py`` (the SDK call behind ``feast apply``);
3. **materialize** — ``FeatureStore.materialize`` into the SQLite online store, timed, with its own
   peak RSS (``VmHWM`` reset through ``/proc/self/clear_refs`` before it);
4. **online** — ``get_online_features`` for one customer at a time, all 17 features, in-process
   (p50 / p99 over ``--lookups`` calls, after a warm-up), values checked against the feature rows;
5. with ``--dynamodb``: the same apply / materialize / lookups with the DynamoDB online store on
   moto's server (loopback), bounded by ``--dynamodb-rows`` rows.

Prints one JSON object on stdout (progress on stderr). Times exclude interpreter start and imports
(``import_s`` is reported apart), as the build's do.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import statistics
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def log(msg: str) -> None:
    print(f"  [feast] {msg}", file=sys.stderr, flush=True)


def peak_rss_mb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return -1


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ≥ 4.0), so the next stage's peak is its own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def summary(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"p50_ms": pct(0.50), "p99_ms": pct(0.99), "mean_ms": round(statistics.fmean(ms), 3), "n": len(ms)}


def compute_features(files: list[str], out: Path) -> dict[str, Any]:
    import duckdb

    sql = (HERE / "features.sql").read_text()
    literal = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
    sql = sql.replace("$files", literal).replace("$features_path", "'" + str(out).replace("'", "''") + "'")
    t0, c0 = time.perf_counter(), time.process_time()
    con = duckdb.connect()
    con.execute(sql)
    rows, as_of = con.execute(f"SELECT count(*), max(event_timestamp) FROM read_parquet('{out}')").fetchone()
    con.close()
    return {"features_sql_s": round(time.perf_counter() - t0, 3),
            "features_sql_cpu_s": round(time.process_time() - c0, 3), "feature_rows": rows, "as_of": as_of}


def widen(features_file: Path, customers: int) -> int:
    """Copies of the feature rows under new customer ids (``<id>~<n>``) until there are ``customers`` rows:
    an online store of that size, the values those of real feature rows."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(features_file)
    parts, n, copy = [table], table.num_rows, 1
    while n < customers:
        part = table.slice(0, min(table.num_rows, customers - n))
        ids = pc.binary_join_element_wise(part["customer_id"], pa.scalar(f"~{copy}"), "")
        parts.append(part.set_column(part.schema.get_field_index("customer_id"), "customer_id", ids))
        n += part.num_rows
        copy += 1
    pq.write_table(pa.concat_tables(parts), features_file)
    return n


def make_repo(repo: Path, online_store: dict[str, Any] | None = None) -> Path:
    """A feature repo: feature_store.yaml (online store swapped if given) and features.py."""
    import yaml

    repo.mkdir(parents=True, exist_ok=True)
    (repo / "data").mkdir(exist_ok=True)
    config = yaml.safe_load((HERE / "feature_store.yaml").read_text())
    if online_store is not None:
        config["online_store"] = online_store
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copy(HERE / "features.py", repo / "features.py")
    return repo


def load_definitions(repo: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"feast_peer_features_{abs(hash(repo))}", repo / "features.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def apply_and_materialize(repo: Path, as_of: Any) -> tuple[Any, Any, dict[str, Any]]:
    from feast import FeatureStore

    defs = load_definitions(repo)
    store = FeatureStore(repo_path=str(repo))
    t0, c0 = time.perf_counter(), time.process_time()  # CPU seconds of every thread of this process
    store.apply([defs.customer, defs.customer_traits])
    apply_s, apply_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    reset_ok = reset_peak_rss()
    t0, c0 = time.perf_counter(), time.process_time()
    store.materialize(start_date=as_of - timedelta(days=1), end_date=as_of + timedelta(seconds=1),
                      feature_views=["customer_traits"])
    materialize_s, materialize_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    return store, defs, {"apply_s": round(apply_s, 3), "materialize_s": round(materialize_s, 3),
                         "apply_cpu_s": round(apply_cpu_s, 3), "materialize_cpu_s": round(materialize_cpu_s, 3),
                         "materialize_peak_rss_mb": peak_rss_mb() if reset_ok else None}


def online_latency(store: Any, defs: Any, features_file: Path, lookups: int, seed: int = 5) -> dict[str, Any]:
    """``get_online_features`` for one customer at a time, every feature; values checked first."""
    import math

    import pyarrow.parquet as pq

    table = pq.read_table(features_file).to_pylist()
    rng = random.Random(seed)
    sample = [table[rng.randrange(len(table))] for _ in range(lookups)]
    refs = [f"customer_traits:{name}" for name in defs.FEATURES]

    def get(customer_id: str) -> dict[str, list[Any]]:
        return store.get_online_features(features=refs, entity_rows=[{"customer_id": customer_id}]).to_dict()

    checked = 0
    for row in sample[:50]:  # the online store answers what the feature rows say
        got = get(row["customer_id"])
        for name in ("orders_90d", "lifetime_revenue", "plan", "products_viewed_7d", "uses_mobile_app"):
            want, have = row[name], got[name][0]
            same = (want is None and have is None) or want == have or (
                isinstance(want, float) and isinstance(have, float) and math.isclose(want, have))
            if not same:
                raise AssertionError(f"{row['customer_id']}.{name}: online {have!r}, feature row {want!r}")
        checked += 1
    for row in sample[:50]:  # warm
        get(row["customer_id"])
    times, cpu = [], []
    for row in sample:
        start, start_cpu = time.perf_counter(), time.thread_time()
        answer = get(row["customer_id"])
        cpu.append((time.thread_time() - start_cpu) * 1000)
        times.append((time.perf_counter() - start) * 1000)
        assert answer["customer_id"] == [row["customer_id"]]
    # the CPU time of each call too (this thread's): unlike wall time, not lengthened when a busy machine
    # takes the core away mid-call
    return {"features": len(refs), "values_checked_customers": checked, **summary(times), "cpu": summary(cpu)}


def dynamodb_run(work: Path, features_file: Path, rows: int, as_of: Any, lookups: int) -> dict[str, Any]:
    """The same on the DynamoDB online store, on moto's server over loopback."""
    import pyarrow.parquet as pq
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        subset = work / "dynamodb_features.parquet"
        table = pq.read_table(features_file)
        pq.write_table(table.slice(0, min(rows, table.num_rows)), subset)
        os.environ["FEAST_PEER_FEATURES"] = str(subset)
        repo = make_repo(work / "repo_dynamodb", {"type": "dynamodb", "region": "us-east-1",
                                                  "endpoint_url": endpoint})
        store, defs, timings = apply_and_materialize(repo, as_of)
        latency = online_latency(store, defs, subset, lookups)
        return {"endpoint": "moto server on loopback", "rows": min(rows, table.num_rows), **timings,
                "online": latency}
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], fromfile_prefix_chars="@")
    parser.add_argument("--work", required=True, type=Path, help="work dir (created; the feature repo goes here)")
    parser.add_argument("--lookups", type=int, default=3000, help="get_online_features calls timed")
    parser.add_argument("--dynamodb", action="store_true", help="also DynamoDB online store on moto's server")
    parser.add_argument("--dynamodb-rows", type=int, default=5_000, help="rows materialized into DynamoDB")
    parser.add_argument("--dynamodb-lookups", type=int, default=500)
    parser.add_argument("--min-customers", type=int, default=0,
                        help="copy the feature rows under new customer ids until the online store holds this many")
    parser.add_argument("events", nargs="+", help="the events Parquet files")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    import feast  # noqa: F401  (the import is timed apart)

    import_s = time.perf_counter() - t0
    args.work.mkdir(parents=True, exist_ok=True)
    repo = args.work / "repo"
    features_file = repo / "data" / "customer_features.parquet"
    make_repo(repo)
    log(f"features SQL over {len(args.events)} Parquet file(s) …")
    feats = compute_features(args.events, features_file)
    sql_peak = peak_rss_mb()
    if args.min_customers > feats["feature_rows"]:
        feats["feature_rows"] = widen(features_file, args.min_customers)
    os.environ["FEAST_PEER_FEATURES"] = str(features_file)
    log(f"{feats['feature_rows']:,} feature rows in {feats['features_sql_s']} s; apply + materialize (SQLite) …")
    store, defs, timings = apply_and_materialize(repo, feats["as_of"])
    log(f"materialize {timings['materialize_s']} s; {args.lookups} get_online_features …")
    latency = online_latency(store, defs, features_file, args.lookups)
    import feast as feast_module

    result: dict[str, Any] = {
        "feast_version": feast_module.__version__, "offline_store": "duckdb", "online_store": "sqlite",
        "import_s": round(import_s, 3), "feature_rows": feats["feature_rows"],
        "features_sql_s": feats["features_sql_s"], "features_sql_cpu_s": feats["features_sql_cpu_s"],
        "features_sql_peak_rss_mb": sql_peak, **timings,
        "total_s": round(feats["features_sql_s"] + timings["apply_s"] + timings["materialize_s"], 3),
        "peak_rss_mb": max(sql_peak, timings["materialize_peak_rss_mb"] or 0),
        "materialize_rows_per_s": round(feats["feature_rows"] / max(timings["materialize_s"], 1e-9)),
        "online": latency,
    }
    if args.dynamodb:
        log("DynamoDB online store on moto's server …")
        try:
            result["dynamodb"] = dynamodb_run(args.work, features_file, args.dynamodb_rows, feats["as_of"],
                                              args.dynamodb_lookups)
        except Exception as exc:  # reported, not fatal: the SQLite numbers stand
            result["dynamodb"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
