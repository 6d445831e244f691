"""build_context: EventBridge schedule → assemble every customer's context and land it in DynamoDB.

Glue only: the build itself is ``customer_context.assemble.build.build_context``.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext
from customer_context import wiring
from customer_context.assemble.build import build_context
from customer_context.config import get_settings
from customer_context.observability import logger, metrics, tracer
from customer_context.spec import load_spec


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_source(data_class=EventBridgeEvent)
def lambda_handler(event: EventBridgeEvent, context: LambdaContext) -> dict[str, Any]:
    """Scheduled (or manually invoked) build."""
    logger.info("build triggered", extra={"source": event.source, "detail_type": event.detail_type, "time": event.time})
    report = build_context(wiring.lakehouse(), wiring.context_store(), load_spec(),
                           progress=lambda line: logger.info(line),
                           memory_limit=get_settings().build_memory_limit or None,
                           pii_key=wiring.pii_key())
    metrics.add_metric(name="ProfilesBuilt", unit=MetricUnit.Count, value=report.profiles)
    metrics.add_metric(name="SnapshotsChanged", unit=MetricUnit.Count, value=report.changed_profiles)
    metrics.add_metric(name="ItemsWritten", unit=MetricUnit.Count, value=report.items_written)
    logger.info("build finished", extra=report.to_dict())
    return report.to_dict()
