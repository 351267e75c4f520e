"""Parity: compare logits and greedy tokens of a backend against a reference.

`model_parity` checks the project's fp32 edge module (reference backend) against
`transformers`' Qwen3ForCausalLM, the independent implementation.

torch, and the modules that need it, are imported by the functions that build a reference: bench imports this module
(through quality) where torch is not installed, to measure speed alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from runtimes.bundle import load_backend, read_manifest
from runtimes.errors import UserError
from runtimes.files import read_text_file
from runtimes.fixture import EXACT_TOLERANCE, ROUNDED_MIN_TOP1, judged_by_agreement
from runtimes.generate import prepare_prompt, run
from runtimes.tokenizer import QwenTokenizer, encode_ids

DEFAULT_PROMPTS = (
    "What is 123 + 456?",
    "Write a haiku about the sea.",
    "Explain why the sky is blue in one sentence.",
    "def fibonacci(n):",
    "Translate to French: good morning, how are you?",
    "List three prime numbers greater than 100.",
)
RANDOM_PROMPT_LENGTHS = (7, 16, 33, 64)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def logit_metrics(ours: np.ndarray, reference: np.ndarray) -> dict:
    """Per-position comparison of two [T, vocab] logit arrays."""
    ref_logp, our_logp = log_softmax(reference), log_softmax(ours)
    kl = (np.exp(ref_logp) * (ref_logp - our_logp)).sum(axis=-1)
    agree = ours.argmax(-1) == reference.argmax(-1)
    top2 = np.partition(reference.astype(np.float64), -2, axis=-1)[:, -2:]  # the two largest, either order
    return {
        "positions": int(ours.shape[0]),
        "top1_agreement": float(agree.mean()),
        "max_abs_logit_diff": float(np.abs(ours.astype(np.float64) - reference).max()),
        "mean_kl": float(kl.mean()),
        # where the argmaxes differ, and by how much the reference's top two logits were apart there: a
        # disagreement at a near-tie is rounding; one at a wide margin is a wrong computation
        "disagreements": [{"position": int(i), "reference_margin": float(abs(top2[i, 1] - top2[i, 0]))}
                          for i in np.nonzero(~agree)[0]],
    }


def greedy(prefill: Callable, decode: Callable, prompt: Sequence[int], n: int) -> tuple[list[int], np.ndarray]:
    """n greedy tokens through prefill + one-token decode steps → (tokens, logits [n, vocab])."""
    logits = [prefill(prompt)]
    tokens = [int(logits[-1].argmax())]
    while len(tokens) < n:
        logits.append(decode(tokens[-1]))
        tokens.append(int(logits[-1].argmax()))
    return tokens, np.stack(logits)


def summarize(records: list[dict]) -> dict:
    """The report's headline numbers from per-prompt records (teacher-forced metrics weighted by positions)."""
    metrics = [r["teacher_forced"] for r in records]
    positions = sum(m["positions"] for m in metrics)
    return {
        "prompts": records,
        "greedy_token_match": sum(r["greedy_match"] for r in records) / len(records),
        "teacher_forced_top1_agreement": sum(m["top1_agreement"] * m["positions"] for m in metrics) / positions,
        "max_abs_logit_diff": max(m["max_abs_logit_diff"] for m in metrics),
        "mean_kl": sum(m["mean_kl"] * m["positions"] for m in metrics) / positions,
        "top1_disagreements": sum(len(m["disagreements"]) for m in metrics),
        "max_disagreement_margin": max((d["reference_margin"] for m in metrics for d in m["disagreements"]),
                                       default=None),
    }


@dataclass
class Prompt:
    ids: list[int]
    text: str | None = None


def read_prompts(path: str | None, tokenizer_path: Path | None, vocab_size: int, seed: int = 0) -> tuple[list[Prompt], str]:
    """Prompts as token ids: tokenized text when a tokenizer exists, else seeded random ids."""
    texts = DEFAULT_PROMPTS
    if path:
        text = read_text_file(path, "--prompts", "pass a text file, one prompt per line")
        texts = [line for line in text.splitlines() if line.strip()]
        if not texts:
            raise UserError(f"--prompts {path} has no prompts; write one prompt per line")
    if tokenizer_path is not None and tokenizer_path.is_file():
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
        prompts = [Prompt(encode_ids(tokenizer, t), t) for t in texts]
        past = [i for p in prompts for i in p.ids if i >= vocab_size]
        if past:
            raise UserError(f"{tokenizer_path} gives id {past[0]}, past the model's {vocab_size} embedding rows; the "
                            "tokenizer does not belong to this model")
        return prompts, "tokenizer"
    if path:
        raise UserError(f"--prompts needs a tokenizer, and {tokenizer_path.parent if tokenizer_path else 'the model'} "
                        "has no tokenizer.json; drop --prompts to compare on random token ids")
    rng = np.random.default_rng(seed)
    return [Prompt(rng.integers(0, vocab_size, n).tolist()) for n in RANDOM_PROMPT_LENGTHS], "random_token_ids"


