"""Conversations as OpenAI's chat API writes them (messages with tool calls and tool results, function lists),
checked and turned into the runtime's messages: shared by `serve` (each request) and `chat` (--messages, --tools)."""

from __future__ import annotations

import json

from runtimes.errors import UserError

ROLES = ("system", "developer", "user", "assistant", "tool")


class InvalidMessages(UserError):
    """A message or tool that is not in OpenAI's shape; `param` is where (messages[2].content)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def _content(value, where: str, allow_null: bool) -> str:
    if value is None and allow_null:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidMessages(f"{where}.content parts must be {{\"type\": \"text\", \"text\": ...}}; "
                                      "this model reads text only", f"{where}.content")
            texts.append(part["text"])
        return "".join(texts)
    raise InvalidMessages(f"{where}.content must be a string or a list of text parts", f"{where}.content")


def _tool_call(call, where: str) -> dict:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise InvalidMessages(f"{where} must be {{\"type\": \"function\", \"function\": {{\"name\": ..., "
                              "\"arguments\": ...}}}", where)
    arguments = function.get("arguments", "{}")
    if isinstance(arguments, str):
        try:
            json.loads(arguments)
        except ValueError:
            raise InvalidMessages(f"{where}.function.arguments is not JSON", f"{where}.function.arguments") from None
    elif not isinstance(arguments, dict):
        raise InvalidMessages(f"{where}.function.arguments must be a JSON string or object",
                              f"{where}.function.arguments")
    return {"type": "function", "function": {"name": function["name"], "arguments": arguments}}


def messages_from_openai(value) -> list[dict]:
    """OpenAI chat messages → the runtime's (role, content, reasoning_content, tool_calls)."""
    if not isinstance(value, list) or not value:
        raise InvalidMessages("messages must be a non-empty list of {\"role\": ..., \"content\": ...}", "messages")
    out = []
    for index, m in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise InvalidMessages(f"{where} needs a role: one of {', '.join(ROLES)}", f"{where}.role")
        role = "system" if m["role"] == "developer" else m["role"]
        message = {"role": role, "content": _content(m.get("content"), where, allow_null=role == "assistant")}
        if role == "assistant":
            if m.get("reasoning_content") is not None:
                if not isinstance(m["reasoning_content"], str):
                    raise InvalidMessages(f"{where}.reasoning_content must be a string",
                                          f"{where}.reasoning_content")
                message["reasoning_content"] = m["reasoning_content"]
            calls = m.get("tool_calls")
            if calls is not None:
                if not isinstance(calls, list):
                    raise InvalidMessages(f"{where}.tool_calls must be a list", f"{where}.tool_calls")
                message["tool_calls"] = [_tool_call(c, f"{where}.tool_calls[{i}]") for i, c in enumerate(calls)]
        elif m.get("tool_calls"):
            raise InvalidMessages(f"{where}: only assistant messages carry tool_calls", f"{where}.tool_calls")
        out.append(message)
    return out


def check_tools(value, param: str = "tools") -> list[dict] | None:
    """An OpenAI-style function list: [{"type": "function", "function": {"name": ..., ...}}]. Returned as given
    (Qwen3's template writes each tool as JSON)."""
    if value is None or value == []:
        return None
    if not isinstance(value, list):
        raise InvalidMessages(f"{param} must be a list of {{\"type\": \"function\", \"function\": "
                              "{\"name\": ...}}", param)
    for index, tool in enumerate(value):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict) \
                or not isinstance(function.get("name"), str) or not function["name"]:
            raise InvalidMessages(f"{param}[{index}] must be {{\"type\": \"function\", \"function\": "
                                  "{\"name\": ..., \"description\": ..., \"parameters\": {...}}}",
                                  f"{param}[{index}]")
        if function.get("parameters") is not None and not isinstance(function["parameters"], dict):
            raise InvalidMessages(f"{param}[{index}].function.parameters must be a JSON Schema object",
                                  f"{param}[{index}].function.parameters")
    return value
