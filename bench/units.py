"""Per-unit resource figures for the cost model (``customer-context cost``), measured for real.

The real handlers, invoked in this process with the events their AWS triggers send, against moto's
server on loopback (SQS, DynamoDB) and a SQLite-catalog lakehouse with a file warehouse. Every AWS
call a handler makes is counted where botocore sends it, with the DynamoDB items it writes and
reads (sized as DynamoDB meters them), and everything a handler writes to stdout / stderr (what
Lambda ships to CloudWatch Logs) is captured:

* **collect**: per request of ``--events-per-request`` demo events, after a first build (the live
  tail files events under known profiles): SQS requests and payload bytes, DynamoDB requests, tail
  items and their write units, log lines and bytes, CPU seconds (this thread only);
* **ingest**: per event, the files one invocation writes to the warehouse (one S3 PUT each on AWS)
  and their bytes, and commits (new table metadata files);
* **build**: per profile, the items landed and their write units (snapshots, aliases), the files
  written, and per changed profile after a small change;
* **fetch**: per request of each kind (``fields``, ``full``, ``text``, ``recent``): DynamoDB
  requests and read units, response bytes, CPU seconds, log lines and bytes at INFO and at DEBUG.

Writes ``bench/results/units.json``. Run: ``.venv/bin/python bench/units.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import io
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "units.json"
WRITE_KEY = "wk_units"
CONSUMER_KEY = "ck_units"


# --- DynamoDB item size, as DynamoDB meters it (attribute names + values) ---
def _value_bytes(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, int | float | Decimal):
        digits = len(str(value).lstrip("-").replace(".", "").lstrip("0")) or 1
        return 1 + (digits + 1) // 2
    if isinstance(value, dict):
        return 3 + sum(len(k.encode()) + _value_bytes(v) + 1 for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return 3 + sum(_value_bytes(v) + 1 for v in value)
    return len(str(value).encode())


def item_bytes(item: dict[str, Any]) -> int:
    """Bytes of a DynamoDB item (Python values, as the resource layer passes them)."""
    return sum(len(name.encode()) + _value_bytes(value) for name, value in item.items())


class Calls:
    """Every AWS call made on the watched threads, with what DynamoDB meters."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ops: Counter[str] = Counter()
        self.write_units = 0.0
        self.write_items: list[tuple[str, int]] = []  # (pk prefix, bytes)
        self.read_units = 0.0
        self.sqs_chunks = 0
        self.sqs_bytes = 0
        self.threads: set[str] = {threading.current_thread().name, "audit-flush"}

    def reset(self) -> None:
        with self.lock:
            self.ops.clear()
            self.write_units = self.read_units = 0.0
            self.write_items = []
            self.sqs_chunks = self.sqs_bytes = 0

    def record(self, service: str, op: str, params: dict[str, Any], answer: dict[str, Any]) -> None:
        if threading.current_thread().name not in self.threads:
            return
        with self.lock:
            self.ops[f"{service}:{op}"] += 1
            if service == "dynamodb":
                self._dynamodb(op, params, answer)
            elif service == "sqs" and op in ("SendMessage", "SendMessageBatch"):
                entries = [params] if op == "SendMessage" else params["Entries"]
                bodies = [e["MessageBody"] for e in entries]
                size = sum(len(b.encode()) for b in bodies)
                self.sqs_bytes += size
                self.sqs_chunks += max(1, math.ceil(size / 65536))

    def _dynamodb(self, op: str, params: dict[str, Any], answer: dict[str, Any]) -> None:
        def written(item: dict[str, Any]) -> None:
            size = item_bytes(item)
            self.write_items.append((str(item.get("pk", "")).split("#")[0], size))
            self.write_units += math.ceil(size / 1024)

        def read(items: list[dict[str, Any]], consistent: bool, per_item: bool) -> None:
            sizes = [item_bytes(i) for i in items]
            units = sum(math.ceil(s / 4096) for s in sizes) if per_item else math.ceil(sum(sizes) / 4096)
            self.read_units += max(units, 1) * (1.0 if consistent else 0.5)

        if op == "PutItem":
            written(params["Item"])
        elif op == "BatchWriteItem":
            for requests in params["RequestItems"].values():
                for r in requests:
                    if "PutRequest" in r:
                        written(r["PutRequest"]["Item"])
                    else:
                        self.write_units += 1
        elif op == "GetItem":
            read([answer.get("Item") or {}], bool(params.get("ConsistentRead")), True)
        elif op == "Query":
            read(answer.get("Items") or [], bool(params.get("ConsistentRead")), False)
        elif op == "BatchGetItem":
            for table, items in (answer.get("Responses") or {}).items():
                keys = params["RequestItems"][table]
                read(items or [{}], bool(keys.get("ConsistentRead")), True)


