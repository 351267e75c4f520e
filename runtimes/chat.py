"""The chat format: Qwen3's template rendered by our own code (the apps mirror it; tested against transformers'
apply_chat_template), a checkpoint's own template rendered in a bounded sandbox, and the /think and /no_think
soft switches."""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path
from typing import Mapping, Sequence

from runtimes.errors import UserError

Message = Mapping[str, str]
QWEN3_CHAT_TEMPLATE = Path(__file__).parent / "models" / "qwen3_chat_template.jinja"  # Qwen3's own, verbatim
SOFT_SWITCH = re.compile(r"/(no_think|think)\b")


def _is_tool_response(content: str) -> bool:
    return content.startswith("<tool_response>") and content.endswith("</tool_response>")


def split_reasoning(content: str) -> tuple[str, str]:
    """(reasoning, answer) of an assistant message that carries its <think> block inline."""
    if "</think>" not in content:
        return "", content
    answer = content.split("</think>")[-1].lstrip("\n")
    reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
    return reasoning, answer


def tojson(value) -> str:
    """JSON as transformers' chat templates write it (its `tojson` filter): UTF-8 kept, default separators."""
    return json.dumps(value, ensure_ascii=False)


def _tool_call_text(call: Mapping) -> str:
    call = call.get("function", call) if isinstance(call, Mapping) else call
    if not isinstance(call, Mapping) or not isinstance(call.get("name"), str) or "arguments" not in call:
        raise UserError(f"bad tool call {call!r}: needs a name and arguments")
    arguments = call["arguments"] if isinstance(call["arguments"], str) else tojson(call["arguments"])
    return f'<tool_call>\n{{"name": "{call["name"]}", "arguments": {arguments}}}\n</tool_call>'


def render(messages: Sequence[Message], add_generation_prompt: bool = True, enable_thinking: bool = True,
           tools: Sequence[Mapping] | None = None) -> str:
    """The prompt text Qwen3's template renders, tool definitions (`tools`, as transformers' apply_chat_template
    takes them) and assistant `tool_calls` included. Assistant turns before the last user query lose their
    reasoning, as in Qwen3."""
    if not messages:
        raise UserError("a conversation needs at least one message")
    for m in messages:
        if m.get("role") not in ("system", "user", "assistant", "tool") or not isinstance(m.get("content"), str):
            raise UserError(f"bad chat message {dict(m)!r}: needs role system|user|assistant|tool and text content")
        if m.get("tool_calls") and (m["role"] != "assistant" or not isinstance(m["tool_calls"], (list, tuple))):
            raise UserError("tool_calls belong to assistant messages, as a list")
    out = []
    if tools:
        system = messages[0]["content"] + "\n\n" if messages[0]["role"] == "system" else ""
        out.append(f"<|im_start|>system\n{system}# Tools\n\nYou may call one or more functions to assist with the "
                   "user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n"
                   "<tools>" + "".join(f"\n{tojson(tool)}" for tool in tools) + "\n</tools>\n\nFor each function "
                   "call, return a json object with function name and arguments within <tool_call></tool_call> XML "
                   'tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
                   "</tool_call><|im_end|>\n")
    elif messages[0]["role"] == "system":
        out.append(f"<|im_start|>system\n{messages[0]['content']}<|im_end|>\n")
    last_query = len(messages) - 1
    for index in range(len(messages) - 1, -1, -1):
        m = messages[index]
        if m["role"] == "user" and not _is_tool_response(m["content"]):
            last_query = index
            break
    for index, m in enumerate(messages):
        role, content = m["role"], m["content"]
        if role == "user" or (role == "system" and index > 0):
            out.append(f"<|im_start|>{role}\n{content}<|im_end|>\n")
        elif role == "assistant":
            if m.get("reasoning_content") is not None:
                reasoning = m["reasoning_content"]
            else:
                reasoning, content = split_reasoning(content)
            if index > last_query and (index == len(messages) - 1 or reasoning):
                out.append(f"<|im_start|>assistant\n<think>\n{reasoning.strip(chr(10))}\n</think>\n\n"
                           f"{content.lstrip(chr(10))}")
            else:
                out.append(f"<|im_start|>assistant\n{content}")
            for number, call in enumerate(m.get("tool_calls") or []):
                out.append(("\n" if number or content else "") + _tool_call_text(call))
            out.append("<|im_end|>\n")
        elif role == "tool":
            if index == 0 or messages[index - 1]["role"] != "tool":
                out.append("<|im_start|>user")
            out.append(f"\n<tool_response>\n{content}\n</tool_response>")
            if index == len(messages) - 1 or messages[index + 1]["role"] != "tool":
                out.append("<|im_end|>\n")
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
        if not enable_thinking:
            out.append("<think>\n\n</think>\n\n")
    return "".join(out)


