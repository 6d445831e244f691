"""collect: the RudderStack / Segment compatible tracking API (API Gateway HTTP API → Lambda).

Glue only: parse the API Gateway event, call ``customer_context.collect.service.collect``, respond.
Imports neither pyarrow, duckdb nor pyiceberg (cold start).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler.openapi.models import HTTPBase
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from customer_context.api import json_response, raw_body, register_error_handlers
from customer_context.collect.openapi import ENDPOINTS, route_docs
from customer_context.collect.service import Limits, TrackingRequest, collect
from customer_context.config import get_settings
from customer_context.observability import logger, metrics, tracer
from customer_context.stores import factory

app = APIGatewayHttpResolver(enable_validation=True)
app.configure_openapi(
    title="customer-context collect API",
    version="1",
    summary="RudderStack / Segment compatible tracking API",
    security_schemes={"writeKey": HTTPBase(scheme="basic", description="Write key as user name, empty password")},
)
app.enable_swagger(path="/docs/collect")
register_error_handlers(app)


def _collect(endpoint: str):  # type: ignore[no-untyped-def]
    event = app.current_event
    settings = get_settings()
    request = TrackingRequest(
        endpoint=endpoint,
        body=raw_body(event.raw_event),
        headers={k.lower(): v for k, v in (event.headers or {}).items()},
        source_ip=event.request_context.http.source_ip,
        request_id=event.request_context.request_id,
    )
    result = collect(
        request,
        write_keys=factory.write_keys(),
        queue=factory.event_queue(),
        spool=factory.spool(),
        limits=Limits(settings.max_request_bytes, settings.max_event_bytes, settings.queue_max_message_bytes),
        spool_prefix=settings.spool_prefix,
        recent=factory.recent_tail(),
        plans=factory.tracking_plans(),
        pii=factory.pii_policy(),
        suppressions=factory.suppressions(),
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


def _register(endpoint: str) -> None:
    def route():  # type: ignore[no-untyped-def]
        return _collect(endpoint)

    route.__name__ = f"post_{endpoint}"
    app.post(f"/v1/{endpoint}", **route_docs(endpoint))(route)


for _endpoint in ENDPOINTS:
    _register(_endpoint)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """API Gateway HTTP API (payload 2.0) entry point."""
    return app.resolve(event, context)
