"""Assembly benchmark: a full build over generated data next to DuckDB's bare scan + group-by of the
same Parquet files (the floor), measured in the same run, plus the build after 1 % of customers got a new
order at the same clock (an incremental build: ``incremental_*``, with whether it left served what a full
build lands) and a build one clock step later with no new events (``clock_step_*``).

    python bench/assemble.py --sizes M L      # ~1M and ~10M events (default: M)

Each build runs in a child process so its peak RSS is measured alone (``VmHWM``: Linux carries
``ru_maxrss`` across exec, so a child would inherit the parent's peak). Results go
to ``bench/results/assemble.json``. Each size builds twice: landing into a SQLite file on disk
(``bench/sqlite_store.py``, the same kind of store Feast's materialize writes: the like-for-like
comparison with Feast) and into a store that counts the items and keeps none (the build's own cost).
The DuckDB floor runs three times, alternating with the builds, and its best CPU time is kept; the
1 % rebuild lands into the SQLite store the full build filled. Next to
Feast: CPU seconds of both landing into SQLite, and of the feature computation alone (our stages up to
the landing; Feast's feature SQL). A child that dies (out of memory) is reported, not waited for.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"S": 100_000, "M": 1_000_000, "L": 10_000_000}


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def generate(lake_dir: Path, size: str, seed: int = 11) -> dict[str, Any]:
    """Write generated events into a fresh lakehouse in chunks (the same rows ingest would write)."""
    import pyarrow as pa
    from customer_context.config import Settings
    from customer_context.stores.iceberg import Lakehouse
    from customer_context_devtools.demo.generate import generate_events, size_config

    lakehouse = Lakehouse.from_settings(Settings.from_env({"CUSTOMER_CONTEXT_DATA_DIR": str(lake_dir)}))
    schema = lakehouse.arrow_schema("events")
    received = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    n = 0
    t0 = time.perf_counter()
    for e in generate_events(size_config(size, seed)):
        if "_bad" in e:
            continue
        ctx = e.get("context") or {}
        ts = datetime.fromisoformat(e["timestamp"])
        props = e.get("properties") or {}
        rows.append({
            "message_id": e["messageId"], "type": e["type"], "event": e.get("event"), "user_id": e.get("userId"),
            "anonymous_id": e.get("anonymousId"), "group_id": e.get("groupId"), "previous_id": e.get("previousId"),
            "timestamp": ts, "original_timestamp": ts, "sent_at": None, "received_at": received, "source_id": "bench",
            "channel": None, "ip": ctx.get("ip"), "request_ip": None, "user_agent": ctx.get("userAgent"),
            "locale": ctx.get("locale"), "library_name": None, "library_version": None, "name": e.get("name"),
            "category": e.get("category"), "page_url": props.get("url") if e["type"] == "page" else None,
            "page_path": props.get("path") if e["type"] == "page" else None, "page_title": None,
            "page_referrer": None, "page_search": None, "properties": _dumps(e.get("properties")),
            "traits": _dumps(e.get("traits") or ctx.get("traits")), "context": _dumps(ctx),
            "integrations": None, "extra": None,
        })
        n += 1
        if len(rows) == 500_000:
            lakehouse.append("events", pa.Table.from_pylist(rows, schema=schema))
            rows.clear()
            print(f"  generated {n:,} events ({n / (time.perf_counter() - t0):,.0f}/s)", flush=True)
    if rows:
        lakehouse.append("events", pa.Table.from_pylist(rows, schema=schema))
    return {"events": n, "generate_s": round(time.perf_counter() - t0, 1)}


def replicate(source_lake: Path, lake_dir: Path, copies: int) -> dict[str, Any]:
    """Events of ``copies`` disjoint populations: the events of ``source_lake`` once per copy, every
    identifier (message, user, device, group ids; emails inside traits, context and properties) suffixed
    with the copy's number, so the copies never stitch together. Same shape per customer as the generator's
    at the larger size, made in seconds instead of its pure-Python pace (minutes to hours on a busy machine)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from customer_context.config import Settings
    from customer_context.stores.iceberg import Lakehouse

    lakehouse = Lakehouse.from_settings(Settings.from_env({"CUSTOMER_CONTEXT_DATA_DIR": str(lake_dir)}))
    schema = lakehouse.arrow_schema("events")
    t0 = time.perf_counter()
    source = pq.read_table(data_files(source_lake), partitioning=None).select(schema.names).cast(schema)
    n = 0
    for k in range(copies):
        copy = source
        if k:
            for column in ("message_id", "user_id", "anonymous_id", "previous_id", "group_id"):
                i = copy.schema.get_field_index(column)
                kind = copy.schema.field(i).type
                copy = copy.set_column(i, column, pc.binary_join_element_wise(
                    copy[column], pa.scalar(f"~{k}", kind), pa.scalar("", kind)))
            for column in ("traits", "context", "properties"):
                i = copy.schema.get_field_index(column)
                copy = copy.set_column(i, column, pc.replace_substring(copy[column], "@", f"+r{k}@"))
        lakehouse.append("events", copy.cast(schema))
        n += copy.num_rows
        print(f"  replicated {n:,} events", flush=True)
    return {"events": n, "generate_s": round(time.perf_counter() - t0, 1),
            "generated_as": f"{copies} copies of the generator's size-M events, identifiers suffixed per copy"}


