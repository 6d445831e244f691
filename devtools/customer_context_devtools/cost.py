"""What a deployment costs a month: measured resource use per unit × a workload × list prices.

Three inputs, none of them constants in this module:

* **per-unit resource figures** from the benchmark results in ``bench/results/`` (:func:`load_units`):
  CPU seconds per request and per million events (collect, ingest, build), items and write units per
  landed profile, store requests and read units per fetch, log bytes per request, files per commit;
  a missing file or field is an error naming the benchmark that writes it;
* **prices** from a dated table (``prices_us_east_1.yaml`` next to this module, or ``--prices``), each
  with its unit and source page;
* **the workload** (:class:`Workload`): events a day and their size, profiles, share changing per
  build, fetches a second and their mix, build schedule, retention, live tail, serving path.

Memory sizes come from ``template.yaml``. Durations are billed per millisecond, rounded up per
invocation; a store or queue round trip adds ``store_latency_ms`` to a function's duration (an
assumption: single-digit milliseconds in-region; the benchmarks' stores run on loopback).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from customer_context.errors import ConfigError
from customer_context.models.tracking import EVENT_TYPES

PRICES_FILE = Path(__file__).with_name("prices_us_east_1.yaml")
DAYS_PER_MONTH = 30
LAMBDA_MAX_SECONDS = 900
HTTP_API_METERED_BYTES = 512 * 1024
FETCH_KINDS = ("fields", "full", "text", "recent")
# The serving audit (serve/audit.py): each warm fetch container sends its buffered records at most this often.
AUDIT_FLUSH_SECONDS = 0.5

# The benchmark that writes each result file, and how to run it.
BENCHMARKS = {
    "assemble.json": ".venv/bin/python bench/assemble.py",
    "ingest.json": ".venv/bin/python bench/ingest.py",
    "units.json": ".venv/bin/python bench/units.py",
}


@dataclass
class Workload:
    """What the deployment handles (defaults: the example of docs/cost.md)."""

    events_per_day: float = 10_000_000
    event_bytes: float = 1000
    events_per_request: float = 10
    profiles: int = 1_000_000
    changed_share: float = 0.01
    fetches_per_second: float = 100
    fetch_mix: dict[str, float] = field(default_factory=lambda: {"fields": 0.5, "full": 0.2, "text": 0.2,
                                                                 "recent": 0.1})
    build_every_minutes: float = 15
    build_reads: str = "new"
    retention_days: float = 90
    log_retention_days: float = 30
    live_tail: bool = True
    tail_types: list[str] | None = None
    serving: str = "api-gateway"
    log_level: str = "INFO"
    store_latency_ms: float = 5
    catalog_requests_per_commit: float = 3

    def check(self) -> None:
        """One-line errors naming the field and the reason."""
        for name in ("events_per_day", "event_bytes", "events_per_request", "profiles", "fetches_per_second",
                     "build_every_minutes", "retention_days", "log_retention_days", "store_latency_ms",
                     "catalog_requests_per_commit"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"{name}: must be a finite number, got {getattr(self, name)}")
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be 0 or more, got {getattr(self, name)}")
        if self.events_per_request < 1:
            raise ConfigError(f"events_per_request: must be at least 1, got {self.events_per_request}")
        if self.build_every_minutes <= 0:
            raise ConfigError(f"build_every_minutes: must be more than 0, got {self.build_every_minutes}")
        if not 0 <= self.changed_share <= 1:
            raise ConfigError(f"changed_share: must be between 0 and 1, got {self.changed_share}")
        unknown = set(self.fetch_mix) - set(FETCH_KINDS)
        if unknown:
            raise ConfigError(f"fetch_mix: unknown kind {sorted(unknown)[0]!r}; kinds: {', '.join(FETCH_KINDS)}")
        for kind, share in self.fetch_mix.items():
            if not 0 <= share <= 1:  # also refuses nan
                raise ConfigError(f"fetch_mix: the share of {kind} must be between 0 and 1, got {share}")
        if not self.fetch_mix and self.fetches_per_second:
            raise ConfigError("fetch_mix: empty, while fetches_per_second is not 0; give kind=share pairs, e.g. "
                              "fields=0.5,full=0.5")
        if self.fetch_mix and abs(sum(self.fetch_mix.values()) - 1) > 1e-6:
            raise ConfigError(f"fetch_mix: shares must add up to 1, got {sum(self.fetch_mix.values()):g}")
        if self.build_reads not in ("all", "new"):
            raise ConfigError(f"build_reads: must be all or new, got {self.build_reads!r}")
        if self.serving not in ("api-gateway", "function-url"):
            raise ConfigError(f"serving: must be api-gateway or function-url, got {self.serving!r}")
        if self.log_level not in ("INFO", "DEBUG"):
            raise ConfigError(f"log_level: must be INFO or DEBUG, got {self.log_level!r}")


def _read_json(results: Path, name: str) -> dict[str, Any]:
    path = results / name
    if not path.is_file():
        raise ConfigError(f"{path}: missing; run the {name.removesuffix('.json')} benchmark "
                          f"({BENCHMARKS[name]}) to measure it")
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg}); run {BENCHMARKS[name]} again") from None
    return data


def _get(data: dict[str, Any], name: str, *path: str) -> Any:
    value: Any = data
    for i, key in enumerate(path):
        if not isinstance(value, dict) or value.get(key) is None:
            dotted = ".".join(path[: i + 1])
            raise ConfigError(f"bench/results/{name}: no {dotted!r}; run the {name.removesuffix('.json')} "
                              f"benchmark ({BENCHMARKS[name]}) to measure it")
        value = value[key]
    return value


@dataclass(frozen=True)
class Units:
    """Per-unit resource figures, each read from a benchmark result file (``source`` says where)."""

    values: dict[str, float]
    sources: dict[str, str]

    def __getitem__(self, name: str) -> float:
        return self.values[name]


def load_units(results: Path) -> Units:
    """Read every per-unit figure the model needs from ``results`` (``bench/results``)."""
    files = {name: _read_json(results, name) for name in BENCHMARKS}
    values: dict[str, float] = {}
    sources: dict[str, str] = {}

    def take(key: str, name: str, *path: str) -> Any:
        value = _get(files[name], name, *path)
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise ConfigError(f"bench/results/{name}: {'.'.join(path)!r} is not a number ({value!r}); run the "
                              f"{name.removesuffix('.json')} benchmark ({BENCHMARKS[name]}) again")
        values[key] = float(value)
        sources[key] = f"{name}: {'.'.join(path)}"
        return value

    # build: the largest measured size (full build) gives seconds per million events read
    sizes = _get(files["assemble.json"], "assemble.json", "results")
    if not isinstance(sizes, list) or not sizes or not all(isinstance(r, dict) for r in sizes):
        raise ConfigError(f"bench/results/assemble.json: 'results' is not a list of measured sizes; run the assemble "
                          f"benchmark ({BENCHMARKS['assemble.json']}) again")
    largest = max(sizes, key=lambda r: r.get("events") or 0)
    index = sizes.index(largest)
    for key, field_name in (("build_events_measured", "events"), ("build_wall_s_measured", "build_wall_s"),
                            ("build_cpu_s_measured", "build_cpu_s"), ("build_peak_rss_mb", "build_peak_rss_mb")):
        value = largest.get(field_name)
        if value is None:
            raise ConfigError(f"bench/results/assemble.json: no 'results[{index}].{field_name}'; run the assemble "
                              f"benchmark ({BENCHMARKS['assemble.json']}) to measure it")
        values[key] = float(value)
        sources[key] = f"assemble.json: results[size={largest.get('size')}].{field_name}"
    values["build_wall_s_per_million_events"] = values["build_wall_s_measured"] / values["build_events_measured"] * 1e6
    sources["build_wall_s_per_million_events"] = "assemble.json: build_wall_s / events (largest size)"

    take("ingest_events_per_s", "ingest.json", "ingest_events_per_s")
    take("ingest_batch_size", "ingest.json", "sqs", "batch_size")
    take("ingest_payload_limit_bytes", "ingest.json", "sqs", "payload_limit_bytes")

    u = "units.json"
    for key in ("cpu_s_per_million_events", "event_bytes_mean", "sqs_payload_bytes_per_event",
                "dynamodb_requests_per_request", "tail_item_bytes_mean", "tail_items_per_tail_event",
                "tail_write_units_per_tail_event", "tail_read_units_per_request", "log_lines_per_request",
                "log_bytes_per_request"):
        take(f"collect_{key}", u, "collect", key)
    for key in ("log_lines_per_request", "log_bytes_per_request"):
        take(f"collect_debug_{key}", u, "collect", "debug", key)
    shares = _get(files[u], u, "collect", "event_type_shares")
    if not isinstance(shares, dict) or not all(isinstance(v, int | float) for v in shares.values()):
        raise ConfigError(f"bench/results/{u}: 'collect.event_type_shares' is not a map of event type to share; "
                          f"run the units benchmark ({BENCHMARKS[u]}) again")
    for event_type, share in shares.items():
        values[f"event_type_share_{event_type}"] = float(share)
        sources[f"event_type_share_{event_type}"] = f"units.json: collect.event_type_shares.{event_type}"
    for key in ("files_written_per_commit", "commits", "invocations", "data_bytes_per_event",
                "log_bytes_per_invocation", "log_lines_per_invocation"):
        take(f"ingest_{key}", u, "ingest", key)
    for key in ("item_bytes_per_profile", "items_per_profile"):
        take(f"build_{key}", u, "build", key)
    for key in ("write_units_per_changed_profile", "files_written", "log_bytes"):
        take(f"rebuild_{key}", u, "rebuild", key)
    for kind in FETCH_KINDS:
        for key in ("cpu_s_per_request", "dynamodb_requests_per_request", "read_units_per_request",
                    "audit_bytes_per_request", "log_lines_per_request", "log_bytes_per_request"):
            take(f"fetch_{kind}_{key}", u, "fetch", kind, key)
        for key in ("log_lines_per_request", "log_bytes_per_request"):
            take(f"fetch_{kind}_debug_{key}", u, "fetch", kind, "debug", key)
    take("audit_max_records_per_message", u, "audit", "max_records_per_message")
    take("logs_gzip_ratio", u, "logs", "gzip_ratio")
    return Units(values, sources)


@dataclass(frozen=True)
class Prices:
    """The price table: ``price(name)`` in USD per one unit, ``metering(name)``."""

    region: str
    as_of: str
    table: dict[str, Any]
    meter: dict[str, Any]
    path: str

    def price(self, name: str) -> float:
        entry = self.table.get(name)
        if entry is None:
            raise ConfigError(f"{self.path}: no prices.{name}")
        return float(entry["price"]) / float(entry.get("per", 1))

    def metering(self, name: str) -> float:
        entry = self.meter.get(name)
        if not isinstance(entry, dict) or not isinstance(entry.get("value"), int | float):
            raise ConfigError(f"{self.path}: metering.{name} needs a numeric value")
        return float(entry["value"])


def load_prices(path: Path | None = None) -> Prices:
    """The dated price table (the packaged us-east-1 one by default)."""
    path = path or PRICES_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: price table not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None
    for key in ("region", "as_of", "prices", "metering"):
        if not isinstance(data, dict) or key not in data:
            raise ConfigError(f"{path}: no {key!r}")
    for key in ("prices", "metering"):
        if not isinstance(data[key], dict):
            raise ConfigError(f"{path}: {key} must be a map of name to entry")
    for name, entry in data["prices"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("price"), int | float) or not entry.get("source"):
            raise ConfigError(f"{path}: prices.{name} needs a numeric price and a source")
    shown = "customer_context_devtools/prices_us_east_1.yaml (packaged)" if path == PRICES_FILE else str(path)
    return Prices(str(data["region"]), str(data["as_of"]), data["prices"], data["metering"], shown)


def memory_mb(template: dict[str, Any]) -> dict[str, float]:
    """Memory of each function (MB), from template.yaml (a parameter's default where it is a Ref).

    Raises:
        ConfigError: not the project's template (names what is missing).
    """
    out: dict[str, float] = {}
    names = {"CollectFunction": "collect", "IngestFunction": "ingest", "BuildContextFunction": "build_context",
             "FetchContextFunction": "fetch_context"}
    where = "Globals.Function"
    try:
        default = template["Globals"]["Function"].get("MemorySize", 128)
        for resource, function in names.items():
            where = f"Resources.{resource}.Properties.MemorySize"
            size = template["Resources"][resource]["Properties"].get("MemorySize", default)
            if isinstance(size, dict) and "Ref" in size:
                size = template["Parameters"][size["Ref"]]["Default"]
            out[function] = float(size)
    except (KeyError, TypeError, AttributeError, ValueError):
        raise ConfigError(f"template: no usable {where} (pass --template the project's template.yaml)") from None
    return out


def load_template(path: Path) -> dict[str, Any]:
    """template.yaml with its intrinsic tags kept as plain data."""
    from customer_context_devtools.local.template import read_template

    if not path.is_file():
        raise ConfigError(f"{path}: template not found (run from the repository, or pass --template)")
    try:
        return read_template(path)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: the problem and where."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


@dataclass
class Line:
    """One priced item of the bill."""

    service: str
    function: str
    item: str
    quantity: float
    unit: str
    usd: float


@dataclass
class Estimate:
    """The monthly bill, its lines, and what it assumes."""

    lines: list[Line]
    assumptions: list[str]
    warnings: list[str]
    workload: Workload
    prices: Prices

    @property
    def total(self) -> float:
        return sum(line.usd for line in self.lines)

    def by(self, key: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for line in self.lines:
            name = getattr(line, key)
            out[name] = out.get(name, 0.0) + line.usd
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "month_days": DAYS_PER_MONTH, "region": self.prices.region, "prices_as_of": self.prices.as_of,
            "prices_file": self.prices.path, "workload": asdict(self.workload),
            "total_usd": round(self.total, 2),
            "by_service_usd": {k: round(v, 2) for k, v in self.by("service").items()},
            "by_function_usd": {k: round(v, 2) for k, v in self.by("function").items()},
            "lines": [asdict(line) | {"usd": round(line.usd, 2)} for line in self.lines],
            "assumptions": self.assumptions, "warnings": self.warnings,
        }


def estimate(workload: Workload, units: Units, prices: Prices, memory: dict[str, float]) -> Estimate:
    """The monthly cost of ``workload``."""
    workload.check()
    w, u, p = workload, units, prices
    month = DAYS_PER_MONTH
    lines: list[Line] = []
    warnings: list[str] = []

    def add(service: str, function: str, item: str, quantity: float, unit: str, price_name: str) -> None:
        lines.append(Line(service, function, item, quantity, unit, quantity * p.price(price_name)))

    def lambda_lines(function: str, invocations: float, billed_ms: float) -> None:
        add("Lambda", function, "requests", invocations, "invocations", "lambda_request")
        add("Lambda", function, "duration", invocations * billed_ms / 1000 * memory[function] / 1024, "GB-s",
            "lambda_gb_second")

    platform_bytes = p.metering("lambda_platform_log_bytes_per_invocation")
    event_overhead = p.metering("cloudwatch_logs_bytes_per_event")
    log_gb: dict[str, float] = {}

    def logs(function: str, invocations: float, lines_per: float, bytes_per: float) -> None:
        # Lambda's START / END / REPORT / XRAY lines are four log events of every invocation
        gb = invocations * (bytes_per + platform_bytes + (lines_per + 4) * event_overhead) / 1e9
        log_gb[function] = gb
        add("CloudWatch Logs", function, "ingestion", gb, "GB", "cloudwatch_logs_ingestion_gb")

    size_scale = w.event_bytes / u["collect_event_bytes_mean"]

    # --- collect: HTTP API → Lambda → SQS (+ the live tail in DynamoDB)
    events = w.events_per_day * month
    requests = events / w.events_per_request
    request_bytes = w.events_per_request * w.event_bytes
    message_bytes = w.events_per_request * u["collect_sqs_payload_bytes_per_event"] * size_scale
    collect_ms = math.ceil(w.events_per_request * u["collect_cpu_s_per_million_events"] / 1e6 * 1000 * size_scale
                           + (1 + (u["collect_dynamodb_requests_per_request"] if w.live_tail else 0))
                           * w.store_latency_ms)
    lambda_lines("collect", requests, collect_ms)
    add("API Gateway", "collect", "HTTP API requests", requests * math.ceil(request_bytes / HTTP_API_METERED_BYTES),
        "requests", "http_api_request")
    chunk = p.metering("sqs_request_chunk_bytes")
    add("SQS", "collect", "SendMessageBatch", requests * math.ceil(message_bytes / chunk), "requests", "sqs_request")
    tail_types = w.tail_types if w.tail_types is not None else _spec_tail_types()
    for event_type in tail_types:
        if event_type not in EVENT_TYPES:
            raise ConfigError(f"tail_types: {event_type!r} is not an event type; types: {', '.join(EVENT_TYPES)}")
    tail_share = sum(u.values.get(f"event_type_share_{t}", 0.0) for t in tail_types)
    if w.live_tail and tail_share:
        tail_events = events * tail_share
        add("DynamoDB", "collect", "live tail writes", tail_events * u["collect_tail_write_units_per_tail_event"],
            "WRU", "dynamodb_write_request_unit")
        add("DynamoDB", "collect", "live tail alias reads", requests * u["collect_tail_read_units_per_request"],
            "RRU", "dynamodb_read_request_unit")
    level = "debug_" if w.log_level == "DEBUG" else ""
    logs("collect", requests, u[f"collect_{level}log_lines_per_request"], u[f"collect_{level}log_bytes_per_request"])

    # --- fetch: HTTP API or function URL → Lambda → DynamoDB
    fetches = w.fetches_per_second * 86400 * month
    mix = {k: v for k, v in w.fetch_mix.items() if v}

    def mixed(key: str) -> float:
        return sum(share * u[f"fetch_{kind}_{key}"] for kind, share in mix.items())

    fetch_ms = sum(share * math.ceil(u[f"fetch_{kind}_cpu_s_per_request"] * 1000
                                     + u[f"fetch_{kind}_dynamodb_requests_per_request"] * w.store_latency_ms)
                   for kind, share in mix.items())
    lambda_lines("fetch_context", fetches, fetch_ms)
    if w.serving == "api-gateway":
        add("API Gateway", "fetch_context", "HTTP API requests", fetches, "requests", "http_api_request")
    else:
        add("Lambda", "fetch_context", "function URL requests", fetches, "requests", "lambda_function_url_request")
    add("DynamoDB", "fetch_context", "context reads", fetches * mixed("read_units_per_request"), "RRU",
        "dynamodb_read_request_unit")
    # the serving audit: each busy container sends its buffer every AUDIT_FLUSH_SECONDS (or when full)
    containers = max(1.0, w.fetches_per_second * fetch_ms / 1000) if w.fetches_per_second else 0.0
    audit_messages_per_s = min(w.fetches_per_second, max(containers / AUDIT_FLUSH_SECONDS,
                                                         w.fetches_per_second / u["audit_max_records_per_message"]))
    audit_messages = audit_messages_per_s * 86400 * month
    add("SQS", "fetch_context", "serving audit SendMessageBatch", audit_messages, "requests", "sqs_request")
    logs("fetch_context", fetches, mixed(f"{level}log_lines_per_request"), mixed(f"{level}log_bytes_per_request"))

    # --- ingest: SQS → Lambda → Iceberg (events and serving audit records)
    messages = requests + audit_messages
    bytes_queued = requests * message_bytes + fetches * mixed("audit_bytes_per_request")
    add("SQS", "ingest", "ReceiveMessage + DeleteMessageBatch",
        max(messages / 10, bytes_queued / chunk) + messages / 10, "requests", "sqs_request")
    invocations = max(messages / u["ingest_batch_size"], bytes_queued / u["ingest_payload_limit_bytes"])
    records = events + fetches
    ingest_s = records / u["ingest_events_per_s"] * size_scale
    lambda_lines("ingest", invocations, math.ceil(ingest_s / max(invocations, 1) * 1000
                                                  + 2 * w.store_latency_ms * u["ingest_files_written_per_commit"]))
    commits = invocations * u["ingest_commits"] / u["ingest_invocations"]
    add("S3", "ingest", "PUT (data and metadata files)", commits * u["ingest_files_written_per_commit"], "requests",
        "s3_put_request")
    add("Glue", "ingest", "catalog requests", commits * w.catalog_requests_per_commit, "requests",
        "glue_catalog_request")
    logs("ingest", invocations, u["ingest_log_lines_per_invocation"], u["ingest_log_bytes_per_invocation"])

    # --- build_context: EventBridge → Lambda (DuckDB) → DynamoDB
    builds = 24 * 60 / w.build_every_minutes * month
    read_per_build = (w.events_per_day * w.retention_days if w.build_reads == "all"
                      else w.events_per_day * w.build_every_minutes / (24 * 60))
    build_s = read_per_build / 1e6 * u["build_wall_s_per_million_events"]
    if build_s > LAMBDA_MAX_SECONDS:
        warnings.append(f"a build reads {read_per_build:,.0f} events: ~{build_s:,.0f} s at the measured "
                        f"{u['build_wall_s_per_million_events']:.0f} s per million, over Lambda's "
                        f"{LAMBDA_MAX_SECONDS} s limit")
    if w.build_reads == "new":
        warnings.append("build_reads=new prices each build as reading only the events since the last one; an "
                        "incremental build also scans the build's own copy of the events (build_rows) and runs only "
                        "at an unchanged clock, a build whose clock moved reads every event it keeps "
                        "(--build-reads all)")
    lambda_lines("build_context", builds, math.ceil(build_s * 1000))
    landed = builds * w.profiles * w.changed_share
    add("DynamoDB", "build_context", "snapshot landing", landed * u["rebuild_write_units_per_changed_profile"],
        "WRU", "dynamodb_write_request_unit")
    add("S3", "build_context", "PUT (state tables)", builds * u["rebuild_files_written"], "requests",
        "s3_put_request")
    files_per_build = commits / builds * u["ingest_files_written_per_commit"]
    reads_per_build = files_per_build if w.build_reads == "new" else files_per_build + w.retention_days
    add("S3", "build_context", "GET (files read)", builds * reads_per_build, "requests", "s3_get_request")
    logs("build_context", builds, 0, u["rebuild_log_bytes"])

    # --- storage
    tail_bytes = (events / month * tail_share * u["collect_tail_items_per_tail_event"]
                  * u["collect_tail_item_bytes_mean"] * _ttl_days()) if w.live_tail else 0.0
    table_gb = (w.profiles * u["build_item_bytes_per_profile"] + tail_bytes) / 1e9
    add("DynamoDB", "(storage)", "table storage", table_gb, "GB-month", "dynamodb_storage_gb_month")
    add("DynamoDB", "(storage)", "point-in-time recovery", table_gb, "GB-month", "dynamodb_pitr_gb_month")
    lake_gb = records / month * w.retention_days * u["ingest_data_bytes_per_event"] * size_scale / 1e9
    add("S3", "(storage)", "lakehouse storage", lake_gb, "GB-month", "s3_storage_gb_month")
    stored_logs = sum(log_gb.values()) / month * w.log_retention_days * u["logs_gzip_ratio"]
    add("CloudWatch Logs", "(storage)", "log storage", stored_logs, "GB-month", "cloudwatch_logs_storage_gb_month")
    add("Secrets Manager", "(storage)", "PII hash key", 1, "secret-month", "secrets_manager_secret_month")

    # --- X-Ray: Tracing is Active on every function; the default rule samples 1/s + 5 % of the rest
    rate = (requests + fetches + invocations + builds) / (86400 * month)
    reservoir, share = p.metering("xray_reservoir_per_second"), p.metering("xray_sampling_rate")
    traces = (min(rate, reservoir) + share * max(0.0, rate - reservoir)) * 86400 * month
    add("X-Ray", "(all functions)", "traces recorded", traces, "traces", "xray_trace_recorded")

    assumptions = [
        f"a month is {month} days; prices: {p.region}, as of {p.as_of} ({p.path}); no free tier",
        f"collect: {w.events_per_request:g} events a request, {w.event_bytes:g} bytes each; every request goes "
        "through the HTTP API",
        f"live tail: {'on' if w.live_tail else 'off'}, types {', '.join(tail_types)} "
        f"({tail_share:.0%} of events at the measured type mix), items kept {_ttl_days():g} days "
        "(CUSTOMER_CONTEXT_RECENT_EVENTS_TTL_SECONDS)",
        f"fetch: {w.fetches_per_second:g}/s through {w.serving}, mix "
        + ", ".join(f"{k} {v:.0%}" for k, v in mix.items()) + f"; log level {w.log_level}",
        f"each store or queue round trip adds {w.store_latency_ms:g} ms to a function's billed duration",
        f"build every {w.build_every_minutes:g} min, reading "
        f"{'every kept event' if w.build_reads == 'all' else 'the new events'}; "
        f"{w.changed_share:.1%} of {w.profiles:,} profiles change per build",
        f"events and serving audit records kept {w.retention_days:g} days in S3; logs kept "
        f"{w.log_retention_days:g} days (the template's LogRetentionDays, default 30)",
        f"the serving audit adds one record per fetch to ingest and the lakehouse; "
        f"{w.catalog_requests_per_commit:g} catalog requests per Iceberg commit",
    ]
    return Estimate(lines, assumptions, warnings, w, p)


def _spec_tail_types() -> list[str]:
    from customer_context.spec import load_spec

    return list(load_spec().snapshot.recent_events.types)


def _ttl_days() -> float:
    from customer_context.config import get_settings

    return get_settings().recent_events_ttl_seconds / 86400


def render(est: Estimate, units: Units) -> str:
    """The bill as text: per service, per function, the lines, the assumptions."""
    out = [f"Monthly cost, {est.prices.region} list prices as of {est.prices.as_of}: ${est.total:,.2f}", ""]
    out.append("By service:")
    out += [f"  {name:<18} ${usd:>10,.2f}" for name, usd in est.by("service").items()]
    out.append("By function:")
    out += [f"  {name:<18} ${usd:>10,.2f}" for name, usd in est.by("function").items()]
    out.append("Lines:")
    for line in sorted(est.lines, key=lambda x: -x.usd):
        out.append(f"  {line.service:<16} {line.function:<14} {line.item:<36} {line.quantity:>16,.1f} "
                   f"{line.unit:<11} ${line.usd:>10,.2f}")
    out.append("Assumptions:")
    out += [f"  - {a}" for a in est.assumptions]
    if est.warnings:
        out.append("Warnings:")
        out += [f"  ! {w}" for w in est.warnings]
    out.append(f"Per-unit figures: {len(units.values)} read from bench/results ({', '.join(sorted(BENCHMARKS))})")
    return "\n".join(out)


def _mix(text: str) -> dict[str, float]:
    """``--fetch-mix``'s value (argparse reports a bad one as a usage error, exit status 2)."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, share = part.partition("=")
        try:
            out[name.strip()] = float(share)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not kind=share (e.g. fields=0.5,full=0.5)") from None
        if not sep:
            raise argparse.ArgumentTypeError(f"{part!r} is not kind=share (e.g. fields=0.5,full=0.5)")
    return out


def add_arguments(parser: Any) -> None:
    """The ``cost`` command's flags (defaults: :class:`Workload`'s)."""
    d = Workload()
    parser.add_argument("--events-per-day", type=float, default=d.events_per_day,
                        help=f"tracking events a day (default {d.events_per_day:,.0f})")
    parser.add_argument("--event-bytes", type=float, default=d.event_bytes,
                        help=f"mean size of an event as the SDK sends it (default {d.event_bytes:g})")
    parser.add_argument("--events-per-request", type=float, default=d.events_per_request,
                        help=f"events per collect request: 1 for browser SDKs, up to 100 for server SDKs "
                             f"(default {d.events_per_request:g})")
    parser.add_argument("--profiles", type=int, default=d.profiles, help=f"customers (default {d.profiles:,})")
    parser.add_argument("--changed-share", type=float, default=d.changed_share,
                        help=f"share of profiles whose snapshot changes per build (default {d.changed_share:g})")
    parser.add_argument("--fetches-per-second", type=float, default=d.fetches_per_second,
                        help=f"context fetches a second (default {d.fetches_per_second:g})")
    parser.add_argument("--fetch-mix", type=_mix, default=d.fetch_mix,
                        help="shares of fetch kinds: fields (a few fields), full (the whole context), text "
                             "(prompt text), recent (recent events only); default "
                             + ",".join(f"{k}={v:g}" for k, v in d.fetch_mix.items()))
    parser.add_argument("--build-every-minutes", type=float, default=d.build_every_minutes,
                        help=f"build schedule (default every {d.build_every_minutes:g} minutes, the template's)")
    parser.add_argument("--build-reads", choices=["new", "all"], default=d.build_reads,
                        help="what each build reads: new (only events since the last build: an incremental "
                             "build) or all (every kept event: a full build); "
                             f"default {d.build_reads}")
    parser.add_argument("--retention-days", type=float, default=d.retention_days,
                        help=f"days events and audit records are kept in S3 (default {d.retention_days:g})")
    parser.add_argument("--log-retention-days", type=float, default=d.log_retention_days,
                        help=f"days CloudWatch keeps logs (default {d.log_retention_days:g})")
    parser.add_argument("--no-live-tail", dest="live_tail", action="store_false",
                        help="price the live tail off (CUSTOMER_CONTEXT_RECENT_EVENTS_TTL_SECONDS=0)")
    parser.add_argument("--tail-types", type=lambda s: [t.strip() for t in s.split(",") if t.strip()],
                        help="event types collect writes to the live tail (default: the spec's "
                             "snapshot.recent_events.types)")
    parser.add_argument("--serving", choices=["api-gateway", "function-url"], default=d.serving,
                        help=f"how fetch is reached (template parameter FetchEndpoint; default {d.serving})")
    parser.add_argument("--log-level", choices=["INFO", "DEBUG"], default=d.log_level,
                        help=f"the functions' log level (template parameter LogLevel; default {d.log_level})")
    parser.add_argument("--store-latency-ms", type=float, default=d.store_latency_ms,
                        help=f"billed milliseconds per DynamoDB / SQS round trip (default {d.store_latency_ms:g})")
    parser.add_argument("--catalog-requests-per-commit", type=float, default=d.catalog_requests_per_commit,
                        help=f"Glue requests per Iceberg commit (default {d.catalog_requests_per_commit:g})")
    parser.add_argument("--results", default="bench/results", help="benchmark results folder (default bench/results)")
    parser.add_argument("--prices", help="price table (default: the packaged us-east-1 one)")
    parser.add_argument("--template", default="template.yaml", help="template for memory sizes (default template.yaml)")
    parser.add_argument("--json", action="store_true", help="print the estimate as JSON")


def run(args: Any) -> int:
    """``customer-context cost``: print the monthly estimate."""
    workload = Workload(
        events_per_day=args.events_per_day, event_bytes=args.event_bytes, events_per_request=args.events_per_request,
        profiles=args.profiles, changed_share=args.changed_share, fetches_per_second=args.fetches_per_second,
        fetch_mix=args.fetch_mix, build_every_minutes=args.build_every_minutes, build_reads=args.build_reads,
        retention_days=args.retention_days, log_retention_days=args.log_retention_days, live_tail=args.live_tail,
        tail_types=args.tail_types, serving=args.serving, log_level=args.log_level,
        store_latency_ms=args.store_latency_ms, catalog_requests_per_commit=args.catalog_requests_per_commit)
    units = load_units(Path(args.results))
    prices = load_prices(Path(args.prices) if args.prices else None)
    est = estimate(workload, units, prices, memory_mb(load_template(Path(args.template))))
    if args.json:
        print(json.dumps(est.to_dict() | {"units": units.values, "unit_sources": units.sources}, indent=2))
    else:
        print(render(est, units))
    return 0
