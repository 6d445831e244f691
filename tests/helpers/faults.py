"""Fault injection at the store boundary.

Two tools, both leaving the code under test untouched:

* :class:`BotoFaults` answers botocore's ``before-send`` event with an error response for the first
  N matching calls of one client. botocore then parses the response and runs its real retry
  handler (standard mode: classification, quota, backoff with jitter) exactly as for an error from
  AWS; the sleeps between attempts are recorded by :func:`record_botocore_sleeps`.
* :class:`FaultProxy` is a small HTTP proxy on loopback in front of moto's server, for clients that
  are not botocore (pyarrow's S3 filesystem under pyiceberg): matching requests get an S3 error,
  the others are forwarded; every request is counted.
"""

from __future__ import annotations

import http.client
import threading
import types
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

S3_SLOW_DOWN = (503, "SlowDown", "Please reduce your request rate.")
S3_UNAVAILABLE = (503, "ServiceUnavailable", "Service is unable to handle request.")
S3_INTERNAL = (500, "InternalError", "We encountered an internal error. Please try again.")
DDB_THROUGHPUT = (400, "ProvisionedThroughputExceededException",
                  "The level of configured provisioned throughput for the table was exceeded.")
DDB_THROTTLING = (400, "ThrottlingException", "Rate of requests exceeds the allowed throughput.")

FOREVER = 10**9


def s3_error_body(code: str, message: str) -> bytes:
    """An S3 (REST-XML) error document."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            "<RequestId>FAULT0000000000</RequestId><HostId>fault-injected</HostId></Error>").encode()


def json_error_body(code: str, message: str) -> bytes:
    """A JSON-protocol (DynamoDB) error document."""
    return (f'{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"{message}"}}').encode()


class _Raw:
    """The ``raw`` of an AWSResponse: botocore reads the body through ``stream()``."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


@dataclass
class _Rule:
    event: str
    error: tuple[int, str, str]
    failures: int
    match: Callable[[Any], bool] | None = None
    injected: int = 0


@dataclass
class BotoFaults:
    """Error responses for the first N matching calls of one botocore client.

    ``attempts`` counts every HTTP attempt per operation (failed and successful), ``injected`` the
    errors answered per operation.
    """

    client: Any
    attempts: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    _rules: list[_Rule] = field(default_factory=list)

    def __post_init__(self) -> None:
        service = self.client.meta.service_model.service_name
        self._handler_id = f"fault-injection-{id(self)}"
        self.client.meta.events.register_first(f"before-send.{service}", self._before_send,
                                               unique_id=self._handler_id)

    def fail(self, operation: str, error: tuple[int, str, str], failures: int = FOREVER,
             match: Callable[[Any], bool] | None = None) -> None:
        """Answer ``error`` (status, code, message) to the next ``failures`` calls of ``operation``
        (``*``: any) for which ``match(request)`` holds (default: all)."""
        self._rules.append(_Rule(operation, error, failures, match))

    def clear(self) -> None:
        """The faults are over: every call goes through from now on."""
        self._rules.clear()

    def remove(self) -> None:
        """Unregister from the client."""
        service = self.client.meta.service_model.service_name
        self.client.meta.events.unregister(f"before-send.{service}", unique_id=self._handler_id)

    def _before_send(self, request: Any, event_name: str, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        operation = event_name.rsplit(".", 1)[-1]
        self.attempts[operation] += 1
        for rule in self._rules:
            if rule.event not in ("*", operation) or rule.injected >= rule.failures:
                continue
            if rule.match is not None and not rule.match(request):
                continue
            rule.injected += 1
            self.injected[operation] += 1
            status, code, message = rule.error
            is_json = self.client.meta.service_model.protocol == "json"
            body = json_error_body(code, message) if is_json else s3_error_body(code, message)
            headers = {"Content-Type": "application/x-amz-json-1.0" if is_json else "application/xml",
                       "x-amzn-RequestId": "FAULT", "Content-Length": str(len(body))}
            if is_json:
                headers["x-amzn-ErrorType"] = code
            return AWSResponse(request.url, status, headers, _Raw(body))
        return None


class SleepLog:
    """Delays asked for by retry loops (and not waited: tests stay fast)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.delays.append(float(seconds))


def record_sleeps(monkeypatch: Any, module: Any) -> SleepLog:
    """Give ``module`` a ``time`` whose ``sleep`` only records the delay (the rest of the process keeps
    the real clock). For botocore's retry handler, ``module`` is ``botocore.endpoint``."""
    import time

    log = SleepLog()
    shim = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("__")})
    shim.sleep = log.sleep
    monkeypatch.setattr(module, "time", shim)
    return log


def record_botocore_sleeps(monkeypatch: Any) -> SleepLog:
    """The backoff delays of botocore's retry handler (every client of the process)."""
    import botocore.endpoint

    return record_sleeps(monkeypatch, botocore.endpoint)


