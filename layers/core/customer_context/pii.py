"""The PII policy: per field path, keep, hash, mask or drop — applied by collect before an event is
queued, so no raw value of a governed field reaches SQS, the lakehouse, the live tail or the logs.

* ``hash``: HMAC-SHA256 with a secret key (``CUSTOMER_CONTEXT_PII_HASH_KEY``); a field that carries
  an identifier type (an event path in its ``from_events``, a record table's identifier column) is
  normalised first exactly as that type is everywhere (:mod:`customer_context.identifiers`), other
  values trimmed, so the same address always gives the same token and identifiers stay joinable
  (identity stitching, lookups: fetch hashes an identifier it is asked for the same way);
* ``mask``: IPv4 addresses lose their last octet, other values all but their last 4 characters;
* ``drop``: the field is removed.

A rule on ``traits.<key>`` also covers ``context.traits.<key>`` (where the RudderStack SDKs put
identify traits), and a rule on ``context.ip`` also covers ``requestIp`` (the same client address,
as collect stamps it). Every value at a hashed path is hashed, whatever it looks like: a client
sending ``h_…`` does not get it stored as if it were a token. When something other than an object
stands where a rule's path goes through (``"traits": "ann@x.io"``, which collect rejects and keeps in
``rejected_events``), the rule's action applies to that whole value.

The same keyed hash keeps identifiers out of the clear where the system must remember them without
serving them: suppression items (:func:`customer_context.govern.suppression.suppression_hash`) and the
serving audit (:meth:`PiiPolicy.audit_value`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from typing import Any

from customer_context.errors import ConfigError
from customer_context.identifiers import HASH_PREFIX, normalize
from customer_context.spec import ContextSpec


def mask(value: Any) -> Any:
    """An IPv4 with its last octet zeroed; anything else but its last 4 characters starred."""
    if not isinstance(value, str):
        return "****"
    try:
        ip = ipaddress.ip_address(value.strip())
        if ip.version == 4:
            return str(ipaddress.ip_network(f"{ip}/24", strict=False).network_address)
        return str(ipaddress.ip_network(f"{ip}/48", strict=False).network_address)
    except ValueError:
        return "*" * max(len(value) - 4, 4) + value[-4:] if len(value) > 4 else "****"


class PiiPolicy:
    """The spec's ``pii`` rules, ready to apply.

    Args:
        spec: The context spec.
        hash_key: The secret of ``hash`` rules (required when there is one).
    """

    def __init__(self, spec: ContextSpec, hash_key: str = "") -> None:
        self.spec = spec
        # the identifier type an event path or a record column carries: hashed after its normalisation
        path_types = {p: t for t, rule in reversed(spec.identifiers.types.items()) for p in rule.from_events}
        self.rules: list[tuple[list[str], str, str | None]] = []
        for rule in spec.pii:
            if rule.action == "keep":
                continue
            parts = rule.path.split(".")
            self.rules.append((parts, rule.action, path_types.get(rule.path)))
            if parts[0] == "traits":
                context_path = "context." + rule.path
                self.rules.append((["context", *parts], rule.action,
                                   path_types.get(context_path) or path_types.get(rule.path)))
            if parts == ["context", "ip"]:
                self.rules.append((["requestIp"], rule.action, None))
        self.record_rules = {name: {c: a for c, a in table.pii.items() if a != "keep"}
                             for name, table in spec.record_tables.items() if table.pii}
        self.column_types = {name: {c: t for t, c in reversed(table.identifiers.items())}
                             for name, table in spec.record_tables.items()}
        hashes = any(a == "hash" for _, a, _ in self.rules) or any(
            a == "hash" for rules in self.record_rules.values() for a in rules.values())
        if hashes and not hash_key:
            raise ConfigError("pii: a rule hashes values but CUSTOMER_CONTEXT_PII_HASH_KEY is not set")
        self._key = hash_key.encode()
        self.hashed_paths = {".".join(p) for p, a, _ in self.rules if a == "hash"}
        # identifier types hashed somewhere (events or records): lookups hash them too
        self.hashed_types = {t for t, rule in spec.identifiers.types.items()
                             if any(p in self.hashed_paths for p in rule.from_events)}
        for name, rules in self.record_rules.items():
            self.hashed_types |= {t for t, col in spec.record_tables[name].identifiers.items()
                                  if rules.get(col) == "hash"}

    def __bool__(self) -> bool:
        return bool(self.rules or self.record_rules)

    def apply_record(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        """Apply a record table's column rules to one row (in place)."""
        for column, action in self.record_rules.get(table, {}).items():
            value = row.get(column)
            if value is None:
                continue
            if action == "drop":
                row[column] = None
            elif action == "hash":
                row[column] = self.hash(value, self.column_types[table].get(column))
            else:
                row[column] = mask(value)
        return row

    @property
    def keyed(self) -> bool:
        """Whether a hash key is configured (without one, :meth:`audit_value` keeps nothing)."""
        return bool(self._key)

    def hash(self, value: Any, id_type: str | None = None) -> str | None:
        """The token of a value (stable for a key): normalised as identifiers of ``id_type`` are, else trimmed.
        ``None`` for an identifier that normalises to nothing (it identifies nobody: one token for every empty
        value would join all their customers)."""
        rule = self.spec.identifiers.types.get(id_type) if id_type else None
        text = normalize(rule, str(value))
        if text is None:
            if id_type:
                return None
            text = ""
        # surrogatepass: a value from event JSON may hold an unpaired surrogate; it still hashes
        digest = hmac.new(self._key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return HASH_PREFIX + digest[:40]

    def lookup_value(self, id_type: str, value: str) -> str | None:
        """An identifier as it is stored and looked up: normalised as the spec says, then hashed when the
        policy hashes that identifier type anywhere (``None`` when empty after normalisation)."""
        from customer_context.identifiers import normalize_identifier

        out = normalize_identifier(self.spec, id_type, value)
        return self.hash(out, id_type) if out and id_type in self.hashed_types else out

    def audit_value(self, lookup_value: str) -> str:
        """What the serving audit keeps of an identifier (its lookup form): its keyed token, never the
        value; empty without a hash key (an unkeyed hash of an email can be guessed)."""
        return self.hash(lookup_value) or "" if self._key else ""

    def apply(self, event: Any, only: frozenset[str] | set[str] | None = None) -> Any:
        """Apply the rules to an event in place (anything that is not an object is left alone).

        Args:
            event: The event.
            only: Apply only the rules of these paths (``context.ip``, ``requestIp`` …): collect applies
                the policy once to what the client sent, then to the fields stamping added.
        """
        if not isinstance(event, dict):
            return event
        for parts, action, id_type in self.rules:
            if only is not None and ".".join(parts) not in only:
                continue
            node: Any = event
            key, whole = parts[-1], False
            for part in parts[:-1]:
                child = node.get(part)
                if child is not None and not isinstance(child, dict):
                    key, whole = part, True  # something else where the path goes: the rule takes all of it
                    break
                node = child
                if node is None:
                    break
            if not isinstance(node, dict) or key not in node:
                continue
            if action == "drop":
                del node[key]
            elif node[key] is None:
                continue
            elif action == "hash":
                value = node[key]
                node[key] = (self.hash(json.dumps(value, sort_keys=True, default=str)) if whole
                             else self.hash(value, id_type))
            else:
                node[key] = mask(node[key])
        return event
