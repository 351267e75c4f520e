"""Our Qwen3 chat template against the jinja template shipped in tokenizer_config.json."""

import random

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from exporter.qwen_tokenizer import CHAT_TEMPLATE
from runtimes.chat import render, split_reasoning, thinking_requested
from runtimes.errors import UserError

WORDS = ["What is 12 + 30?", "hello", "  spaced  ", "line one\nline two", "émoji 🚀 text", "/think why?",
         "tell me /no_think", "<tool_response>\nok\n</tool_response>", "", "x" * 50]


def jinja_render(messages, **kwargs):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(CHAT_TEMPLATE).render(messages=messages, **kwargs)


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
        expected = jinja_render(conv, **kwargs)
        ours = render(conv, add_generation_prompt=add_generation_prompt,
                      enable_thinking=enable_thinking is not False)
        assert ours == expected, conv


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
