"""Generation over any backend: chat template, thinking budget, sampling, streamed events and stats.

    for event in generate(backend, tokenizer, [{"role": "user", "content": "What is 2 + 2?"}], budget=32):
        print(event.kind, event.text)
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

from runtimes.backends import Backend
from runtimes.chat import Message, thinking_requested
from runtimes.errors import UserError
from runtimes.sampling import Sampler, SamplingParams
from runtimes.thinking import STOP_THINKING_TEXT, ThinkingBudget
from runtimes.tokenizer import QwenTokenizer, StreamDecoder


@dataclass
class GenerationResult:
    reasoning: str
    content: str
    prompt_tokens: int
    reasoning_tokens: int  # generated inside <think>, the forced stop text not counted
    forced_tokens: int  # stop-thinking tokens fed by the budget
    content_tokens: int
    stopped_by_budget: bool
    thinking: bool
    finish_reason: str  # "stop" (<|im_end|>/eos), "length" (max_new_tokens), "context" (cache full)
    ttft_ms: float
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    peak_memory_mb: float
    token_ids: list[int] = field(default_factory=list)  # every token after the prompt, forced ones included
    sampling: SamplingParams | None = None  # the parameters in effect, with the seed drawn when none was given


@dataclass
class Event:
    kind: str  # "reasoning" | "content" | "done"
    text: str = ""
    token_id: int | None = None
    forced: bool = False
    result: GenerationResult | None = None


def peak_rss_bytes() -> int:
    """This process's peak resident memory. On Linux from VmHWM, which restarts at exec: getrusage's ru_maxrss
    survives exec, so a child started from a large parent would report the parent's peak."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def thinking_mode(messages: Sequence[Message], budget: int | None, enable_thinking: bool = True) -> bool:
    """Whether this turn thinks. The hard switch (enable_thinking=False, --no-think, budget 0) wins over the soft
    ones, as in Qwen's template, where it closes the think block in the prompt whatever the text asks; with thinking
    enabled, the last /think or /no_think in the user turns decides."""
    if budget is not None and budget < 0:
        raise UserError(f"thinking budget must be >= 0 (0 turns thinking off), got {budget}")
    return enable_thinking and budget != 0 and thinking_requested(messages)


def prepare_prompt(tokenizer: QwenTokenizer, messages: Sequence[Message], budget: int | None,
                   enable_thinking: bool = True, tools=None) -> tuple[list[int], bool]:
    """(prompt ids, thinking?) — see thinking_mode."""
    thinking = thinking_mode(messages, budget, enable_thinking)
    return tokenizer.encode_conversation(messages, enable_thinking=thinking, tools=tools), thinking


def generate(backend: Backend, tokenizer: QwenTokenizer, messages: Sequence[Message], budget: int | None = None,
             max_new_tokens: int = 256, sampling: SamplingParams | None = None,
             enable_thinking: bool = True, tools=None) -> Iterator[Event]:
    """Stream reasoning and content events, then a `done` event with the result and stats.

    `budget`: tokens allowed inside <think> (None: unlimited, 0: no thinking). `max_new_tokens`
    limits the answer after </think>; the thinking is limited by its budget and the context. `sampling`: None is
    greedy; SamplingParams.for_mode(generation_config, thinking_mode(...)) gives a checkpoint's defaults.
    """
    if max_new_tokens < 1:
        raise UserError("--max-new-tokens must be >= 1")
    special = tokenizer.special
    prompt, thinking = prepare_prompt(tokenizer, messages, budget, enable_thinking, tools)
    stop_thinking = tokenizer.encode(STOP_THINKING_TEXT)
    past = [i for i in (*prompt, *stop_thinking, *special.stop) if not 0 <= i < backend.vocab_size]
    if past:  # a tokenizer that does not belong to the model: never index past its embedding
        raise UserError(f"token id {past[0]} is past the model's {backend.vocab_size} embedding rows; the tokenizer "
                        "does not belong to this model")
    if len(prompt) >= backend.max_seq_len:
        raise UserError(f"the prompt is {len(prompt)} tokens but the context holds {backend.max_seq_len}; "
                        "shorten it or export with a larger --max-seq-len")
    sample = Sampler(sampling or SamplingParams())
    in_effect = replace(sample.params, seed=sample.seed)
    controller = ThinkingBudget(budget if thinking else None, special.think_open, special.think_close,
                                stop_thinking)
    if not thinking:
        controller.done = True  # the prompt already holds the empty think block
    decoders = {"reasoning": StreamDecoder(tokenizer), "content": StreamDecoder(tokenizer)}
    texts = {"reasoning": [], "content": []}
    counts = {"reasoning": 0, "content": 0, "forced": 0}
    generated: list[int] = []

    backend.reset()
    start = time.perf_counter()
    logits = backend.prefill(prompt)
    prefill_s = time.perf_counter() - start
    first_token_at = None
    finish = "context"
    while backend.position < backend.max_seq_len:
        forced = controller.forced_token()
        token = forced if forced is not None else sample(logits, generated, prompt)
        if first_token_at is None:
            first_token_at = time.perf_counter()
        generated.append(token)
        was_inside = controller.inside
        controller.observe(token, forced is not None)
        if forced is None and token in special.stop:
            finish = "stop"
            break
        if token not in (special.think_open, special.think_close):
            channel = "reasoning" if was_inside else "content"
            if forced is not None:
                counts["forced"] += 1
            else:
                counts[channel] += 1
            piece = decoders[channel].push(token)
            texts[channel].append(piece)
            yield Event(channel, piece, token, forced is not None)
        if counts["content"] >= max_new_tokens:
            finish = "length"
            break
        logits = backend.decode(token)
    end = time.perf_counter()
    for channel, decoder in decoders.items():
        texts[channel].append(decoder.flush())
    decode_steps = max(len(generated) - 1, 0)
    result = GenerationResult(
        reasoning="".join(texts["reasoning"]).strip("\n"),
        content="".join(texts["content"]).lstrip("\n").rstrip(),
        prompt_tokens=len(prompt), reasoning_tokens=controller.generated, forced_tokens=counts["forced"],
        content_tokens=counts["content"], stopped_by_budget=controller.stopped_by_budget, thinking=thinking,
        finish_reason=finish, ttft_ms=1000 * ((first_token_at or end) - start),
        prefill_tokens_per_s=len(prompt) / prefill_s if prefill_s else 0.0,
        decode_tokens_per_s=decode_steps / (end - first_token_at) if first_token_at and end > first_token_at else 0.0,
        peak_memory_mb=peak_rss_bytes() / (1 << 20), token_ids=generated, sampling=in_effect,
    )
    yield Event("done", result=result)


def run(backend: Backend, tokenizer: QwenTokenizer, messages: Sequence[Message], **kwargs) -> GenerationResult:
    """generate() to completion → the result."""
    for event in generate(backend, tokenizer, messages, **kwargs):
        if event.kind == "done":
            return event.result
    raise AssertionError("generate() ended without a done event")
