"""A poison SQS message is reported as a batch item failure, ends in the DLQ after the configured
receives, and does not hold back the good messages of its batch."""

from __future__ import annotations

import time
from typing import Any

import pytest
from customer_context import envelope, wiring

from tests.helpers.accounting import assert_accounted


@pytest.mark.slow
def test_poison_message_goes_to_the_dlq_and_the_rest_lands(local_stack: Any) -> None:
    sqs = wiring.boto_client("sqs")
    good = [envelope.dumps({"type": "track", "event": "x", "userId": "u1", "messageId": f"ok-{i}",
                            "receivedAt": "2026-11-24T12:00:00Z", "sourceId": "test"}) for i in range(3)]
    # Given a poison message and a good one in the same queue (likely the same batch)
    sqs.send_message_batch(QueueUrl=local_stack.queue_url, Entries=[
        {"Id": "poison", "MessageBody": "{not an envelope"},
        {"Id": "good", "MessageBody": envelope.body_of(good, [])},
    ])
    # When the trigger keeps delivering it (max receive count 3, visibility timeout 2 s)
    deadline = time.monotonic() + 60
    while local_stack.dlq_depth() == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    # Then it is in the DLQ, the queue is drained, and the good events landed once
    assert local_stack.dlq_depth() == 1
    assert local_stack.wait_for_ingest(30)
    assert_accounted(wiring.lakehouse(), [f"ok-{i}" for i in range(3)], rejected_count=0)
    body = sqs.receive_message(QueueUrl=local_stack.dlq_url)["Messages"][0]["Body"]
    assert body == "{not an envelope"
