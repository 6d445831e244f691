"""Read template.yaml (intrinsic tags kept as plain data) so the local stack builds its resources
from the same definitions AWS gets."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from customer_context_devtools.local.lambda_runtime import functions_dir


class _Loader(yaml.SafeLoader):
    pass


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {suffix: value}


_Loader.add_multi_constructor("!", _tag)


@lru_cache(maxsize=1)
def template() -> dict[str, Any]:
    """template.yaml next to the functions folder."""
    path = Path(functions_dir()).parent / "template.yaml"
    return yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - SafeLoader subclass


def read_template(path: Path) -> dict[str, Any]:
    """A template file, its intrinsic tags kept as plain data (``!Ref X`` → ``{"Ref": "X"}``)."""
    return yaml.load(path.read_text(), Loader=_Loader)  # type: ignore[no-any-return]  # noqa: S506 - SafeLoader subclass


def resource_properties(name: str) -> dict[str, Any]:
    """The Properties of one resource."""
    return template()["Resources"][name]["Properties"]  # type: ignore[no-any-return]
