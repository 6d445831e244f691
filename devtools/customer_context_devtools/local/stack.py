"""The embedded local stack: everything the AWS deployment runs, on this machine, with no account.

* moto's server on loopback stands in for SQS (queue + DLQ with a redrive policy), S3 (the spool
  bucket) and DynamoDB, reached over real HTTP through ``AWS_ENDPOINT_URL``; a write-ahead journal
  in front of it keeps what it accepted across a restart or a kill (:mod:`.persistence`). Both run
  in a child process (:mod:`.moto_process`), which ends with the stack's;
* the lakehouse is a SQLite Iceberg catalog with a file warehouse under ``data_dir``;
* an HTTP server on 127.0.0.1 turns each request into the API Gateway HTTP API event for the
  same handler the template deploys, and the SQS trigger drives ingest with SQS events.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from customer_context.config import parse_write_keys

LOCAL_REGION = "us-east-1"
QUEUE_NAME = "customer-context-events"
DLQ_NAME = "customer-context-events-dlq"
SPOOL_BUCKET = "customer-context-local"
CONTEXT_TABLE = "customer-context-local"
CONFIG_FILE = "config.toml"
STATE_FILE = "stack.json"


def ingest_batch_size() -> int:
    """BatchSize of the ingest function's SQS event source in template.yaml."""
    from customer_context_devtools.local.template import template

    return int(template()["Resources"]["IngestFunction"]["Properties"]["Events"]["Queue"]["Properties"]["BatchSize"])


def load_write_keys(data_dir: Path, environ: dict[str, str] | None = None) -> tuple[dict[str, str], str]:
    """Write keys for the local stack, and where they came from.

    Order: ``CUSTOMER_CONTEXT_WRITE_KEYS``; else the ``[write_keys]`` table of
    ``<data_dir>/config.toml``; else a new random key for source ``local``, saved to that file so
    it stays the same across restarts.
    """
    env = os.environ if environ is None else environ
    if env.get("CUSTOMER_CONTEXT_WRITE_KEYS"):
        return parse_write_keys(env["CUSTOMER_CONTEXT_WRITE_KEYS"]), "CUSTOMER_CONTEXT_WRITE_KEYS"
    path = data_dir / CONFIG_FILE
    if path.is_file():
        from customer_context.errors import ConfigError

        try:
            config = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        keys = config.get("write_keys", {})
        if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
            raise ConfigError(f"{path}: [write_keys] must map each key to a source id string")
        if keys:
            return dict(keys), str(path)
    key = "wk_" + secrets.token_urlsafe(18)
    data_dir.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(f'\n[write_keys]\n"{key}" = "local"\n')
    return {key: "local"}, f"{path} (generated)"


def load_consumers(data_dir: Path) -> dict[str, dict[str, Any]]:
    """Consumer keys of the local stack: ``[consumers."<sha256>"]`` tables of ``<data_dir>/config.toml``."""
    path = data_dir / CONFIG_FILE
    if not path.is_file():
        return {}
    from customer_context.errors import ConfigError

    try:
        config = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    consumers = config.get("consumers", {})
    if not isinstance(consumers, dict):
        raise ConfigError(f"{path}: [consumers] must map key hashes to tables")
    return {h: dict(v) for h, v in consumers.items() if isinstance(v, dict) and not v.get("revoked")}


