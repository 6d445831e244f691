"""What template.yaml deploys, read from the template itself: each function's environment (Globals and its
own variables, the parameters at their defaults, intrinsic functions resolved for one account and region)
and the properties of its resources, so a test runs the handlers as a default deployment would."""

from __future__ import annotations

import re
from typing import Any

from customer_context_devtools.local.template import template

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
STACK = "customer-context-dev"  # samconfig.toml's dev environment


class Resolver:
    """Resolves ``Ref``, ``Fn::Sub``, ``Fn::If``, ``Fn::GetAtt``, ``Fn::Join``, ``Fn::Split`` and conditions
    with the parameters' defaults.

    Args:
        stack: The stack name (``AWS::StackName``).
        physical: What a ``Ref`` (or ``GetAtt``, as ``Name.Attribute``) of a resource resolves to, e.g. the
            queue URL for ``EventsQueue``. A resource the test has not named is an error, not a guess.
    """

    def __init__(self, physical: dict[str, str], stack: str = STACK) -> None:
        self.template = template()
        params = {name: str(p.get("Default", "")) for name, p in self.template["Parameters"].items()}
        self.names = {**params, "AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": "aws",
                      "AWS::URLSuffix": "amazonaws.com", "AWS::StackName": stack, **physical}

    def _name(self, name: str) -> str:
        if name not in self.names:
            raise KeyError(f"template.yaml refers to {name!r}: give its physical name to the Resolver")
        return self.names[name]

    def condition(self, name: str) -> bool:
        """A condition of the template's Conditions section."""
        return bool(self.resolve(self.template["Conditions"][name]))

    def resolve(self, value: Any) -> Any:
        """The value with every intrinsic function evaluated."""
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (tag, arg), = value.items()
            if tag == "Ref":
                return self._name(arg)
            if tag == "GetAtt":
                return self._name(arg if isinstance(arg, str) else ".".join(arg))
            if tag == "Sub":
                text, local = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))
                return re.sub(r"\$\{([^}]+)\}", lambda m: local.get(m.group(1)) or self._name(m.group(1)), text)
            if tag == "Join":
                return arg[0].join(self.resolve(arg[1]))
            if tag == "Split":
                return self.resolve(arg[1]).split(arg[0])
            if tag == "Condition":
                return self.condition(arg)
            if tag == "And":
                return all(self.resolve(v) for v in arg)
            if tag == "If":
                name, when_true, when_false = arg
                return self.resolve(when_true if self.condition(name) else when_false)
            if tag == "Equals":
                return self.resolve(arg[0]) == self.resolve(arg[1])
            if tag == "Not":
                return not self.resolve(arg[0])
        return {k: self.resolve(v) for k, v in value.items()}

    def environment(self, function: str) -> dict[str, str]:
        """The environment variables of a function (logical id), as deployed with the default parameters."""
        variables = dict(self.template["Globals"]["Function"]["Environment"]["Variables"])
        own = self.template["Resources"][function]["Properties"].get("Environment") or {}
        variables.update(own.get("Variables") or {})
        return {name: str(self.resolve(value)) for name, value in variables.items()}

    def properties(self, resource: str, *path: str) -> Any:
        """A resource's properties (or the one under ``path``), resolved."""
        value = self.template["Resources"][resource]["Properties"]
        for key in path:
            value = value[key]
        return self.resolve(value)
