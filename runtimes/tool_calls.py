"""Qwen3's tool calls read out of a model's output: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks
after the thinking. The Java and Swift cores mirror this (tests/golden/tool_calls.json holds the cases all three
replay).

The rules, the same in every language:
- Reasoning is the text inside `<think>`...`</think>` (a `</think>` without `<think>` closes thinking the template
  opened; a `<think>` never closed was cut short: all after it is reasoning). Nothing in it is a call.
- After it, each `<tool_call>` ... `</tool_call>` holds one strict JSON object (RFC 8259: no NaN, no duplicate
  keys) with a non-empty string "name" and an object "arguments" (absent means {}).
- A block that breaks a rule is not a call: it stays in the content, verbatim, and an error names its kind
  (ERROR_KINDS) so the caller sees it. A block with no `</tool_call>` before the next `<tool_call>` or the end is
  "unclosed".
- Content is what remains with the calls taken out, trimmed of spaces, tabs and line breaks at both ends.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
TRIMMED = " \t\r\n"
ERROR_KINDS = {
    "unclosed": "a <tool_call> block has no </tool_call>",
    "invalid_json": "a tool call is not valid JSON",
    "not_object": "a tool call is not a JSON object",
    "missing_name": "a tool call has no name (a non-empty string)",
    "bad_arguments": "a tool call's arguments are not a JSON object",
}


@dataclass
class ToolCall:
    name: str
    arguments: dict


@dataclass
class ToolCallError:
    kind: str  # one of ERROR_KINDS
    raw: str  # the block as the model wrote it (also left in the content)

    @property
    def message(self) -> str:
        return f"{ERROR_KINDS[self.kind]}: {self.raw[:200]!r}"


@dataclass
class ParsedOutput:
    content: str
    reasoning: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    errors: list[ToolCallError] = field(default_factory=list)


class _NotStrictJson(ValueError):
    pass


def _unique_keys(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _NotStrictJson("duplicate key")
    return dict(pairs)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotStrictJson(f"number {text} is beyond a double")
    return value


def _reject_constant(name: str):
    raise _NotStrictJson(f"{name} is not JSON")


MAX_DEPTH = 128  # levels of nesting, as the Java and Swift cores' JSON readers allow


def _check_nesting_and_text(value, depth: int = 1) -> None:
    if isinstance(value, (dict, list)):
        if depth > MAX_DEPTH:
            raise _NotStrictJson(f"nested deeper than {MAX_DEPTH} levels")
        for item in (value.items() if isinstance(value, dict) else enumerate(value)):
            for part in item:
                _check_nesting_and_text(part, depth + 1)
    elif isinstance(value, str) and any("\ud800" <= ch <= "\udfff" for ch in value):
        raise _NotStrictJson("a lone surrogate is not text")


def strict_json(text: str):
    """RFC 8259 JSON, as the apps' cores read it: NaN, Infinity, numbers past a double, duplicate keys, lone
    surrogates and more than MAX_DEPTH levels refused. Raises ValueError."""
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys, parse_float=_finite, parse_constant=_reject_constant)
    except RecursionError:
        raise _NotStrictJson("nested too deeply") from None
    _check_nesting_and_text(value)
    return value


def _call(body: str) -> ToolCall | str:
    """The call in one block's body, or the kind of error."""
    try:
        value = strict_json(body.strip(TRIMMED))
    except ValueError:
        return "invalid_json"
    if not isinstance(value, dict):
        return "not_object"
    name = value.get("name")
    if not isinstance(name, str) or not name:
        return "missing_name"
    arguments = value.get("arguments", {})
    if not isinstance(arguments, dict):
        return "bad_arguments"
    return ToolCall(name, arguments)


def split_thinking(text: str) -> tuple[str, str]:
    """(reasoning, the rest) of a raw output."""
    close = text.find(THINK_CLOSE)
    if close >= 0:
        before = text[:close]
        opened = before.rfind(THINK_OPEN)
        reasoning = before[opened + len(THINK_OPEN):] if opened >= 0 else before
        rest = (before[:opened] if opened >= 0 else "") + text[close + len(THINK_CLOSE):]
        return reasoning.strip("\n"), rest
    opened = text.find(THINK_OPEN)
    if opened >= 0:
        return text[opened + len(THINK_OPEN):].strip("\n"), text[:opened]
    return "", text


def parse_output(text: str, reasoning: str | None = None) -> ParsedOutput:
    """Content, reasoning, tool calls and errors of a model's raw output. With `reasoning` given (generate() already
    split the thinking off), `text` is the answer alone and is not searched for a think block."""
    if reasoning is None:
        reasoning, text = split_thinking(text)
    pieces, calls, errors = [], [], []
    position = 0
    while True:
        start = text.find(CALL_OPEN, position)
        if start < 0:
            pieces.append(text[position:])
            break
        pieces.append(text[position:start])
        body_start = start + len(CALL_OPEN)
        end = text.find(CALL_CLOSE, body_start)
        reopened = text.find(CALL_OPEN, body_start)
        if end < 0 or 0 <= reopened < end:
            stop = reopened if reopened >= 0 else len(text)
            errors.append(ToolCallError("unclosed", text[start:stop]))
            pieces.append(text[start:stop])
            position = stop
            continue
        after = end + len(CALL_CLOSE)
        call = _call(text[body_start:end])
        if isinstance(call, ToolCall):
            calls.append(call)
        else:
            errors.append(ToolCallError(call, text[start:after]))
            pieces.append(text[start:after])
        position = after
    return ParsedOutput("".join(pieces).strip(TRIMMED), reasoning, calls, errors)


def parsed_as_json(parsed: ParsedOutput) -> dict:
    """The shape tests/golden/tool_calls.json and `chat --json` use."""
    return {"content": parsed.content, "reasoning": parsed.reasoning,
            "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in parsed.tool_calls],
            "errors": [{"kind": e.kind, "raw": e.raw} for e in parsed.errors]}
