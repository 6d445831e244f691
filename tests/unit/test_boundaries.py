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


def _public_functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Module-level public functions and the public methods (and ``__init__``) of public classes."""
    found: list[ast.FunctionDef | ast.AsyncFunctionDef] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_"):
            found.append(node)
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            found += [m for m in node.body if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef)
                      and (not m.name.startswith("_") or m.name == "__init__")]
    return found


def _names_any(annotation: ast.expr) -> bool:
    """Whether an annotation says ``Any`` (as a name, or inside a string annotation)."""
    for node in ast.walk(annotation):
        if isinstance(node, ast.Name) and node.id == "Any":
            return True
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                if _names_any(ast.parse(node.value, mode="eval").body):
                    return True
            except SyntaxError:
                continue
    return False


def _any_in_signatures(source: str) -> list[str]:
    """``function(parameter)`` for each annotation of a public signature that is ``Any`` or contains it."""
    found = []
    for fn in _public_functions(ast.parse(source)):
        args = fn.args
        params = [*args.posonlyargs, *args.args, *args.kwonlyargs, *(a for a in (args.vararg, args.kwarg) if a)]
        annotated = [(a.arg, a.annotation) for a in params if a.annotation is not None]
        annotated += [("return", fn.returns)] if fn.returns is not None else []
        found += [f"{fn.lineno}:{fn.name}({name})" for name, annotation in annotated if _names_any(annotation)]
    return found


def test_the_domain_signatures_say_what_they_take_any_only_as_json() -> None:
    # JSON payloads are typed with ports' aliases (JsonObject, JsonValue, Row); everything else names its type
    untyped = [f"{path.relative_to(PACKAGE).as_posix()}:{where}" for package in DOMAIN
               for path in sorted((PACKAGE / package).rglob("*.py")) for where in _any_in_signatures(path.read_text())]
    assert untyped == []


def test_the_signature_check_sees_any_where_it_hides() -> None:
    source = ("from typing import Any\n"
              "def f(a: int, *, b: 'dict[str, Any]') -> list[Any]: ...\n"
              "def _private(a: Any) -> Any: ...\n"
              "class C:\n"
              "    def m(self, x: Any) -> None: ...\n"
              "    def ok(self, x: 'JsonObject') -> int: ...\n")
    assert _any_in_signatures(source) == ["2:f(b)", "2:f(return)", "5:m(x)"]
