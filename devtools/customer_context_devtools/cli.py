"""``customer-context``: run the local stack, query the lakehouse, run the demo.

Every command prints a clear message (not a traceback) on bad input and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = ".customer-context"


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir or os.environ.get("CUSTOMER_CONTEXT_DATA_DIR") or DEFAULT_DATA_DIR)


def _pii_key(data_dir: Path) -> str:
    """The PII hash key: CUSTOMER_CONTEXT_PII_HASH_KEY, else the one the local stack keeps in the data dir."""
    path = data_dir / "pii.key"
    return os.environ.get("CUSTOMER_CONTEXT_PII_HASH_KEY") or (path.read_text().strip() if path.is_file() else "")


def _lakehouse(data_dir: Path) -> Any:
    from customer_context.config import Settings
    from customer_context.errors import ConfigError
    from customer_context.stores.iceberg import Lakehouse

    if not (data_dir / "catalog.db").exists() and os.environ.get("CUSTOMER_CONTEXT_CATALOG_TYPE", "sql") == "sql":
        # bad input: exit status 2, as docs/local-stack.md says (main prints the line)
        raise ConfigError(f"no lakehouse at {data_dir} yet: start `customer-context serve` and send events, "
                          "or pass --data-dir")
    env = dict(os.environ, CUSTOMER_CONTEXT_DATA_DIR=str(data_dir))
    return Lakehouse.from_settings(Settings.from_env(env))


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the local stack in the foreground."""
    import signal
    import threading

    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "DEBUG" if args.verbose else "WARNING")
    from customer_context.config import Settings

    from customer_context_devtools.local.stack import LocalStack

    _checked_spec(args.spec)

    running = _running_stack(_data_dir(args))
    if running is not None:
        print(f"error: {_data_dir(args)} is already served at {running['url']} (pid {running.get('pid')}): use that "
              "stack, stop it first, or pass another --data-dir", file=sys.stderr)
        return 2
    interval = Settings.from_env().build_interval_seconds
    # the emulated functions get the spec as the template gives it to them: in their environment
    functions_env = {"CUSTOMER_CONTEXT_SPEC_PATH": str(Path(args.spec).resolve())} if args.spec else {}
    stack = LocalStack(_data_dir(args), port=args.port, build_interval=interval, environ=functions_env)
    stack.start()
    print(f"customer-context local stack ready at {stack.url}", flush=True)
    source = (stack.write_keys or {})[stack.write_key]
    print(f"  write key : {stack.write_key}  (source {source}; from {stack.key_origin})")
    print(f"  read key  : {stack.consumer_key}  (consumer `local`, every section; "
          "`customer-context keys create` for scoped ones)")
    print(f"  data dir  : {stack.data_dir}")
    print(f"  try       : curl -u {stack.write_key}: -H 'content-type: application/json' "
          f"-d '{{\"userId\":\"u1\",\"event\":\"Signed Up\"}}' {stack.url}/v1/track")
    print(f"  builds    : every {interval}s (customer-context build to run one now)" if interval else
          "  builds    : on demand (customer-context build)")
    print(f"  context   : curl -H 'authorization: Bearer {stack.consumer_key}' "
          f"'{stack.url}/v1/context/user_id/u1?format=text'")
    print(f"  API docs  : {stack.url}/docs/collect  {stack.url}/docs/context   MCP: {stack.url}/mcp  "
          "(Ctrl-C to stop)", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping…", flush=True)
        stack.stop()
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    """Run DuckDB SQL over the lakehouse (or the same SQL in Athena over a deployed stack's, with --athena)."""
    if args.athena:
        from customer_context.stores import athena

        target = athena.AthenaTarget.for_stack(args.stack, args.workgroup, args.database, args.catalog)
        columns, rows = athena.query(args.query, target)
    else:
        import duckdb
        from customer_context.stores.sql import query

        lakehouse = _lakehouse(_data_dir(args))
        try:
            columns, rows = query(lakehouse, args.query)
        except duckdb.Error as exc:
            names = ", ".join(lakehouse.table_names()) or "none yet"
            print(f"error: {exc}\n(tables: {names}; views: events_unique, rejected_events_unique)", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], default=str, indent=1))
    else:
        print(format_table(columns, rows))
    return 0





