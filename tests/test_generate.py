"""generate() and the thinking budget, driven by a scripted backend so every token is known."""

import numpy as np
import pytest

from runtimes.errors import UserError
from runtimes.generate import run
from runtimes.sampling import Sampler, SamplingParams
from runtimes.thinking import STOP_THINKING_TEXT
from runtimes.tokenizer import StreamDecoder


class ScriptedBackend:
    """Its logits always favour the next token of `script` (then im_end); records what it was fed."""
    name = "scripted"

    def __init__(self, script, vocab, im_end, max_seq_len=512):
        self.script, self.vocab, self.im_end, self.max_seq_len = list(script), vocab, im_end, max_seq_len
        self.vocab_size = vocab
        self.position, self.fed, self.cursor = 0, [], 0

    def _logits(self):
        logits = np.zeros(self.vocab, dtype=np.float32)
        token = self.script[self.cursor] if self.cursor < len(self.script) else self.im_end
        logits[token] = 10.0
        self.cursor += 1
        return logits

    def prefill(self, ids):
        self.position += len(ids)
        return self._logits()

    def decode(self, token):
        self.fed.append(token)
        self.position += 1
        return self._logits()

    def reset(self):
        self.position, self.fed, self.cursor = 0, [], 0


@pytest.fixture(scope="module")
def tok(tiny_tokenizer):
    return tiny_tokenizer


def script(tok, reasoning: str, answer: str, close=True):
    s = tok.special
    return ([s.think_open] + tok.encode(reasoning) + ([s.think_close] + tok.encode("\n\n") if close else [])
            + tok.encode(answer))


def backend_for(tok, ids, **kw):
    return ScriptedBackend(ids, tok.vocab_size, tok.special.im_end, **kw)


MESSAGES = [{"role": "user", "content": "What is 1 + 2?"}]


def test_unlimited_thinking_ends_by_the_models_own_close(tok):
    b = backend_for(tok, script(tok, "\nones1+2=03 answer3\n", "3"))
    r = run(b, tok, MESSAGES, budget=None)
    assert r.stopped_by_budget is False and r.forced_tokens == 0
    assert r.reasoning == "ones1+2=03 answer3" and r.content == "3"
    assert r.finish_reason == "stop" and r.thinking


def test_budget_forces_the_stop_text_after_exactly_budget_tokens(tok):
    long_reasoning = "\n" + "ones1+2=03 " * 10
    b = backend_for(tok, script(tok, long_reasoning, "3", close=False))
    stop_ids = tok.encode(STOP_THINKING_TEXT)
    r = run(b, tok, MESSAGES, budget=8, max_new_tokens=4)
    assert r.stopped_by_budget and r.reasoning_tokens == 8 and r.forced_tokens == len(stop_ids) - 1
    # what the model saw: <think>, 8 of its own tokens, then the stop text token by token
    generated = r.token_ids
    assert generated[0] == tok.special.think_open
    assert generated[9:9 + len(stop_ids)] == stop_ids
    assert tok.special.think_close in stop_ids
    assert r.reasoning.endswith("based on the thinking directly now.")
    # after the forced text the answer runs under its own max_new_tokens
    assert r.content_tokens == 4 and r.finish_reason == "length"


def test_budget_zero_and_no_think_switch_mean_no_reasoning(tok):
    for budget, messages in ((0, MESSAGES), (None, [{"role": "user", "content": "What is 1 + 2? /no_think"}])):
        b = backend_for(tok, tok.encode("3"))
        r = run(b, tok, messages, budget=budget)
        assert not r.thinking and r.reasoning == "" and r.reasoning_tokens == 0 and r.content == "3"


def test_context_limit_is_a_finish_reason(tok):
    b = backend_for(tok, script(tok, "\n" + "x " * 400, "3", close=False), max_seq_len=60)
    r = run(b, tok, MESSAGES, budget=None)
    assert r.finish_reason == "context" and b.position == 60


@pytest.mark.parametrize("kwargs, message", [
    ({"budget": -1}, "thinking budget must be >= 0"),
    ({"max_new_tokens": 0}, "max-new-tokens"),
])
def test_bad_arguments(tok, kwargs, message):
    with pytest.raises(UserError, match=message):
        run(backend_for(tok, []), tok, MESSAGES, **kwargs)


def test_prompt_longer_than_context(tok):
    with pytest.raises(UserError, match="context holds 10"):
        run(backend_for(tok, [], max_seq_len=10), tok, MESSAGES)


def test_stream_decoder_never_emits_half_a_character(tok):
    text = "naïve 🚀 中文 ok"
    ids = tok.encode(text)
    assert len(ids) > len(text.split())  # the tiny vocabulary splits these characters into bytes
    decoder = StreamDecoder(tok)
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == text


def test_sampling():
    logits = np.array([1.0, 3.0, 2.0, 0.5])
    assert Sampler(SamplingParams())(logits, []) == 1
    assert Sampler(SamplingParams(temperature=1.0, top_k=1, seed=3))(logits, []) == 1
    draws = lambda seed: [Sampler(SamplingParams(temperature=1.0, seed=seed))(logits, []) for _ in range(1)]
    a = Sampler(SamplingParams(temperature=1.0, seed=7))
    b = Sampler(SamplingParams(temperature=1.0, seed=7))
    assert [a(logits, []) for _ in range(20)] == [b(logits, []) for _ in range(20)]
    # top_p 0.5 keeps only the most likely token here
    assert {Sampler(SamplingParams(temperature=1.0, top_p=0.5, seed=s))(logits, []) for s in range(20)} == {1}
    # min_p drops tokens far below the best
    assert 3 not in {Sampler(SamplingParams(temperature=1.0, min_p=0.2, seed=s))(logits, []) for s in range(50)}
    # a strong repetition penalty moves greedy off a token already used
    assert Sampler(SamplingParams(repetition_penalty=10.0))(logits, [1]) == 2
    with pytest.raises(UserError):
        SamplingParams(top_p=0)