# User text stays text: before rendering, every special-token string inside user and tool content gets TEXT_MARK
# (a Unicode noncharacter, meant for such internal use) after its first character, so neither the template nor the
# tokenizer can see it; encoding then cuts the text at each mark and drops it. The prompt's control tokens are only
# those the template wrote. The apps' cores do the same (ChatTemplate.userTextAsText / encodingChunks).
TEXT_MARK = "\ufdd0"


def _special_pattern(specials: Sequence[str]) -> re.Pattern:
    return re.compile("|".join(re.escape(s) for s in sorted(set(specials), key=len, reverse=True) if len(s) > 1))


def user_text_as_text(messages: Sequence[Message], specials: Sequence[str]) -> list[dict]:
    """`messages` with every special-token string in user and tool content broken by TEXT_MARK."""
    pattern = _special_pattern(specials)
    out = []
    for m in messages:
        m = dict(m)
        if m.get("role") in ("user", "tool") and isinstance(m.get("content"), str) and specials:
            m["content"] = pattern.sub(lambda match: match.group()[0] + TEXT_MARK + match.group()[1:], m["content"])
        out.append(m)
    return out


def encoding_chunks(text: str, specials: Sequence[str]) -> list[str]:
    """A rendered prompt cut where user_text_as_text marked a special-token string, the marks dropped: encoded one
    by one, no chunk holds a whole special-token string that a user wrote."""
    if TEXT_MARK not in text or not specials:
        return [text]
    marked = re.compile("|".join(re.escape(s[0] + TEXT_MARK + s[1:])
                                 for s in sorted(set(specials), key=len, reverse=True) if len(s) > 1))
    chunks, start = [], 0
    for match in marked.finditer(text):
        cut = match.start() + 1
        chunks.append(text[start:cut])
        start = cut + len(TEXT_MARK)
    chunks.append(text[start:])
    return [chunk for chunk in chunks if chunk]


def thinking_requested(messages: Sequence[Message], default: bool = True) -> bool:
    """Apply Qwen3's soft switches: the last /think or /no_think in the user turns wins."""
    mode = default
    for m in messages:
        if m["role"] == "user":
            for match in SOFT_SWITCH.finditer(m["content"]):
                mode = match.group(1) == "think"
    return mode


# A chat template is code from the checkpoint. It renders in jinja2's immutable sandbox (as transformers does), so it
# cannot reach Python objects, and within a budget, so it cannot hang or exhaust memory: at most TEMPLATE_STEPS
# Python lines (Qwen3's own template, tools included, runs a few thousand), and no string or list past TEMPLATE_SIZE
# items, whatever builds it: `*`, `**`, `+` and `~`, a filter (`center`, `indent`, `format`, ...) or a method call
# (`.ljust()`, `.format()`, ...). A number argument past TEMPLATE_SIZE is refused before the call (`center(10**12)`
# would allocate first), a result past it after; so is a rendered prompt.
TEMPLATE_STEPS = 2_000_000
TEMPLATE_SIZE = 1 << 20


class TemplateBudgetExceeded(Exception):
    pass


