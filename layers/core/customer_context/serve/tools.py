"""Agent tools generated from context.yaml: definitions in the shapes LLM APIs take, and their execution.

Tools:

* ``get_customer_context`` — any identifier → the context, with ``fields`` / ``sections`` enumerated
  from the spec (only those the consumer may read), as JSON or prompt text;
* one ``query_<name>`` per named query in ``context.yaml`` (``queries:``), run by query_context
  over the lakehouse under budgets.

Shapes: ``openai`` (Chat Completions ``tools``: ``{"type": "function", "function": {...}}``),
``anthropic`` (Messages ``tools``: ``{"name", "description", "input_schema"}``) and ``mcp``
(``tools/list``: ``{"name", "description", "inputSchema"}``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any

from customer_context.errors import CustomerContextError, Forbidden, InvalidRequest, NotFound
from customer_context.ports import JsonObject, JsonValue
from customer_context.serve.catalog import LIST_SECTIONS, catalog
from customer_context.serve.consumers import Consumer
from customer_context.spec import ContextSpec

if TYPE_CHECKING:
    from customer_context.serve.fetch import ContextService

CONTEXT_TOOL = "get_customer_context"
QUERY_PREFIX = "query_"


def _identifier_properties(spec: ContextSpec) -> dict[str, Any]:
    types = [*spec.identifiers.types, "profile_id"]
    described = "; ".join(f"{n}: {t.description}" for n, t in spec.identifiers.types.items() if t.description)
    return {
        "identifier_type": {"type": "string", "enum": types,
                            "description": f"Which kind of identifier you have ({described}; profile_id: "
                                           "the id of a customer profile)"},
        "identifier_value": {"type": "string", "description": "The identifier itself, e.g. the email address"},
    }


def _named_queries(spec: ContextSpec) -> dict[str, Any]:
    return dict(getattr(spec, "queries", None) or {})


def generic_tools(spec: ContextSpec, consumer: Consumer) -> list[JsonObject]:
    """The tools as ``{"name", "description", "schema"}``, limited to the consumer's scope (a consumer that
    reads nothing gets none)."""
    from customer_context.serve.named_queries import query_reveals

    if not consumer.reads_anything:
        return []
    cat = catalog(spec)
    sections = [s for s in cat.sections if consumer.allows_any_of(s)]
    fields = [f for f in cat.fields if consumer.allows(f)]
    fields += [s for s in sections if s in LIST_SECTIONS and consumer.allows_section(s)]
    field_lines = "; ".join(f"{p}: {i.description}" for p, i in cat.fields.items()
                            if consumer.allows(p) and p.count(".") == 1 and not p.startswith("records."))
    tools = [{
        "name": CONTEXT_TOOL,
        "description": (
            "Look up what we know about a customer (by any identifier) before answering them: "
            + "; ".join(f"{s}: {cat.section_descriptions.get(s, '')}" for s in sections)
            + ". Ask only for the fields the current step needs. Fields: " + field_lines
        ),
        "schema": {
            "type": "object",
            "properties": {
                **_identifier_properties(spec),
                "fields": {"type": "array", "items": {"type": "string", "enum": fields},
                           "description": "Dotted paths to return; omit for everything you may read"},
                "sections": {"type": "array", "items": {"type": "string", "enum": sections},
                             "description": "Whole sections to return"},
                "format": {"type": "string", "enum": ["json", "text"], "default": "text",
                           "description": "text: compact prompt-ready lines with descriptions; json: raw values"},
                "max_tokens": {"type": "integer", "minimum": 50, "maximum": 100000,
                               "description": "Budget of the text answer"},
            },
            "required": ["identifier_type", "identifier_value"],
            "additionalProperties": False,
        },
    }]
    for name, query in _named_queries(spec).items():
        if not consumer.allows_query(name, query_reveals(spec, query)):
            continue
        params = getattr(query, "params", {}) or {}
        properties = dict(_identifier_properties(spec))
        required = ["identifier_type", "identifier_value"]
        for pname, param in params.items():
            properties[pname] = param.json_schema()
            if getattr(param, "required", False):
                required.append(pname)
        tools.append({
            "name": QUERY_PREFIX + name,
            "description": f"{query.description} (runs over the customer's own history; results are bounded)",
            "schema": {"type": "object", "properties": properties, "required": required,
                       "additionalProperties": False},
        })
    return tools


def tool_definitions(spec: ContextSpec, consumer: Consumer, style: str = "all") -> JsonObject:
    """The tools in one API's shape (``openai``, ``anthropic``, ``mcp``) or all of them."""
    tools = generic_tools(spec, consumer)
    shapes = {
        "openai": [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                      "parameters": t["schema"]}} for t in tools],
        "anthropic": [{"name": t["name"], "description": t["description"], "input_schema": t["schema"]}
                      for t in tools],
        "mcp": [{"name": t["name"], "description": t["description"], "inputSchema": t["schema"]} for t in tools],
    }
    if style == "all":
        return shapes
    return {"tools": shapes[style]}


