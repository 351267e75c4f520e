"""The terminal side of `python -m exporter chat`: open a model or bundle, stream one reply."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from runtimes.errors import UserError
from runtimes.generate import GenerationResult, generate
from runtimes.sampling import SamplingParams, read_generation_config
from runtimes.tokenizer import QwenTokenizer

DIM, RESET = "\033[2m", "\033[0m"


def check_text(text: str, name: str) -> None:
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        raise UserError(f"the {name} is not valid UTF-8 (it holds undecodable bytes); pass UTF-8 text")
    if name == "prompt" and not text.strip():
        raise UserError("the prompt is empty; pass the message to send, e.g. chat 'What is 12 + 30?'")


def open_session(model: str | None, bundle: str | None, max_seq_len: int | None):
    """→ (backend, tokenizer, generation_config dict)."""
    if bundle:
        directory = Path(bundle)
        if not directory.is_dir():
            raise UserError(f"bundle {bundle} does not exist; pass a directory written by python -m exporter")
        from runtimes.bundle import load_backend

        backend = load_backend(directory)  # after every check of verify --no-run
        tokenizer = QwenTokenizer(directory)
    else:
        from exporter.checkpoint import resolve_model_dir
        from runtimes.backends.reference import ReferenceBackend

        directory = resolve_model_dir(model or "tiny")
        if max_seq_len is None:
            from exporter.checkpoint import load_config

            max_seq_len = min(2048, load_config(directory).get("max_position_embeddings", 2048))
        if max_seq_len < 16:
            raise UserError("--max-seq-len must be at least 16")
        tokenizer = QwenTokenizer(directory)
        backend = ReferenceBackend.from_model(str(directory), max_seq_len=max_seq_len)
    return backend, tokenizer, read_generation_config(directory)


def stream_chat(backend, tokenizer: QwenTokenizer, generation_config: dict, prompt: str, budget: int | None,
                system: str | None, max_new_tokens: int, overrides: dict, stream: bool) -> GenerationResult:
    check_text(prompt, "prompt")
    check_text(system or "", "--system text")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    sampling = SamplingParams.from_generation_config(generation_config, thinking=budget != 0)
    sampling = replace(sampling, **{k: v for k, v in overrides.items() if v is not None})
    tty = sys.stdout.isatty()
    channel, started, held = None, False, ""  # newlines at the edges of each channel are not printed
    for event in generate(backend, tokenizer, messages, budget=budget, max_new_tokens=max_new_tokens,
                          sampling=sampling):
        if event.kind == "done":
            result = event.result
            break
        if not stream:
            continue
        if event.kind != channel:
            if channel == "reasoning":
                sys.stdout.write(RESET + "\n" if tty else "\n</think>\n")
            if event.kind == "reasoning":
                sys.stdout.write(DIM if tty else "<think>\n")
            channel, started, held = event.kind, False, ""
        text = held + event.text
        if not started:
            text = text.lstrip("\n")
            started = bool(text)
        held = text[len(text.rstrip("\n")):]
        sys.stdout.write(text[:len(text) - len(held)])
        sys.stdout.flush()
    if stream:
        if tty and channel == "reasoning":
            sys.stdout.write(RESET)
        sys.stdout.write("\n")
        cut = " (cut by budget)" if result.stopped_by_budget else ""
        print(f"[{result.reasoning_tokens} reasoning tokens{cut}, {result.content_tokens} answer tokens, "
              f"finish: {result.finish_reason}, TTFT {result.ttft_ms:.0f} ms, "
              f"decode {result.decode_tokens_per_s:.1f} tok/s]", file=sys.stderr)
    return result
