"""One exception class per failure. Each carries the HTTP status and a stable error code.

Handlers map :class:`CustomerContextError` to a response in one place; the ``code`` and
``message`` fields are what the RudderStack and Segment SDKs read from an error body.
"""

from __future__ import annotations

from typing import Any


class CustomerContextError(Exception):
    """Base class of every error this package raises on purpose."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def to_body(self) -> dict[str, Any]:
        """The JSON error body: ``{"code", "message"[, "errors"]}``."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["errors"] = self.details
        return body


class ConfigError(CustomerContextError):
    """A setting is missing or malformed; the message names the setting."""

    status = 500
    code = "configuration_error"


class InvalidRequest(CustomerContextError):
    """The request as a whole cannot be read (bad JSON, bad encoding, wrong shape)."""

    status = 400
    code = "invalid_request"


class AuthenticationError(CustomerContextError):
    """Missing or unknown credentials."""

    status = 401
    code = "unauthorized"


class PayloadTooLarge(CustomerContextError):
    """A request or event is above a configured size limit."""

    status = 413
    code = "payload_too_large"


class QueueUnavailable(CustomerContextError):
    """Accepted events could not be handed to the queue; the client should retry."""

    status = 503
    code = "service_unavailable"


class StoreUnavailable(CustomerContextError):
    """A store (DynamoDB, S3) kept throttling or failing after every retry; the caller should retry later."""

    status = 503
    code = "service_unavailable"


class PoisonMessage(CustomerContextError):
    """A queue message that can never be processed (not our format); it belongs in the DLQ."""

    status = 500
    code = "poison_message"


class CommitFailed(CustomerContextError):
    """An Iceberg commit still conflicted after every retry."""

    status = 503
    code = "commit_failed"


class Forbidden(CustomerContextError):
    """Authenticated, but the request asks for something outside the caller's scope."""

    status = 403
    code = "forbidden"


class NotFound(CustomerContextError):
    """The customer (or other named thing) is not known."""

    status = 404
    code = "not_found"


class BudgetExceeded(CustomerContextError):
    """A named query would exceed (or did exceed) one of its budgets: time, rows or bytes to scan."""

    status = 422
    code = "budget_exceeded"


class DeletionRaced(CustomerContextError):
    """A deletion job finished while a build was reading the lakehouse: the build starts again."""

    status = 409
    code = "deletion_raced"


class FenceTimeout(CustomerContextError):
    """The landing fence (builds and deletion jobs) stayed taken longer than the caller may wait."""

    status = 503
    code = "fence_timeout"