def call_tool(name: str, arguments: JsonObject, consumer: Consumer, service: ContextService, *,
              base_url: str | None = None, auth_headers: dict[str, str] | None = None) -> JsonValue:
    """Run one tool call; returns a JSON value or prompt text.

    Raises:
        InvalidRequest / Forbidden / NotFound: as the fetch API would answer (the MCP layer turns
            them into tool errors the model can read).
    """
    if not isinstance(arguments, dict):
        raise InvalidRequest("arguments: expected an object")
    if name == CONTEXT_TOOL:
        _check_arguments(service.spec, name, arguments)
        result = service.fetch(arguments["identifier_type"], arguments["identifier_value"], consumer,
                               fields=arguments.get("fields"), sections=arguments.get("sections"),
                               fmt=arguments.get("format", "text"), max_tokens=arguments.get("max_tokens"),
                               via=f"tool:{CONTEXT_TOOL}")
        return result.body
    if name.startswith(QUERY_PREFIX) and name[len(QUERY_PREFIX):] in _named_queries(service.spec):
        from customer_context.serve.named_queries import query_reveals

        query = name[len(QUERY_PREFIX):]
        if not consumer.allows_query(query, query_reveals(service.spec, service.spec.queries[query])):
            raise Forbidden(f"query {query!r} is outside the scope of consumer {consumer.name!r}")
        _check_arguments(service.spec, name, arguments)
        params = {k: v for k, v in arguments.items() if k not in ("identifier_type", "identifier_value")}
        return run_remote_query(base_url, auth_headers or {}, str(arguments.get("identifier_type", "")),
                                str(arguments.get("identifier_value", "")), query, params)
    raise NotFound(f"no tool {name!r}")


_VALIDATORS: dict[tuple[int, str], tuple[ContextSpec, Any]] = {}


def _check_arguments(spec: ContextSpec, name: str, arguments: dict[str, Any]) -> None:
    """Check a call's arguments against the tool's published input schema (types, ranges, unknown names)
    before anything runs; the scope is checked after, with its own reasons.

    Raises:
        InvalidRequest: naming the argument and what it must be.
    """
    import fastjsonschema

    hit = _VALIDATORS.get((id(spec), name))
    if hit is None or hit[0] is not spec:
        everything = Consumer("schema", frozenset({"*"}))
        schema = next(t["schema"] for t in generic_tools(spec, everything) if t["name"] == name)
        hit = _VALIDATORS[(id(spec), name)] = (spec, fastjsonschema.compile(schema))
    try:
        hit[1](arguments)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise InvalidRequest(str(exc.message).replace("data", "arguments", 1)) from None


class _RemoteError(CustomerContextError):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("message") or f"query_context answered {status}"))
        self.status = status
        self.code = str(body.get("code") or "query_failed")


def run_remote_query(base_url: str | None, auth_headers: dict[str, str], id_type: str, id_value: str,
                     query: str, params: JsonObject, timeout: float = 30.0) -> JsonValue:
    """Run a named query through this API's query_context route (it runs in the analytics image; the
    serving function does not), forwarding the caller's consumer key."""
    if not base_url:
        raise InvalidRequest("named queries need the API's base URL")
    path = "/v1/context/{}/{}/queries/{}".format(*(urllib.parse.quote(p, safe="") for p in (id_type, id_value, query)))
    request = urllib.request.Request(base_url + path, data=json.dumps(params).encode(), method="POST",
                                     headers={"content-type": "application/json", **auth_headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - our own API
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
        except ValueError:
            body = {}
        raise _RemoteError(exc.code, body if isinstance(body, dict) else {}) from None
    except (urllib.error.URLError, TimeoutError) as exc:
        raise _RemoteError(503, {"code": "query_unavailable",
                                 "message": f"the query route did not answer: {exc}"}) from None
