"""Golden vectors for the demo apps: what the Python runtime renders, tokenizes, forces and generates.

    python -m tools.golden --model tiny --out tests/golden/tiny.json --bundle-out tests/golden/bundle \
        --sampling-out tests/golden/sampling.json

The Android and iOS cores replay these to prove they mirror the runtime (template, tokenizer,
thinking budget, greedy decoding; and in sampling.json the seeded sampler, its generator and the per-mode
defaults) without reinventing it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from exporter.bundle import BundleFacts, copy_tokenizer_files, write_manifest
from exporter.commands.common import model_argument
from exporter.make_model import QWEN3_GENERATION_CONFIG
from exporter.output import atomic_output_dir
from runtimes.backends.reference import ReferenceBackend
from runtimes.chat import render
from runtimes.checkpoint import config_sha256, load_config, resolve_model_dir
from runtimes.eval.arithmetic import Problem
from runtimes.generate import prepare_prompt, run
from runtimes.model import ModelArgs
from runtimes.sampling import (QWEN3_NON_THINKING, QWEN3_THINKING, Sampler, SamplingParams, SplitMix64, choose,
                               penalized)
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


# (name, parameters, prompt ids for the repetition penalty, how the logits are drawn)
SAMPLING_CASES = (
    ("qwen3 thinking defaults", SamplingParams(**QWEN3_THINKING, seed=1), [], "normal"),
    ("qwen3 non-thinking defaults", SamplingParams(**QWEN3_NON_THINKING, seed=2), [], "normal"),
    ("whole vocabulary, top_p only", SamplingParams(temperature=1.0, top_p=0.9, seed=3), [], "normal"),
    ("min_p", SamplingParams(temperature=0.8, min_p=0.1, seed=4), [], "normal"),
    ("repetition and presence penalties", SamplingParams(temperature=0.7, top_k=20, top_p=0.8,
                                                         repetition_penalty=1.3, presence_penalty=1.5, seed=5),
     [3, 7, 7, 11], "peaked"),
    ("greedy with a presence penalty", SamplingParams(presence_penalty=2.0), [], "peaked"),
    ("ties at the top_k boundary", SamplingParams(temperature=1.0, top_k=3, seed=6), [], "ties"),
    ("the largest seed", SamplingParams(temperature=1.2, top_k=5, seed=2 ** 64 - 1), [], "normal"),
)
DEFAULT_CASES = (
    ("no generation_config.json", {}),
    ("Qwen3's published generation_config.json", QWEN3_GENERATION_CONFIG),
    ("do_sample false", {"do_sample": False, "temperature": 0.9}),
    ("do_sample true, no values", {"do_sample": True}),
    ("custom values and penalties", {"do_sample": True, "temperature": 0.3, "top_k": 5, "min_p": 0.05,
                                     "presence_penalty": 1.5, "repetition_penalty": 1.1}),
)
SAMPLING_VOCAB, SAMPLING_STEPS = 40, 12
# A draw, top_p or min_p this close (relative) to a boundary would let a last-bit difference between the languages'
# exp change a decision; the golden cases are kept clear of that.
SAMPLING_MARGIN = 1e-9


def _logits(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "ties":
        return rng.integers(0, 4, SAMPLING_VOCAB).astype(np.float32)
    scale = 6.0 if kind == "peaked" else 2.0
    return (scale * rng.standard_normal(SAMPLING_VOCAB)).astype(np.float32)


def _clear_of_boundaries(logits: np.ndarray, params: SamplingParams, draw: float) -> bool:
    chosen = choose(logits, params, draw)
    nudged = [replace(params, top_p=min(params.top_p * (1 + sign * SAMPLING_MARGIN), 1.0)) for sign in (-1, 1)]
    nudged += [replace(params, min_p=params.min_p * (1 + sign * SAMPLING_MARGIN)) for sign in (-1, 1)]
    return all(choose(logits, params, draw * (1 + sign * SAMPLING_MARGIN)) == chosen for sign in (-1, 1)) and \
        all(choose(logits, q, draw) == chosen for q in nudged)


def sampling_vectors() -> dict:
    """Seeded sampling decisions, the generator's outputs and the per-mode defaults, for all three languages."""
    cases = []
    for number, (name, params, prompt, kind) in enumerate(SAMPLING_CASES):
        rng = np.random.default_rng(100 + number)
        steps = [_logits(kind, rng) for _ in range(SAMPLING_STEPS)]
        sampler, shadow = Sampler(params), SplitMix64(params.seed or 0)
        generated: list[int] = []
        for logits in steps:
            if params.temperature:
                assert _clear_of_boundaries(penalized(logits, params, generated, prompt), params,
                                            shadow.next_float()), f"{name}: a draw sits on a boundary; change it"
            generated.append(sampler(logits, generated, prompt))
        cases.append({"name": name, "params": _params_json(params), "prompt_ids": prompt,
                      "logits": [[float(v) for v in logits] for logits in steps], "chosen": generated})
    prng = []
    for seed in (0, 1, 0x0123456789ABCDEF, 2 ** 64 - 1):
        generator, floats = SplitMix64(seed), SplitMix64(seed)
        prng.append({"seed": f"{seed:016x}", "next_u64": [f"{generator.next_u64():016x}" for _ in range(4)],
                     "next_float": [floats.next_float() for _ in range(4)]})
    defaults = [{"name": name, "generation_config": config, "thinking": thinking,
                 "params": _params_json(SamplingParams.for_mode(config, thinking))}
                for name, config in DEFAULT_CASES for thinking in (True, False)]
    return {"algorithm": "runtimes/sampling.py's docstring", "vocab": SAMPLING_VOCAB, "cases": cases,
            "splitmix64": prng, "defaults": defaults}


def _params_json(params: SamplingParams) -> dict:
    fields = asdict(params)
    fields["seed"] = None if params.seed is None else f"{params.seed:016x}"  # 64 bits: beyond a JSON double
    return fields


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
    write_manifest(out, BundleFacts(source_id=model, config_sha256=config_sha256(config),
                                    args=ModelArgs.from_config(config), target="reference", backend="reference",
                                    quant={"name": "fp32", "method": "none", "bits": 32}, max_seq_len=256,
                                    kv_dtype="float32", kv_layout="none (fixture)", entry_points=entry,
                                    tokenizer=QwenTokenizer(out)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.golden", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    model_argument(parser)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bundle-out", type=Path, help="also write the fixture bundle the app cores verify")
    parser.add_argument("--sampling-out", type=Path, help="also write the sampling golden file")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.bundle_out:
        write_fixture_bundle(args.bundle_out, args.model)
        print(f"wrote {args.bundle_out}")
    if args.sampling_out:
        args.sampling_out.write_text(json.dumps(sampling_vectors(), indent=1) + "\n")
        print(f"wrote {args.sampling_out}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(golden_vectors(args.model), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