def _hf_reference(model_dir: Path):
    """transformers' model of the checkpoint, from the tensors our loader read out of its safetensors (given to
    transformers as a state dict, so it never looks for, or unpickles, a .bin beside them)."""
    try:
        import torch
        from transformers import Qwen3Config, Qwen3ForCausalLM
    except ImportError:
        raise UserError("parity --model compares against transformers, which is not installed; "
                        "pip install 'qwen-edge[parity]'") from None
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    from runtimes.checkpoint import load_config, load_state_dict
    from runtimes.memory import check_memory, model_need

    check_memory(model_need(load_config(model_dir), 8), f"transformers' copy of {model_dir}",
                 "compare a smaller model")
    hf = Qwen3ForCausalLM.from_pretrained(None, config=Qwen3Config.from_pretrained(model_dir),
                                          state_dict=load_state_dict(model_dir), dtype=torch.float32,
                                          attn_implementation="eager").eval()

    @torch.inference_mode()
    def forward(ids: Sequence[int]) -> np.ndarray:
        return hf(torch.tensor([list(ids)])).logits[0].float().numpy()

    def greedy_hf(prompt: Sequence[int], n: int) -> list[int]:
        with torch.inference_mode():
            out = hf(torch.tensor([list(prompt)]), use_cache=True)
            tokens = [int(out.logits[0, -1].argmax())]
            while len(tokens) < n:
                out = hf(torch.tensor([[tokens[-1]]]), past_key_values=out.past_key_values, use_cache=True)
                tokens.append(int(out.logits[0, -1].argmax()))
        return tokens

    return forward, greedy_hf


def model_parity(model: str, prompts_file: str | None = None, new_tokens: int = 32,
                 tolerance: float = EXACT_TOLERANCE, seed: int = 0, progress: bool = True) -> dict:
    """The fp32 edge module against transformers: teacher-forced logits, greedy tokens, KV-cache path."""
    from runtimes.checkpoint import QUANT_RECIPE, resolve_model_dir
    from runtimes.model import from_pretrained
    from runtimes.backends.reference import ReferenceBackend

    model_dir = resolve_model_dir(model)
    if (model_dir / QUANT_RECIPE).is_file():
        raise UserError(f"{model} is a quantized checkpoint, which transformers cannot load; parity --model checks "
                        "full-precision checkpoints (measure a quantized one with python -m runtimes.eval.quality)")
    module, config = from_pretrained(model_dir, max_seq_len=8)  # caches re-made per prompt below
    prompts, source = read_prompts(prompts_file, model_dir / "tokenizer.json", config["vocab_size"], seed)
    hf_forward, hf_greedy = _hf_reference(model_dir)

    records = []
    for prompt in tqdm(prompts, desc="parity", unit="prompt", disable=not progress):
        module.setup_caches(len(prompt.ids) + new_tokens)
        backend = ReferenceBackend(module)
        our_tokens, step_logits = greedy(backend.prefill, backend.decode, prompt.ids, new_tokens)
        hf_tokens = hf_greedy(prompt.ids, new_tokens)
        # teacher-forced on the reference's own continuation: the same sequence for both sides
        sequence = prompt.ids + hf_tokens
        backend.reset()
        ours_full = backend.prefill(sequence[:-1], all_logits=True)
        tf = logit_metrics(ours_full, hf_forward(sequence[:-1]))
        # KV-cache decode steps against a full recompute of our own continuation
        backend.reset()
        recompute = backend.prefill(prompt.ids + our_tokens[:-1], all_logits=True)[len(prompt.ids) - 1:]
        kv_diff = float(np.abs(step_logits - recompute).max())
        mismatch = next((i for i, (a, b) in enumerate(zip(our_tokens, hf_tokens)) if a != b), None)
        records.append({
            "text": prompt.text, "prompt_tokens": len(prompt.ids), "new_tokens": new_tokens,
            "greedy_match": mismatch is None, "first_mismatch": mismatch,
            "teacher_forced": tf, "kv_cache_max_abs_diff": kv_diff,
        })

    report = {
        "model": str(model),
        "backend": "reference",
        "reference": "transformers.Qwen3ForCausalLM fp32 eager",
        "prompt_source": source,
        **summarize(records),
        "kv_cache_max_abs_diff": max(r["kv_cache_max_abs_diff"] for r in records),
        "tolerance": tolerance,
    }
    report["passed"] = (report["greedy_token_match"] == 1.0 and report["max_abs_logit_diff"] <= tolerance
                        and report["kv_cache_max_abs_diff"] <= tolerance)
    return report


