"""What the local stack's stand-in for AWS keeps across a restart and a kill.

moto keeps DynamoDB, SQS and S3 in memory. The local stack puts a write-ahead journal in front of it
(a WSGI middleware around moto's own application): every write moto accepts is appended to a file in
the data dir *before* the response goes back, so whatever the stack acknowledged survives the process
(a SIGKILL included; the files are written, not fsynced: a power cut may lose the last ones).

* DynamoDB: every item write (PutItem, UpdateItem, DeleteItem, BatchWriteItem, TransactWriteItems)
  that succeeded, in the order moto applied it — snapshots, aliases, the live tail, consumer keys,
  suppressions, regulations, the landing fence. On start the requests are replayed, then the file is
  compacted to the items the tables hold (and again whenever it grows past ``COMPACT_BYTES`` and twice
  its size after the last compaction, and
  whenever a deletion job finishes: the journal must not keep a deleted customer either).
* SQS: every message sent, and every message deleted (receipt handles are mapped to message ids from
  the ReceiveMessage answers); on start the messages never deleted are sent again (a message that was
  in flight, or in the dead-letter queue, is delivered again: ingest is idempotent by message id).
* S3: every object put in the stack's bucket (spooled events, record drops) is copied to a file, and
  removed with it; on start they are put back.

Reads pass straight through. Nothing of this runs on AWS, where the services keep their own state.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

DYNAMODB_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
COMPACT_BYTES = 64 << 20
DELETIONS_KEY = b'"fence#deletions"'  # the item a deletion job updates when it is done (stores/context_store.py)
_FORWARDED = ("HTTP_AUTHORIZATION", "CONTENT_TYPE", "HTTP_X_AMZ_TARGET")
_LOCAL_REGION = "us-east-1"  # the local stack's (stack.LOCAL_REGION)
# moto routes a request by the service named in its credential scope; it checks no signature
_LOCAL_AUTH = ("AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, "
               "Signature=0")


def _binary(value: Any) -> str:
    """Binary values inside moto's items (sets, lists, maps), as DynamoDB's JSON writes them: base64."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _key_file(root: Path, bucket: str, key: str) -> Path:
    return root / bucket / base64.urlsafe_b64encode(key.encode()).decode()


class _Log:
    """An append-only JSON-lines file, one ``os.write`` per record (O_APPEND: records never interleave)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def append(self, *records: dict[str, Any]) -> None:
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
        if data:
            os.write(self._fd, data)

    def read(self, start: int = 0, end: int | None = None) -> list[dict[str, Any]]:
        """The records in bytes ``start`` to ``end`` of the file (default: all of it)."""
        if not self.path.is_file():
            return []
        with self.path.open("rb") as fh:
            fh.seek(start)
            data = fh.read() if end is None else fh.read(end - start)
        out = []
        for line in data.decode().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:  # a record cut short by a kill: it was never acknowledged
                continue
        return out

    def replace(self, records: Iterable[dict[str, Any]]) -> None:
        """Swap the file for one holding ``records`` (atomically), and append to it from now on."""
        tmp = self.path.with_suffix(".tmp")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
            for record in records:
                fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        os.replace(tmp, self.path)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def size(self) -> int:
        return self.path.stat().st_size if self.path.is_file() else 0

    def close(self) -> None:
        os.close(self._fd)


def _live(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The messages the SQS journal says are still queued: sent, never deleted nor purged."""
    live: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        if record["k"] == "send":
            live[(record["q"], record["id"])] = record
        elif record["k"] == "del":
            live.pop((record["q"], record["id"]), None)
        elif record["k"] == "purge":
            live = {k: v for k, v in live.items() if k[0] != record["q"]}
    return live


