"""Accuracy of a candidate (quantized model or artifact) against its full-precision reference.

Teacher-forced over held-out token windows: perplexity of both, KL(reference ‖ candidate) and
top-1 agreement per position; optionally task accuracy per thinking budget.

    python -m runtimes.eval.quality --reference tiny --candidate QDIR [--tasks 500] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
from typing import Sequence

import numpy as np

from runtimes.chat import render
from runtimes.eval.arithmetic import heldout_problems
from runtimes.eval.parity import log_softmax
from runtimes.eval.tasks import arithmetic_items, budget_curve
from runtimes.tokenizer import QwenTokenizer


def teacher_forced(candidate, reference, windows: Sequence[Sequence[int]]) -> dict:
    """Both backends need prefill(ids, all_logits=True); they must be distinct objects."""
    if candidate is reference:
        raise ValueError("teacher_forced needs two backend objects (one cache each)")
    nll_ref, nll_cand, kl, agree, positions = 0.0, 0.0, 0.0, 0, 0
    for window in windows:
        ids = list(window)
        reference.reset()
        candidate.reset()
        ref_logp = log_softmax(reference.prefill(ids[:-1], all_logits=True))
        cand_logp = log_softmax(candidate.prefill(ids[:-1], all_logits=True))
        targets = np.asarray(ids[1:])
        rows = np.arange(len(targets))
        nll_ref -= ref_logp[rows, targets].sum()
        nll_cand -= cand_logp[rows, targets].sum()
        kl += (np.exp(ref_logp) * (ref_logp - cand_logp)).sum()
        agree += int((ref_logp.argmax(-1) == cand_logp.argmax(-1)).sum())
        positions += len(targets)
    return {"positions": positions, "perplexity_reference": float(np.exp(nll_ref / positions)),
            "perplexity": float(np.exp(nll_cand / positions)), "mean_kl": float(kl / positions),
            "top1_agreement": agree / positions}


def heldout_windows(tokenizer, n: int = 256, seq_len: int = 256) -> list[list[int]]:
    """n held-out arithmetic chats with thinking traces (seed 1234: never trained on), one per window, each
    from its start (cut at seq_len). One chat per window because that is what `tiny` was trained on: chats
    laid end to end put every chat after the first at positions and contexts it never saw, and their
    template tokens then dominate the perplexity."""
    return [tokenizer.encode(render([{"role": "user", "content": p.question},
                                     {"role": "assistant", "content": str(p.answer),
                                      "reasoning_content": p.working()}], add_generation_prompt=False))[:seq_len]
            for p in heldout_problems(n)]


def main() -> None:
    from runtimes.backends.reference import ReferenceBackend  # torch: bench imports this module without it
    from runtimes.checkpoint import resolve_model_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", default="tiny")
    parser.add_argument("--candidate", required=True, action="append", help="model dir or QDIR (repeatable)")
    parser.add_argument("--tasks", type=int, default=0, help="held-out problems for task accuracy (0: skip)")
    parser.add_argument("--budgets", default="none", help="comma-separated budgets for --tasks; none = unlimited")
    parser.add_argument("--json")
    args = parser.parse_args()
    ref_dir = resolve_model_dir(args.reference)
    tokenizer = QwenTokenizer(ref_dir)
    reference = ReferenceBackend.from_model(str(ref_dir), max_seq_len=512)
    windows = heldout_windows(tokenizer)
    budgets = [None if b == "none" else int(b) for b in args.budgets.split(",")]
    rows = []
    for name in [args.reference] + args.candidate:
        backend = ReferenceBackend.from_model(name, max_seq_len=512)  # never the reference object itself
        row = {"model": name, **teacher_forced(backend, reference, windows)}
        if args.tasks:
            row["tasks"] = budget_curve(backend, tokenizer, arithmetic_items(heldout_problems(args.tasks)), budgets,
                                       progress=False)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