def save_consumer(data_dir: Path, key_hash: str, item: dict[str, Any] | None) -> None:
    """Append a consumer (or its revocation, ``item=None``) to ``<data_dir>/config.toml``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lines = [f'\n[consumers."{key_hash}"]']
    if item is None:
        lines.append("revoked = true")
    else:
        for name, value in item.items():
            lines.append(f"{name} = {json.dumps(value)}")  # JSON strings and string arrays are valid TOML
    path = data_dir / CONFIG_FILE
    text = path.read_text() if path.is_file() else ""
    if item is None and f'[consumers."{key_hash}"]' in text:
        # TOML forbids a table twice: rewrite the file without the old one
        kept, skipping = [], False
        for line in text.splitlines():
            if line.startswith("["):
                skipping = line.strip() == f'[consumers."{key_hash}"]'
            if not skipping:
                kept.append(line)
        text = "\n".join(kept) + "\n"
    path.write_text(text + "\n".join(lines) + "\n")


@dataclass
class LocalStack:
    """Start with :meth:`start`, stop with :meth:`stop` (or use it as a context manager).

    Args:
        data_dir: Folder for the catalog, warehouse and local config.
        port: HTTP port on 127.0.0.1 (0: any free port).
        write_keys: Write key → source id; default: :func:`load_write_keys`.
        visibility_timeout: Seconds before a failed message is delivered again.
        max_receive_count: Deliveries before a message moves to the dead-letter queue.
        batch_window: Seconds the SQS trigger gathers a batch.
    """

    data_dir: Path
    port: int = 0
    write_keys: dict[str, str] | None = None
    visibility_timeout: int = 30
    max_receive_count: int = 5
    batch_window: float = 0.5
    build_interval: float = 0.0
    environ: dict[str, str] = field(default_factory=dict)
    url: str = ""
    moto_url: str = ""
    key_origin: str = ""
    consumer_key: str | None = None

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        self._moto: Any = None
        self.restored: dict[str, int] = {}
        self._http: Any = None
        self._trigger: Any = None
        self._saved_env: dict[str, str | None] = {}
        self._build_lock = threading.Lock()
        self._stopping: threading.Event | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> LocalStack:
        """Check the context spec, start moto (behind the journal of ``<data_dir>/aws``), create the AWS
        resources, put back what the journal kept, then start the trigger and the HTTP API.

        Raises:
            ConfigError: The spec the functions would load is invalid (nothing is started: every route
                would otherwise answer 500, and SDKs retry those forever).
        """
        from customer_context import wiring
        from customer_context.config import Settings
        from customer_context.spec import load_spec

        from customer_context_devtools.local.http_server import LocalHttpApi
        from customer_context_devtools.local.moto_process import MotoProcess
        from customer_context_devtools.local.sqs_trigger import SqsTrigger

        load_spec(Settings.from_env({**os.environ, **self.environ}).spec_path or None)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.write_keys is None:
            self.write_keys, self.key_origin = load_write_keys(self.data_dir)
        else:
            self.key_origin = "arguments"

        import warnings

        # metrics are disabled locally; Powertools still warns each invocation that none were published
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        # moto in a process of its own (a fresh one: its state starts empty), the journal with it
        self._moto = MotoProcess(self.data_dir / "aws", SPOOL_BUCKET)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.moto_url = f"http://{host}:{port}"

        self._set_env({
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": LOCAL_REGION,
            "AWS_REGION": LOCAL_REGION,
            "AWS_ENDPOINT_URL": self.moto_url,
            "AWS_PROFILE": None,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_SERVICE_NAME": "customer-context",
            "POWERTOOLS_DEV": None,
        })
        wiring.reload_from_environment()
        sqs = wiring.boto_client("sqs")
        s3 = wiring.boto_client("s3")
        dlq_url = sqs.create_queue(QueueName=DLQ_NAME)["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue_url = sqs.create_queue(
            QueueName=QUEUE_NAME,
            Attributes={
                "VisibilityTimeout": str(self.visibility_timeout),
                "RedrivePolicy": (
                    f'{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"{self.max_receive_count}"}}'
                ),
            },
        )["QueueUrl"]
        s3.create_bucket(Bucket=SPOOL_BUCKET)
        self.queue_url, self.dlq_url = queue_url, dlq_url
        self._create_context_table(wiring.boto_client("dynamodb"))
        # what the last run acknowledged and governs privacy (suppressions, regulations, snapshots, queued
        # events, spooled objects) comes back before anything is served
        self.restored = self._moto.restore({QUEUE_NAME: queue_url, DLQ_NAME: dlq_url})
        self.consumer_key = self._seed_consumers()

        self._set_env({
            "CUSTOMER_CONTEXT_QUEUE_URL": queue_url,
            "CUSTOMER_CONTEXT_SPOOL_BUCKET": SPOOL_BUCKET,
            "CUSTOMER_CONTEXT_DATA_DIR": str(self.data_dir),
            "CUSTOMER_CONTEXT_CATALOG_TYPE": "sql",
            "CUSTOMER_CONTEXT_CONTEXT_TABLE": CONTEXT_TABLE,
            "CUSTOMER_CONTEXT_WRITE_KEYS": ",".join(f"{k}={v}" for k, v in self.write_keys.items()),
            "CUSTOMER_CONTEXT_PII_HASH_KEY": os.environ.get("CUSTOMER_CONTEXT_PII_HASH_KEY") or self._pii_key(),
            **self.environ,
        })
        wiring.reload_from_environment()

        from customer_context_devtools.local import lambda_runtime

        # as many messages per invocation as the template's event source mapping delivers: one Iceberg commit
        # per batch, not per ten messages (each commit rewrites the table's metadata)
        self._trigger = SqsTrigger(sqs, queue_url, lambda event: lambda_runtime.invoke("ingest", event, 300),
                                   batch_size=ingest_batch_size(), batch_window=self.batch_window,
                                   region=LOCAL_REGION)
        self._trigger.start()
        self._stopping = threading.Event()
        if self.build_interval > 0:
            threading.Thread(target=self._build_timer, name="build-schedule", daemon=True).start()
        threading.Thread(target=self._compact_timer, name="journal-compaction", daemon=True).start()
        self._http = LocalHttpApi(port=self.port)
        self.url = self._http.url
        # MCP's query tools call this API back: at this address, not whatever Host a client sends
        self._set_env({"CUSTOMER_CONTEXT_API_URL": self.url})
        wiring.reload_from_environment()
        threading.Thread(target=self._http.serve_forever, name="local-http-api", daemon=True).start()
        # where other processes (`customer-context build`, `keys create`) find this stack; it holds the PII
        # key and the write keys, so only its owner may read it (created 0600, never readable in between)
        state = self.data_dir / STATE_FILE
        state.unlink(missing_ok=True)
        with os.fdopen(os.open(state, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            fh.write(json.dumps({
                "url": self.url, "moto_url": self.moto_url, "pid": os.getpid(), "moto_pid": self._moto.pid,
                "environment": {k: os.environ[k] for k in os.environ if k.startswith(("AWS_", "CUSTOMER_CONTEXT_"))},
            }, indent=1))
        return self

    def _create_context_table(self, ddb: Any) -> None:
        """The DynamoDB table exactly as template.yaml declares it (key schema, TTL)."""
        from customer_context_devtools.local.template import resource_properties

        props = resource_properties("ContextTable")
        ddb.create_table(TableName=CONTEXT_TABLE, KeySchema=props["KeySchema"],
                         AttributeDefinitions=props["AttributeDefinitions"], BillingMode=props["BillingMode"])
        ttl = props["TimeToLiveSpecification"]
        ddb.update_time_to_live(TableName=CONTEXT_TABLE, TimeToLiveSpecification={
            "AttributeName": ttl["AttributeName"], "Enabled": ttl["Enabled"]})

    def _pii_key(self) -> str:
        """The PII hash key of this data dir (generated once, kept in ``pii.key``: hashes must not change)."""
        path = self.data_dir / "pii.key"
        if not path.is_file():
            path.write_text(secrets.token_hex(32) + "\n")
            path.chmod(0o600)
        return path.read_text().strip()

    def _seed_consumers(self) -> str | None:
        """Load the consumer keys of config.toml into the table; with none yet, create a local one
        allowed everything, the serving audit included (its key is printed by `serve` and kept in
        ``consumer.key`` under data_dir)."""
        from customer_context.serve.consumers import consumer_item, hash_key, new_key
        from customer_context.stores.context_store import DynamoContextStore

        table = DynamoContextStore(__import__("boto3").session.Session().resource("dynamodb").Table(CONTEXT_TABLE))
        consumers = load_consumers(self.data_dir)
        key_file = self.data_dir / "consumer.key"
        key: str | None = key_file.read_text().strip() if key_file.is_file() else None
        if key is None or hash_key(key) not in consumers:
            key = new_key()
            item = consumer_item("local", ["*"], [], audit=True)  # the owner's key: the explorer shows the audit
            save_consumer(self.data_dir, hash_key(key), item)
            key_file.write_text(key + "\n")
            key_file.chmod(0o600)
            consumers[hash_key(key)] = item
        for digest, item in consumers.items():
            table.put_consumer(digest, item)
        return key

    def _compact_timer(self) -> None:
        from customer_context.observability import logger

        assert self._stopping is not None
        while not self._stopping.wait(60):
            try:
                self._moto.maybe_compact()
            except Exception:
                logger.exception("compacting the local journal failed (it keeps growing; nothing is lost)")

    def _build_timer(self) -> None:
        from customer_context.observability import logger

        assert self._stopping is not None
        while not self._stopping.wait(self.build_interval):
            try:
                self.build()
            except Exception:
                logger.exception("scheduled build failed")

    def build(self) -> dict[str, Any]:
        """Run build_context now, invoked as the EventBridge schedule would."""
        from customer_context_devtools.local import lambda_runtime
        from customer_context_devtools.local.aws_events import scheduled_event

        with self._build_lock:
            return lambda_runtime.invoke("build_context", scheduled_event("customer-context-build"), 900)  # type: ignore[no-any-return]

    def load_records(self, table: str, filename: str, data: bytes) -> dict[str, Any]:
        """Drop a file under imports/<table>/ and deliver the S3 notification to load_records."""
        from customer_context import wiring

        from customer_context_devtools.local import lambda_runtime
        from customer_context_devtools.local.aws_events import s3_object_created

        key = f"imports/{table}/{filename}"
        etag = wiring.boto_client("s3").put_object(Bucket=SPOOL_BUCKET, Key=key, Body=data)["ETag"].strip('"')
        return lambda_runtime.invoke("load_records", s3_object_created(SPOOL_BUCKET, key, len(data), etag), 900)  # type: ignore[no-any-return]

    def stop(self) -> None:
        """Stop everything and restore the environment."""
        (self.data_dir / STATE_FILE).unlink(missing_ok=True)
        if self._stopping is not None:
            self._stopping.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._trigger is not None:
            self._trigger.stop()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        from customer_context import wiring

        wiring.reload_from_environment()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers -------------------------------------------------------------------------------
    def _set_env(self, values: dict[str, str | None]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    @property
    def write_key(self) -> str:
        """The first configured write key."""
        assert self.write_keys
        return next(iter(self.write_keys))

    @property
    def trigger(self) -> Any:
        """The SQS trigger (to wait for ingest)."""
        return self._trigger

    def wait_for_ingest(self, timeout: float = 120.0) -> bool:
        """Block until every queued message has been ingested (or failed to the DLQ)."""
        return bool(self._trigger.wait_idle(timeout=timeout))

    def dlq_depth(self) -> int:
        """Messages in the dead-letter queue."""
        from customer_context import wiring

        attrs = wiring.boto_client("sqs").get_queue_attributes(
            QueueUrl=self.dlq_url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"])
