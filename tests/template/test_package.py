"""Packaging for Lambda: the trimmed analytics dependencies, installed as Lambda's python3.12 x86_64 gets them,
import and run a build on Python 3.12; every zip function fits the 250 MB limit and the functions that need the
analytics dependencies are images (trimmed, those dependencies alone are ~250 MB: bench/results/package.json).

Builds the trees with pip's platform wheels (pip's cache makes reruns quicker) and needs a python3.12 interpreter,
found the way the Makefile finds it: a missing one fails the test with what to install.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "layers" / "analytics"))
import trim  # noqa: E402  (layers/analytics/trim.py: the rules the image build applies)

LIMIT = 262_144_000  # Lambda: function code and all its layers, unzipped
IMAGE_LIMIT = 10 * 1024**3  # Lambda: a container image, uncompressed
CORE_REQ = REPO / "layers" / "core" / "requirements.txt"
ANALYTICS_REQ = REPO / "layers" / "analytics" / "requirements.txt"
DOCKERFILE = REPO / "layers" / "analytics" / "Dockerfile"
# Not in the image: boto3 comes with Lambda's runtime, SQLAlchemy only for the test's SQLite catalog (Glue on AWS)
RUNTIME_ONLY = ("boto3", "s3transfer", "sqlalchemy")


def python312() -> str | None:
    """python3.12 the way the Makefile's PY312_DIR finds it: ~/.pyenv/versions/3.12*/bin, then /usr/local/bin."""
    for folder in sorted(Path.home().glob(".pyenv/versions/3.12*/bin")) + [Path("/usr/local/bin")]:
        if os.access(folder / "python3.12", os.X_OK):
            return str(folder / "python3.12")
    return None


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*")
               if p.is_file() and not p.is_symlink() and "__pycache__" not in p.parts)


def _functions() -> dict[str, dict[str, Any]]:
    from cfnlint.decode import decode

    template, matches = decode(str(REPO / "template.yaml"))
    assert not matches, matches
    return {n: r for n, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}


def _cache_root() -> Path:
    """Where the trees are kept between runs of the same day: keyed by everything that shapes them (the
    requirement files, the trim rules, pip's options), so a change rebuilds them; a new day re-resolves."""
    key = hashlib.sha256()
    for part in (CORE_REQ.read_bytes(), ANALYTICS_REQ.read_bytes(), (REPO / "layers/analytics/trim.py").read_bytes(),
                 " ".join((*trim.LAMBDA_PIP_ARGS, *RUNTIME_ONLY)).encode(), date.today().isoformat().encode()):
        key.update(part)
    return Path.home() / ".cache" / "customer-context" / "package-test" / key.hexdigest()[:16]


@pytest.fixture(scope="module")
def py312() -> str:
    """Lambda's Python here; without it the packaging is unproven, so the test fails (it does not skip)."""
    python = python312()
    if python is None:
        pytest.fail("no python3.12 (looked in ~/.pyenv/versions/3.12*/bin and /usr/local/bin, as the Makefile "
                    "does): install it, e.g. `pyenv install 3.12`; the packaging check needs Lambda's Python")
    return python


@pytest.fixture(scope="module")
def trees(py312: str) -> dict[str, Path]:
    """The image's dependencies (core + analytics in one resolution, trimmed as the Dockerfile does), the core
    layer's dependencies alone, and what Lambda's runtime or the test adds; installed side by side (~1 min)."""
    root = _cache_root()
    out = {"image": root / "image", "core": root / "core", "runtime": root / "runtime"}
    if (root / "complete").exists():
        return out
    for old in root.parent.glob("*"):  # earlier days' or rules' trees
        shutil.rmtree(old, ignore_errors=True)
    commands = [trim.install_args([CORE_REQ, ANALYTICS_REQ], out["image"]),
                trim.install_args([CORE_REQ], out["core"]),
                trim.install_args([], out["runtime"], packages=RUNTIME_ONLY, no_deps=True)]
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    for command, proc in zip(commands, procs, strict=True):
        _, err = proc.communicate(timeout=300)
        errors = "\n".join(line for line in err.splitlines() if "is ignored: it is neither" not in line)
        assert proc.returncode == 0, f"{' '.join(command)}\n{errors[-3000:]}"
    report = trim.trim(out["image"], strip_libraries=False)
    assert report["removed_bytes"] > 50_000_000, report  # the rules still match what the wheels hold
    (root / "complete").write_text(json.dumps(report))
    return out