@dataclass
class Unprocessed:
    """DynamoDB answering only part of a batch: the first ``calls`` BatchWriteItem / BatchGetItem calls
    with more than one item send the first half to the table and hand the rest back unprocessed
    (``forever``: every call hands back everything)."""

    calls: int
    forever: bool = False
    partial: int = 0
    returned: int = 0

    def _split(self, items: list[Any]) -> tuple[list[Any], list[Any]]:
        if self.forever:
            self.partial += 1
            return [], items
        if self.partial >= self.calls or len(items) < 2:
            return items, []
        self.partial += 1
        half = len(items) // 2
        return items[:half], items[half:]


def leave_writes_unprocessed(monkeypatch: Any, client: Any, calls: int = 0, forever: bool = False) -> Unprocessed:
    """Wrap ``client.batch_write_item`` (of a boto3 resource's client) as :class:`Unprocessed` says."""
    state = Unprocessed(calls, forever)
    real = client.batch_write_item

    def batch_write_item(RequestItems: dict[str, list[Any]], **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        (table, items), = RequestItems.items()
        sent, kept = state._split(list(items))
        answer = real(RequestItems={table: sent}, **kwargs) if sent else {"UnprocessedItems": {}}
        if kept:
            state.returned += len(kept)
            left = answer.get("UnprocessedItems") or {}
            answer["UnprocessedItems"] = {table: [*left.get(table, []), *kept]}
        return answer

    monkeypatch.setattr(client, "batch_write_item", batch_write_item)
    return state


def leave_reads_unprocessed(monkeypatch: Any, client: Any, calls: int = 0, forever: bool = False) -> Unprocessed:
    """Wrap ``client.batch_get_item`` as :class:`Unprocessed` says."""
    state = Unprocessed(calls, forever)
    real = client.batch_get_item

    def batch_get_item(RequestItems: dict[str, dict[str, Any]], **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        (table, request), = RequestItems.items()
        sent, kept = state._split(list(request["Keys"]))
        answer = (real(RequestItems={table: {**request, "Keys": sent}}, **kwargs) if sent
                  else {"Responses": {table: []}, "UnprocessedKeys": {}})
        if kept:
            state.returned += len(kept)
            left = (answer.get("UnprocessedKeys") or {}).get(table, {}).get("Keys", [])
            answer["UnprocessedKeys"] = {table: {**request, "Keys": [*left, *kept]}}
        return answer

    monkeypatch.setattr(client, "batch_get_item", batch_get_item)
    return state


# --------------------------------------------------------------------------- loopback fault proxy


@dataclass
class ProxyRule:
    """Answer ``error`` to the next ``failures`` requests for which ``match(method, path)`` holds."""

    match: Callable[[str, str], bool]
    error: tuple[int, str, str]
    failures: int = FOREVER
    injected: int = 0


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of ``upstream`` (moto's server) that injects S3 errors.

    ``requests`` lists ``(method, path, status)`` of every request seen, in order.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rules: list[ProxyRule] = []
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:  # quiet
                return

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                error = proxy._fault(self.command, self.path)
                if error is not None:
                    status, code, message = error
                    payload = s3_error_body(code, message)
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    proxy._seen(self.command, self.path, status)
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("transfer-encoding", "connection", "expect", "content-length")}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(*proxy._upstream, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    self.send_response(answer.status, answer.reason)
                    for key, value in answer.getheaders():
                        if key.lower() not in ("transfer-encoding", "connection", "content-length", "date",
                                               "server"):
                            self.send_header(key, value)
                    # HEAD answers the object's length without its body
                    length = answer.getheader("Content-Length") if self.command == "HEAD" else None
                    self.send_header("Content-Length", length or str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                    proxy._seen(self.command, self.path, answer.status)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail(self, match: Callable[[str, str], bool], error: tuple[int, str, str],
             failures: int = FOREVER) -> ProxyRule:
        """Add a rule; returns it (its ``injected`` counts the errors answered)."""
        rule = ProxyRule(match, error, failures)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """The faults are over."""
        with self._lock:
            self.rules.clear()

    def count(self, method: str, contains: str = "", status: int | None = None) -> int:
        """How many requests of ``method`` whose path contains ``contains`` (and got ``status``) were seen."""
        with self._lock:
            return sum(1 for m, p, s in self.requests
                       if m == method and contains in p and (status is None or s == status))

    def _fault(self, method: str, path: str) -> tuple[int, str, str] | None:
        with self._lock:
            for rule in self.rules:
                if rule.injected < rule.failures and rule.match(method, path):
                    rule.injected += 1
                    return rule.error
        return None

    def _seen(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.requests.append((method, path, status))
