"""Run the Feast peer from the benchmarks (project virtualenv side).

``ensure_venv()`` creates ``.venv-feast`` at the repository root the first time (``pip install -r
requirements.txt`` here, pinned; pip's cache makes a re-create fast) and reuses it while the
requirements are unchanged. Feast never goes into the project's virtualenv: its pins (pandas,
pyarrow, protobuf, SQLAlchemy …) would move the project's own dependencies.
``run_peer()`` runs ``peer.py`` with that interpreter in its own process over the given events
Parquet files and returns its JSON; past ``timeout_s`` it is stopped and an ``error`` is returned.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
VENV = ROOT / ".venv-feast"
REQUIREMENTS = HERE / "requirements.txt"


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> Path:
    """The Feast virtualenv's interpreter, installed from requirements.txt if missing or stale."""
    stamp = VENV / ".installed"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if venv_python().exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return venv_python()
    print(f"[feast] creating {VENV.name} (pip install -r {REQUIREMENTS.relative_to(ROOT)}) …", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(VENV)], check=True)
    pip = [str(venv_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(digest + "\n")
    return venv_python()


def run_peer(files: list[str], work: Path, *, lookups: int = 3000, dynamodb: bool = False,
             timeout_s: float = 1200, min_customers: int = 0) -> dict[str, Any]:
    """Feast over ``files`` in a child process: its JSON, or ``{"error": ...}`` (timeout, crash)."""
    python = ensure_venv()
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", dir=work, delete=False) as listing:
        listing.write("\n".join(files) + "\n")
    cmd = [str(python), str(HERE / "peer.py"), "--work", str(work), "--lookups", str(lookups)]
    if dynamodb:
        cmd.append("--dynamodb")
    if min_customers:
        cmd += ["--min-customers", str(min_customers)]
    cmd.append(f"@{listing.name}")
    env = dict(os.environ, PYTHONWARNINGS="ignore", FEAST_USAGE="False")
    env.pop("PYTHONPATH", None)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the peer and anything it started (moto's server thread)
        proc.communicate()
        return {"error": f"Feast peer did not finish in {timeout_s / 60:.0f} min (stopped)"}
    if proc.returncode != 0:
        return {"error": f"Feast peer exited with {proc.returncode} (its stderr is above)"}
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def projected_s(events: int, results: Path | None = None) -> float | None:
    """Feast's SQL + materialize time projected to ``events`` from the largest smaller size already in
    ``assemble.json`` (materialize is per feature row, and rows grow with events), or ``None``."""
    results = results or ROOT / "bench" / "results" / "assemble.json"
    if not results.exists():
        return None
    measured = [r for r in json.loads(results.read_text()).get("results", [])
                if r.get("feast_total_s") and r["events"] < events]
    if not measured:
        return None
    base = max(measured, key=lambda r: r["events"])
    return float(base["feast_total_s"]) * events / base["events"]


def assemble_fields(files: list[str], work: Path, build_wall_s: float, events: int = 0,
                    limit_s: float = 1200, into_sqlite: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Feast peer's fields of one size's entry in ``bench/results/assemble.json``. Not run when the
    smaller sizes project it past ``limit_s`` (``BENCH_FEAST_FORCE=1`` runs it anyway, still bounded)."""
    projection = projected_s(events) if events else None
    if projection and projection > limit_s and not os.environ.get("BENCH_FEAST_FORCE"):
        why = (f"not run: {events:,} events project to ~{projection / 60:.0f} min for Feast (features SQL + "
               f"materialize, linear from the largest smaller size measured), over the {limit_s / 60:.0f}-min limit")
        print(f"  Feast peer {why}", flush=True)
        return {"feast_skipped": why, "feast_projected_total_s": round(projection)}
    print(f"  Feast peer over the same {len(files)} Parquet file(s) …", flush=True)
    peer = run_peer(files, work, timeout_s=limit_s)
    if "error" in peer:
        return {"feast_error": peer["error"]}
    return {
        "feast_features_sql_s": peer["features_sql_s"], "feast_apply_s": peer["apply_s"],
        "feast_materialize_s": peer["materialize_s"], "feast_total_s": peer["total_s"],
        "feast_peak_rss_mb": peer["peak_rss_mb"], "feast_materialize_peak_rss_mb": peer["materialize_peak_rss_mb"],
        "feast_feature_rows": peer["feature_rows"], "feast_online_sqlite": peer["online"],
        "feast_version": peer["feast_version"],
        # < 1: our full build took that share of Feast's time (SQL + apply + materialize; materialize alone)
        "build_vs_feast": round(build_wall_s / max(peer["total_s"], 1e-9), 3),
        "build_vs_feast_materialize": round(build_wall_s / max(peer["materialize_s"], 1e-9), 3),
        **(_same_store(into_sqlite, peer) if into_sqlite else {}),
    }


# our build stages up to the landing: what Feast's feature SQL computes (and the documents it does not)
COMPUTE_STAGES = ("read", "identity", "traits", "scores", "snapshots")


def _same_store(ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
    """CPU seconds side by side: both landing into SQLite on disk, and the feature computation alone."""
    stages = ours["report"].get("cpu_s") or {}
    compute = sum(stages.get(s, 0.0) for s in COMPUTE_STAGES)
    feast_cpu = peer.get("features_sql_cpu_s", 0.0) + peer.get("apply_cpu_s", 0.0) + peer.get("materialize_cpu_s", 0.0)
    return {
        "vs_feast_into_sqlite": {
            "ours_cpu_s": ours["cpu_s"], "feast_cpu_s": round(feast_cpu, 2),
            "ours_wall_s": ours["wall_s"], "feast_wall_s": peer["total_s"],
            "cpu_ratio": round(ours["cpu_s"] / max(feast_cpu, 1e-9), 3),
            "note": "< 1: our build (into a SQLite file) took that share of Feast's CPU (features SQL + apply + "
                    "materialize into its SQLite online store)",
        },
        "vs_feast_compute_only": {
            "ours_cpu_s": round(compute, 2), "ours_stages": list(COMPUTE_STAGES),
            "feast_cpu_s": peer.get("features_sql_cpu_s"), "feast_wall_s": peer["features_sql_s"],
            "cpu_ratio": round(compute / max(peer.get("features_sql_cpu_s") or 0.0, 1e-9), 2),
            "note": "our stages up to the landing (identity resolution, traits, scores and the documents) next "
                    "to Feast's feature SQL in DuckDB (traits only, no identity, no documents)",
        },
    }


def main() -> int:
    """``python bench/peers/feast/runner.py WORK FILE...``: run the peer alone, print its JSON."""
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    print(json.dumps(run_peer(sys.argv[2:], Path(sys.argv[1]), dynamodb=True), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
