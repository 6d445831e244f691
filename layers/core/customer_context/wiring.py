"""The composition root: every service the handlers, the CLI and the local stack use, built from one
:class:`~customer_context.config.Settings` value.

This module sits above the domain packages (collect, assemble, serve, govern) and the storage classes
(``stores``): it is the one place that picks implementations and passes each service what it needs. Nothing
here runs at import time; each service is built on first use and reused for the life of the container (or
process).

The settings are those given to :func:`configure`, else read once from the environment (a Lambda function's
configuration). To reconfigure a process (the CLI pointing at another table, a benchmark, a test) call
:func:`configure` with a ``Settings`` value; :func:`reload_from_environment` is for the callers that
configure through the environment on purpose (the local stack, which gives each emulated function the
environment the template gives it, and tests that set environment variables).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from customer_context.config import Settings, get_settings, use_settings
from customer_context.stores.aws import boto_client

if TYPE_CHECKING:
    from customer_context.collect.plans import TrackingPlans
    from customer_context.govern.suppression import Suppressions
    from customer_context.pii import PiiPolicy
    from customer_context.ports import ContextStore
    from customer_context.serve.audit import AuditLog
    from customer_context.serve.consumers import ConsumerAuthenticator
    from customer_context.serve.fetch import ContextService
    from customer_context.serve.recent import RecentTail
    from customer_context.stores.blobs import S3BlobStore
    from customer_context.stores.iceberg import Lakehouse
    from customer_context.stores.keys import ConfiguredWriteKeys
    from customer_context.stores.queue import SqsEventQueue


def settings() -> Settings:
    """The settings every service here is built from."""
    return get_settings()


@lru_cache(maxsize=1)
def event_queue() -> SqsEventQueue:
    """The SQS queue collect writes to."""
    from customer_context.errors import ConfigError
    from customer_context.stores.queue import SqsEventQueue

    current = settings()
    if not current.queue_url:
        raise ConfigError("CUSTOMER_CONTEXT_QUEUE_URL is not set: collect has nowhere to send events")
    return SqsEventQueue(boto_client("sqs"), current.queue_url, current.queue_max_message_bytes)


@lru_cache(maxsize=1)
def spool() -> S3BlobStore | None:
    """The spool bucket for oversized events, or ``None`` when not configured."""
    from customer_context.stores.blobs import S3BlobStore

    current = settings()
    return S3BlobStore(boto_client("s3"), current.spool_bucket) if current.spool_bucket else None


@lru_cache(maxsize=1)
def write_keys() -> ConfiguredWriteKeys:
    """The configured write keys."""
    from customer_context.stores.keys import ConfiguredWriteKeys

    return ConfiguredWriteKeys(settings())


@lru_cache(maxsize=1)
def lakehouse() -> Lakehouse:
    """The Iceberg lakehouse (imports pyiceberg: analytics functions only)."""
    from customer_context.stores.iceberg import Lakehouse

    return Lakehouse.from_settings(settings())


@lru_cache(maxsize=1)
def context_store() -> ContextStore:
    """The DynamoDB context table (snapshots, aliases, live tail, consumers, suppressions, regulations)."""
    from customer_context.errors import ConfigError
    from customer_context.stores.aws import dynamodb_table
    from customer_context.stores.context_store import DynamoContextStore

    current = settings()
    if not current.context_table:
        raise ConfigError("CUSTOMER_CONTEXT_CONTEXT_TABLE is not set: nowhere to land snapshots")
    return DynamoContextStore(dynamodb_table(current.context_table))


@lru_cache(maxsize=1)
def consumers() -> ConsumerAuthenticator:
    """Checks consumer keys (cached per container)."""
    from customer_context.serve.consumers import ConsumerAuthenticator

    current = settings()
    known = write_keys() if current.write_keys or current.write_keys_parameter else None
    return ConsumerAuthenticator(context_store(), known)


@lru_cache(maxsize=1)
def context_service() -> ContextService:
    """The fetch service over the context table and the spec."""
    from customer_context.serve.fetch import ContextService, ServeOptions
    from customer_context.spec import load_spec

    current = settings()
    return ContextService(context_store(), load_spec(), ServeOptions(
        stale_after_seconds=current.stale_after_seconds, cache_max_age=current.cache_max_age_seconds,
        default_max_tokens=current.default_max_tokens), pii=pii_policy(), audit=audit_log())


@lru_cache(maxsize=1)
def audit_log() -> AuditLog:
    """The serving audit buffer (sent to the events queue; in memory only without one)."""
    from customer_context.serve.audit import AuditLog

    return AuditLog(event_queue() if settings().queue_url else None, pii=pii_policy())


@lru_cache(maxsize=1)
def recent_tail() -> RecentTail | None:
    """The live tail collect writes, or ``None`` without a context table."""
    from customer_context.serve.recent import RecentTail
    from customer_context.spec import load_spec

    current = settings()
    if not current.context_table or current.recent_events_ttl_seconds == 0:
        return None
    return RecentTail(context_store(), load_spec(), current.recent_events_ttl_seconds)


@lru_cache(maxsize=1)
def tracking_plans() -> TrackingPlans:
    """The spec's tracking plans, compiled once per container."""
    from customer_context.collect.plans import TrackingPlans
    from customer_context.spec import load_spec

    return TrackingPlans(load_spec())


