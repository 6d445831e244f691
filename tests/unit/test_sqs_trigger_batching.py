"""The local SQS trigger batches as the event source mapping does: up to BatchSize messages gathered over the
batching window, not only what one receive returned."""

from __future__ import annotations

from typing import Any

from customer_context_devtools.local.sqs_trigger import SqsTrigger
from customer_context_devtools.local.stack import ingest_batch_size


class _Queue:
    """Answers ReceiveMessage from a script of answers (lists of bodies; an empty one: nothing yet)."""

    def __init__(self, answers: list[list[str]]) -> None:
        self.answers = answers
        self.n = 0

    def get_queue_attributes(self, **_: Any) -> dict[str, Any]:
        return {"Attributes": {"QueueArn": "arn:aws:sqs:us-east-1:123456789012:q"}}

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        bodies = self.answers.pop(0) if self.answers else []
        out = []
        for body in bodies[:kwargs["MaxNumberOfMessages"]]:
            self.n += 1
            out.append({"MessageId": f"m{self.n}", "ReceiptHandle": f"r{self.n}", "Body": body, "MD5OfBody": "x"})
        return {"Messages": out}

    def delete_message_batch(self, **_: Any) -> None:
        pass


def test_messages_arriving_within_the_window_go_to_one_invocation() -> None:
    # Given messages that arrive in three receives with empty ones in between, within the window
    queue = _Queue([["a"] * 10, [], ["b"] * 10, [], [], ["c"] * 5])
    batches: list[int] = []
    trigger = SqsTrigger(queue, "url", lambda event: batches.append(len(event["Records"])), batch_size=1000,
                         batch_window=1.0)
    # When the trigger polls once
    handled = trigger.poll_once()
    # Then one invocation got all of them (until the window or BatchSize ends it)
    assert handled == 25 and batches == [25]


def test_the_batch_stops_at_batch_size() -> None:
    queue = _Queue([["a"] * 10] * 5)
    batches: list[int] = []
    trigger = SqsTrigger(queue, "url", lambda event: batches.append(len(event["Records"])), batch_size=20,
                         batch_window=1.0)
    assert trigger.poll_once() == 20 and batches == [20]


def test_the_local_stack_takes_the_templates_batch_size() -> None:
    assert ingest_batch_size() == 1000