def cmd_maintain(args: argparse.Namespace) -> int:
    """Compact, expire and clean every lakehouse table now."""
    from customer_context.config import Settings
    from customer_context.govern.maintain import maintain

    settings = Settings.from_env()
    report = maintain(_lakehouse(_data_dir(args)), min_files=args.min_files or settings.compact_min_files,
                      retain_seconds=settings.snapshot_retention_seconds if args.retain is None else args.retain,
                      progress=lambda line: print(f"  {line}", flush=True))
    print(json.dumps(report, indent=1))
    return 0


def cmd_plans(args: argparse.Namespace) -> int:
    """Tracking-plan violations per source, event and kind, from the lakehouse."""
    from customer_context.govern.plans_report import violations

    rows = violations(_lakehouse(_data_dir(args)))
    if args.json:
        print(json.dumps(rows, indent=1))
    elif rows:
        print(format_table(list(rows[0]), [tuple(r.values()) for r in rows]))
    else:
        print("no tracking-plan violations")
    return 0


def _identifier(text: str) -> tuple[str, str] | None:
    """``--identifier TYPE:VALUE`` as (type, value); ``None`` (the error said) when it is not that."""
    id_type, sep, value = text.partition(":")
    if not sep or not value:
        print("error: --identifier must be TYPE:VALUE, e.g. email:ada@example.com", file=sys.stderr)
        return None
    return id_type, value


def cmd_audit(args: argparse.Namespace) -> int:
    """Who was served what about one customer (serving_audit), newest first."""
    from customer_context.errors import ConfigError
    from customer_context.pii import PiiPolicy
    from customer_context.spec import load_spec
    from customer_context.stores.sql import connect

    parsed = _identifier(args.identifier)
    if parsed is None:
        return 2
    id_type, value = parsed
    spec = load_spec(args.spec)
    types = [*spec.identifiers.types, "profile_id"]
    if id_type not in types:  # else it answered "nothing served", as if the customer had been asked about by no one
        print(f"error: --identifier: unknown type {id_type!r}; valid: {', '.join(types)}", file=sys.stderr)
        return 2
    lakehouse = _lakehouse(_data_dir(args))
    if "serving_audit" not in lakehouse.table_names():
        print("nothing served yet")
        return 0
    key = _pii_key(_data_dir(args))
    try:
        policy = PiiPolicy(spec, key)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # the identity graph holds the lookup form; the audit holds only its keyed token (as serving wrote it)
    if id_type != "profile_id":
        value = policy.lookup_value(id_type, value) or value
    audited = value if id_type == "profile_id" else policy.audit_value(value)
    sql = ("SELECT \"at\", consumer, via, identifier_type, identifier_value, profile_id, sections, fields, "
           "snapshot_version, status FROM serving_audit WHERE profile_id IN (SELECT profile_id FROM identity_graph "
           "WHERE identifier_type = $t AND identifier_value = $v UNION SELECT $v WHERE $t = 'profile_id') "
           "OR (identifier_type = $t AND identifier_value = $a) ORDER BY \"at\" DESC")
    con = connect(lakehouse, sql)
    if "identity_graph" not in lakehouse.table_names():
        con.execute("CREATE TABLE identity_graph "
                    "(identifier_type VARCHAR, identifier_value VARCHAR, profile_id VARCHAR)")
    result = con.execute(sql, {"t": id_type, "v": value, "a": audited})
    columns = [d[0] for d in result.description]
    rows = result.fetchall()
    print(json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str, indent=1) if args.json
          else format_table(columns, rows) if rows else f"nothing served about {args.identifier}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """A customer's snapshot history, or their context as fetch answered it at ``--at``."""
    from customer_context.pii import PiiPolicy
    from customer_context.serve import replay
    from customer_context.serve.consumers import Consumer
    from customer_context.serve.fetch import ContextService
    from customer_context.spec import load_spec
    from customer_context.stores.context_store import MemoryContextStore

    parsed = _identifier(args.identifier)
    if parsed is None:
        return 2
    id_type, value = parsed
    data_dir = _data_dir(args)
    lakehouse = _lakehouse(data_dir)
    spec = load_spec(args.spec)
    # identifiers resolve through the last build's identity graph (the serving store may not be running)
    store = MemoryContextStore()
    if lakehouse.exists("identity_graph"):
        store.put_aliases((r["identifier_type"], r["identifier_value"], r["profile_id"])
                          for r in lakehouse.scan("identity_graph").to_pylist())
    service = ContextService(store, spec, pii=PiiPolicy(spec, _pii_key(data_dir)))
    operator = Consumer("cli", sections=frozenset({"*"}), admin=True)
    if args.at is None:
        found = replay.history(service, lakehouse, operator, id_type, value)
        rows = [(v["version"], v["built_at"], v["data_as_of"], ", ".join(v["changed"])) for v in found["versions"]]
        print(json.dumps(found, indent=1) if args.json else
              f"profile {found['profile_id']}\n" + format_table(["version", "built_at", "data_as_of", "changed"], rows,
                                                                 max_width=100))
        return 0
    result = replay.replay(service, lakehouse, operator, id_type, value, at=replay.parse_at(args.at),
                           fmt=args.format, max_tokens=args.max_tokens)
    print(result.body if result.is_text else json.dumps(result.body, indent=1))
    print(f"(version {result.headers['X-Context-Version']}, built {result.headers['X-Context-Built-At']})",
          file=sys.stderr)
    return 0


