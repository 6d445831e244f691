"""moto and its journal in a child process of the local stack.

moto answers SQS, S3 and DynamoDB in pure Python. In the stack's own process it shared one interpreter
lock with the HTTP API and the handlers calling it, so every request to it waited for theirs and theirs
for it. Here it runs in a process of its own, controlled over its stdin and stdout, one JSON line per
command and per answer:

* on start it takes the journal's lock (a restarted stack waits for the last run's process to be gone),
  starts the server and says ``{"port": N}``;
* ``restore`` puts back what the journal kept (:meth:`.persistence.Journal.restore`), ``compact`` and
  ``maybe_compact`` compact it, ``stop`` closes it and ends the process;
* when its stdin closes — the stack stopped, or its process died, even by SIGKILL — it exits: it is
  never left running on its own. It ignores SIGINT: a Ctrl-C in the terminal reaches the whole process
  group, and the stack stops it in order.

Run as ``python -m customer_context_devtools.local.moto_process <journal dir> <bucket>``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

LOCK_FILE = ".lock"


class MotoProcess:
    """The parent's handle on the child process.

    Args:
        root: The journal's folder (``<data_dir>/aws``).
        bucket: The stack's S3 bucket (its objects are kept).
    """

    def __init__(self, root: Path, bucket: str) -> None:
        self.root = root
        self.bucket = bucket
        self.port = 0
        self._child: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        assert self._child is not None
        return self._child.pid

    def start(self) -> None:
        """Start the child and wait until its server listens."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._child = subprocess.Popen(
            [sys.executable, "-m", "customer_context_devtools.local.moto_process", str(self.root), self.bucket],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, close_fds=True)
        self.port = int(self._read()["port"])

    def get_host_and_port(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def _read(self) -> dict[str, Any]:
        assert self._child is not None and self._child.stdout is not None
        line = self._child.stdout.readline()
        if not line:
            raise RuntimeError(f"the moto process exited ({self._child.wait()}); its error is above")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"moto process: {answer['error']}")
        return answer

    def _command(self, op: str, **args: Any) -> Any:
        with self._lock:
            assert self._child is not None and self._child.stdin is not None
            self._child.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self._child.stdin.flush()
            return self._read().get("result")

    def restore(self, queues: dict[str, str]) -> dict[str, int]:
        """Put back what the journal holds (:meth:`.persistence.Journal.restore`); recording starts."""
        return dict(self._command("restore", queues=queues))

    def compact(self) -> None:
        self._command("compact")

    def maybe_compact(self) -> None:
        self._command("maybe_compact")

    def stop(self) -> None:
        """Close the journal and end the child."""
        if self._child is None:
            return
        try:
            if self._child.poll() is None:
                self._command("stop")
        finally:
            assert self._child.stdin is not None
            self._child.stdin.close()
            try:
                self._child.wait(30)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
            if self._child.stdout is not None:
                self._child.stdout.close()


def _serve(root: Path, bucket: str, stdin: IO[str], stdout: IO[str]) -> None:
    import fcntl
    import logging

    from customer_context_devtools.local.persistence import Journal, JournaledMotoServer

    root.mkdir(parents=True, exist_ok=True)
    lock = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)  # held until this process ends: one writer of the journal at a time
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
    journal = Journal(root, bucket)
    server = JournaledMotoServer(journal)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"

    def answer(message: dict[str, Any]) -> None:
        stdout.write(json.dumps(message) + "\n")
        stdout.flush()

    def client(service: str) -> Any:
        import boto3

        return boto3.session.Session().client(
            service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",  # noqa: S106
            aws_secret_access_key="testing", aws_session_token="testing")  # noqa: S106

    answer({"port": port})
    for line in stdin:
        command = json.loads(line)
        op = command["op"]
        try:
            if op == "restore":
                result: Any = journal.restore(client("sqs"), client("s3"), command["queues"])
            elif op == "compact":
                journal.compact()
                result = None
            elif op == "maybe_compact":
                journal.maybe_compact()
                result = None
            elif op == "stop":
                server.stop()
                journal.close()
                answer({"result": None})
                return
            else:
                raise ValueError(f"unknown command {op!r}")
        except Exception as exc:  # noqa: BLE001 - the parent raises it
            import traceback

            traceback.print_exc()
            answer({"error": f"{type(exc).__name__}: {exc}"})
            continue
        answer({"result": result})
    # stdin closed without a stop: the stack's process is gone. Whatever was acknowledged is in the journal
    # already (written before each answer); requests still in flight were never acknowledged.


def main(argv: list[str] | None = None) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    args = sys.argv[1:] if argv is None else argv
    # the answers get the real stdout to themselves: whatever moto prints goes to stderr
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    code = 0
    try:
        _serve(Path(args[0]), args[1], sys.stdin, channel)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # the server's threads (keep-alive connections included) end with the process


if __name__ == "__main__":
    main()
