"""ingest: SQS batch → one Iceberg append per table (API-free, runs in the analytics image).

Powertools' BatchProcessor reports undecodable messages as batch item failures
(``ReportBatchItemFailures``), so a poison message goes back to the queue and, after the redrive
policy's receive count, to the dead-letter queue, without blocking the rest of its batch. If the
append itself fails, the invocation fails and SQS redelivers the whole batch (duplicates are
removed by message_id on read).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from customer_context import wiring
from customer_context.collect.ingest import IngestBatch, collector_paused
from customer_context.observability import logger, metrics, tracer

processor = BatchProcessor(event_type=EventType.SQS)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """SQS event source entry point."""
    batch = IngestBatch(spool=wiring.spool(), suppressions=wiring.suppressions())

    def record_handler(record: SQSRecord) -> None:
        batch.add(record.body)

    with collector_paused():
        response = process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                            context=context)
        batch.commit(wiring.lakehouse())
    return response