def format_table(columns: list[str], rows: list[tuple[Any, ...]], max_width: int = 60) -> str:
    """A plain text table."""
    def cell(value: Any) -> str:
        text = "NULL" if value is None else str(value)
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo end to end on the local stack."""
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")  # the demo prints its own progress
    from customer_context_devtools.demo.run import run_demo

    return run_demo(data_dir=_data_dir(args) / "demo" if not args.data_dir else _data_dir(args),
                    customers=args.customers, seed=args.seed, keep=args.keep)


def cmd_build(args: argparse.Namespace) -> int:
    """Run build_context against the local lakehouse."""
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    from customer_context.assemble.build import build_context
    from customer_context.stores.context_store import MemoryContextStore

    data_dir = _data_dir(args)
    lakehouse = _lakehouse(data_dir)
    spec = _checked_spec(args.spec, lakehouse)
    running = _running_stack(data_dir)
    if running is None and not args.dry_run:
        print("error: no local stack is running for this data dir, so there is no DynamoDB to land in: start "
              "`customer-context serve` (it builds on a timer too), or pass --dry-run to build without landing",
              file=sys.stderr)
        return 2
    store = _running_stack_store(running) if running is not None and not args.dry_run else MemoryContextStore()
    report = build_context(lakehouse, store, spec, progress=lambda line: print(f"  {line}", flush=True),
                           commit=not args.dry_run, reland=args.reland, full=args.full,
                           pii_key=_pii_key(data_dir))
    print(json.dumps(report.to_dict(), indent=1, default=str))
    if args.dry_run and args.show and isinstance(store, MemoryContextStore):
        for item in list(store.items.values())[: args.show]:
            if item["sk"] == "snapshot":
                print(json.dumps(json.loads(item["doc"]), indent=1))
    return 0


def _running_stack_store(running: dict[str, Any]) -> Any:
    """The context store of a running local stack: its settings go to the composition root as a value, and
    boto3's own ``AWS_*`` variables (the stack's endpoint on loopback) to the environment, where boto3 reads
    them."""
    from customer_context import wiring
    from customer_context.config import Settings

    environment = running["environment"]
    os.environ.update({name: value for name, value in environment.items() if name.startswith("AWS_")})
    wiring.configure(Settings.from_env({**os.environ, **environment}))
    return wiring.context_store()


def _running_stack(data_dir: Path) -> dict[str, Any] | None:
    """The state file `serve` writes, if that stack still answers."""
    path = data_dir / "stack.json"
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
        import urllib.request

        urllib.request.urlopen(state["moto_url"], timeout=2).close()
        return state
    except Exception:
        return None


def cmd_load(args: argparse.Namespace) -> int:
    """Validate and upsert a record file into its table."""
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    from customer_context.assemble.records import load_file
    from customer_context.config import Settings
    from customer_context.stores.iceberg import Lakehouse

    data_dir = _data_dir(args)
    if not data_dir.is_dir():
        _checked_spec(args.spec)  # a spec a build would trip over is said first
        print(f"error: no data dir at {data_dir}: start `customer-context serve` there first, or pass --data-dir",
              file=sys.stderr)
        return 2
    path = Path(args.file)
    lakehouse = Lakehouse.from_settings(Settings.from_env(dict(os.environ, CUSTOMER_CONTEXT_DATA_DIR=str(data_dir))))
    from customer_context.pii import PiiPolicy

    spec = _checked_spec(args.spec, lakehouse)
    key = _pii_key(data_dir)
    report = load_file(lakehouse, spec, f"imports/{args.table}/{path.name}", path.read_bytes(),
                       pii=PiiPolicy(spec, key), partial=args.partial)
    print(json.dumps(report.to_dict(), indent=1))
    if report.refused:
        print(f"error: {report.refused}", file=sys.stderr)
        return 2
    if report.rejected:
        print(f"error: {report.rejected} of {report.rows} rows rejected ({report.loaded} loaded); the rejected rows "
              f"are in rejected_records: customer-context sql \"select * from rejected_records\"", file=sys.stderr)
        return 1
    return 0


def _keys_store(args: argparse.Namespace) -> tuple[Any, Path | None]:
    """Where consumer keys go: the AWS table (``--table`` or CUSTOMER_CONTEXT_CONTEXT_TABLE without a
    local stack), else the local config file (and the running local stack, if any)."""
    from customer_context import wiring
    from customer_context.errors import ConfigError
    from customer_context.stores.aws import explain_aws_problem

    data_dir = _data_dir(args)
    if args.table:
        wiring.configure(wiring.settings().model_copy(update={"context_table": args.table}))
        try:
            return wiring.context_store(), None
        except ValueError as exc:  # an empty or malformed region: botocore builds no endpoint from it
            raise ConfigError(f"--table {args.table}: {explain_aws_problem(exc)} (set AWS_DEFAULT_REGION to "
                              "a region such as eu-west-1)") from None
    running = _running_stack(data_dir)
    if running is not None:
        return _running_stack_store(running), data_dir
    return None, data_dir


def cmd_keys(args: argparse.Namespace) -> int:
    """Create, list or revoke consumer keys; with ``--table``, AWS problems (no region, no credentials, no such
    table) are one line saying what to set."""
    if not args.table:
        return _keys(args)
    from botocore.exceptions import BotoCoreError, ClientError
    from customer_context.errors import StoreUnavailable
    from customer_context.stores.aws import explain_aws_problem

    try:
        return _keys(args)
    except (BotoCoreError, ClientError, StoreUnavailable) as exc:
        cause: BaseException = exc
        while cause.__cause__ is not None and not isinstance(cause, BotoCoreError | ClientError):
            cause = cause.__cause__
        if isinstance(cause, ClientError):
            error = cause.response.get("Error", {})
            region = os.environ.get("AWS_DEFAULT_REGION") or "the configured region"
            reason = ("no such table in " + region if error.get("Code") == "ResourceNotFoundException"
                      else f"{error.get('Code')}: {error.get('Message')}")
            print(f"error: --table {args.table}: {reason} (the stack's ContextTableName output names it)",
                  file=sys.stderr)
        elif isinstance(cause, BotoCoreError):
            print(f"error: --table {args.table}: {explain_aws_problem(cause)}", file=sys.stderr)
        else:
            print(f"error: --table {args.table}: {exc}", file=sys.stderr)
        return 2


def _keys(args: argparse.Namespace) -> int:
    from customer_context.serve.catalog import LIST_SECTIONS, catalog
    from customer_context.serve.consumers import consumer_item, hash_key, new_key, validate_scope
    from customer_context.spec import load_spec

    from customer_context_devtools.local.stack import load_consumers, save_consumer

    store, data_dir = _keys_store(args)
    if args.action == "create":
        spec = load_spec(args.spec)
        cat = catalog(spec)
        sections = [s for v in args.sections or [] for s in v.split(",") if s]
        fields = [f for v in args.fields or [] for f in v.split(",") if f]
        queries = [q for v in args.queries for q in v.split(",") if q] if args.queries else None
        if not args.consumer.strip():
            print("error: --consumer: empty; name the consumer (logs and the serving audit show it)", file=sys.stderr)
            return 2
        if not sections and not fields and not args.admin:
            print("error: give --sections and/or --fields (use --sections '*' for everything), or --admin",
                  file=sys.stderr)
            return 2
        validate_scope(sections, fields, cat.sections, [*cat.fields, *LIST_SECTIONS])
        known_queries = sorted(spec.queries)
        for name in queries or []:
            if name != "*" and name not in known_queries:
                print(f"error: --queries: unknown named query {name!r}; the spec has: "
                      f"{', '.join(known_queries) or 'none'} (or * for all)", file=sys.stderr)
                return 2
        key = args.key or new_key()
        if args.key:
            print("warning: a key you chose (--key) is as secret as where you wrote it: for the sample events and "
                  "tests, not for production", file=sys.stderr)
        item = consumer_item(args.consumer, sections, fields, queries, admin=args.admin, audit=args.audit)
        if data_dir is not None:
            save_consumer(data_dir, hash_key(key), item)
        if store is not None:
            store.put_consumer(hash_key(key), item)
        where = "the context table" if data_dir is None else f"{data_dir}/config.toml" + (
            " and the running local stack" if store is not None else "")
        print(json.dumps({"consumer": args.consumer, "key": key, "sections": item["sections"],
                          "fields": item["fields"], "queries": item["queries"], "admin": bool(item["admin"]),
                          "audit": bool(item.get("audit")), "stored_in": where}, indent=1))
        print("Keep the key now: only its SHA-256 is stored.", file=sys.stderr)
        return 0
    if args.action == "list":
        items = store.list_consumers() if store is not None else [
            {"pk": f"consumer#{h}", **v} for h, v in load_consumers(data_dir).items()]  # type: ignore[arg-type]
        for item in sorted(items, key=lambda i: str(i["name"])):
            print(json.dumps({"consumer": item["name"], "key_sha256": str(item["pk"]).split("#", 1)[1],
                              "sections": list(item.get("sections") or []), "fields": list(item.get("fields") or []),
                              "queries": list(item.get("queries") or []), "admin": bool(item.get("admin")),
                              "audit": bool(item.get("audit")), "created_at": item.get("created_at")}))
        return 0
    # revoke
    digest = args.key_sha256 or (hash_key(args.key) if args.key else None)
    if not digest:
        print("error: give --key or --key-sha256", file=sys.stderr)
        return 2
    known = (store.get_consumer(digest) is not None) if store is not None else False
    if data_dir is not None:
        known = known or digest in load_consumers(data_dir)
    if not known:
        where = "the context table" if data_dir is None else f"{data_dir}/config.toml"
        print(f"error: no consumer key with SHA-256 {digest} in {where} (`customer-context keys list` shows them)",
              file=sys.stderr)
        return 2
    if data_dir is not None:
        save_consumer(data_dir, digest, None)
    if store is not None:
        store.delete_consumer(digest)
    print(json.dumps({"revoked": digest}))
    return 0


def _checked_spec(path: str | None, lakehouse: Any = None) -> Any:
    """The spec at ``path`` (else the configured or packaged one), after :func:`check_spec`: warnings are
    printed, errors raise.

    Raises:
        ConfigError: The spec cannot be loaded, or a build would trip over it; every problem is listed.
    """
    from customer_context.assemble.check import check_spec
    from customer_context.config import Settings
    from customer_context.errors import ConfigError
    from customer_context.spec import DEFAULT_SPEC, load_spec

    chosen = path or Settings.from_env().spec_path or str(DEFAULT_SPEC)
    spec = load_spec(chosen)
    found = check_spec(spec, lakehouse)
    for warning in found.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not found.ok:
        raise ConfigError(f"{chosen}: " + "\n".join(found.errors))
    return spec


def cmd_spec(args: argparse.Namespace) -> int:
    """Check a context spec without building anything."""
    from customer_context.config import Settings
    from customer_context.spec import DEFAULT_SPEC

    path = args.file or Settings.from_env().spec_path or str(DEFAULT_SPEC)
    spec = _checked_spec(path)
    print(f"{path}: ok — {len(spec.identifiers.types)} identifier types, {len(spec.record_tables)} record tables, "
          f"{len(spec.traits)} traits, {len(spec.queries)} named queries")
    return 0


def cmd_fit_scores(args: argparse.Namespace) -> int:
    """Fit BG/NBD and Gamma-Gamma on a per-customer CSV."""
    from customer_context.assemble.scores import ScoreFitError, fit_from_csv

    try:
        print(json.dumps(fit_from_csv(args.file), indent=1))
    except ScoreFitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    """Print the OpenAPI document of an HTTP function."""
    from customer_context_devtools.local import lambda_runtime

    print(lambda_runtime.load_module(args.function).app.get_openapi_json_schema())
    return 0


def _port(text: str) -> int:
    """A TCP port for --port: 0 (any free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (a port: 0 to 65535)") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is out of range (a port: 0 to 65535; 0 picks a free one)")
    return port