CALLS = Calls()
LOG_TEXT: list[str] = []  # what the handlers logged, for the compression ratio of stored logs


def _watch_botocore() -> None:
    from botocore.client import BaseClient

    original = BaseClient._make_api_call

    def counted(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        answer = original(self, operation_name, api_params)
        CALLS.record(self.meta.service_model.service_name, operation_name, api_params, answer)
        return answer

    BaseClient._make_api_call = counted  # type: ignore[method-assign]


@contextlib.contextmanager
def captured_logs() -> Any:
    """Everything written to stdout / stderr (Lambda ships both to CloudWatch Logs), Powertools' handler too."""
    from customer_context.observability import logger

    buffer = io.StringIO()
    handler = logger.registered_handler
    previous = handler.setStream(buffer)  # type: ignore[attr-defined]
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield buffer
    finally:
        handler.setStream(previous)  # type: ignore[attr-defined]


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _setup(tmp: Path) -> str:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    os.environ.update({
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": url,
        "CUSTOMER_CONTEXT_DATA_DIR": str(tmp / "data"), "CUSTOMER_CONTEXT_CATALOG_TYPE": "sql",
        "CUSTOMER_CONTEXT_WRITE_KEYS": f"{WRITE_KEY}=units", "CUSTOMER_CONTEXT_PII_HASH_KEY": "units-key",
        "CUSTOMER_CONTEXT_CONTEXT_TABLE": "units-context", "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_SERVICE_NAME": "customer-context", "POWERTOOLS_METRICS_NAMESPACE": "CustomerContext",
    })
    os.environ.pop("AWS_PROFILE", None)
    from customer_context import wiring
    from customer_context_devtools.local.template import resource_properties

    wiring.reload_from_environment()
    queue = wiring.boto_client("sqs").create_queue(QueueName="units-events")["QueueUrl"]
    os.environ["CUSTOMER_CONTEXT_QUEUE_URL"] = queue
    props = resource_properties("ContextTable")
    wiring.boto_client("dynamodb").create_table(
        TableName="units-context", KeySchema=props["KeySchema"], AttributeDefinitions=props["AttributeDefinitions"],
        BillingMode="PAY_PER_REQUEST")
    wiring.reload_from_environment()
    return queue


def _collect_event(batch: list[dict[str, Any]]) -> dict[str, Any]:
    from customer_context_devtools.local.apigw import http_api_event

    body = json.dumps({"batch": batch, "sentAt": datetime.now(UTC).isoformat()}).encode()
    auth = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    return http_api_event(method="POST", path="/v1/batch", query="", route_key="POST /v1/batch", body=body,
                          headers=[("content-type", "application/json"), ("authorization", auth)],
                          source_ip="203.0.113.7", domain="abc123.execute-api.us-east-1.amazonaws.com")


def _fetch_event(id_type: str, value: str, query: str) -> dict[str, Any]:
    from customer_context_devtools.local.apigw import http_api_event

    path = f"/v1/context/{id_type}/{quote(value, safe='')}"
    return http_api_event(method="GET", path=path, query=query,
                          route_key="GET /v1/context/{identifier_type}/{identifier_value}", body=b"",
                          headers=[("authorization", f"Bearer {CONSUMER_KEY}"), ("accept", "application/json")],
                          path_parameters={"identifier_type": id_type, "identifier_value": quote(value, safe="")},
                          source_ip="203.0.113.7", domain="abc123.execute-api.us-east-1.amazonaws.com")


def _drain(queue: str) -> list[dict[str, Any]]:
    from customer_context import wiring

    sqs = wiring.boto_client("sqs")
    out: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, AttributeNames=["All"]).get("Messages", [])
        if not got:
            return out
        out += got


