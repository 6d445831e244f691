"""A spec with a mistake stops `serve` before anything starts (instead of a stack answering 500 on every
route, which SDKs retry forever), and `spec check` validates a spec without building."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "customer_context_devtools.cli"]
BAD_SPEC = "version: 1\ntraits:\n  orders:\n    description: Orders\n    kind: bogus\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("how", ["option", "environment"])
def test_serve_refuses_an_invalid_spec_and_says_why(tmp_path: Path, how: str) -> None:
    spec = tmp_path / "context.yaml"
    spec.write_text(BAD_SPEC)
    port = _free_port()
    env = dict(os.environ, CUSTOMER_CONTEXT_WRITE_KEYS="wk_cli=cli")
    args = [*CLI, "serve", "--port", str(port), "--data-dir", str(tmp_path / "d")]
    if how == "option":
        args += ["--spec", str(spec)]
    else:
        env["CUSTOMER_CONTEXT_SPEC_PATH"] = str(spec)
    # When serve starts with a spec that cannot be loaded
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    # Then it exits non-zero naming the path in the spec and the reason, without a traceback or "ready"
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "ready" not in proc.stdout and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and "traits.orders.kind" in proc.stderr
    # And nothing listens on the port it was given
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_spec_check(tmp_path: Path) -> None:
    ok = subprocess.run([*CLI, "spec", "check"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ": ok — " in ok.stdout and "traits" in ok.stdout
    bad = tmp_path / "context.yaml"
    bad.write_text(BAD_SPEC)
    refused = subprocess.run([*CLI, "spec", "check", str(bad)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "traits.orders.kind" in refused.stderr and "Traceback" not in refused.stderr
    missing = subprocess.run([*CLI, "spec", "check", str(tmp_path / "nope.yaml")], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 2 and "cannot read the context spec" in missing.stderr