CHAT_PROMPTS = ("What is 47 + 385?", "What is 4821 - 9377?", "What is 306 * 7?", "What is 90210 + 12345?",
                "Write a haiku about the sea.", "def fibonacci(n):")


def bundle_parity(bundle: str, prompts_file: str | None = None, new_tokens: int = 32,
                  tolerance: float = EXACT_TOLERANCE, thinking_budget: int | None = 32,
                  reference_model: str | None = None, progress: bool = True) -> dict:
    """An exported artifact against its reference: teacher-forced logits over chat prompts run through
    prefill and decode, and greedy generation with the thinking budget."""
    from runtimes.reference import bundle_reference, fp32_reference  # torch, an extra: this module loads without

    manifest = read_manifest(bundle)
    tokenizer = QwenTokenizer(bundle)
    backend = load_backend(bundle, manifest)
    reference, reference_name = bundle_reference(manifest, reference_model, Path(bundle))
    fp32 = fp32_reference(manifest, reference_model) if "npu" in manifest else None
    texts = CHAT_PROMPTS
    if prompts_file:
        texts = [p.text for p in read_prompts(prompts_file, Path(bundle) / "tokenizer.json",
                                                 manifest["architecture"]["vocab_size"])[0]]
    records = []
    for text in tqdm(texts, desc="parity", unit="prompt", disable=not progress):
        messages = [{"role": "user", "content": text}]
        ours = run(backend, tokenizer, messages, budget=thinking_budget, max_new_tokens=new_tokens)
        ref = run(reference, tokenizer, messages, budget=thinking_budget, max_new_tokens=new_tokens)
        prompt, _ = prepare_prompt(tokenizer, messages, thinking_budget)
        # teacher-forced over prompt + the reference's continuation, chunked prefill then decode steps
        sequence = (prompt + ref.token_ids)[:-1]
        split = len(prompt)
        logits = {}
        for name, b in (("ours", backend), ("ref", reference), ("fp32", fp32)):
            if b is None:
                continue
            b.reset()
            rows = [b.prefill(sequence[:split], all_logits=True)] + [b.decode(t)[None] for t in sequence[split:]]
            logits[name] = np.concatenate(rows)
        tf = logit_metrics(logits["ours"], logits["ref"])
        for d in tf["disagreements"]:  # position i predicts token i + 1: the prompt's own, or a generated one
            d["predicts"] = "prompt" if d["position"] < split - 1 else "generated"
        mismatch = next((i for i, (a, b) in enumerate(zip(ours.token_ids, ref.token_ids)) if a != b), None)
        if mismatch is None and len(ours.token_ids) != len(ref.token_ids):
            mismatch = min(len(ours.token_ids), len(ref.token_ids))
        records.append({"text": text, "prompt_tokens": len(prompt), "new_tokens": len(ref.token_ids),
                        "greedy_match": mismatch is None, "first_mismatch": mismatch, "teacher_forced": tf,
                        "stopped_by_budget": ref.stopped_by_budget})
        if fp32 is not None:
            records[-1]["versus_fp32"] = logit_metrics(logits["ours"], logits["fp32"])
    report = {
        "bundle": str(bundle), "target": manifest["target"], "quant": manifest["quant"]["name"],
        "backend": manifest["backend"], "reference": reference_name, "thinking_budget": thinking_budget,
        "prompt_source": "tokenizer", **summarize(records), "tolerance": tolerance,
    }
    if hasattr(backend, "describe"):  # what ran it: the execution provider and, on HTP, the SoC and whether simulated
        report["execution"] = backend.describe()
    if fp32 is not None:
        versus = summarize([{"teacher_forced": r["versus_fp32"], "greedy_match": True} for r in records])
        report["versus_fp32"] = {k: versus[k] for k in ("teacher_forced_top1_agreement", "max_abs_logit_diff",
                                                        "mean_kl")}
    if judged_by_agreement(manifest):  # the kernels round: see runtimes.fixture.judged_by_agreement
        report["criterion"] = f"teacher_forced_top1_agreement >= {ROUNDED_MIN_TOP1}"
        report["passed"] = report["teacher_forced_top1_agreement"] >= ROUNDED_MIN_TOP1
    else:  # same weights on both sides: the graph must compute what the reference computes
        report["criterion"] = f"greedy_token_match == 1 and max_abs_logit_diff <= {tolerance}"
        report["passed"] = report["greedy_token_match"] == 1.0 and report["max_abs_logit_diff"] <= tolerance
    return report