def prepare(size: str, work: Path, data_dir: Path | None, l_from_m: bool) -> tuple[Path, dict[str, Any]]:
    """The lake of ``size``: generated (or, with ``l_from_m``, L replicated from M); with ``data_dir``, kept
    there (``<size>/pristine``) and restored by a copy on later runs, as generating is not what is measured.
    The copy goes back to the same path (the catalog holds absolute paths)."""
    base = data_dir / size if data_dir else work
    lake, pristine, meta = base / "lake", base / "pristine", base / "generated.json"
    if data_dir and meta.exists() and pristine.exists():
        shutil.rmtree(lake, ignore_errors=True)
        shutil.copytree(pristine, lake)
        return lake, json.loads(meta.read_text())
    shutil.rmtree(lake, ignore_errors=True)
    if size == "L" and l_from_m:
        source, _ = prepare("M", work / "M", data_dir, False) if data_dir else (work / "M-lake", None)
        if not data_dir:
            generate(source, "M")
        print(f"[{size}] replicating M ×10 …", flush=True)
        gen = replicate(source, lake, 10)
    else:
        print(f"[{size}] generating ~{TARGETS[size]:,} events …", flush=True)
        gen = generate(lake, size)
    if data_dir:
        shutil.rmtree(pristine, ignore_errors=True)
        shutil.copytree(lake, pristine)
        meta.write_text(json.dumps(gen))
    return lake, gen


def _cpu_s() -> float:
    """CPU seconds of this process so far, every thread (a busy machine stretches wall time, not this)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb() -> int:
    """This process's peak resident memory (``VmHWM``), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # not Linux


class _DiscardStore:
    """Counts what a build lands and keeps none of it (DynamoDB keeps it outside the build's process;
    holding millions of documents here would measure the benchmark, not the build). It keeps only the
    landing marker, in a file beside the lake, so the next build's process finds the store in step."""

    def __init__(self, lake_dir: str) -> None:
        self.marker = Path(lake_dir) / "discard-store-marker"

    @staticmethod
    def _count(items: Any, refused: Any = None) -> int:
        return sum(1 for _ in items)

    put_snapshots = put_aliases = delete_snapshots = delete_aliases = _count

    def get_landing_marker(self) -> str | None:
        return self.marker.read_text() if self.marker.is_file() else None

    def put_landing_marker(self, generation: str) -> None:
        self.marker.write_text(generation)

    def missing(self, snapshots: Any, aliases: Any) -> None:
        return None  # it holds, by construction, whatever was landed

    def deletion_generation(self) -> int:
        return 0

    def deleted_identifiers(self) -> set[str]:
        return set()

    def acquire_fence(self, owner: str, lease_seconds: float) -> bool:
        return True

    def release_fence(self, owner: str) -> None:
        pass


def _child_build(lake_dir: str, store_kind: str, options: dict[str, Any], queue: Any) -> None:
    """A build landing into ``store_kind``: ``discard`` (counts items) or ``sqlite`` (a SQLite file on
    disk beside the lake, bench/sqlite_store.py: the kind of store Feast's materialize writes); ``options``:
    ``store`` (another SQLite file name), ``as_of`` (ISO-8601), ``full``, ``commit``, ``reland``."""
    from customer_context.assemble.build import build_context
    from customer_context.config import Settings
    from customer_context.spec import load_spec
    from customer_context.stores.iceberg import Lakehouse

    lakehouse = Lakehouse.from_settings(Settings.from_env({"CUSTOMER_CONTEXT_DATA_DIR": lake_dir}))
    t0, c0 = time.perf_counter(), _cpu_s()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from sqlite_store import SqliteContextStore

    store = (SqliteContextStore(Path(lake_dir) / options.get("store", "context.sqlite")) if store_kind == "sqlite"
             else _DiscardStore(lake_dir))
    as_of = datetime.fromisoformat(options["as_of"]) if options.get("as_of") else None
    report = build_context(lakehouse, store, load_spec(), memory_limit=os.environ.get("BENCH_MEMORY_LIMIT"),
                           as_of=as_of, full=options.get("full", False), commit=options.get("commit", True),
                           reland=options.get("reland", False))
    wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
    rss_mb = _peak_rss_mb()
    queue.put({"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_mb": rss_mb,
               "report": report.to_dict()})