@lru_cache(maxsize=1)
def pii_key() -> str:
    """The PII hash key: the ``pii_hash_key`` setting, else the Secrets Manager secret it names (one read per
    container), else empty (no key: hash rules, suppressions and keyed audit tokens refuse to run)."""
    current = settings()
    if current.pii_hash_key or not current.pii_hash_key_secret:
        return current.pii_hash_key
    secret = boto_client("secretsmanager").get_secret_value(SecretId=current.pii_hash_key_secret)
    return str(secret["SecretString"]).strip()


@lru_cache(maxsize=1)
def pii_policy() -> PiiPolicy:
    """The spec's PII policy with the configured hash key."""
    from customer_context.pii import PiiPolicy
    from customer_context.spec import load_spec

    return PiiPolicy(load_spec(), pii_key())


@lru_cache(maxsize=1)
def suppressions() -> Suppressions | None:
    """Suppressed identifiers, checked by collect (``None`` without a context table)."""
    from customer_context.govern.suppression import Suppressions
    from customer_context.spec import load_spec

    return Suppressions(context_store(), load_spec(), pii_key()) if settings().context_table else None


def start_regulation_job(regulation_id: str) -> str:
    """Start a deletion job asynchronously: a Lambda ``Event`` invocation on AWS, a thread locally.

    Returns:
        Where it runs (``lambda:<name>`` or ``thread``).
    """
    name = settings().regulate_function_name
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
    return {"pii": pii_policy(), "blobs": spool(), "spool_prefix": settings().spool_prefix}


@lru_cache(maxsize=8)
def blobs(bucket: str) -> S3BlobStore:
    """Objects of one S3 bucket."""
    from customer_context.stores.blobs import S3BlobStore

    return S3BlobStore(boto_client("s3"), bucket)


def configure(chosen: Settings | None) -> None:
    """Build every service from now on from ``chosen`` (``None``: from the environment, read again on first
    use). Every cached service, client and spec is forgotten; the serving audit's background thread is
    stopped (it would otherwise keep retrying a queue that the new settings may no longer name)."""
    from customer_context.spec import load_spec

    if audit_log.cache_info().currsize:
        audit_log().close()

    for cached in (boto_client, event_queue, spool, write_keys, lakehouse, context_store, blobs, pii_key,
                   load_spec, consumers, context_service, recent_tail, tracking_plans, pii_policy, audit_log,
                   suppressions):
        cached.cache_clear()
    use_settings(chosen)


def reload_from_environment() -> None:
    """Forget every service and read the settings from the environment again: for the callers that configure
    through environment variables on purpose (the local stack gives each emulated function the environment
    the template gives it; tests set variables). Everything else passes a ``Settings`` to :func:`configure`."""
    configure(None)
