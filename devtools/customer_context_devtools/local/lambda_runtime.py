"""Run the real handlers in-process, the way the Lambda runtime would.

Each function's ``functions/<name>/app.py`` is imported once under a private module name and its
``lambda_handler`` called with the event and a context object carrying the attributes Powertools
reads (function name, request id, remaining time …). Like a warm Lambda container, one import of a
function handles one event at a time: its resolver keeps the current request in module globals, so
two threads of the local HTTP server inside one import would read each other's request. As Lambda
starts more instances of a function under concurrent requests, a function may have up to
``CONCURRENCY[name]`` "containers" — imports of its ``app.py`` under distinct module names — each
serving one invocation at a time (they share the process: its clients, caches and Powertools'
logger, whose keys may then show another invocation's request id). Powertools' resolvers keep the
current event and context on a class all of them share (``BaseRouter``): :func:`per_thread_requests`
makes those per thread, or one container would read another's request.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from customer_context.errors import ConfigError

# Containers per function (Lambda's concurrent instances); a function not named here has one. collect
# answers the SDKs: its requests arrive concurrently and each spends most of its time waiting on the queue
# and the table.
CONCURRENCY: dict[str, int] = {"collect": 4}


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


def per_thread_requests() -> None:
    """Keep ``BaseRouter.current_event`` and ``lambda_context`` per thread (once per process).

    Powertools sets them on the class, for every resolver of the process; read back through the class or a
    resolver, each thread now sees the request it is handling. Only the local runtime does this: a Lambda
    instance handles one request at a time.
    """
    from aws_lambda_powertools.event_handler.api_gateway import BaseRouter

    if getattr(BaseRouter, "_local_per_thread", False):
        return
    local = threading.local()

    def per_thread(name: str) -> property:
        def get(_: Any) -> Any:
            try:
                return getattr(local, name)
            except AttributeError:
                raise AttributeError(name) from None

        def put(_: Any, value: Any) -> None:
            setattr(local, name, value)

        return property(get, put)

    names = ("current_event", "lambda_context")
    for name in names:  # read through a resolver (an instance)
        setattr(BaseRouter, name, per_thread(name))
    # written and read through the class itself: a property of its metaclass
    metaclass = type("PerThreadRouterMeta", (type(BaseRouter),), {n: per_thread(n) for n in names})
    setattr(BaseRouter, "__class__", metaclass)  # noqa: B010
    BaseRouter._local_per_thread = True  # type: ignore[attr-defined]


@cache
def load_module(name: str, container: int = 0) -> ModuleType:
    """Import ``functions/<name>/app.py`` (once per container) and return the module."""
    with _load_lock:
        per_thread_requests()
        path = functions_dir() / name / "app.py"
        if not path.is_file():
            raise ConfigError(f"no handler for function {name!r} at {path}")
        module_name = f"customer_context_fn_{name}" + (f"_{container}" if container else "")
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


def load_handler(name: str, container: int = 0) -> Callable[[dict[str, Any], Any], Any]:
    """The ``lambda_handler`` of ``functions/<name>/app.py`` in one of its containers."""
    return load_module(name, container).lambda_handler  # type: ignore[no-any-return]


def invoke(name: str, event: dict[str, Any], timeout_s: float = 30.0) -> Any:
    """Call a function's handler with ``event`` and a fresh context, in a container of the function
    that is free (waiting for one when all ``CONCURRENCY[name]`` are busy).

    Metrics left over are cleared afterwards, as a finished Lambda invocation would: with
    ``POWERTOOLS_METRICS_DISABLED`` Powertools skips the flush that clears them, and once 100 values
    pile up it prints them anyway.
    """
    from customer_context.observability import metrics

    with _containers(name).take() as container:
        handler = load_handler(name, container)
        try:
            return handler(event, LocalLambdaContext(function_name=name, timeout_s=timeout_s))
        finally:
            metrics.clear_metrics()


class _Containers:
    """The containers of one function: each runs one invocation at a time; a new one starts only when
    all that exist are busy and fewer than ``limit`` do (the most recently freed is reused first)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._idle: list[int] = []
        self._started = 0
        self._changed = threading.Condition()

    @contextmanager
    def take(self) -> Iterator[int]:
        with self._changed:
            while not self._idle and self._started >= self.limit:
                self._changed.wait()
            if self._idle:
                container = self._idle.pop()
            else:
                container, self._started = self._started, self._started + 1
        try:
            yield container
        finally:
            with self._changed:
                self._idle.append(container)
                self._changed.notify()


_containers_of: dict[str, _Containers] = {}
_containers_guard = threading.Lock()  # not _load_lock: an import of one function must not stall the others


def _containers(name: str) -> _Containers:
    with _containers_guard:
        if name not in _containers_of:
            _containers_of[name] = _Containers(CONCURRENCY.get(name, 1))
        return _containers_of[name]
