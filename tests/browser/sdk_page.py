"""What the browser tests need around the SDKs: the snippets of docs/tracking-a-website.md, the page bundles, a
second loopback origin serving them, and a forwarding proxy that records what came in and can fail one request on
purpose."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import threading
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
README = HERE.parents[1] / "docs" / "tracking-a-website.md"  # the snippets moved there from README.md
NODE_MODULES = HERE / "node_modules"
ESBUILD = NODE_MODULES / ".bin" / "esbuild"
CHROMIUM = Path("/usr/bin/chromium")
# what the snippets hold in place of the API's URL and the write key
API_PLACEHOLDER = "https://YOUR_API"
KEY_PLACEHOLDER = "YOUR_WRITE_KEY"
# Chromium as the tests run it: no sandbox (root in CI), nothing in the background, and no host but loopback
# resolves, so nothing can leave the machine even if an SDK tried
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


def readme_snippet(name: str) -> str:
    """The JavaScript block that follows ``<!-- snippet: <name> … -->`` in docs/tracking-a-website.md."""
    found = re.search(rf"<!-- snippet: {re.escape(name)}\b[^>]*-->\s*```js\n(.*?)```", README.read_text(), re.S)
    assert found, f"docs/tracking-a-website.md has no `{name}` snippet"
    return found.group(1)


def configured(snippet: str, api_url: str, write_key: str) -> str:
    """A snippet with the API's URL and the write key in place of the placeholders (nothing else changes)."""
    assert API_PLACEHOLDER in snippet and KEY_PLACEHOLDER in snippet
    return snippet.replace(API_PLACEHOLDER, api_url).replace(KEY_PLACEHOLDER, write_key)


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Pricing</title></head>
<body><h1>Pricing</h1><script src="bundle.js"></script></body></html>
"""
# what each snippet exports: the SDK's analytics object
EXPORTS = {"rudderstack": "rudderanalytics", "segment": "analytics"}


def build_pages(root: Path, snippets: dict[str, tuple[str, str]]) -> None:
    """One folder per page under ``root`` (``index.html`` + ``bundle.js``) from ``{name: (sdk, snippet)}``, bundled
    from the npm packages by esbuild in one run, as a site's build would. The page's entry imports the snippet and
    puts its analytics object on ``window.sdk`` for the test to call."""
    for name, (sdk, code) in snippets.items():
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "snippet.js").write_text(code)
        (folder / "entry.js").write_text(f"import {{ {EXPORTS[sdk]} }} from './snippet.js';\n"
                                         f"window.sdk = {EXPORTS[sdk]};\n")
        (folder / "index.html").write_text(PAGE)
    entries = [f"{name}/bundle={root / name / 'entry.js'}" for name in snippets]
    subprocess.run([str(ESBUILD), *entries, "--bundle", "--format=iife", "--target=es2020", "--log-level=warning",
                    f"--outdir={root}", "--define:process.env.NODE_ENV=\"production\""],
                   check=True, env={**os.environ, "NODE_PATH": str(NODE_MODULES)}, timeout=120)


def serve_folder(root: Path) -> tuple[ThreadingHTTPServer, str]:
    """A static file server for ``root`` on another loopback port (the page's origin)."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class Forwarder(ThreadingHTTPServer):
    """Forwards every request to ``upstream`` unchanged (``Host`` included), relays the answer and records what
    came in on the wire (method, path with query, headers, body). With ``fail_first_post``, the first POST, once the
    upstream has taken it, is answered 503 (with the upstream's other headers, CORS ones included): the SDK sees a
    failure and retries what already landed."""

    daemon_threads = True

    def __init__(self, upstream: str, *, fail_first_post: bool = False) -> None:
        self.upstream = urlsplit(upstream)
        self.fail_first_post = fail_first_post
        self.failed: list[str] = []
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Forward)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        """Base URL of the proxy."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def fail_this(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bool:
        """Record the request; whether it is the one to fail."""
        with self._lock:
            self.seen.append((method, path, headers, body))
            if not self.fail_first_post or method != "POST" or self.failed:
                return False
            self.failed.append(path)
            return True


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Forwarder

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        upstream = http.client.HTTPConnection(self.server.upstream.hostname, self.server.upstream.port, timeout=60)
        try:
            upstream.request(self.command, self.path, body=body or None,
                             headers={k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP})
            answer = upstream.getresponse()
            status, headers, data = answer.status, answer.getheaders(), answer.read()
        finally:
            upstream.close()
        if self.server.fail_this(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body):
            status, data = 503, json.dumps({"code": "service_unavailable", "message": "failed on purpose"}).encode()
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_OPTIONS = do_HEAD = _forward
