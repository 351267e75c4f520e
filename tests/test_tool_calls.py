"""Tool calls parsed out of model outputs (runtimes/tool_calls.py): the golden cases the Java and Swift cores replay
too, and parsing that never raises."""

import json
from pathlib import Path

from hypothesis import given, settings, strategies as st

from runtimes.tool_calls import ERROR_KINDS, parse_output, parsed_as_json

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


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["<think>", "</think>", "<tool_call>", "</tool_call>", '{"name": "f"', "}", "{",
                                 '"arguments": ', "[]", "\n", "x", ",", '"', "\\"]), max_size=24))
def test_any_output_parses_without_raising(parts):
    text = "".join(parts)
    parsed = parse_output(text)
    for error in parsed.errors:
        assert error.raw in text and error.message
