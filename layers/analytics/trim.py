"""Trim the analytics dependencies as installed (the analytics image's task root, or a test's tree).

The one list of what goes, shared by ``layers/analytics/Dockerfile`` (``sam build``), ``bench/package.py``
and ``tests/template/test_package.py``. Standard library only: it runs under whatever python3 builds.

    python3 trim.py <tree>            # delete, strip, print a JSON summary
    python3 trim.py <tree> --dry-run  # only report

Every rule removes something the layer's functions never import: build-time files (headers, Cython
sources, type stubs, bytecode compiled for another interpreter), test suites, pyarrow's optional
features the code does not use (Flight RPC, ORC, HDFS / GCS / Azure file systems, CUDA, Substrait's
Python module). Shared libraries lose their symbol tables
(``strip --strip-unneeded``; the dynamic symbols the loader needs stay). The proof that nothing needed
went is tests/template/test_package.py, which imports everything and runs a build from the trimmed tree.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

# Glob patterns relative to the tree root, with why each can go.
REMOVE: dict[str, str] = {
    # bytecode for the building interpreter (not Lambda's), stubs, Cython sources, C/C++ headers
    "**/__pycache__": "bytecode of the building interpreter",
    "**/*.pyi": "type stubs",
    "**/*.pyx": "Cython sources",
    "**/*.pxd": "Cython declarations",
    "**/*.pxi": "Cython includes",
    "**/*.h": "C headers",
    "**/*.hpp": "C++ headers",
    "_duckdb-stubs": "type stubs",
    "pyarrow/include": "Arrow C++ headers (for building extensions)",
    "pyarrow/includes": "Cython declarations",
    "pyarrow/src": "Arrow Python C++ sources",
    "numpy/_core/include": "NumPy C headers",
    "numpy/_core/lib": "NumPy static libraries and pkg-config files",
    "numpy/f2py": "Fortran wrapper generator",
    "numpy/_pyinstaller": "PyInstaller hooks",
    "bin": "console scripts",
    # test suites
    "**/tests": "test suites",
    "**/conftest.py": "pytest configuration",
    "numpy/testing/_private/extbuild.py": "builds test extensions",
    "numpy/_core/_*_tests.*.so": "NumPy test extensions",
    "pyarrow/_pyarrow_cpp_tests.*": "Arrow C++ tests",
    # pyarrow features never used: Flight RPC (its 31 MB library), ORC, HDFS / GCS / Azure, CUDA, Substrait's
    # Python module (libarrow_substrait stays: libarrow_python links it), JVM bridge, benchmarks
    "pyarrow/libarrow_flight.so*": "Arrow Flight RPC",
    "pyarrow/libarrow_python_flight.so*": "Arrow Flight RPC",
    "pyarrow/_flight.*": "Arrow Flight RPC",
    "pyarrow/flight.py": "Arrow Flight RPC",
    "pyarrow/_orc.*": "ORC files",
    "pyarrow/_dataset_orc.*": "ORC files",
    "pyarrow/orc.py": "ORC files",
    "pyarrow/_hdfs.*": "HDFS",
    "pyarrow/_gcsfs.*": "Google Cloud Storage",
    "pyarrow/_azurefs.*": "Azure Blob Storage",
    "pyarrow/cuda.py": "CUDA",
    "pyarrow/_substrait.*": "Substrait plans",
    "pyarrow/substrait.py": "Substrait plans",
    "pyarrow/jvm.py": "JVM bridge",
    "pyarrow/benchmark.py": "benchmarks",
    # link-time names of libraries that the loader finds by their SONAME (libarrow_python.so.2600 stays)
    "pyarrow/libarrow_python.so": "link-time duplicate",
    "pyarrow/libarrow_python.so.*.*.*": "link-time duplicate",
    "pyarrow/libarrow_python_parquet_encryption.so": "link-time duplicate",
    "pyarrow/libarrow_python_parquet_encryption.so.*.*.*": "link-time duplicate",
    # zstandard's cffi backend: cffi is not installed, the C backend is the one loaded
    "zstandard/_cffi.*": "zstandard's cffi backend (cffi is not installed)",
    # pyiceberg's vendored Hive metastore client: the catalog on AWS is Glue or REST
    "hive_metastore": "Hive catalog client",
    "fb303": "Hive catalog client",
    # duckdb's experimental Spark API and ADBC driver
    "duckdb/experimental": "Spark-like API",
    "adbc_driver_duckdb": "ADBC driver",
}

# pyarrow's libraries the loader asks for by SONAME: the trim must leave them.
MUST_KEEP = ("pyarrow/libarrow.so.[0-9]*", "pyarrow/libarrow_python.so.[0-9]*[0-9]", "pyarrow/libparquet.so.[0-9]*",
             "pyarrow/libarrow_substrait.so.[0-9]*", "pyarrow/libarrow_s3.so.[0-9]*",
             "pyarrow/libarrow_compute.so.[0-9]*")

# pip's options for wheels that run on Lambda's python3.12 x86_64 (Amazon Linux 2023, glibc 2.34): the platforms
# `sam build` accepts for that runtime, binary wheels only.
LAMBDA_PIP_ARGS = ("--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
                   "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_34_x86_64",
                   "--implementation", "cp", "--python-version", "3.12", "--only-binary=:all:", "--no-compile")


def install_args(requirements: list[Path], target: Path, python: str = sys.executable,
                 packages: tuple[str, ...] = (), no_deps: bool = False) -> list[str]:
    """The ``pip install`` command that puts the requirement files (and ``packages``) into ``target`` as Lambda's
    python3.12 x86_64 would run them."""
    args = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *LAMBDA_PIP_ARGS,
            "--target", str(target), *(["--no-deps"] if no_deps else []), *packages]
    for requirement in requirements:
        args += ["-r", str(requirement)]
    return args


def install_for_lambda(requirements: list[Path], target: Path, python: str = sys.executable) -> None:
    """Run :func:`install_args`."""
    subprocess.run(install_args(requirements, target, python), check=True)


def _size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() or p.is_symlink())


def victims(tree: Path) -> list[Path]:
    """Every path the rules remove (outermost only)."""
    found: set[Path] = set()
    for pattern in REMOVE:
        found.update(tree.glob(pattern))
    outermost = sorted(found)
    keep: list[Path] = []
    for path in outermost:
        if not any(parent in found for parent in path.parents):
            keep.append(path)
    return keep


def shared_libraries(tree: Path) -> list[Path]:
    """ELF shared objects (extension modules and bundled libraries)."""
    out = []
    for path in tree.rglob("*.so*"):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as handle:
                if handle.read(4) == b"\x7fELF":
                    out.append(path)
    return sorted(out)


def strip(paths: list[Path]) -> int:
    """``strip --strip-unneeded`` each library; returns the bytes saved. Needs binutils' strip."""
    tool = shutil.which("strip")
    if tool is None:
        raise SystemExit("trim.py: `strip` (binutils) is not installed: install binutils or pass --no-strip")
    before = sum(p.stat().st_size for p in paths)
    for start in range(0, len(paths), 50):
        subprocess.run([tool, "--strip-unneeded", *map(str, paths[start:start + 50])], check=True)
    return before - sum(p.stat().st_size for p in paths)