def _template_environment():
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from jinja2.compiler import CodeGenerator

    class BoundedCode(CodeGenerator):
        def visit_Concat(self, node, frame):  # `a ~ b ~ c`: the joined string is checked
            self.write("environment.bounded(")
            super().visit_Concat(node, frame)
            self.write(")")

    class Bounded(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "+"})
        code_generator_class = BoundedCode

        @staticmethod
        def bounded(value):
            return _bounded(value)

        @staticmethod
        def concat(pieces):  # the rendered text, refused as soon as it passes the budget
            kept, size = [], 0
            for piece in pieces:
                size += len(piece)
                kept.append(_bounded(piece) if size <= TEMPLATE_SIZE else _bounded("".join(kept) + piece))
            return "".join(kept)

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja2's own signature)
            _check_arguments(args, kwargs)
            return _bounded(super().call(__context, __obj, *args, **kwargs))

        def call_binop(self, context, operator, left, right):
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right))
            if operator == "**" and numbers and abs(left) > 1 and abs(right) * max(abs(left), 2).bit_length() > 4096:
                raise TemplateBudgetExceeded(f"{left!r} ** {right!r} is too large")
            if operator == "*" and not numbers:
                sizes = [len(v) if hasattr(v, "__len__") else abs(v) for v in (left, right)
                         if isinstance(v, (str, list, tuple, int)) and not isinstance(v, bool)]
                if len(sizes) == 2 and sizes[0] * sizes[1] > TEMPLATE_SIZE:
                    raise TemplateBudgetExceeded("a repetition builds more than a million items")
            return _bounded(super().call_binop(context, operator, left, right))

    def raise_exception(message):
        raise TemplateError(message)

    def strftime_now(fmt):
        import datetime

        return datetime.datetime.now().strftime(fmt)

    # as transformers renders chat templates: its globals and its tojson filter (UTF-8 kept, not HTML-escaped)
    env = Bounded(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env.filters["tojson"] = tojson
    env.filters = {name: _bounded_filter(f) for name, f in env.filters.items()}
    return env


def _sized(value) -> bool:
    return isinstance(value, (str, list, tuple, dict))


def _bounded(value):
    if _sized(value) and len(value) > TEMPLATE_SIZE:
        raise TemplateBudgetExceeded(f"the template builds a {type(value).__name__} of {len(value)} items, more than "
                                     f"{TEMPLATE_SIZE}")
    return value


def _check_arguments(args, kwargs) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > TEMPLATE_SIZE:
            raise TemplateBudgetExceeded(f"the template passes {value} to a filter or method, more than "
                                         f"{TEMPLATE_SIZE}")


def _bounded_filter(function):
    """A jinja filter whose number arguments and result are held to TEMPLATE_SIZE (the first argument is the value
    filtered, the template's own: a long user message is the context's business, not the budget's)."""
    skip = 2 if hasattr(function, "jinja_pass_arg") else 1  # pass_context & co. take the context first

    @functools.wraps(function)  # (keeps jinja_pass_arg, so jinja passes the wrapper what it passed the filter)
    def bounded(*args, **kwargs):
        _check_arguments(args[skip:], kwargs)
        return _bounded(function(*args, **kwargs))

    return bounded


def render_template(source: str, steps: int = TEMPLATE_STEPS, **context) -> str:
    """Render a checkpoint's jinja chat template with `context`, sandboxed and bounded (see TEMPLATE_STEPS).
    Raises TemplateBudgetExceeded past the budget; jinja2's own errors for broken templates."""
    template = _template_environment().from_string(source)
    left = [steps]

    def count(frame, event, arg):
        left[0] -= 1
        if left[0] < 0:
            raise TemplateBudgetExceeded(f"rendering ran past {steps} steps")
        return count

    previous = sys.gettrace()
    sys.settrace(count)
    try:
        return template.render(**context)
    finally:
        sys.settrace(previous)
