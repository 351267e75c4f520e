"""Our Qwen3 chat template against the jinja template shipped in tokenizer_config.json."""

import json
import random

import pytest
from transformers import AutoTokenizer

from runtimes.chat import render, split_reasoning, thinking_requested
from runtimes.checkpoint import resolve_model_dir
from runtimes.errors import UserError
from runtimes.tokenizer import QwenTokenizer

WORDS = ["What is 12 + 30?", "hello", "  spaced  ", "line one\nline two", "émoji 🚀 text", "/think why?",
         "tell me /no_think", "<tool_response>\nok\n</tool_response>", "", "x" * 50]


HF = AutoTokenizer.from_pretrained(resolve_model_dir("tiny"))  # tiny ships Qwen3's template verbatim
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city, °C",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string", "description": "e.g. Zürich"}},
                                                          "required": ["city"]}}},
         {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {
             "a": {"type": "number"}, "b": {"type": "number"}}}}}]


def jinja_render(messages, tools=None, **kwargs):
    """The reference: transformers' apply_chat_template with the checkpoint's own template."""
    return HF.apply_chat_template(messages, tools=tools, tokenize=False, **kwargs)


def tool_conversations():
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}
    return [
        [{"role": "user", "content": "Weather in Zürich?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"}],
        [{"role": "user", "content": "Weather in Zürich?"}, {"role": "assistant", "content": "", "tool_calls": [call]},
         {"role": "tool", "content": json.dumps({"temp": 21})}],
        [{"role": "user", "content": "Two calls"},
         {"role": "assistant", "content": "<think>\nboth\n</think>\n\nCalling.", "tool_calls": [
             call, {"function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}]},
         {"role": "tool", "content": "21"}, {"role": "tool", "content": "3"},
         {"role": "assistant", "content": "It is 21 °C; 1 + 2 = 3."}, {"role": "user", "content": "thanks"}],
    ]


def assistant(rng):
    kind = rng.randrange(4)
    answer = rng.choice(["42", "Sure.\n\nHere you go.", "\nleading newline", "done"])
    if kind == 0:
        return {"role": "assistant", "content": answer}
    if kind == 1:
        return {"role": "assistant", "content": f"<think>\nstep {rng.randrange(9)}\n</think>\n\n{answer}"}
    if kind == 2:
        return {"role": "assistant", "content": answer, "reasoning_content": "\nexplicit reasoning\n"}
    return {"role": "assistant", "content": f"<think>\n\n</think>\n\n{answer}"}


def conversations(n=40, seed=0):
    rng = random.Random(seed)
    out = [
        [{"role": "user", "content": "What is 2 + 2?"}],
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hi"}],
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "<think>\nr1\n</think>\n\nb"},
         {"role": "user", "content": "c"}],
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>\nkeep me\n</think>\n\nans"}],
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
         {"role": "tool", "content": "result 1"}, {"role": "tool", "content": "result 2"}],
    ]
    while len(out) < n:
        conv = [{"role": "system", "content": rng.choice(WORDS)}] if rng.random() < 0.4 else []
        for turn in range(rng.randint(1, 4)):
            conv.append({"role": "user", "content": rng.choice(WORDS)})
            if turn < 3 and rng.random() < 0.8:
                conv.append(assistant(rng))
        if rng.random() < 0.2:
            conv.append({"role": "system", "content": "mid-conversation system"})
            conv.append({"role": "user", "content": "and now?"})
        out.append(conv)
    return out


@pytest.mark.parametrize("enable_thinking", [True, False, None])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_matches_jinja_on_many_conversations(enable_thinking, add_generation_prompt):
    convs = conversations()
    assert len(convs) >= 20
    for conv in convs:
        kwargs = {"add_generation_prompt": add_generation_prompt}
        if enable_thinking is not None:
            kwargs["enable_thinking"] = enable_thinking
        for tools in (None, TOOLS):
            expected = jinja_render(conv, tools=tools, **kwargs)
            ours = render(conv, add_generation_prompt=add_generation_prompt,
                          enable_thinking=enable_thinking is not False, tools=tools)
            assert ours == expected, conv


@pytest.mark.parametrize("enable_thinking", [True, False])
def test_tools_and_tool_calls_match_transformers(enable_thinking):
    for conv in tool_conversations():
        for tools in (None, TOOLS):
            expected = jinja_render(conv, tools=tools, add_generation_prompt=True, enable_thinking=enable_thinking)
            assert render(conv, enable_thinking=enable_thinking, tools=tools) == expected, conv


def test_a_checkpoints_own_template_is_the_one_rendered(tmp_path):
    """A Qwen3 variant with another template (here: a terse one) gets its own rendering, not Qwen3's."""
    import shutil

    shutil.copytree(resolve_model_dir("tiny"), tmp_path / "m")
    config = json.loads((tmp_path / "m" / "tokenizer_config.json").read_text())
    config["chat_template"] = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                               "{% endfor %}{% if tools %}TOOLS={{ tools | tojson }}{% endif %}"
                               "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    (tmp_path / "m" / "tokenizer_config.json").write_text(json.dumps(config))
    ours, qwen = QwenTokenizer(tmp_path / "m"), QwenTokenizer(resolve_model_dir("tiny"))
    conv = [{"role": "user", "content": "Zürich?"}]
    assert ours.own_template and not qwen.own_template
    assert ours.render(conv, tools=TOOLS[:1]) == HF_own(tmp_path / "m", conv, TOOLS[:1])
    assert qwen.render(conv) == render(conv)


def HF_own(directory, conv, tools):
    return AutoTokenizer.from_pretrained(directory).apply_chat_template(conv, tools=tools, tokenize=False,
                                                                        add_generation_prompt=True)



def test_non_thinking_renders_the_empty_think_block():
    text = render([{"role": "user", "content": "hi"}], enable_thinking=False)
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_history_reasoning_is_dropped_but_the_last_turn_keeps_it():
    conv = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "<think>\nold\n</think>\n\nb"},
            {"role": "user", "content": "c"}, {"role": "assistant", "content": "<think>\nnew\n</think>\n\nd"}]
    text = render(conv, add_generation_prompt=False)
    assert "old" not in text and "<think>\nnew\n</think>\n\nd" in text


@pytest.mark.parametrize("contents, default, expected", [
    (["plain"], True, True),
    (["plain"], False, False),
    (["please /no_think"], True, False),
    (["/no_think then /think"], False, True),
    (["/think", "later /no_think"], True, False),
    (["/no_think", "later /think"], False, True),
    (["/no_thinking is not a switch"], True, True),
])
def test_soft_switches_last_one_wins(contents, default, expected):
    messages = [{"role": "user", "content": c} for c in contents]
    assert thinking_requested(messages, default) is expected


def test_split_reasoning():
    assert split_reasoning("<think>\nr\n</think>\n\nanswer") == ("r", "answer")
    assert split_reasoning("no think") == ("", "no think")


def test_bad_messages():
    with pytest.raises(UserError):
        render([])
    with pytest.raises(UserError, match="role"):
        render([{"role": "robot", "content": "x"}])
    with pytest.raises(UserError, match="bad tool call"):
        render([{"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": {}}}]}])
