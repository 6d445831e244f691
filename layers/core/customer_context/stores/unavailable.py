"""Throttling and outages of the AWS stores, told apart from bugs and bad requests.

botocore retries throttling and 5xx answers itself (standard mode, backoff with jitter, see
``wiring``). What is still failing after its last attempt is turned into
:class:`~customer_context.errors.StoreUnavailable` (503, ``service_unavailable``): the API answers a
clear "retry later" instead of a 500 with a stack trace, and a batch job fails with a message that
names the store and the error. Nothing here imports botocore (the serving functions' cold start).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from typing import Any, TypeVar

from customer_context.errors import StoreUnavailable

T = TypeVar("T")

THROTTLING_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "Throttling", "ThrottledException",
    "RequestLimitExceeded", "RequestThrottled", "RequestThrottledException", "TooManyRequestsException",
    "SlowDown", "RequestTimeout", "RequestTimeoutException", "InternalError", "InternalServerError",
    "InternalFailure", "ServiceUnavailable", "ServiceUnavailableException",
})
# botocore's connection failures (subclasses of BotoCoreError, without a response)
CONNECTION_ERRORS = frozenset({
    "EndpointConnectionError", "ConnectionClosedError", "ConnectTimeoutError", "ReadTimeoutError",
    "ConnectionError",
})


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the store is throttling or down (worth retrying later), not a bad request."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        code = (response.get("Error") or {}).get("Code")
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
        return code in THROTTLING_CODES or int(status) >= 500
    return type(exc).__name__ in CONNECTION_ERRORS and type(exc).__module__.startswith("botocore")


def unavailable_error(store: str, operation: str, exc: BaseException) -> StoreUnavailable:
    """A :class:`StoreUnavailable` naming the store, the operation, the error code and the attempts."""
    response = getattr(exc, "response", None) or {}
    code = (response.get("Error") or {}).get("Code") or type(exc).__name__
    attempts = (response.get("ResponseMetadata") or {}).get("RetryAttempts")
    tried = f" after {int(attempts) + 1} attempts" if attempts is not None else ""
    return StoreUnavailable(f"{store} is throttling or unavailable ({operation}: {code}{tried}); retry later")


def translated(store: str, operation: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator: a throttled or failing store call raises :class:`StoreUnavailable` (others unchanged)."""

    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            try:
                return fn(*args, **kwargs)
            except StoreUnavailable:
                raise
            except Exception as exc:
                if is_unavailable(exc):
                    raise unavailable_error(store, operation, exc) from exc
                raise

        return wrapper

    return decorate


def translate_public_methods(store: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: :func:`translated` on every public method."""

    def decorate(cls: type[T]) -> type[T]:
        for name, member in list(vars(cls).items()):
            if callable(member) and not name.startswith("_"):
                setattr(cls, name, translated(store, name)(member))
        return cls

    return decorate


def backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with equal jitter: between half and all of ``min(cap, base * 2**attempt)``."""
    ceiling = min(cap, base * 2**attempt)
    return ceiling / 2 + random.uniform(0, ceiling / 2)
