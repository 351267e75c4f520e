"""Tool calls parsed out of model outputs (runtimes/tool_calls.py): the golden cases the Java and Swift cores replay
too, and parsing that never raises."""

import json
from pathlib import Path

from hypothesis import given, settings, strategies as st

from runtimes.tool_calls import ERROR_KINDS, TRIMMED, parse_output, parsed_as_json

GOLDEN = Path(__file__).parent / "golden" / "tool_calls.json"


def test_every_golden_case_parses_as_written():
    cases = json.loads(GOLDEN.read_text())["cases"]
    assert len(cases) >= 12
    assert sum(bool(c["errors"]) for c in cases) >= 5
    for case in cases:
        expected = {key: case[key] for key in ("content", "reasoning", "tool_calls", "errors")}
        assert parsed_as_json(parse_output(case["output"])) == expected, case["name"]
        assert {e["kind"] for e in case["errors"]} <= set(ERROR_KINDS)


def test_reasoning_given_apart_is_not_searched_again():
    parsed = parse_output('<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>', reasoning="thought")
    assert parsed.reasoning == "thought" and [c.name for c in parsed.tool_calls] == ["f"]
    assert parse_output("<think>x</think>y", reasoning="").content == "<think>x</think>y"


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(["<think>", "</think>", "<tool_call>", "</tool_call>", '{"name": "f"', "}", "{",
                                 '"arguments": ', "[]", "\n", "x", ",", '"', "\\"]), max_size=24))
def test_any_output_parses_without_raising(parts):
    parsed = parse_output("".join(parts))
    for error in parsed.errors:  # every malformed block stays where the caller sees it
        assert error.raw.strip(TRIMMED) in parsed.content and error.message


def test_nesting_is_bounded_as_the_apps_cores_read_json():
    """128 levels, as Json.MAX_DEPTH (Java) and JSON.maxDepth (Swift); the golden file cannot hold such a case
    itself, since its own nesting would pass their bound."""
    def call(levels):
        return ('<tool_call>{"name": "f", "arguments": ' + '{"a": ' * (levels - 1) + "1" + "}" * (levels - 1)
                + "}</tool_call>")

    assert parse_output(call(128)).tool_calls and not parse_output(call(128)).errors
    assert [e.kind for e in parse_output(call(129)).errors] == ["invalid_json"]
