"""`python -m exporter quantize`: quantize once into a quantized checkpoint (QDIR) that every target reuses."""

from __future__ import annotations

import argparse

from exporter.commands.common import (check_calib, memory_argument, model_argument, need_torch, out_arguments,
                                      quant_arguments, quant_options)
from exporter.targets.schemes import CHECKPOINT_SCHEMES
from runtimes.errors import UserError

SUMMARY = "write a quantized checkpoint once, for every target to reuse"


def add_arguments(p: argparse.ArgumentParser) -> None:
    model_argument(p)
    p.add_argument("--quant", required=True, choices=CHECKPOINT_SCHEMES,
                   help="int8: per output channel; int4: group-wise round-to-nearest; awq-int4: activation-aware "
                        "scaling and clipping searched on calibration data, then int4")
    quant_arguments(p)
    out_arguments(p, "the quantized checkpoint")
    memory_argument(p)


def run(args) -> int:
    need_torch("quantizing")
    from exporter.quantize import quantize_checkpoint
    if args.out is None:
        raise UserError("--out is required, e.g. python -m exporter quantize --model tiny --quant int4 --out q-tiny")
    check_calib(args.calib)
    summary = quantize_checkpoint(args.model, quant_options(args, args.quant), args.out, overwrite=args.overwrite)
    recipe = summary["recipe"]
    group = f", group {recipe['group_size']}" if recipe["group_size"] else ""
    print(f"wrote {recipe['method']} int{recipe['bits']}{group} checkpoint ({summary['quantized_weights']} weights "
          f"quantized, embedding {recipe['embedding']}) to {summary['out']} in {summary['seconds']:.1f}s")
    return 0
