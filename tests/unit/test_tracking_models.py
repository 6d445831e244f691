"""Per-event validation against the Segment spec: the field and the reason, for every rule."""

from __future__ import annotations

import pytest
from customer_context.models.tracking import validate_event


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"type": "track", "userId": "u1"}, "event: Field required"),
        ({"type": "track", "event": "", "userId": "u1"}, "event: String should have at least 1 character"),
        ({"type": "track", "event": "x"}, "userId or anonymousId: at least one is required"),
        ({"type": "alias", "userId": "u1"}, "previousId: Field required"),
        ({"type": "alias", "previousId": "a1"}, "userId: Field required"),
        ({"type": "group", "userId": "u1"}, "groupId: Field required"),
        ({"type": "identify", "userId": "u1", "timestamp": "yesterday"},
         "timestamp: expected an ISO-8601 date-time, got 'yesterday'"),
        ({"type": "track", "event": "x", "userId": "u1", "properties": [1]},
         "properties: Input should be a valid dictionary"),
        ({"type": "page", "anonymousId": {"a": 1}}, "anonymousId: Input should be a valid string"),
        ({"type": "page", "anonymousId": "x" * 1025},
         "anonymousId: identifier of 1,025 bytes (UTF-8); the limit is 1,024 bytes"),
        # 1,024 characters, but 3,072 bytes: a key DynamoDB refuses once prefixed (2,048 bytes at most)
        ({"type": "identify", "userId": "€" * 1024},
         "userId: identifier of 3,072 bytes (UTF-8); the limit is 1,024 bytes"),
        ({"type": "bogus", "userId": "u1"}, "type: expected one of track, identify, page, screen, group, alias"),
        ([1, 2], "event: expected a JSON object, got list"),
    ],
)
def test_invalid_events_name_field_and_reason(event: object, reason: str) -> None:
    # Given an event breaking one rule / When validated / Then the reason names the field and why
    got = validate_event(event)
    assert got is not None and got.startswith(reason), got


@pytest.mark.parametrize(
    "event",
    [
        {"type": "track", "event": "Order Completed", "userId": "u1", "properties": {"revenue": 1}},
        {"type": "identify", "anonymousId": "a1", "traits": {"email": "x@y.z"}},
        {"type": "page", "anonymousId": "a1", "name": "Home", "timestamp": "2026-01-01T00:00:00+02:00"},
        {"type": "screen", "userId": 42, "name": "Cart"},
        {"type": "group", "userId": "u1", "groupId": 7, "traits": {}},
        {"type": "alias", "previousId": "a1", "userId": "u1"},
        {"type": "track", "event": "x", "userId": "u1", "someVendorField": {"kept": True}},
    ],
)
def test_valid_events_pass(event: dict) -> None:
    # Given a valid event of each type (numbers as ids are allowed, as Segment does) / Then no reason
    assert validate_event(event) is None


def test_endpoint_type_wins_over_body_type() -> None:
    # Given a body claiming to be an identify, posted to /v1/track without an event name
    event = {"type": "identify", "userId": "u1"}
    # When validated as a track call / Then it is a track and needs `event`
    assert validate_event(event, "track") == "event: Field required"
    assert event["type"] == "track"
