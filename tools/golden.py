"""Golden vectors for the demo apps: what the Python runtime renders, tokenizes, forces and generates.

    python -m tools.golden --model tiny --out tests/golden/tiny.json --bundle-out tests/golden/bundle

The Android and iOS cores replay these to prove they mirror the runtime (template, tokenizer,
thinking budget, greedy decoding) without reinventing it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from exporter.bundle import copy_tokenizer_files, write_manifest
from exporter.commands.common import model_argument
from exporter.output import atomic_output_dir
from runtimes.backends.reference import ReferenceBackend
from runtimes.chat import render
from runtimes.checkpoint import config_sha256, load_config, resolve_model_dir
from runtimes.eval.arithmetic import Problem
from runtimes.generate import prepare_prompt, run
from runtimes.model import ModelArgs
from runtimes.thinking import STOP_THINKING_TEXT
from runtimes.tokenizer import QwenTokenizer

CASES = (
    {"messages": [{"role": "user", "content": "What is 47 + 385?"}], "budget": None},
    {"messages": [{"role": "user", "content": "What is 47 + 385?"}], "budget": 0},
    {"messages": [{"role": "user", "content": "What is 4821 - 9377?"}], "budget": 8},
    {"messages": [{"role": "user", "content": "What is 4821 - 9377?"}], "budget": 32},
    {"messages": [{"role": "user", "content": "What is 306 * 7?"}], "budget": None},
    {"messages": [{"role": "user", "content": "What is 95 + 8? /no_think"}], "budget": None},
    # tiny never saw a system prompt; this one still leaves it thinking, so the budget cuts it
    {"messages": [{"role": "system", "content": "Answer with a number."},
                  {"role": "user", "content": "What is 6042 * 9?"}], "budget": 16},
    {"messages": [{"role": "user", "content": "What is 3 + 4?"},
                  {"role": "assistant", "content": f"<think>\n{Problem(3, '+', 4).working()}\n</think>\n\n7"},
                  {"role": "user", "content": "What is 70 - 8?"}], "budget": 64},
)


def golden_vectors(model: str = "tiny", max_new_tokens: int = 16) -> dict:
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


def write_fixture_bundle(out: Path, model: str = "tiny") -> None:
    """A small valid bundle (a 1 KB stand-in model file, the real tokenizer files and a real manifest) that the
    app cores' verifier tests tamper with, as tests/test_verify.py does with an exported one."""
    model_dir = resolve_model_dir(model)
    with atomic_output_dir(out, "bundle", overwrite=True, inputs=[model_dir]) as tmp:
        _fixture(tmp, model, model_dir)


def _fixture(out: Path, model: str, model_dir: Path) -> None:
    (out / "model.bin").write_bytes(bytes(range(256)) * 4)
    copy_tokenizer_files(model_dir, out)
    config = load_config(model_dir)
    entry = [{"name": "forward", "file": "model.bin", "inputs": [{"name": "tokens", "dtype": "int64",
                                                                   "shape": [1, "seq_len"]}],
              "outputs": [{"name": "logits", "dtype": "float32", "shape": [1, config["vocab_size"]]}]}]
    write_manifest(out, source_id=model, config_sha256=config_sha256(config), args=ModelArgs.from_config(config),
                   target="reference", backend="reference", quant={"name": "fp32", "method": "none", "bits": 32},
                   max_seq_len=256, kv_dtype="float32", kv_bytes_per_value=4, kv_layout="none (fixture)",
                   entry_points=entry, tokenizer=QwenTokenizer(out))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.golden", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    model_argument(parser)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bundle-out", type=Path, help="also write the fixture bundle the app cores verify")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.bundle_out:
        write_fixture_bundle(args.bundle_out, args.model)
        print(f"wrote {args.bundle_out}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(golden_vectors(args.model), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