def _child_floor(files: list[str], queue: Any) -> None:
    import duckdb

    t0, c0 = time.perf_counter(), _cpu_s()
    con = duckdb.connect()
    rows = con.sql(
        "SELECT coalesce(user_id, anonymous_id) AS who, count(*) AS events, max(timestamp) AS last_seen, "
        "sum(TRY_CAST(json_extract_string(properties, '$.revenue') AS DOUBLE)) AS revenue "
        f"FROM read_parquet({files!r}) GROUP BY ALL").fetchall()
    wall = time.perf_counter() - t0
    queue.put({"wall_s": round(wall, 2), "cpu_s": round(_cpu_s() - c0, 2), "groups": len(rows),
               "peak_rss_mb": _peak_rss_mb()})


def _in_child(target: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    import queue as queues

    while True:  # a child killed (out of memory …) never answers: notice instead of waiting forever
        try:
            result = queue.get(timeout=5)
            break
        except queues.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"{target.__name__} died with exit code {proc.exitcode} "
                                   "(-9: killed, usually out of memory)") from None
    proc.join()
    return result  # type: ignore[no-any-return]


def change_one_percent(lake_dir: Path) -> int:
    """Append one new order for 1 % of the user ids."""
    import pyarrow as pa
    from customer_context.config import Settings
    from customer_context.stores.iceberg import Lakehouse
    from customer_context.stores.sql import query

    lakehouse = Lakehouse.from_settings(Settings.from_env({"CUSTOMER_CONTEXT_DATA_DIR": str(lake_dir)}))
    _, users = query(lakehouse, "SELECT DISTINCT user_id FROM events WHERE user_id IS NOT NULL ORDER BY 1")
    chosen = [u for (u,) in users][:: 100]
    # received at the same moment as the newest data, so the build's clock does not move: what changes is
    # exactly these customers (a later clock step would legitimately refresh time-based traits of everyone)
    _, [(now,)] = query(lakehouse, "SELECT max(received_at) FROM events")
    rows = [{"message_id": f"bench-change-{i}", "type": "track", "event": "Order Completed", "user_id": u,
             "timestamp": now, "received_at": now, "source_id": "bench", "properties": '{"revenue": 12.5}'}
            for i, u in enumerate(chosen)]
    lakehouse.append("events", pa.Table.from_pylist(rows, schema=lakehouse.arrow_schema("events")))
    return len(chosen)


def _served(path: Path) -> dict[str, str]:
    """A SQLite store's snapshots (documents without their build times) and aliases."""
    import sqlite3

    out: dict[str, str] = {}
    with sqlite3.connect(path) as db:
        for pk, sk, item in db.execute("SELECT pk, sk, item FROM items"):
            value = json.loads(item)
            if sk == "snapshot":
                doc = {k: v for k, v in json.loads(value["doc"]).items() if k not in ("built_at", "data_as_of")}
                out[pk] = json.dumps(doc, sort_keys=True, separators=(",", ":"))
            elif pk.startswith("id#"):
                out[pk] = value["profile_id"]
    return out


def _incremental_fields(lake: Path, again: dict[str, Any]) -> dict[str, Any]:
    """The +1 % build's cost as an incremental build; whether what it left served equals what a full build at the
    same clock lands (into an empty SQLite store, committing nothing); and a build with no new events one clock
    step later."""
    report = again["report"]
    full = _in_child(_child_build, str(lake), "sqlite", {"store": "full.sqlite", "as_of": report["as_of"],
                                                          "commit": False, "reland": True})
    equal = _served(lake / "context.sqlite") == _served(lake / "full.sqlite")
    print(f"incremental build: {report['plan']['mode']}, {again['cpu_s']} CPU s; equals a full build: {equal}",
          flush=True)
    step = datetime.fromisoformat(report["as_of"]) + timedelta(hours=1)
    clock = _in_child(_child_build, str(lake), "sqlite", {"as_of": step.isoformat()})
    return {
        "incremental_mode": report["plan"]["mode"], "incremental_reasons": report["plan"]["reasons"],
        "incremental_touched_profiles": report["plan"].get("touched_profiles"),
        "incremental_cpu_s": again["cpu_s"], "incremental_wall_s": again["wall_s"],
        "incremental_stages_cpu_s": report.get("cpu_s"),
        "incremental_peak_rss_mb": again["peak_rss_mb"],
        "incremental_items_written": report["items_written"],
        "incremental_equals_full": equal,
        "full_reference_cpu_s": full["cpu_s"],
        "clock_step_mode": clock["report"]["plan"]["mode"], "clock_step_reasons": clock["report"]["plan"]["reasons"],
        "clock_step_cpu_s": clock["cpu_s"], "clock_step_wall_s": clock["wall_s"],
        "clock_step_changed_profiles": clock["report"]["changed_profiles"],
        "clock_step_items_written": clock["report"]["items_written"],
    }