def trim(tree: Path, dry_run: bool = False, strip_libraries: bool = True) -> dict[str, int]:
    """Remove what the rules name and strip the libraries; returns byte counts."""
    tree = tree.resolve()
    before = _size(tree)
    gone = victims(tree)
    removed = sum(_size(p) for p in gone)
    if not dry_run:
        for path in gone:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        missing = [p for p in MUST_KEEP if (tree / "pyarrow").is_dir() and not any(tree.glob(p))]
        if missing:
            raise SystemExit(f"trim.py: removed a library the loader needs: {missing}")
    stripped = strip(shared_libraries(tree)) if strip_libraries and not dry_run else 0
    return {"before_bytes": before, "removed_bytes": removed, "stripped_bytes": stripped,
            "after_bytes": _size(tree) if not dry_run else before - removed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tree", type=Path, help="the layer's python/ folder, as pip installed it")
    parser.add_argument("--dry-run", action="store_true", help="report without deleting")
    parser.add_argument("--no-strip", action="store_true", help="keep the libraries' symbol tables")
    args = parser.parse_args(argv)
    if not args.tree.is_dir():
        parser.error(f"{args.tree} is not a folder")
    print(json.dumps(trim(args.tree, dry_run=args.dry_run, strip_libraries=not args.no_strip)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