def _retain(text: str) -> int:
    """``maintain --retain``: seconds, at least the floor maintenance keeps (said at parse time, one line)."""
    from customer_context.config import MIN_RETENTION_SECONDS

    try:
        seconds = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if seconds < MIN_RETENTION_SECONDS:
        raise argparse.ArgumentTypeError(f"{seconds} is below the floor of {MIN_RETENTION_SECONDS} seconds (a "
                                         "commit or read in flight could lose the files it started from)")
    return seconds


# The examples each command's --help ends with.
EXAMPLES = {
    "serve": ["customer-context serve", "customer-context serve --port 9000 --data-dir /tmp/cc",
              "customer-context serve --spec my-context.yaml --verbose"],
    "sql": ['customer-context sql "select type, count(*) from events_unique group by 1"',
            'customer-context sql --json "select * from rejected_events_unique limit 5"',
            'customer-context sql --athena --stack customer-context-prod "select count(*) from events"'],
    "demo": ["customer-context demo", "customer-context demo --customers 200 --data-dir /tmp/demo"],
    "build": ["customer-context build", "customer-context build --dry-run --show 2",
              "customer-context build --full"],
    "load": ["customer-context load contacts.csv --table crm_contacts",
             "customer-context load tickets.jsonl.gz --table support_tickets --partial"],
    "audit": ["customer-context audit --identifier email:ada@example.com",
              "customer-context audit --identifier user_id:u1 --json"],
    "replay": ["customer-context replay --identifier email:ada@example.com",
               "customer-context replay --identifier user_id:u1 --at 2026-12-01T09:30 --format text"],
    "maintain": ["customer-context maintain", "customer-context maintain --min-files 4 --retain 3600"],
    "plans": ["customer-context plans report", "customer-context plans report --json"],
    "keys": ["customer-context keys create --consumer support-bot --sections '*'",
             "customer-context keys create --consumer agent --sections traits --queries orders_in_period",
             "customer-context keys list",
             "customer-context keys revoke --key-sha256 <sha256 from keys list>",
             "customer-context keys create --table <ContextTableName output> --consumer web --sections traits"],
    "spec": ["customer-context spec check", "customer-context spec check my-context.yaml"],
    "check": ["customer-context check my-context.yaml"],
    "fit-scores": ["customer-context fit-scores customers.csv"],
    "openapi": ["customer-context openapi fetch_context > fetch_context.json"],
    "cost": ["customer-context cost", "customer-context cost --json"],
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("customer-context")
    except PackageNotFoundError:  # the package's source on PYTHONPATH (the Lambda layer), not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for the docs test)."""
    parser = argparse.ArgumentParser(prog="customer-context", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the local stack (HTTP API, queue, ingest, lakehouse) in the foreground")
    serve.add_argument("--port", type=_port, default=os.environ.get("CUSTOMER_CONTEXT_PORT", "8080"),
                       help="HTTP port on 127.0.0.1 (default 8080; 0 picks a free one)")
    serve.add_argument("--data-dir", help=f"state folder (default {DEFAULT_DATA_DIR})")
    serve.add_argument("--verbose", action="store_true", help="log every request and ingest batch")
    serve.add_argument("--spec", help="context spec file (default: CUSTOMER_CONTEXT_SPEC_PATH or the packaged one); "
                                      "checked before anything starts")
    serve.set_defaults(func=cmd_serve)

    sql = sub.add_parser("sql", help="run DuckDB SQL over the lakehouse tables")
    sql.add_argument("query", help='e.g. "select type, count(*) from events_unique group by 1"')
    sql.add_argument("--json", action="store_true", help="print rows as JSON")
    sql.add_argument("--data-dir", help=f"state folder (default {DEFAULT_DATA_DIR})")
    sql.add_argument("--athena", action="store_true",
                     help="run the query in Athena over a deployed stack's lakehouse (AWS region and credentials "
                          "from the usual places)")
    sql.add_argument("--stack", default=os.environ.get("CUSTOMER_CONTEXT_STACK", "customer-context"),
                     help="with --athena: the stack whose workgroup and Glue database to use (default "
                          "CUSTOMER_CONTEXT_STACK or customer-context)")
    sql.add_argument("--workgroup", help="with --athena: the workgroup (default: the stack's, named as the stack)")
    sql.add_argument("--database", help="with --athena: the Glue database (default: the stack's name, dashes as "
                                        "underscores)")
    sql.add_argument("--catalog", help="with --athena: the Athena data catalog (default AwsDataCatalog, Glue's; "
                                       "for CatalogType s3tables: s3tablescatalog/<table bucket>)")
    sql.set_defaults(func=cmd_sql)

    demo = sub.add_parser("demo", help="generate a dataset, send it through the local stack with a real SDK, report")
    demo.add_argument("--customers", type=int, default=3000, help="number of synthetic customers (default 3000)")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    demo.add_argument("--data-dir", help=f"state folder (default {DEFAULT_DATA_DIR}/demo, wiped first)")
    demo.add_argument("--keep", action="store_true", help="keep the data of earlier demo runs")
    demo.set_defaults(func=cmd_demo)

    build = sub.add_parser("build", help="assemble every customer's context now and land it in the local stack")
    build.add_argument("--data-dir", help=f"state folder (default {DEFAULT_DATA_DIR})")
    build.add_argument("--spec", help="context spec file (default: CUSTOMER_CONTEXT_SPEC_PATH or the packaged one)")
    build.add_argument("--dry-run", action="store_true",
                       help="build without landing or changing the lakehouse (no running stack needed)")
    build.add_argument("--reland", action="store_true",
                       help="land every snapshot and alias again, changed or not (after the serving store lost items)")
    build.add_argument("--full", action="store_true",
                       help="recompute from scratch whatever the plan says (a build with nothing new since the "
                            "last one otherwise does no work): refit the score models and land everything again")
    build.add_argument("--show", type=int, default=0, help="with --dry-run: print this many snapshots")
    build.set_defaults(func=cmd_build)

    load = sub.add_parser("load", help="validate a CSV / JSONL / Parquet file and upsert it into a record table")
    load.add_argument("file", help="the file (.csv, .jsonl, .parquet, optionally .gz)")
    load.add_argument("--table", required=True, help="record table declared in the spec")
    load.add_argument("--partial", action="store_true",
                      help="the file has only some columns: update those, keep the others "
                           "(the key and updated_at are required)")
    load.add_argument("--data-dir", help=f"state folder (default {DEFAULT_DATA_DIR})")
    load.add_argument("--spec", help="context spec file")
    load.set_defaults(func=cmd_load)

    audit = sub.add_parser("audit", help="who was served what about a customer (serving_audit), newest first")
    audit.add_argument("--identifier", required=True, help="TYPE:VALUE, e.g. email:ada@example.com or profile_id:p_…")
    audit.add_argument("--json", action="store_true", help="print rows as JSON")
    audit.add_argument("--spec", help="context spec file")
    audit.add_argument("--data-dir", help=f"state folder (default {DEFAULT_DATA_DIR})")
    audit.set_defaults(func=cmd_audit)

    replay = sub.add_parser("replay", help="what the AI could know about a customer: snapshot history, and the "
                                           "context as fetch answered it at a time")
    replay.add_argument("--identifier", required=True, help="TYPE:VALUE, e.g. email:ada@example.com")
    replay.add_argument("--at", help="ISO-8601 time (no offset: UTC): print the context as fetch answered it then; "
                                     "without it, print the history of versions and what each changed")
    replay.add_argument("--format", choices=["json", "text"], default="json", help="with --at: json or prompt text")
    replay.add_argument("--max-tokens", type=int, help="with --at --format text: the token budget")
    replay.add_argument("--json", action="store_true", help="without --at: print the history as JSON")
    replay.add_argument("--spec", help="context spec file")
    replay.add_argument("--data-dir", help=f"state folder (default {DEFAULT_DATA_DIR})")
    replay.set_defaults(func=cmd_replay)

    maintain = sub.add_parser("maintain", help="compact small files, expire old snapshots, remove orphan files")
    maintain.add_argument("--min-files", type=int, help="compact partitions with at least this many files")
    maintain.add_argument("--retain", type=_retain, help="seconds of snapshots and unreferenced files to keep "
                          "(at least 3600: a commit or read in flight keeps its files)")
    maintain.add_argument("--data-dir", help=f"state folder (default {DEFAULT_DATA_DIR})")
    maintain.set_defaults(func=cmd_maintain)

    plans = sub.add_parser("plans", help="tracking plans: `report` counts violations per source, event and kind")
    plans.add_argument("action", choices=["report"])
    plans.add_argument("--json", action="store_true", help="print rows as JSON")
    plans.add_argument("--data-dir", help=f"state folder (default {DEFAULT_DATA_DIR})")
    plans.set_defaults(func=cmd_plans)

    keys = sub.add_parser("keys", help="consumer API keys for the fetch API: create, list, revoke")
    keys.add_argument("action", choices=["create", "list", "revoke"])
    keys.add_argument("--consumer", default="default", help="create: the consumer's name (shown in logs)")
    keys.add_argument("--sections", action="append",
                      help="create: sections it may read, comma-separated ('*': all); repeatable")
    keys.add_argument("--fields", action="append",
                      help="create: single fields it may read (traits.orders_90d, …), comma-separated; repeatable")
    keys.add_argument("--queries", action="append",
                      help="create: named queries it may run, if its scope covers what they reveal (default: all "
                           "for a key allowed every section, none for a scoped one)")
    keys.add_argument("--admin", action="store_true", help="create: may file regulations (POST /v1/regulations)")
    keys.add_argument("--audit", action="store_true",
                      help="create: may read the serving audit of a customer (GET …/audit, the explorer's audit)")
    keys.add_argument("--key", help="revoke: the key; create: use this key instead of a new random one (e.g. "
                                    "ck_sample_consumer_key, the key of the fetch samples in events/)")
    keys.add_argument("--key-sha256", help="revoke: the key's SHA-256 (from `keys list`)")
    keys.add_argument("--table", help="DynamoDB context table on AWS (default: the local stack / config file)")
    keys.add_argument("--spec", help="context spec file (to validate the scope)")
    keys.add_argument("--data-dir", help=f"state folder (default {DEFAULT_DATA_DIR})")
    keys.set_defaults(func=cmd_keys)

    spec_cmd = sub.add_parser("spec", help="the context spec: `check` finds what a build would trip over, "
                                           "without touching any data")
    spec_cmd.add_argument("action", choices=["check"])
    spec_cmd.add_argument("file", nargs="?",
                          help="the spec (default: CUSTOMER_CONTEXT_SPEC_PATH or the packaged context.yaml)")
    spec_cmd.set_defaults(func=cmd_spec)
    check_cmd = sub.add_parser("check", help="the same as `spec check`")
    check_cmd.add_argument("file", nargs="?", help="the spec (default: as for `spec check`)")
    check_cmd.set_defaults(func=cmd_spec)

    fit = sub.add_parser("fit-scores",
                         help="fit BG/NBD + Gamma-Gamma on a CSV (frequency, recency, T[, monetary_value])")
    fit.add_argument("file", help="CSV, one row per customer")
    fit.set_defaults(func=cmd_fit_scores)

    from customer_context_devtools import cost

    cost_cmd = sub.add_parser("cost", help="monthly AWS cost of a workload, per service and function, from the "
                                           "benchmark results and a dated price table")
    cost.add_arguments(cost_cmd)
    cost_cmd.set_defaults(func=cost.run)

    openapi = sub.add_parser("openapi", help="print the OpenAPI document of an HTTP function")
    openapi.add_argument("function", choices=["collect", "fetch_context", "query_context", "regulate"],
                         help="the function")
    openapi.set_defaults(func=cmd_openapi)
    for name, command in sub.choices.items():
        if name in EXAMPLES:
            command.formatter_class = argparse.RawDescriptionHelpFormatter
            command.epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``customer-context`` command."""
    import warnings

    from customer_context.errors import CustomerContextError

    # pyiceberg warns when a delete matches no rows (an upsert of new keys, a deletion already done): expected here
    warnings.filterwarnings("ignore", message="Delete operation did not match any records")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CustomerContextError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