def data_files(lake_dir: Path) -> list[str]:
    return sorted(str(p) for p in (lake_dir / "warehouse").rglob("*.parquet") if "/events/" in str(p))


def run(size: str, data_dir: Path | None = None, l_from_m: bool = False, rebuild: bool = True) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"cc-assemble-{size}-"))
    try:
        lake, gen = prepare(size, work, data_dir, l_from_m)
        files = data_files(lake)
        # the floor best of three, alternating with two full builds of the same lake (the lake is put back
        # in between, to the same path: the catalog holds absolute paths): one discarding, one into SQLite
        print(f"[{size}] floor / build discarding / floor / build into SQLite / floor …", flush=True)
        before = work / "lake-before-build"
        shutil.copytree(lake, before)
        floors = [_in_child(_child_floor, files)]
        build = _in_child(_child_build, str(lake), "discard", {})
        shutil.rmtree(lake)
        shutil.copytree(before, lake)
        floors.append(_in_child(_child_floor, files))
        into_sqlite = _in_child(_child_build, str(lake), "sqlite", {})
        floors.append(_in_child(_child_floor, files))
        floor = min(floors, key=lambda f: f["cpu_s"])
        # --- Feast peer (bench/peers/feast): Feast over the same files, after our build and the floor ---
        from peers.feast.runner import assemble_fields
        feast = {} if "--no-feast" in sys.argv else assemble_fields(files, work / "feast", build["wall_s"],
                                                                    gen["events"], into_sqlite=into_sqlite)
        # --- end Feast peer ---
        changed = change_one_percent(lake) if rebuild else None
        if changed is not None:
            print(f"[{size}] rebuild after {changed:,} customers changed …", flush=True)
        # the rebuild (incremental: only events were appended, at the same clock) lands into the SQLite store the
        # last full build filled (the lake's state matches it)
        again = _in_child(_child_build, str(lake), "sqlite", {}) if rebuild else {"wall_s": None, "report": {}}
        incremental = _incremental_fields(lake, again) if rebuild else {}
        return {
            "size": size, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **gen,
            "profiles": build["report"]["profiles"],
            "build_wall_s": build["wall_s"], "build_peak_rss_mb": build["peak_rss_mb"],
            "build_stages_s": build["report"]["timings_s"],
            "build_cpu_s": build["cpu_s"], "build_stages_cpu_s": build["report"].get("cpu_s"),
            "floor_wall_s": floor["wall_s"], "floor_peak_rss_mb": floor["peak_rss_mb"], "floor_cpu_s": floor["cpu_s"],
            "floor_runs": [{k: f[k] for k in ("wall_s", "cpu_s")} for f in floors],
            "build_into_sqlite_wall_s": into_sqlite["wall_s"], "build_into_sqlite_cpu_s": into_sqlite["cpu_s"],
            "build_into_sqlite_stages_cpu_s": into_sqlite["report"].get("cpu_s"),
            "build_into_sqlite_vs_floor_cpu": round(into_sqlite["cpu_s"] / max(floor["cpu_s"], 1e-9), 2),
            "build_vs_floor": round(build["wall_s"] / max(floor["wall_s"], 1e-9), 2),
            "build_vs_floor_cpu": round(build["cpu_s"] / max(floor["cpu_s"], 1e-9), 2),
            "first_build_items_written": build["report"]["items_written"],
            "customers_changed": changed,
            "rebuild_wall_s": again["wall_s"],
            "rebuild_changed_profiles": again["report"].get("changed_profiles"),
            "rebuild_items_written": again["report"].get("items_written"),
            **incremental,
            **feast,  # Feast peer
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["M"], choices=list(TARGETS))
    parser.add_argument("--no-feast", action="store_true", help="skip the Feast peer")  # Feast peer
    parser.add_argument("--data-dir", type=Path, help="keep generated lakes here and reuse them on later runs")
    parser.add_argument("--l-from-m", action="store_true", help="L as 10 copies of M, ids suffixed (fast)")
    parser.add_argument("--no-rebuild", nargs="*", default=[], choices=list(TARGETS), metavar="SIZE",
                        help="skip the 1 %% rebuild at these sizes")
    args = parser.parse_args()
    out = RESULTS / "assemble.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    results = {r["size"]: r for r in previous.get("results", [])}
    for size in args.sizes:
        results[size] = run(size, args.data_dir, args.l_from_m, size not in args.no_rebuild)
        print(json.dumps(results[size], indent=1), flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "benchmark": "assemble",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                        "loadavg_1m_at_end": round(os.getloadavg()[0], 2)},
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "results": [results[s] for s in TARGETS if s in results],
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
