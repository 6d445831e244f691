"""The local stack's journal keeps SQS sends in order without holding them behind a long-polling receive."""

from __future__ import annotations

import threading
from typing import Any


def test_a_send_is_not_held_back_by_a_long_poll_in_flight(local_stack: Any) -> None:
    from customer_context import envelope, wiring

    sqs = wiring.boto_client("sqs")
    # Given a receive long-polling the empty dead-letter queue for 5 s
    polled: list[Any] = []
    poll = threading.Thread(target=lambda: polled.append(sqs.receive_message(
        QueueUrl=local_stack.dlq_url, WaitTimeSeconds=5)))
    poll.start()
    poll.join(0.5)
    assert poll.is_alive()
    # When collect's queue gets a message meanwhile
    sqs.send_message(QueueUrl=local_stack.queue_url, MessageBody=envelope.body_of([], []))
    # Then the send was answered while the poll still waits (not after it)
    still_polling = poll.is_alive()
    poll.join(10)
    assert still_polling
    assert polled
