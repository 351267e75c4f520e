"""`python -m exporter make-model`: a random-weight checkpoint with a real Qwen3 shape, for export and speed work."""

from __future__ import annotations

import argparse

from exporter.commands.common import need_torch, out_arguments
from runtimes.errors import UserError

SUMMARY = "write a random-weight checkpoint with a real Qwen3 shape"
SHAPES = ("0.6b", "1.7b", "4b")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", required=True, choices=SHAPES, help="which Qwen3 size to copy")
    p.add_argument("--layers", type=int, metavar="N", help="keep only N decoder layers (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="bfloat16", choices=("float32", "float16", "bfloat16"))
    out_arguments(p, "the checkpoint")


def run(args) -> int:
    need_torch("make-model")
    from exporter.make_model import SHAPES as CONFIGS, write_random_checkpoint

    if args.out is None:
        raise UserError("--out is required, e.g. python -m exporter make-model --shape 0.6b --out m06")
    if not 0 <= args.seed < 2 ** 64:
        raise UserError(f"--seed must be a whole number from 0 to 2**64 - 1, not {args.seed}")
    config = dict(CONFIGS[args.shape])
    if args.layers is not None:
        if not 1 <= args.layers <= config["num_hidden_layers"]:
            raise UserError(f"--layers must be between 1 and {config['num_hidden_layers']} for {args.shape}")
        config["num_hidden_layers"] = args.layers
    out = write_random_checkpoint(args.out, config, seed=args.seed, dtype=args.dtype, overwrite=args.overwrite,
                                  with_tokenizer=True)
    print(f"wrote random-weight Qwen3-{args.shape} ({config['num_hidden_layers']} layers, {args.dtype}, "
          f"real Qwen3 tokenizer) to {out}; random weights: no accuracy claims")
    return 0
