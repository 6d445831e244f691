"""Run the real handlers in-process, the way the Lambda runtime would.

Each function's ``functions/<name>/app.py`` is imported once under a private module name and its
``lambda_handler`` called with the event and a context object carrying the attributes Powertools
reads (function name, request id, remaining time …). Like one warm Lambda container, a function
handles one event at a time: its resolver keeps the current request in module globals, so two
threads of the local HTTP server inside one handler would read each other's request.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from customer_context.errors import ConfigError


def functions_dir() -> Path:
    """The ``functions/`` folder of the source tree (or ``CUSTOMER_CONTEXT_FUNCTIONS_DIR``)."""
    configured = os.environ.get("CUSTOMER_CONTEXT_FUNCTIONS_DIR")
    path = Path(configured) if configured else Path(__file__).resolve().parents[3] / "functions"
    if not path.is_dir():
        raise ConfigError(f"functions folder not found at {path}: set CUSTOMER_CONTEXT_FUNCTIONS_DIR")
    return path


@dataclass
class LocalLambdaContext:
    """The attributes of ``aws_lambda_powertools.utilities.typing.LambdaContext``."""

    function_name: str
    timeout_s: float = 30.0
    memory_limit_in_mb: int = 1024
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _deadline: float = 0.0

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_s
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = f"local/{self.aws_request_id}"

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the configured timeout."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


_load_lock = threading.Lock()


@cache
def load_module(name: str) -> ModuleType:
    """Import ``functions/<name>/app.py`` (once) and return the module."""
    with _load_lock:
        path = functions_dir() / name / "app.py"
        if not path.is_file():
            raise ConfigError(f"no handler for function {name!r} at {path}")
        spec = importlib.util.spec_from_file_location(f"customer_context_fn_{name}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


def load_handler(name: str) -> Callable[[dict[str, Any], Any], Any]:
    """The ``lambda_handler`` of ``functions/<name>/app.py``."""
    return load_module(name).lambda_handler  # type: ignore[no-any-return]


def invoke(name: str, event: dict[str, Any], timeout_s: float = 30.0) -> Any:
    """Call a function's handler with ``event`` and a fresh context.

    Metrics left over are cleared afterwards, as a finished Lambda invocation would: with
    ``POWERTOOLS_METRICS_DISABLED`` Powertools skips the flush that clears them, and once 100 values
    pile up it prints them anyway.
    """
    from customer_context.observability import metrics

    handler = load_handler(name)
    with _invocation_lock(name):
        try:
            return handler(event, LocalLambdaContext(function_name=name, timeout_s=timeout_s))
        finally:
            metrics.clear_metrics()


_invocation_locks: dict[str, threading.Lock] = {}
_invocation_locks_guard = threading.Lock()  # not _load_lock: an import of one function must not stall the others


def _invocation_lock(name: str) -> threading.Lock:
    """One lock per function: its invocations run one after another (different functions overlap)."""
    with _invocation_locks_guard:
        return _invocation_locks.setdefault(name, threading.Lock())
