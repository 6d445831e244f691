"""load_records: S3 ObjectCreated under imports/<table>/ → validate → upsert into the record table.

Bad data never fails the invocation: bad rows and files that cannot be read at all are kept in
``rejected_records`` with a one-line reason, and never block the good rows. Only storage failures
raise (S3 retries the invocation, then sends it to the failure queue).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import S3Event, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext
from customer_context import wiring
from customer_context.assemble.records import load_file
from customer_context.observability import logger, metrics, tracer
from customer_context.spec import load_spec


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_source(data_class=S3Event)
def lambda_handler(event: S3Event, context: LambdaContext) -> dict[str, Any]:
    """One invocation per S3 notification (usually one object)."""
    reports = []
    for record in event.records:
        # S3 notifications carry the key URL-encoded (spaces as +)
        bucket, key = record.s3.bucket.name, unquote_plus(record.s3.get_object.key)
        data = wiring.blobs(bucket).get(key)
        report = load_file(wiring.lakehouse(), load_spec(), key, data, pii=wiring.pii_policy())
        metrics.add_metric(name="RecordsLoaded", unit=MetricUnit.Count, value=report.loaded)
        metrics.add_metric(name="RecordsRejected", unit=MetricUnit.Count, value=report.rejected)
        if report.refused:
            metrics.add_metric(name="RecordFilesRefused", unit=MetricUnit.Count, value=1)
            logger.warning("record file refused", extra=report.to_dict())
        else:
            logger.info("records loaded", extra=report.to_dict())
        reports.append(report.to_dict())
    return {"files": reports}
