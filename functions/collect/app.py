"""collect: the RudderStack / Segment compatible tracking API (API Gateway HTTP API → Lambda).

Glue only: parse the API Gateway event, call ``customer_context.collect.service.collect`` (or, for the SDK
settings routes, ``customer_context.collect.sdk_settings``), respond.
Imports neither pyarrow, duckdb nor pyiceberg (cold start).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn, HTTPBase
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from customer_context import wiring
from customer_context.api import json_response, raw_body, register_error_handlers
from customer_context.collect.openapi import (
    BEACON_PATH,
    ENDPOINTS,
    SEGMENT_SETTINGS_PATH,
    SOURCE_CONFIG_PATH,
    route_docs,
    settings_docs,
)
from customer_context.collect.sdk_settings import rudderstack_source_config, segment_settings, source_of
from customer_context.collect.service import Limits, TrackingRequest, collect, write_key_from_header
from customer_context.config import get_settings
from customer_context.observability import logger, metrics, tracer

app = APIGatewayHttpResolver(enable_validation=True)
app.configure_openapi(
    title="customer-context collect API",
    version="1",
    summary="RudderStack / Segment compatible tracking API",
    security_schemes={
        "writeKey": HTTPBase(scheme="basic", description="Write key as user name, empty password"),
        "writeKeyQuery": APIKey(name="writeKey", in_=APIKeyIn.query,
                                description="Write key as a query parameter (the beacon and sourceConfig routes)"),
    },
)
app.enable_swagger(path="/docs/collect")
register_error_handlers(app)


def _headers() -> dict[str, str]:
    return {k.lower(): v for k, v in (app.current_event.headers or {}).items()}


def _collect(path: str):  # type: ignore[no-untyped-def]
    event = app.current_event
    settings = get_settings()
    request = TrackingRequest(
        endpoint=ENDPOINTS[path],
        body=raw_body(event.raw_event),
        headers=_headers(),
        source_ip=event.request_context.http.source_ip,
        request_id=event.request_context.request_id,
        query_write_key=event.get_query_string_value("writeKey") if path == BEACON_PATH else None,
    )
    result = collect(
        request,
        write_keys=wiring.write_keys(),
        queue=wiring.event_queue(),
        spool=wiring.spool(),
        limits=Limits(settings.max_request_bytes, settings.max_event_bytes, settings.queue_max_message_bytes),
        spool_prefix=settings.spool_prefix,
        recent=wiring.recent_tail(),
        plans=wiring.tracking_plans(),
        pii=wiring.pii_policy(),
        suppressions=wiring.suppressions(),
    )
    metrics.add_metric(name="EventsAccepted", unit=MetricUnit.Count, value=result.accepted)
    metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=len(result.rejections))
    if result.suppressed:
        metrics.add_metric(name="EventsSuppressed", unit=MetricUnit.Count, value=result.suppressed)
    if result.plan_violations:
        metrics.add_metric(name="TrackingPlanViolations", unit=MetricUnit.Count, value=result.plan_violations)
    logger.info("collected", extra={"source_id": result.source_id, "accepted": result.accepted,
                                    "rejected": len(result.rejections), "messages": result.messages})
    return json_response(200, result.to_body())


def _register(path: str) -> None:
    def route():  # type: ignore[no-untyped-def]
        return _collect(path)

    route.__name__ = "post_" + path.strip("/").replace("/", "_")
    app.post(path, **route_docs(path))(route)


for _path in ENDPOINTS:
    _register(_path)


@app.get(SOURCE_CONFIG_PATH, **settings_docs(SOURCE_CONFIG_PATH))
def get_source_config():  # type: ignore[no-untyped-def]
    """RudderStack's ``configUrl``: the write key's source, with no destinations."""
    key = write_key_from_header(_headers().get("authorization")) or app.current_event.get_query_string_value(
        "writeKey")
    return json_response(200, rudderstack_source_config(key or "", source_of(wiring.write_keys(), key)))


@app.get(SEGMENT_SETTINGS_PATH.replace("{writeKey}", "<writeKey>"), **settings_docs(SEGMENT_SETTINGS_PATH))
def get_segment_settings(writeKey: str):  # type: ignore[no-untyped-def]  # noqa: N803 - the path's name
    """Segment's ``cdnURL``: send to this API (the host and path prefix this request came to)."""
    source_of(wiring.write_keys(), writeKey)
    event = app.current_event
    prefix = event.raw_event.get("rawPath", "").rsplit("/v1/projects/", 1)[0]
    protocol = _headers().get("x-forwarded-proto", "https")
    return json_response(200, segment_settings(writeKey, f"{event.request_context.domain_name}{prefix}/v1",
                                               "http" if protocol == "http" else "https"))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """API Gateway HTTP API (payload 2.0) entry point."""
    return app.resolve(event, context)
