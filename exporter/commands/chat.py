"""`python -m exporter chat`: one reply from a model (reference backend) or a bundle (its own backend), the
reasoning streamed dimmed, then the answer."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace

from runtimes.errors import UserError

SUMMARY = "talk to a model or bundle with a thinking budget"
DIM, RESET = "\033[2m", "\033[0m"


def add_arguments(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", metavar="DIR|HUB_ID|tiny", help="a checkpoint, run on the reference backend "
                                                                  "(default: tiny)")
    which.add_argument("--bundle", metavar="DIR", help="an exported bundle, run on its own backend")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--thinking-budget", type=int, metavar="N",
                        help="tokens allowed inside <think>; past it the model is told to answer (0: no thinking; "
                             "default: unlimited)")
    budget.add_argument("--no-think", action="store_true", help="answer without thinking (same as budget 0)")
    p.add_argument("--max-new-tokens", type=int, default=256, metavar="N", help="max answer tokens (default: 256)")
    p.add_argument("--max-seq-len", type=int, metavar="N",
                   help="context for --model (default: 2048, or the model's maximum if smaller)")
    p.add_argument("--temperature", type=float, metavar="T",
                   help="0 is greedy (default: the checkpoint's generation_config.json; greedy without one)")
    p.add_argument("--top-p", type=float, metavar="P")
    p.add_argument("--top-k", type=int, metavar="K")
    p.add_argument("--min-p", type=float, metavar="P")
    p.add_argument("--seed", type=int, metavar="S", help="seed for sampling")
    p.add_argument("--system", metavar="TEXT", help="a system message")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    p.add_argument("prompt", metavar="PROMPT", help="the user message (/think and /no_think switches work)")


def run(args) -> int:
    from runtimes.sampling import SamplingParams

    overrides = {"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k, "min_p": args.min_p,
                 "seed": args.seed}
    SamplingParams(**{k: v for k, v in overrides.items() if v is not None})  # bad values fail before loading
    check_text(args.prompt, "prompt")
    check_text(args.system or "", "--system text")
    if args.max_new_tokens < 1:
        raise UserError("--max-new-tokens must be >= 1")
    backend, tokenizer, generation_config = open_session(args.model, args.bundle, args.max_seq_len)
    budget = 0 if args.no_think else args.thinking_budget
    result = stream_chat(backend, tokenizer, generation_config, args.prompt, budget=budget, system=args.system,
                         max_new_tokens=args.max_new_tokens, overrides=overrides, stream=not args.json)
    if args.json:
        fields = asdict(result)
        fields.pop("token_ids")
        print(json.dumps(fields, indent=2))
    return 0


def check_text(text: str, name: str) -> None:
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        raise UserError(f"the {name} is not valid UTF-8 (it holds undecodable bytes); pass UTF-8 text")
    if name == "prompt" and not text.strip():
        raise UserError("the prompt is empty; pass the message to send, e.g. chat 'What is 12 + 30?'")


def open_session(model: str | None, bundle: str | None, max_seq_len: int | None, special_in_user_text: bool = False):
    """→ (backend, tokenizer, generation_config dict)."""
    from pathlib import Path

    from runtimes.sampling import read_generation_config
    from runtimes.tokenizer import QwenTokenizer

    if bundle:
        from runtimes.bundle import load_backend

        directory = Path(bundle)
        if not directory.is_dir():
            raise UserError(f"bundle {bundle} does not exist; pass a directory written by python -m exporter")
        backend = load_backend(directory)  # after every check of verify --no-run
    else:
        from exporter.commands.common import need_torch

        need_torch("chat --model (the reference backend)")
        from runtimes.backends.reference import ReferenceBackend
        from runtimes.checkpoint import load_config, resolve_model_dir

        directory = resolve_model_dir(model or "tiny")
        if max_seq_len is None:
            max_seq_len = min(2048, load_config(directory).get("max_position_embeddings", 2048))
        if max_seq_len < 16:
            raise UserError("--max-seq-len must be at least 16")
        backend = ReferenceBackend.from_model(str(directory), max_seq_len=max_seq_len)
    return backend, QwenTokenizer(directory, special_in_user_text), read_generation_config(directory)


def stream_chat(backend, tokenizer, generation_config: dict, prompt: str, budget: int | None, system: str | None,
                max_new_tokens: int, overrides: dict, stream: bool):
    from runtimes.generate import generate
    from runtimes.sampling import SamplingParams

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
