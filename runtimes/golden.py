"""Golden vectors for the demo apps: what the Python runtime renders, tokenizes, forces and generates.

    python -m runtimes.golden --model tiny --out tests/golden/tiny.json

The Android and iOS cores replay these to prove they mirror the runtime (template, tokenizer,
thinking budget, greedy decoding) without reinventing it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from runtimes.thinking import STOP_THINKING_TEXT

CASES = (
    {"messages": [{"role": "user", "content": "What is 47 + 385?"}], "budget": None},
    {"messages": [{"role": "user", "content": "What is 47 + 385?"}], "budget": 0},
    {"messages": [{"role": "user", "content": "What is 4821 - 9377?"}], "budget": 8},
    {"messages": [{"role": "user", "content": "What is 4821 - 9377?"}], "budget": 32},
    {"messages": [{"role": "user", "content": "What is 306 * 7?"}], "budget": None},
    {"messages": [{"role": "user", "content": "What is 95 + 8? /no_think"}], "budget": None},
    {"messages": [{"role": "system", "content": "You are a calculator."},
                  {"role": "user", "content": "What is 6 * 9?"}], "budget": 16},
    {"messages": [{"role": "user", "content": "What is 3 + 4?"},
                  {"role": "assistant", "content": "<think>\nones 3+4+0=7 c0 r7\nanswer 7\n</think>\n\n7"},
                  {"role": "user", "content": "What is 70 - 8?"}], "budget": 64},
)


def golden_vectors(model: str = "tiny", max_new_tokens: int = 16) -> dict:
    from exporter.checkpoint import resolve_model_dir
    from runtimes.backends.reference import ReferenceBackend
    from runtimes.chat import render
    from runtimes.generate import prepare_prompt, run
    from runtimes.tokenizer import QwenTokenizer

    model_dir = resolve_model_dir(model)
    tokenizer = QwenTokenizer(model_dir)
    backend = ReferenceBackend.from_model(str(model_dir), max_seq_len=512)
    cases = []
    for case in CASES:
        ids, thinking = prepare_prompt(tokenizer, case["messages"], case["budget"])
        result = run(backend, tokenizer, case["messages"], budget=case["budget"], max_new_tokens=max_new_tokens)
        cases.append({
            "messages": case["messages"], "budget": case["budget"], "thinking": thinking,
            "prompt_text": render(case["messages"], enable_thinking=thinking), "prompt_ids": ids,
            "generated_ids": result.token_ids, "reasoning": result.reasoning, "content": result.content,
            "reasoning_tokens": result.reasoning_tokens, "stopped_by_budget": result.stopped_by_budget,
            "finish_reason": result.finish_reason,
        })
    special = tokenizer.special
    return {
        "model": model, "decoding": "greedy", "max_new_tokens": max_new_tokens,
        "stop_thinking_text": STOP_THINKING_TEXT, "stop_thinking_ids": tokenizer.encode(STOP_THINKING_TEXT),
        "special_ids": {"im_start": special.im_start, "im_end": special.im_end, "think_open": special.think_open,
                        "think_close": special.think_close, "endoftext": special.endoftext},
        "cases": cases,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(golden_vectors(args.model), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
