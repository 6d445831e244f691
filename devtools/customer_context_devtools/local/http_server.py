"""The local HTTP API: each request becomes an API Gateway HTTP API event for the same handler; CORS is
answered as API Gateway answers it with the template's configuration."""

from __future__ import annotations

import json
import socketserver
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import urlsplit

from customer_context.config import get_settings
from customer_context.observability import logger

from customer_context_devtools.local import lambda_runtime
from customer_context_devtools.local.apigw import http_api_event, http_api_response
from customer_context_devtools.local.cors import Cors
from customer_context_devtools.local.routes import find_route

# API Gateway HTTP APIs refuse bodies above 10 MB before any Lambda runs.
API_GATEWAY_MAX_BODY = 10 * 1024 * 1024


def _host_and_port(server: socketserver.TCPServer) -> str:
    """``host:port`` the server listens on."""
    host, port = server.server_address[0], server.server_address[1]
    return f"{host.decode() if isinstance(host, bytes) else host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: LocalHttpApi
    server_version = "customer-context-local"
    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes: without this, Nagle's algorithm meets the
    # client's delayed ACK and every keep-alive response waits ~40 ms
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # the handlers log; a second access log would only add noise

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        request_headers = {k.lower(): v for k, v in self.headers.items()}
        for name, value in self.server.cors.response_headers(request_headers, headers).items():
            if name not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, message: str) -> None:
        self._send(status, {"content-type": "application/json"}, json.dumps({"message": message}).encode())

    def _handle(self) -> None:
        url = urlsplit(self.path)
        declared = (self.headers.get("content-length") or "0").strip()
        if not declared.isdigit():  # -1, 1e3, junk: the body's end is unknown, so the connection cannot go on
            self.close_connection = True
            self._json(400, "Content-Length: expected a non-negative integer")
            return
        length = int(declared)
        if length > API_GATEWAY_MAX_BODY:
            self.close_connection = True
            self._json(413, "Request Entity Too Large")
            return
        body = self.rfile.read(length) if length else b""
        request_headers = {k.lower(): v for k, v in self.headers.items()}
        if Cors.is_preflight(self.command, request_headers):
            # answered by API Gateway itself, whatever the route (the browser checks the lists)
            self.send_response(204)
            for name, value in self.server.cors.preflight(request_headers).items():
                self.send_header(name, value)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        found = find_route(self.command, url.path)
        if found is None:
            self._json(404, "Not Found")
            return
        route, params = found
        event = http_api_event(
            method=self.command,
            path=url.path,
            query=url.query,
            # API Gateway adds these (the client's address, and the scheme and port it used)
            headers=[*self.headers.items(), ("x-forwarded-for", self.client_address[0]), ("x-forwarded-proto", "http"),
                     ("x-forwarded-port", str(self.server.server_address[1]))],
            body=body,
            source_ip=self.client_address[0],
            route_key=route.route_key,
            path_parameters=params,
            # the host the client asked for, as API Gateway's domainName
            domain=self.headers.get("host") or _host_and_port(cast(socketserver.TCPServer, self.server)),
        )
        try:
            result = lambda_runtime.invoke(route.function, event)
        except Exception:
            # What API Gateway answers when the function itself fails.
            logger.exception("handler failed", extra={"function": route.function})
            self._json(500, "Internal Server Error")
            return
        self._send(*http_api_response(result))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

    def __getattr__(self, name: str) -> Any:
        # every other method (OPTIONS, TRACE, QUERY, made-up ones) goes through routing too, as with API
        # Gateway: a route nobody declared is a JSON 404, never http.server's HTML 501
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)


class LocalHttpApi(ThreadingHTTPServer):
    """A threaded HTTP server on loopback fronting the handlers.

    Args:
        host: Address to listen on.
        port: Port (0: any free one).
        cors: The CORS configuration; default: the template's, with the ``cors_allow_origins`` setting.
    """

    daemon_threads = True
    # socketserver's default listen backlog is 5: a burst of new connections beyond it (a load test's users
    # starting, SDKs reconnecting) waits for the kernel's SYN retry, a second or more, before it is accepted
    request_queue_size = 1024

    def __init__(self, host: str = "127.0.0.1", port: int = 0, cors: Cors | None = None) -> None:
        self.cors = cors or Cors.from_template(get_settings().cors_allow_origins)
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8080``."""
        return f"http://{_host_and_port(self)}"