class Journal:
    """The write-ahead journal of one data dir (``<data_dir>/aws/``), and the middleware writing it.

    Args:
        root: Where the files live.
        bucket: The stack's S3 bucket (its objects are kept).
    """

    def __init__(self, root: Path, bucket: str) -> None:
        self.root = root
        self.bucket = bucket
        self.dynamodb = _Log(root / "dynamodb.jsonl")
        self.sqs = _Log(root / "sqs.jsonl")
        self.objects = root / "s3"
        self._ddb_lock = threading.Lock()
        self._sqs_lock = threading.Lock()
        self._receipts: dict[str, tuple[str, str]] = {}  # receipt handle → (queue, message id)
        self.app: Any = None
        self.recording = False
        self._compacted_bytes = 0  # the larger journal's size right after the last compaction
        self._compacting = threading.Lock()  # one compaction at a time (the timer's, a deletion's)

    # -- the middleware ------------------------------------------------------------------------------
    def wrap(self, app: Any) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
        """moto's WSGI application with the journal in front of it."""
        self.app = app

        def middleware(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if not self.recording:
                return app(environ, start_response)  # type: ignore[no-any-return]
            target = environ.get("HTTP_X_AMZ_TARGET", "")
            if target.startswith("DynamoDB_20120810.") and target.split(".", 1)[1] in DYNAMODB_WRITES:
                return self._dynamodb(environ, start_response, target)
            if target.startswith("AmazonSQS."):
                return self._sqs(environ, start_response, target.split(".", 1)[1])
            if environ["REQUEST_METHOD"] in ("PUT", "DELETE", "POST") and self._s3_bucket_path(environ):
                return self._s3(environ, start_response)
            return app(environ, start_response)  # type: ignore[no-any-return]

        return middleware

    def _call(self, environ: dict[str, Any], read_body: bool = True) -> tuple[str, list[tuple[str, str]], bytes, bytes]:
        """Run a request through moto: (status, headers, response body, request body — read only when
        ``read_body``; an S3 upload streams through untouched)."""
        import io

        body = b""
        if read_body:
            length = environ.get("CONTENT_LENGTH")
            if length or environ.get("wsgi.input_terminated"):
                body = environ["wsgi.input"].read(int(length)) if length else environ["wsgi.input"].read()
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        answer: dict[str, Any] = {}

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            answer["status"], answer["headers"] = status, headers
            return lambda data: None

        chunks = self.app(environ, start)
        try:
            out = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()
        return answer["status"], answer["headers"], out, body

    @staticmethod
    def _reply(start_response: Callable[..., Any], status: str, headers: list[tuple[str, str]],
               body: bytes) -> Iterable[bytes]:
        start_response(status, headers)
        return [body]

    def _dynamodb(self, environ: dict[str, Any], start_response: Callable[..., Any], target: str) -> Iterable[bytes]:
        with self._ddb_lock:  # the journal's order is the order moto applied the writes in
            status, headers, out, body = self._call(environ)
            if status.startswith("200"):
                self.dynamodb.append({"h": {k: environ.get(k, "") for k in _FORWARDED}, "b": body.decode()})
        if status.startswith("200") and target.endswith(".UpdateItem") and DELETIONS_KEY in body:
            # a deletion job counts itself done: the journal must not keep what it deleted either (the puts of
            # her items, the messages that carried her events): both are rewritten from what is there now
            self.compact()
        return self._reply(start_response, status, headers, out)

    def _sqs(self, environ: dict[str, Any], start_response: Callable[..., Any], action: str) -> Iterable[bytes]:
        if action == "ReceiveMessage":
            # a receive may long-poll for seconds: holding the lock through it would hold every send back as
            # long (and the poll would never see them). What it received is noted before the reply, so no delete
            # of those messages can come first; sends and deletes keep their order under the lock.
            status, headers, out, body = self._call(environ)
            if status.startswith("200"):
                with self._sqs_lock:
                    self._note_sqs(action, json.loads(body or b"{}"), json.loads(out or b"{}"))
            return self._reply(start_response, status, headers, out)
        with self._sqs_lock:
            status, headers, out, body = self._call(environ)
            if status.startswith("200"):
                self._note_sqs(action, json.loads(body or b"{}"), json.loads(out or b"{}"))
        return self._reply(start_response, status, headers, out)

    def _note_sqs(self, action: str, request: dict[str, Any], answer: dict[str, Any]) -> None:
        queue = str(request.get("QueueUrl", "")).rsplit("/", 1)[-1]
        if action == "SendMessage":
            self.sqs.append({"k": "send", "q": queue, "id": answer.get("MessageId"), "b": request.get("MessageBody"),
                             "a": request.get("MessageAttributes")})
        elif action == "SendMessageBatch":
            entries = {e["Id"]: e for e in request.get("Entries", [])}
            self.sqs.append(*({"k": "send", "q": queue, "id": ok["MessageId"], "b": entries[ok["Id"]]["MessageBody"],
                               "a": entries[ok["Id"]].get("MessageAttributes")}
                              for ok in answer.get("Successful", [])))
        elif action == "ReceiveMessage":
            if len(self._receipts) > 100_000:  # handles of messages received and never deleted pile up
                self._receipts.clear()         # (forgetting them only means those come back after a restart)
            for message in answer.get("Messages", []):
                self._receipts[message["ReceiptHandle"]] = (queue, message["MessageId"])
        elif action in ("DeleteMessage", "DeleteMessageBatch"):
            handles = ([request.get("ReceiptHandle")] if action == "DeleteMessage"
                       else [e["ReceiptHandle"] for e in request.get("Entries", [])
                             if e["Id"] in {ok["Id"] for ok in answer.get("Successful", [])}])
            gone = [self._receipts.pop(h) for h in handles if h in self._receipts]
            self.sqs.append(*({"k": "del", "q": q, "id": mid} for q, mid in gone))
        elif action == "PurgeQueue":
            self.sqs.append({"k": "purge", "q": queue})

    def _s3_bucket_path(self, environ: dict[str, Any]) -> bool:
        return "/s3/" in environ.get("HTTP_AUTHORIZATION", "") and str(environ.get("PATH_INFO", "")).startswith(
            f"/{self.bucket}")

    def _s3(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        from urllib.parse import unquote

        method, query = environ["REQUEST_METHOD"], environ.get("QUERY_STRING", "")
        key = unquote(str(environ["PATH_INFO"])[len(self.bucket) + 2:])
        auth = environ.get("HTTP_AUTHORIZATION", "")
        status, headers, out, body = self._call(environ, read_body=method == "POST")
        if status.startswith(("200", "204")):
            if method == "PUT" and key and "uploadId" not in query:
                self._keep_object(key, auth)
            elif method == "DELETE" and key:
                _key_file(self.objects, self.bucket, key).unlink(missing_ok=True)
            elif method == "POST" and "delete" in query:
                for element in ET.fromstring(body).iter():
                    if element.tag.endswith("Key") and element.text:
                        _key_file(self.objects, self.bucket, element.text).unlink(missing_ok=True)
        return self._reply(start_response, status, headers, out)

    def _keep_object(self, key: str, auth: str) -> None:
        from urllib.parse import quote

        from werkzeug.test import EnvironBuilder

        environ = EnvironBuilder(method="GET", path=f"/{self.bucket}/{quote(key)}",
                                 headers=[("Authorization", auth)]).get_environ()
        status, _, data, _ = self._call(environ)
        if status.startswith("200"):
            path = _key_file(self.objects, self.bucket, key)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)

    # -- restore and compaction ----------------------------------------------------------------------
    def restore(self, sqs: Any, s3: Any, queues: dict[str, str]) -> dict[str, int]:
        """Put back what the journal holds (the resources exist, empty), then compact it; recording starts.

        Args:
            sqs, s3: boto3 clients of the stack's moto.
            queues: Queue name → URL.

        Returns:
            How many writes, messages and objects were restored.
        """
        from werkzeug.test import EnvironBuilder

        writes = self.dynamodb.read()
        for record in writes:  # in-process, in the original order
            headers = {"Authorization": record["h"]["HTTP_AUTHORIZATION"], "X-Amz-Target": record["h"][
                "HTTP_X_AMZ_TARGET"], "Content-Type": record["h"]["CONTENT_TYPE"] or "application/x-amz-json-1.0"}
            self._call(EnvironBuilder(method="POST", path="/", headers=list(headers.items()),
                                      data=record["b"].encode()).get_environ())
        live = _live(self.sqs.read())
        objects = sorted(p for p in (self.objects / self.bucket).glob("*") if p.suffix != ".tmp") \
            if (self.objects / self.bucket).is_dir() else []
        for path in objects:
            s3.put_object(Bucket=self.bucket, Key=base64.urlsafe_b64decode(path.name).decode(), Body=path.read_bytes())
        self.sqs.replace([])
        self.recording = True  # from here on every write is journaled, the messages put back included
        for (queue, _), record in live.items():
            if queue in queues:
                kwargs: dict[str, Any] = {"QueueUrl": queues[queue], "MessageBody": record["b"]}
                if record.get("a"):
                    kwargs["MessageAttributes"] = record["a"]
                sqs.send_message(**kwargs)
        self.compact()
        return {"dynamodb_writes": len(writes), "messages": len(live), "objects": len(objects)}

    def _scan(self) -> dict[str, list[dict[str, Any]]]:
        """Every item of every table moto holds, by table, read from moto's DynamoDB backend directly (the
        region and account the stack uses). Through Scan requests each page re-sorted the whole table and
        skipped the pages before it: a table of 100k items took tens of seconds, every write waiting."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.dynamodb.models import dynamodb_backends

        backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][_LOCAL_REGION]
        return {name: [item.to_json()["Attributes"] for item in table.all_items()]
                for name, table in list(backend.tables.items())}

    def compact(self) -> None:
        """Rewrite both journals as what moto holds now: the items of every table (one BatchWriteItem per 25),
        the messages still queued. The SQS journal is read up to where it ended when compaction began without
        holding its lock (appends only add to the end), then the rest under it."""
        with self._compacting:
            self._compact()

    def _compact(self) -> None:
        with self._ddb_lock:
            headers = {"HTTP_AUTHORIZATION": _LOCAL_AUTH, "HTTP_X_AMZ_TARGET": "DynamoDB_20120810.BatchWriteItem",
                       "CONTENT_TYPE": "application/x-amz-json-1.0"}
            self.dynamodb.replace(
                {"h": headers, "b": json.dumps({"RequestItems": {table: [{"PutRequest": {"Item": i}}
                                                                        for i in items[n:n + 25]]}},
                                  default=_binary)}
                for table, items in self._scan().items() for n in range(0, len(items), 25))
        with self._sqs_lock:
            cut = self.sqs.size()
        records = self.sqs.read(0, cut)
        with self._sqs_lock:
            records += self.sqs.read(cut)
            self.sqs.replace(_live(records).values())
        self._compacted_bytes = max(self.dynamodb.size(), self.sqs.size())

    def maybe_compact(self) -> None:
        """Compact the journals when one grew past ``COMPACT_BYTES`` and past twice the size the last compaction
        left (tables holding more than ``COMPACT_BYTES`` would otherwise be rewritten every time)."""
        if max(self.dynamodb.size(), self.sqs.size()) > max(COMPACT_BYTES, 2 * self._compacted_bytes):
            self.compact()

    def close(self) -> None:
        self.recording = False
        self.dynamodb.close()
        self.sqs.close()


def _keep_alive_handler() -> type:
    """moto's request handler answering over HTTP/1.1 keep-alive.

    werkzeug's development server closes the connection after every response (and then waits up to
    10 ms for leftover request bytes): each boto3 call to the local stack paid a new TCP connection
    and that wait. This handler reads the whole request body first (so the next request on the
    connection starts where it should), runs the WSGI application, and sends its answer with a
    Content-Length, leaving the connection open.
    """
    import io
    import sys

    from moto.moto_server.werkzeug_app import MotoRequestHandler

    class KeepAliveMotoRequestHandler(MotoRequestHandler):  # type: ignore[misc]
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK wait
        timeout = 60  # an idle connection's thread ends (a client reconnects: urllib3 checks before reuse)

        def log_request(self, code: Any = "-", size: Any = "-") -> None:
            pass

        def run_wsgi(self) -> None:
            self.environ = environ = self.make_environ()
            body = environ["wsgi.input"].read() if environ.get("wsgi.input_terminated") else (
                self.rfile.read(int(environ["CONTENT_LENGTH"])) if environ.get("CONTENT_LENGTH", "").isdigit()
                else b"")
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            environ.pop("wsgi.input_terminated", None)
            answer: dict[str, Any] = {}

            def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                if exc_info and answer.get("sent"):
                    raise exc_info[1].with_traceback(exc_info[2])
                answer["status"], answer["headers"] = status, headers
                return lambda data: answer.setdefault("written", []).append(data)

            try:
                chunks = self.server.app(environ, start_response)
                try:
                    out = b"".join([*answer.get("written", []), *chunks])
                finally:
                    if hasattr(chunks, "close"):
                        chunks.close()
            except Exception:
                import traceback

                traceback.print_exc(file=sys.stderr)
                answer = {"status": "500 INTERNAL SERVER ERROR", "headers": [("Content-Type", "text/plain")]}
                out, self.close_connection = b"Internal Server Error", True
            code, _, reason = answer["status"].partition(" ")
            self.send_response(int(code), reason)
            for name, value in answer["headers"]:
                if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            no_body = environ["REQUEST_METHOD"] == "HEAD" or int(code) in (204, 304) or 100 <= int(code) < 200
            if not no_body or out:
                self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            if out and environ["REQUEST_METHOD"] != "HEAD":
                self.wfile.write(out)
            self.wfile.flush()

    return KeepAliveMotoRequestHandler


def _cached_dispatcher() -> Any:
    """moto's dispatcher, remembering which backend serves a host.

    It matched every request's host against the URL patterns of all of moto's backends (hundreds of
    regular expressions, under one lock); the answer only depends on the host.
    """
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    class CachedDispatcher(DomainDispatcherApplication):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(create_backend_app)
            self._backends: dict[str | None, Any] = {}

        def get_backend_for_host(self, host: str | None) -> Any:
            try:
                return self._backends[host]
            except KeyError:
                backend = self._backends[host] = super().get_backend_for_host(host)
                return backend

    return CachedDispatcher()


def _patch_moto_sqs() -> None:
    """A faster retention check in moto's ReceiveMessage (same answer).

    For every message it is about to deliver, moto asks the queue's attributes for
    ``MessageRetentionPeriod`` — and builds all of them to find it, ``ApproximateNumberOfMessages``
    included, which walks every message of the queue: with a backlog, each receive cost the square of
    its size. This reads the one attribute.
    """
    from moto.sqs import models
    from moto.sqs.models import SQSBackend

    if getattr(SQSBackend, "_local_stack_patched", False):
        return

    def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
        retention_period = int(self.get_queue(queue_name).message_retention_period)
        return bool(retention_period + message.sent_timestamp / 1000 > models.unix_time())

    setattr(SQSBackend, "is_message_valid_based_on_retention_period", is_message_valid_based_on_retention_period)  # noqa: B010
    setattr(SQSBackend, "_local_stack_patched", True)  # noqa: B010


class JournaledMotoServer:
    """moto's threaded server with the journal in front of it, over keep-alive connections."""

    def __init__(self, journal: Journal, ip_address: str = "127.0.0.1", port: int = 0) -> None:
        from werkzeug.serving import make_server

        _patch_moto_sqs()
        app = journal.wrap(_cached_dispatcher())
        self._server = make_server(ip_address, port, app, True, request_handler=_keep_alive_handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def get_host_and_port(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()
