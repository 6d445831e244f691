"""Package sizes for Lambda: each layer and each function unzipped, untrimmed and trimmed, against the 250 MB limit.

Installs the layers' requirements as `sam build` would for python3.12 x86_64 (``pip install --platform
manylinux…_x86_64 --only-binary=:all:``, the platforms SAM accepts for that runtime), trims the analytics
dependencies with ``layers/analytics/trim.py`` (the rules the image build and the test use) and writes
``bench/results/package.json``. Uses pip's cache; the first run downloads ~150 MB of wheels.

    .venv/bin/python bench/package.py [--out bench/results/package.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "layers" / "analytics"))
import trim  # noqa: E402  (layers/analytics/trim.py: the one list of what the trim removes)

LIMIT = 262_144_000  # Lambda: function code and all its layers, unzipped (250 MiB)
MB = 1_000_000
CORE_REQ = REPO / "layers" / "core" / "requirements.txt"
ANALYTICS_REQ = REPO / "layers" / "analytics" / "requirements.txt"


def tree_bytes(path: Path, skip: tuple[str, ...] = ("__pycache__",)) -> int:
    """Bytes of the regular files under ``path`` (what unzipping it would write)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*")
               if p.is_file() and not p.is_symlink() and not set(p.relative_to(path).parts) & set(skip))


def by_top_level(tree: Path, top: int = 12) -> list[dict[str, Any]]:
    """The largest top-level entries (packages, bundled libraries) of an installed tree."""
    sizes: dict[str, int] = {}
    for entry in tree.iterdir():
        name = entry.name.split(".")[0] if entry.is_file() else entry.name
        if name.endswith(".libs"):  # auditwheel's bundled libraries go with their package
            name = name[: -len(".libs")]
        if entry.name.endswith(".dist-info"):
            name = "dist-info (metadata)"
        sizes[name] = sizes.get(name, 0) + tree_bytes(entry)
    ranked = sorted(sizes.items(), key=lambda kv: -kv[1])[:top]
    return [{"name": n, "bytes": b, "mb": round(b / MB, 1)} for n, b in ranked]


def versions(tree: Path) -> dict[str, str]:
    out = {}
    for info in sorted(tree.glob("*.dist-info")):
        name, _, version = info.name[: -len(".dist-info")].rpartition("-")
        out[name] = version
    return out


def removed_by_reason(tree: Path) -> list[dict[str, Any]]:
    """Bytes each trim rule (grouped by its reason) takes out of an untrimmed tree."""
    seen: set[Path] = set()
    reasons: dict[str, int] = {}
    for pattern, reason in trim.REMOVE.items():
        for path in tree.glob(pattern):
            if path in seen or any(parent in seen for parent in path.parents):
                continue
            seen.add(path)
            reasons[reason] = reasons.get(reason, 0) + tree_bytes(path, skip=())
    ranked = sorted(reasons.items(), key=lambda kv: -kv[1])
    return [{"reason": r, "bytes": b, "mb": round(b / MB, 1)} for r, b in ranked if b]


def template_functions() -> dict[str, dict[str, Any]]:
    from cfnlint.decode import decode

    template, matches = decode(str(REPO / "template.yaml"))
    if matches:
        raise SystemExit(f"template.yaml does not parse: {matches}")
    out = {}
    for name, res in template["Resources"].items():
        if res["Type"] != "AWS::Serverless::Function":
            continue
        props = res["Properties"]
        if props.get("PackageType") == "Image":
            code = REPO / Path(*props["ImageConfig"]["Command"][0].split(".")[:-2])
            layers: list[str] = []
        else:
            code = REPO / props["CodeUri"]
            layers = [ref["Ref"] for ref in props.get("Layers", [])]
        out[name] = {"package": props.get("PackageType", "Zip"), "code": code, "layers": layers}
    return out