PROBE = """
import importlib, json, os, sys, tempfile
from datetime import UTC, datetime, timedelta

import duckdb, numpy, pyarrow, pyarrow.compute, pyarrow.dataset, pyarrow.fs, pyarrow.parquet, pyiceberg_core
os.environ.update(CUSTOMER_CONTEXT_DATA_DIR=tempfile.mkdtemp(), CUSTOMER_CONTEXT_CATALOG_TYPE="sql")
from customer_context.assemble.build import build_context
from customer_context.collect.ingest import Rows, event_to_row, write_rows
from customer_context.spec import DEFAULT_SPEC, parse_spec
from customer_context import wiring
from customer_context.stores.context_store import MemoryContextStore

as_of = datetime(2026, 11, 24, 12, tzinfo=UTC)
def ev(kind, days, n, **fields):
    stamp = (as_of - timedelta(days=days)).isoformat().replace("+00:00", "Z")
    return {"type": kind, "messageId": f"m{n}", "timestamp": stamp, "receivedAt": stamp, "sourceId": "t", **fields}
events = [ev("identify", 9, 1, userId="u1", anonymousId="a1", traits={"email": "u1@x.io"}),
          ev("track", 8, 2, userId="u1", event="Order Completed", properties={"revenue": 10}),
          ev("track", 2, 3, anonymousId="a1", event="Order Completed", properties={"revenue": 5}),
          ev("identify", 7, 4, userId="u2", anonymousId="a2"),
          ev("page", 1, 5, anonymousId="a3")]
lake = wiring.lakehouse()
write_rows(lake, Rows(events=[event_to_row(e) for e in events]))
store = MemoryContextStore()
report = build_context(lake, store, parse_spec(DEFAULT_SPEC.read_text()), as_of=as_of)
doc = json.loads(store.get_snapshot(store.resolve("user_id", "u1"))["doc"])
handlers = {name: callable(importlib.import_module(f"functions.{name}.app").lambda_handler)
            for name in sys.argv[1:]}
mods = ("pyarrow", "duckdb", "pyiceberg", "pyiceberg_core", "numpy", "sqlalchemy", "customer_context")
print(json.dumps({"python": sys.version_info[:2], "files": {m: sys.modules[m].__file__ for m in mods},
                  "events": report.events, "changed": report.changed_profiles,
                  "history": lake.scan("context_snapshots").num_rows, "doc": doc, "handlers": handlers}))
"""


@pytest.mark.slow
def test_the_trimmed_dependencies_import_and_run_a_build_on_python312(py312: str, trees: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    # Given Lambda's Python and the image's trimmed dependencies, the package and the handlers on its path
    image_functions = sorted(r["Properties"]["ImageConfig"]["Command"][0].split(".")[1]
                             for r in _functions().values() if r["Properties"].get("PackageType") == "Image")
    path = os.pathsep.join(map(str, (trees["image"], REPO / "layers" / "core", REPO, trees["runtime"])))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": path, "POWERTOOLS_TRACE_DISABLED": "true",
           "POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "ERROR", "AWS_DEFAULT_REGION": "us-east-1"}
    # When it imports pyarrow, duckdb, pyiceberg and numpy, lands five events and builds their context
    out = subprocess.run([py312, "-s", "-B", "-W", "ignore", "-c", PROBE, *image_functions], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # Then it ran on 3.12 from the trimmed tree and built the right documents
    assert result["python"] == [3, 12]
    for module in ("pyarrow", "duckdb", "pyiceberg", "pyiceberg_core", "numpy"):
        assert Path(result["files"][module]).is_relative_to(trees["image"]), result["files"]
    assert result["events"] == 5 and result["changed"] == 3 and result["history"] == 3
    doc = result["doc"]
    assert doc["traits"]["lifetime_revenue"] == 15  # the anonymous order joined u1 through a1
    assert {"churn_risk", "p_alive"} <= set(doc["scores"])
    # And every image function's handler imports there
    assert image_functions and result["handlers"] == {name: True for name in image_functions}


@pytest.mark.slow
def test_every_function_fits_how_the_template_ships_it(trees: dict[str, Path]) -> None:
    core_layer = _bytes(trees["core"]) + _bytes(REPO / "layers" / "core" / "customer_context")
    image = _bytes(trees["image"]) + _bytes(REPO / "layers" / "core" / "customer_context") + _bytes(REPO / "functions")
    shipped = {}
    for name, res in _functions().items():
        props = res["Properties"]
        if props.get("PackageType") == "Image":
            # an image function: built from the analytics Dockerfile, within the image limit
            assert (REPO / res["Metadata"]["DockerContext"] / res["Metadata"]["Dockerfile"]) == DOCKERFILE, name
            assert image < IMAGE_LIMIT, name
            shipped[name] = "image"
        else:
            # a zip function: only the core layer, and with it under 250 MB unzipped
            assert props["Layers"] == [{"Ref": "CoreLayer"}], name
            size = _bytes(REPO / props["CodeUri"]) + core_layer
            assert size < LIMIT, f"{name}: {size:,} bytes unzipped with its layer, over {LIMIT:,}"
            shipped[name] = "zip"
    assert shipped["CollectFunction"] == shipped["FetchContextFunction"] == "zip"
    assert shipped["BuildContextFunction"] == "image"