def _files(warehouse: Path) -> dict[Path, int]:
    return {p: p.stat().st_size for p in warehouse.rglob("*") if p.is_file()}


def _send(batches: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """collect, one invocation per batch: per-request figures."""
    from customer_context_devtools.local import lambda_runtime

    CALLS.reset()
    cpu = 0.0
    with captured_logs() as logs:
        for batch in batches:
            start = time.thread_time()
            response = lambda_runtime.invoke("collect", _collect_event(batch))
            cpu += time.thread_time() - start
            assert response["statusCode"] == 200, response
    requests_n, events_n = len(batches), sum(map(len, batches))
    lines = _lines(logs.getvalue())
    tail = [b for prefix, b in CALLS.write_items if prefix == "recent"]
    types = Counter(str(e.get("type")) for b in batches for e in b)
    from customer_context.spec import load_spec

    tail_types = list(load_spec().snapshot.recent_events.types)
    LOG_TEXT.append(logs.getvalue())
    return {
        "requests": requests_n, "events": events_n,
        "event_bytes_mean": round(statistics.fmean(len(json.dumps(e).encode()) for b in batches for e in b), 1),
        "cpu_s_per_request": round(cpu / requests_n, 6),
        "cpu_s_per_million_events": round(cpu / events_n * 1e6, 1),
        "sqs_requests_per_request": round(CALLS.sqs_chunks / requests_n, 3),
        "sqs_payload_bytes_per_event": round(CALLS.sqs_bytes / events_n, 1),
        "dynamodb_requests_per_request": round(sum(v for k, v in CALLS.ops.items() if k.startswith("dynamodb:"))
                                               / requests_n, 3),
        "tail_items_per_event": round(len(tail) / events_n, 3),
        "tail_item_bytes_mean": round(statistics.fmean(tail), 1) if tail else 0,
        "tail_write_units_per_event": round(sum(math.ceil(b / 1024) for b in tail) / events_n, 3),
        "tail_types": tail_types,
        "tail_items_per_tail_event": round(len(tail) / max(1, sum(types[t] for t in tail_types)), 3),
        "tail_write_units_per_tail_event": round(sum(math.ceil(b / 1024) for b in tail)
                                                 / max(1, sum(types[t] for t in tail_types)), 3),
        "tail_read_units_per_request": round(CALLS.read_units / requests_n, 3),
        "log_lines_per_request": round(len(lines) / requests_n, 3),
        "log_bytes_per_request": round(sum(len(line.encode()) + 1 for line in lines) / requests_n, 1),
        "operations": dict(CALLS.ops),
        "example_log_lines": lines[:2],
        "event_type_shares": {t: round(n / events_n, 4) for t, n in sorted(types.items())},
    }


def measure(customers: int, per_request: int, fetches: int) -> dict[str, Any]:
    from customer_context import wiring
    from customer_context.observability import logger
    from customer_context.serve.consumers import consumer_item, hash_key
    from customer_context_devtools.demo.generate import DemoConfig, generate_events
    from customer_context_devtools.local import lambda_runtime
    from customer_context_devtools.local.sqs_trigger import sqs_event

    with tempfile.TemporaryDirectory(prefix="cc-bench-units-") as tmp:
        queue = _setup(Path(tmp))
        _watch_botocore()
        events = sorted((e for e in generate_events(DemoConfig(customers=customers, days=30, seed=11,
                                                                 bad_event_rate=0.0,
                                                                 end=datetime.now(UTC) - timedelta(minutes=5)))),
                        key=lambda e: str(e.get("timestamp") or e.get("originalTimestamp") or ""))
        for e in events:
            e.pop("_bad", None)
        cut = len(events) * 3 // 4
        first, rest = events[:cut], events[cut:]
        batches = [first[i:i + per_request] for i in range(0, len(first), per_request)]
        print(f"[units] collect {len(first):,} events, ingest, build …", flush=True)
        with captured_logs():
            for batch in batches:
                lambda_runtime.invoke("collect", _collect_event(batch))
        warehouse = Path(tmp) / "data" / "warehouse"
        messages = _drain(queue)
        before = _files(warehouse)
        CALLS.reset()
        with captured_logs() as ingest_logs:
            start = time.thread_time()
            result = lambda_runtime.invoke("ingest", sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:q",
                                                               "us-east-1"))
            ingest_cpu = time.thread_time() - start
        assert result == {"batchItemFailures": []}, result
        LOG_TEXT.append(ingest_logs.getvalue())
        after = _files(warehouse)
        new = {p: s for p, s in after.items() if p not in before}
        ingest = {
            "events": len(first), "invocations": 1, "messages": len(messages),
            "files_written": len(new), "bytes_written": sum(new.values()),
            "files_written_per_commit": round(len(new) / max(1, sum(p.name.endswith(".metadata.json")
                                                                   for p in new)), 2),
            "commits": sum(p.name.endswith(".metadata.json") for p in new),
            "data_bytes_per_event": round(sum(s for p, s in new.items() if p.suffix == ".parquet") / len(first), 1),
            "cpu_s_per_million_events": round(ingest_cpu / len(first) * 1e6, 1),
            "log_lines_per_invocation": len(_lines(ingest_logs.getvalue())),
            "log_bytes_per_invocation": sum(len(line.encode()) + 1 for line in _lines(ingest_logs.getvalue())),
        }

        def build() -> dict[str, Any]:
            files_before = _files(warehouse)
            CALLS.reset()
            with captured_logs() as build_logs:
                report = lambda_runtime.invoke("build_context", json.loads(
                    (ROOT / "events" / "build_context_schedule.json").read_text()))
            LOG_TEXT.append(build_logs.getvalue())
            made = {p: s for p, s in _files(warehouse).items() if p not in files_before}
            snaps = [b for prefix, b in CALLS.write_items if prefix == "profile"]
            return {
                "profiles": report.get("profiles"), "changed_profiles": report.get("changed_profiles"),
                "items_written": len(CALLS.write_items),
                "snapshot_items": len(snaps),
                "snapshot_item_bytes_mean": round(statistics.fmean(snaps), 1) if snaps else 0,
                "write_units": CALLS.write_units,
                "item_bytes": sum(b for _, b in CALLS.write_items),
                "files_written": len(made), "bytes_written": sum(made.values()),
                "log_bytes": sum(len(line.encode()) + 1 for line in _lines(build_logs.getvalue())),
            }

        first_build = build()
        first_build["write_units_per_profile"] = round(first_build["write_units"] / first_build["profiles"], 3)
        first_build["items_per_profile"] = round(first_build["items_written"] / first_build["profiles"], 3)
        first_build["item_bytes_per_profile"] = round(first_build["item_bytes"] / first_build["profiles"], 1)

        print(f"[units] collect {len(rest):,} more events, {per_request} a request …", flush=True)
        cut = len(rest) * 4 // 5 // per_request * per_request
        collect = _send([rest[i:i + per_request] for i in range(0, cut, per_request)])
        logger.setLevel("DEBUG")
        debug = _send([rest[i:i + per_request] for i in range(cut, len(rest), per_request)])
        logger.setLevel("INFO")
        collect["debug"] = {k: debug[k] for k in ("log_lines_per_request", "log_bytes_per_request")}
        messages = _drain(queue)
        with captured_logs():
            lambda_runtime.invoke("ingest", sqs_event(messages, "arn:aws:sqs:us-east-1:123456789012:q", "us-east-1"))
        print("[units] rebuild …", flush=True)
        rebuild = build()
        changed = rebuild["changed_profiles"] or 0
        rebuild["write_units_per_changed_profile"] = round(rebuild["write_units"] / changed, 3) if changed else None
        rebuild["items_per_changed_profile"] = round(rebuild["items_written"] / changed, 3) if changed else None

        # fetch: a consumer allowed everything, a customer the build knows by email
        store = wiring.context_store()
        store.put_consumer(hash_key(CONSUMER_KEY), consumer_item("units", ["*"], []))
        email = next(t["email"] for e in events for t in [e.get("context", {}).get("traits") or e.get("traits") or {}]
                     if isinstance(t, dict) and t.get("email"))
        kinds = {"fields": "fields=traits.orders_90d,scores.churn_risk", "full": "",
                 "text": "format=text&max_tokens=800", "recent": "sections=recent_events"}
        print(f"[units] fetch, {fetches} of each kind …", flush=True)
        fetch: dict[str, Any] = {}
        for level in ("INFO", "DEBUG"):
            logger.setLevel(level)
            for kind, query in kinds.items():
                event = _fetch_event("email", email, query)
                with captured_logs():
                    warm = lambda_runtime.invoke("fetch_context", event)
                assert warm["statusCode"] == 200, warm
                wiring.audit_log().flush()
                CALLS.reset()
                cpu, body = 0.0, 0
                with captured_logs() as logs:
                    for _ in range(fetches):
                        start = time.thread_time()
                        answer = lambda_runtime.invoke("fetch_context", event)
                        cpu += time.thread_time() - start
                        body += len(answer.get("body") or "")
                wiring.audit_log().flush()  # this kind's audit records, counted with it
                lines = _lines(logs.getvalue())
                figures = {"log_lines_per_request": round(len(lines) / fetches, 3),
                           "log_bytes_per_request": round(sum(len(x.encode()) + 1 for x in lines) / fetches, 1)}
                if level == "INFO":
                    fetch[kind] = {
                        "query": query, "cpu_s_per_request": round(cpu / fetches, 6),
                        "response_bytes": round(body / fetches),
                        "dynamodb_requests_per_request": round(
                            sum(v for k, v in CALLS.ops.items() if k.startswith("dynamodb:")) / fetches, 3),
                        "read_units_per_request": round(CALLS.read_units / fetches, 3),
                        "audit_bytes_per_request": round(CALLS.sqs_bytes / fetches, 1),
                        "operations": dict(CALLS.ops), **figures,
                        "example_log_lines": lines[:2],
                    }
                else:
                    fetch[kind]["debug"] = figures | {"example_log_line": lines[0][:300] if lines else None}
        logger.setLevel("INFO")
        from customer_context.serve.audit import MAX_RECORDS_PER_MESSAGE

        wiring.audit_log().flush()
        wiring.reload_from_environment()
        raw = "".join(LOG_TEXT).encode()
        logs_stored = {"raw_bytes": len(raw), "gzip_bytes": len(gzip.compress(raw)),
                       "gzip_ratio": round(len(gzip.compress(raw)) / max(1, len(raw)), 3)}
        return {"logs": logs_stored, "collect": collect, "ingest": ingest, "build": first_build, "rebuild": rebuild,
                "fetch": fetch, "audit": {"max_records_per_message": MAX_RECORDS_PER_MESSAGE}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=400, help="demo customers (default 400)")
    parser.add_argument("--events-per-request", type=int, default=10, help="events per collect request")
    parser.add_argument("--fetches", type=int, default=50, help="fetch requests of each kind")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("CUSTOMER_CONTEXT_FUNCTIONS_DIR", str(ROOT / "functions"))
    started = time.time()
    figures = measure(args.customers, args.events_per_request, args.fetches)
    out = {
        "benchmark": "units",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(time.time() - started, 1),
        "setup": {"customers": args.customers, "events_per_request": args.events_per_request,
                  "fetches_per_kind": args.fetches,
                  "stores": "moto server on loopback (SQS, DynamoDB), SQLite catalog + file warehouse",
                  "sizes": "DynamoDB item bytes as DynamoDB meters them (attribute names + values); write units "
                           "ceil(bytes/1 KB) per item; read units ceil(bytes/4 KB), halved when eventually "
                           "consistent; CPU is this thread's (time.thread_time), moto's excluded"},
        **figures,
    }
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"[units] wrote {RESULTS.relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
