"""The README's five-minute tour runs as written: every shell block marked ``<!-- tour: … -->`` is run by bash,
in order, against `serve` started by the tour's own command on a fresh data dir. The only change: the port
(8080 in the README) is a free one (`serve` reads it from CUSTOMER_CONTEXT_PORT), so the test never meets
another stack."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def tour_blocks() -> dict[str, str]:
    """The tour's shell blocks by name, in the README's order."""
    text = (REPO / "README.md").read_text()
    blocks = dict(re.findall(r"<!-- tour: (\w+) -->\s*```bash\n(.*?)```", text, flags=re.S))
    assert list(blocks) == ["serve", "send", "build", "fetch", "explore"], list(blocks)
    return blocks


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    blocks = tour_blocks()
    port = str(_free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMER_CONTEXT_")}
    # serve's defaults come from these: its block runs as written
    env.update(CUSTOMER_CONTEXT_DATA_DIR=str(tmp_path / "data"), CUSTOMER_CONTEXT_PORT=port)

    def as_here(block: str) -> str:
        return block.replace("127.0.0.1:8080", f"127.0.0.1:{port}")

    serve = subprocess.Popen(["bash", "-c", blocks["serve"]], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        ready = serve.stdout.readline()  # type: ignore[union-attr]
        assert ready.startswith(f"customer-context local stack ready at http://127.0.0.1:{port}"), (
            ready + serve.stderr.read())  # type: ignore[union-attr]

        def run(name: str) -> str:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", as_here(blocks[name])], cwd=REPO, env=env,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"tour step {name!r} failed:\n{done.stdout}\n{done.stderr}"
            return done.stdout

        sent = run("send")
        assert '"accepted":2' in sent.replace(" ", "") and "Order Completed" in sent and "identify" in sent
        assert "changed" in run("build")
        fetched = run("fetch")
        # the JSON by email, then the prompt text by user id: the same customer, her order counted
        assert '"orders_90d":1' in fetched and "- email: ada@example.com" in fetched, fetched
        assert "- orders_90d: 1" in fetched
        explored = run("explore")
        assert re.search(r"p_\w+ +email +ada@example\.com", explored) and "(2 rows)" in explored, explored
    finally:
        os.killpg(serve.pid, signal.SIGTERM)  # bash and the serve it started
        serve.wait(60)
