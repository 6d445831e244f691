"""Boundaries import-linter cannot express (its contracts, in .importlinter, run in `make lint` and `make test`):
no domain package imports another package's private names, and the serving store's key layout stays in
the store."""

from __future__ import annotations

import ast
from pathlib import Path

import customer_context

PACKAGE = Path(customer_context.__file__).parent
DOMAIN = ("collect", "assemble", "serve", "govern")
# how the context store lays items out: only store implementations use these
STORE_LAYOUT = {"tail_pk", "snapshot_key", "alias_key", "consumer_key", "regulation_key", "suppression_key",
                "legacy_suppression_key", "SUPPRESSION_PARTITIONS"}


def _imports(package: str) -> list[tuple[str, int, str, str]]:
    """(file, line, module, name) of every ``from customer_context.… import name`` in a package."""
    found = []
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("customer_context"):
                found += [(path.relative_to(PACKAGE).as_posix(), node.lineno, node.module or "", alias.name)
                          for alias in node.names]
    return found


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_domain_package_imports_another_packages_private_names() -> None:
    borrowed = [f"{file}:{line} imports {name} from {module}"
                for package in DOMAIN for file, line, module, name in _imports(package)
                if name.startswith("_") and not name.startswith("__") and _package_of(module) != package]
    assert borrowed == []


def test_the_domain_names_no_store_key() -> None:
    leaked = [f"{file}:{line} imports {name} from {module}"
              for package in DOMAIN for file, line, module, name in _imports(package) if name in STORE_LAYOUT]
    assert leaked == []
