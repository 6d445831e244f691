"""maintain: EventBridge schedule → compact small files, expire old snapshots, remove orphan files.

Glue only: the work is ``customer_context.govern.maintain.maintain``.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext
from customer_context import wiring
from customer_context.config import get_settings
from customer_context.govern.maintain import maintain
from customer_context.observability import logger, metrics


@logger.inject_lambda_context
@metrics.log_metrics
@event_source(data_class=EventBridgeEvent)
def lambda_handler(event: EventBridgeEvent, context: LambdaContext) -> dict[str, Any]:
    """Scheduled (or manually invoked) maintenance of every lakehouse table."""
    settings = get_settings()
    report = maintain(wiring.lakehouse(), min_files=settings.compact_min_files,
                      retain_seconds=settings.snapshot_retention_seconds, progress=lambda line: logger.info(line))
    metrics.add_metric(name="PartitionsCompacted", unit=MetricUnit.Count,
                       value=sum(r.get("partitions", 0) for r in report.values()))
    metrics.add_metric(name="OrphanFilesRemoved", unit=MetricUnit.Count,
                       value=sum(r.get("orphans_removed", 0) for r in report.values()))
    return {"tables": report}
