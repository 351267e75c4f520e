"""`python -m exporter parity`: a bundle against its reference, or the edge module against transformers."""

from __future__ import annotations

import argparse
import math

from exporter.commands.common import (MODEL_HELP, check_writable, max_new_tokens_argument, memory_argument,
                                      model_argument, need_torch, write_json)
from runtimes.files import input_file
from runtimes.errors import UserError
from runtimes.eval.parity import bundle_parity, model_parity
from runtimes.fixture import EXACT_TOLERANCE

SUMMARY = "compare a bundle, or the edge module itself, against its reference"


def add_arguments(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--bundle", metavar="DIR", help="a bundle: compared with the fp32 model or, when quantized, "
                                                       "with the fake-quant reference of its own weights")
    model_argument(which, default=None, help=MODEL_HELP + ": our fp32 module compared with transformers' "
                                                          "Qwen3ForCausalLM")
    p.add_argument("--prompts", metavar="FILE", help="one prompt per line (default: built-in prompts)")
    max_new_tokens_argument(p, 32, "greedy tokens per prompt")
    p.add_argument("--thinking-budget", type=int, metavar="N",
                   help="thinking budget of the compared chat generations, --bundle only (default: 32)")
    p.add_argument("--reference", metavar="DIR|QDIR",
                   help="the model (or quantized checkpoint) the bundle came from (default: what its manifest names)")
    p.add_argument("--tolerance", type=float, default=EXACT_TOLERANCE,
                   help=f"max |logit difference| (default: {EXACT_TOLERANCE})")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    memory_argument(p)


def run(args) -> int:
    if not math.isfinite(args.tolerance) or args.tolerance <= 0:
        raise UserError(f"--tolerance must be a finite number above 0, not {args.tolerance}")
    if args.max_new_tokens < 1:
        raise UserError("--max-new-tokens must be >= 1")
    if args.thinking_budget is not None and args.thinking_budget < 0:
        raise UserError("--thinking-budget must be >= 0 (0 turns thinking off)")
    check_writable(args.json, "--json", [args.bundle] if args.bundle else [])
    if args.prompts:
        input_file(args.prompts, "--prompts", "pass a text file, one prompt per line")
    need_torch("parity (its reference is the PyTorch model)")
    if args.bundle:
        budget = 32 if args.thinking_budget is None else args.thinking_budget
        report = bundle_parity(args.bundle, args.prompts, new_tokens=args.max_new_tokens, tolerance=args.tolerance,
                               thinking_budget=budget, reference_model=args.reference)
    else:
        report = model_parity(args.model, args.prompts, new_tokens=args.max_new_tokens, tolerance=args.tolerance)
    if args.json:
        write_json(args.json, report)
    against = f" against {report['reference']}" if args.bundle else ""
    kv = f", KV-cache vs recompute {report['kv_cache_max_abs_diff']:.2e}" if "kv_cache_max_abs_diff" in report else ""
    flips = ""
    if report["top1_disagreements"]:
        flips = (f" ({report['top1_disagreements']} disagreements, where the reference's top two logits were at "
                 f"most {report['max_disagreement_margin']:.3g} apart)")
    execution = report.get("execution") or {}
    if "soc" in execution:  # an npu bundle on Qualcomm's HTP: say which, and whether it was the simulator
        against += (f", on QNN's HTP for {execution['soc']}" + (" (simulated on this host)" if execution["simulated"]
                                                                 else ""))
    print(f"parity {'PASSED' if report['passed'] else 'FAILED'}{against}: {len(report['prompts'])} prompts "
          f"({report['prompt_source']}), greedy match {report['greedy_token_match']:.3f}, "
          f"teacher-forced top-1 {report['teacher_forced_top1_agreement']:.4f}{flips}, "
          f"max |dlogit| {report['max_abs_logit_diff']:.2e}, mean KL {report['mean_kl']:.2e}{kv}")
    return 0 if report["passed"] else 1
