"""Render bench/results/*.json as the README's benchmark table (between the bench markers).

    python bench/report.py           # rewrite README.md in place
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def table() -> str:
    lines = ["| stage | measured | floor / peer, same run | ratio |", "|---|---|---|---|"]
    ingest = _load("ingest")
    if ingest:
        lines.append(f"| collect handler logic in-process (validate, stamp, pack; batches of {ingest['batch_size']}) "
                     f"| {ingest['collect_events_per_s']:,} events/s | — | — |")
        lines.append(f"| ingest: SQS messages → rows → one Iceberg append | {ingest['ingest_events_per_s']:,} events/s "
                     f"| raw pyarrow Parquet write of the same rows: {ingest['raw_parquet_write_events_per_s']:,} "
                     f"events/s | {ingest['ingest_vs_raw_parquet']:.3f} of the floor |")
    assemble = _load("assemble")
    for r in (assemble or {}).get("results", []):
        lines.append(f"| full build, {r['events']:,} events → {r['profiles']:,} profiles | {r['build_wall_s']} s, "
                     f"peak RSS {r['build_peak_rss_mb']:,} MB | DuckDB scan + group-by of the same Parquet: "
                     f"{r['floor_wall_s']} s, {r['floor_peak_rss_mb']:,} MB | {r['build_vs_floor']}× the floor |")
        lines.append(f"| rebuild after {r['customers_changed']:,} customers (1 %) changed | "
                     f"{r['rebuild_items_written']:,} DynamoDB items written ({r['rebuild_wall_s']} s) | first build: "
                     f"{r['first_build_items_written']:,} items | — |")
    serve = _load("serve")
    if serve:
        over, http, cold = serve["handler_overhead"], serve["over_http_local_stack"], serve["cold_import"]
        lines.append(f"| fetch handler overhead in-process (store in memory), fields / text | p50 "
                     f"{over['get']['p50_ms']} / {over['text']['p50_ms']} ms, p99 {over['get']['p99_ms']} / "
                     f"{over['text']['p99_ms']} ms | aim: p99 < 2 ms | — |")
        lines.append(f"| fetch over HTTP through the local stack (DynamoDB on moto) | p50 "
                     f"{http['fields']['p50_ms']} ms, p99 {http['fields']['p99_ms']} ms; with live recent_events p50 "
                     f"{http['with_recent_events']['p50_ms']} ms | — | — |")
        lines.append(f"| cold import of the fetch handler (+ boto3, which it loads on first use) | "
                     f"{cold['fetch_handler_plus_boto3_s']} s | `import boto3` + Powertools resolver: "
                     f"{cold['floor_boto3_powertools_s']} s | {cold['ratio']}× the floor |")
        lines.append(f"| event sent to collect → visible in fetch's recent_events (local stack) | p50 "
                     f"{http['event_to_visible']['p50_ms']} ms, p99 {http['event_to_visible']['p99_ms']} ms | "
                     "aim: < 2 s | — |")
    notes = []
    if ingest:
        notes.append(f"ingest: {ingest['events']:,} generated events, best of {ingest['runs']} "
                     f"({ingest['measured_at']})")
    if assemble:
        stages = "; ".join(f"{r['size']}: " + ", ".join(f"{k} {v:.1f}s" for k, v in r["build_stages_s"].items())
                           for r in assemble["results"])
        notes.append(f"assembly ({assemble['measured_at']}) stages — {stages}")
    machine = (ingest or assemble or {}).get("machine", {})
    notes.append(f"machine: {machine.get('cpus')} cores, Python {machine.get('python')}, {machine.get('platform')}")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes)


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text:
        print(f"README.md has no {START} marker", file=sys.stderr)
        return 2
    new = re.sub(re.escape(START) + r".*?" + re.escape(END), f"{START}\n{table()}\n{END}", text, flags=re.S)
    readme.write_text(new)
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