def machine() -> dict[str, Any]:
    cpu = ""
    with open("/proc/cpuinfo") if Path("/proc/cpuinfo").exists() else open(os.devnull) as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True).stdout.split()
    return {"cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "platform": platform.platform(),
            "pip": pip[1] if len(pip) > 1 else "", "strip": shutil.which("strip") is not None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "package.json")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="package-bench-") as tmp:
        work = Path(tmp)
        analytics, core, image = work / "analytics", work / "core", work / "image"
        print("installing the analytics layer's requirements for python3.12 x86_64 …", flush=True)
        trim.install_for_lambda([ANALYTICS_REQ], analytics)
        print("installing the core layer's requirements …", flush=True)
        trim.install_for_lambda([CORE_REQ], core)
        print("installing both as the analytics image does …", flush=True)
        trim.install_for_lambda([CORE_REQ, ANALYTICS_REQ], image)

        untrimmed = tree_bytes(analytics)
        largest_untrimmed = by_top_level(analytics)
        reasons = removed_by_reason(analytics)
        no_strip = work / "analytics-trimmed-no-strip"
        shutil.copytree(analytics, no_strip, symlinks=True)
        trim.trim(no_strip, strip_libraries=False)
        stripped = shutil.which("strip") is not None
        trim.trim(analytics, strip_libraries=stripped)
        trimmed = tree_bytes(analytics)
        trim.trim(image, strip_libraries=False)

        package = REPO / "layers" / "core" / "customer_context"
        core_layer = tree_bytes(core) + tree_bytes(package)
        analytics_layer = {"untrimmed_bytes": untrimmed, "trimmed_no_strip_bytes": tree_bytes(no_strip),
                           "trimmed_bytes": trimmed, "stripped": stripped,
                           "largest_untrimmed": largest_untrimmed, "largest_trimmed": by_top_level(analytics),
                           "removed_by_reason": reasons, "versions": versions(analytics)}
        image_bytes = tree_bytes(image) + tree_bytes(package) + tree_bytes(REPO / "functions")
        functions = {}
        for name, fn in template_functions().items():
            code = tree_bytes(fn["code"])
            row: dict[str, Any] = {"package": fn["package"], "code_bytes": code, "layers": fn["layers"]}
            if fn["package"] == "Zip":
                row["unzipped_bytes"] = code + (core_layer if "CoreLayer" in fn["layers"] else 0)
                row["fits"] = row["unzipped_bytes"] < LIMIT
            else:
                # what the function would need as a zip with the core and analytics layers, and what its image holds
                for label, size in (("untrimmed", untrimmed), ("trimmed", trimmed)):
                    row[f"as_zip_{label}_bytes"] = code + core_layer + size
                row["fits_as_zip"] = row["as_zip_trimmed_bytes"] < LIMIT
                row["image_python_bytes"] = image_bytes
            functions[name] = row
        heavy = {"pyarrow", "duckdb", "_duckdb", "pyiceberg_core", "numpy"}
        big = sum(r["bytes"] for r in analytics_layer["largest_trimmed"] if r["name"] in heavy)
        result = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "limit_bytes": LIMIT,
            "target": "python3.12 x86_64 (manylinux2014 … manylinux_2_34 wheels, as sam build picks them)",
            "machine": machine(),
            "layers": {"core": {"bytes": core_layer, "customer_context_bytes": tree_bytes(package),
                                "largest": by_top_level(core), "versions": versions(core)},
                       "analytics": analytics_layer},
            "analytics_heaviest_four_trimmed_bytes": big,
            "functions": functions,
            "seconds": round(time.perf_counter() - started, 1),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    a = result["layers"]["analytics"]
    print(f"core layer {core_layer / MB:.1f} MB; analytics {a['untrimmed_bytes'] / MB:.1f} MB untrimmed, "
          f"{a['trimmed_no_strip_bytes'] / MB:.1f} MB trimmed, {a['trimmed_bytes'] / MB:.1f} MB trimmed + stripped; "
          f"limit {LIMIT / MB:.1f} MB")
    for name, row in functions.items():
        size = row.get("unzipped_bytes", row.get("as_zip_trimmed_bytes"))
        print(f"  {name:24} {row['package']:5} {size / MB:7.1f} MB {'fits' if row.get('fits') else 'image'}")
    print(f"→ {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
