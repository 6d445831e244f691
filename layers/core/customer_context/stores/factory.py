"""Cached store factories: the one place that picks implementations from settings.

Nothing here runs at import time; each store is built on first use and reused for the life of the
container (or process). ``reset()`` forgets them (tests, and the local stack when settings change).
boto3 honours ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>``, which is how the local stack and
the integration tests point every client at moto's server on loopback.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from customer_context.config import get_settings

if TYPE_CHECKING:
    from customer_context.stores.blobs import S3BlobStore
    from customer_context.stores.iceberg import Lakehouse
    from customer_context.stores.keys import ConfiguredWriteKeys
    from customer_context.stores.queue import SqsEventQueue


@cache
def boto_client(service: str) -> Any:
    """A boto3 client with standard-mode retries (backoff with jitter on throttling and 5xx)."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=3, read_timeout=10)
    return boto3.session.Session().client(service, config=config)


def explain_aws_problem(exc: Exception) -> str:
    """What a command-line user must set when boto3 cannot reach AWS (no region, no credentials), in one line."""
    from botocore.exceptions import NoCredentialsError, NoRegionError, PartialCredentialsError, ProfileNotFound

    if isinstance(exc, NoRegionError):
        return ("no AWS region: set AWS_DEFAULT_REGION (e.g. export AWS_DEFAULT_REGION=eu-west-1) or `region` in "
                "your AWS profile (aws configure)")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ("no AWS credentials: set AWS_PROFILE (aws configure / aws sso login) or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, ProfileNotFound):
        return f"{exc}: check AWS_PROFILE against ~/.aws/config"
    return f"cannot reach AWS: {exc}"


@lru_cache(maxsize=1)
def event_queue() -> SqsEventQueue:
    """The SQS queue collect writes to."""
    from customer_context.errors import ConfigError
    from customer_context.stores.queue import SqsEventQueue

    settings = get_settings()
    if not settings.queue_url:
        raise ConfigError("CUSTOMER_CONTEXT_QUEUE_URL is not set: collect has nowhere to send events")
    return SqsEventQueue(boto_client("sqs"), settings.queue_url, settings.queue_max_message_bytes)


@lru_cache(maxsize=1)
def spool() -> S3BlobStore | None:
    """The spool bucket for oversized events, or ``None`` when not configured."""
    from customer_context.stores.blobs import S3BlobStore

    settings = get_settings()
    return S3BlobStore(boto_client("s3"), settings.spool_bucket) if settings.spool_bucket else None


@lru_cache(maxsize=1)
def write_keys() -> ConfiguredWriteKeys:
    """The configured write keys."""
    from customer_context.stores.keys import ConfiguredWriteKeys

    return ConfiguredWriteKeys(get_settings())


@lru_cache(maxsize=1)
def lakehouse() -> Lakehouse:
    """The Iceberg lakehouse (imports pyiceberg: analytics functions only)."""
    from customer_context.stores.iceberg import Lakehouse

    return Lakehouse.from_settings(get_settings())


@lru_cache(maxsize=1)
def context_store() -> Any:
    """The DynamoDB context table (snapshots, aliases)."""
    import boto3

    from customer_context.errors import ConfigError
    from customer_context.stores.context_store import DynamoContextStore

    settings = get_settings()
    if not settings.context_table:
        raise ConfigError("CUSTOMER_CONTEXT_CONTEXT_TABLE is not set: nowhere to land snapshots")
    from botocore.config import Config

    resource = boto3.session.Session().resource(
        "dynamodb", config=Config(retries={"mode": "standard", "max_attempts": 8}))
    return DynamoContextStore(resource.Table(settings.context_table))


@lru_cache(maxsize=1)
def consumers() -> Any:
    """Checks consumer keys (cached per container)."""
    from customer_context.serve.consumers import ConsumerAuthenticator

    settings = get_settings()
    known = write_keys() if settings.write_keys or settings.write_keys_parameter else None
    return ConsumerAuthenticator(context_store(), known)


@lru_cache(maxsize=1)
def context_service() -> Any:
    """The fetch service over the context table and the spec."""
    from customer_context.serve.fetch import ContextService, ServeOptions
    from customer_context.spec import load_spec

    settings = get_settings()
    return ContextService(context_store(), load_spec(), ServeOptions(
        stale_after_seconds=settings.stale_after_seconds, cache_max_age=settings.cache_max_age_seconds,
        default_max_tokens=settings.default_max_tokens), pii=pii_policy(), audit=audit_log())


@lru_cache(maxsize=1)
def audit_log() -> Any:
    """The serving audit buffer (sent to the events queue; in memory only without one)."""
    from customer_context.serve.audit import AuditLog

    return AuditLog(event_queue() if get_settings().queue_url else None, pii=pii_policy())


@lru_cache(maxsize=1)
def recent_tail() -> Any:
    """The live tail collect writes, or ``None`` without a context table."""
    from customer_context.serve.recent import RecentTail
    from customer_context.spec import load_spec

    settings = get_settings()
    if not settings.context_table or settings.recent_events_ttl_seconds == 0:
        return None
    return RecentTail(context_store(), load_spec(), settings.recent_events_ttl_seconds)


@lru_cache(maxsize=1)
def tracking_plans() -> Any:
    """The spec's tracking plans, compiled once per container."""
    from customer_context.collect.plans import TrackingPlans
    from customer_context.spec import load_spec

    return TrackingPlans(load_spec())


@lru_cache(maxsize=1)
def pii_key() -> str:
    """The PII hash key: the ``pii_hash_key`` setting, else the Secrets Manager secret it names (one read per
    container), else empty (no key: hash rules, suppressions and keyed audit tokens refuse to run)."""
    settings = get_settings()
    if settings.pii_hash_key or not settings.pii_hash_key_secret:
        return settings.pii_hash_key
    secret = boto_client("secretsmanager").get_secret_value(SecretId=settings.pii_hash_key_secret)
    return str(secret["SecretString"]).strip()


@lru_cache(maxsize=1)
def pii_policy() -> Any:
    """The spec's PII policy with the configured hash key."""
    from customer_context.collect.pii import PiiPolicy
    from customer_context.spec import load_spec

    return PiiPolicy(load_spec(), pii_key())


@lru_cache(maxsize=1)
def suppressions() -> Any:
    """Suppressed identifiers, checked by collect (``None`` without a context table)."""
    from customer_context.govern.suppression import Suppressions
    from customer_context.spec import load_spec

    settings = get_settings()
    return Suppressions(context_store(), load_spec(), pii_key()) if settings.context_table else None


def start_regulation_job(regulation_id: str) -> str:
    """Start a deletion job asynchronously: a Lambda ``Event`` invocation on AWS, a thread locally.

    Returns:
        Where it runs (``lambda:<name>`` or ``thread``).
    """
    name = get_settings().regulate_function_name
    if name:
        import json

        boto_client("lambda").invoke(FunctionName=name, InvocationType="Event",
                                     Payload=json.dumps({"regulation_id": regulation_id}).encode())
        return f"lambda:{name}"
    import threading

    from customer_context.govern.regulations import run_job
    from customer_context.spec import load_spec

    threading.Thread(target=run_job, args=(lakehouse(), context_store(), load_spec(), regulation_id),
                     kwargs=regulation_job_options(), name=f"regulation-{regulation_id}", daemon=True).start()
    return "thread"


def regulation_job_options() -> dict[str, Any]:
    """What a deletion job needs besides the lakehouse and the store: the PII policy (tokens), and the
    bucket holding the spool and the record drops."""
    settings = get_settings()
    return {"pii": pii_policy(), "blobs": spool(), "spool_prefix": settings.spool_prefix}


@lru_cache(maxsize=8)
def blobs(bucket: str) -> Any:
    """Objects of one S3 bucket."""
    from customer_context.stores.blobs import S3BlobStore

    return S3BlobStore(boto_client("s3"), bucket)


def reset() -> None:
    """Forget every cached store and the cached settings (the serving audit's background thread is stopped:
    it would otherwise keep retrying a queue that the new settings may no longer name)."""
    from customer_context.spec import load_spec

    if audit_log.cache_info().currsize:
        audit_log().close()

    for cached in (boto_client, event_queue, spool, write_keys, lakehouse, context_store, blobs, get_settings, pii_key,
                   load_spec, consumers, context_service, recent_tail, tracking_plans, pii_policy, audit_log,
                   suppressions):
        cached.cache_clear()
