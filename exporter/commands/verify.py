"""`python -m exporter verify`: a bundle's contract, then its entry points and reference fixture on the backend here."""

from __future__ import annotations

import argparse

from exporter.commands.common import check_writable, memory_argument, write_json
from runtimes.verify import verify

SUMMARY = "check a bundle's manifest, files and paths, then run it briefly and replay its reference fixture"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, metavar="DIR", help="the bundle to verify")
    p.add_argument("--json", metavar="FILE", help="write the result as JSON")
    p.add_argument("--no-run", action="store_true", help="check the files and manifest only")
    memory_argument(p)


def run(args) -> int:
    """One line per problem; exit 1 when the bundle is bad."""
    check_writable(args.json, "--json", [args.bundle])
    result = verify(args.bundle, run=not args.no_run)
    if args.json:
        write_json(args.json, result)
    for problem in result["problems"]:
        print(f"{args.bundle}: {problem['message']}")
    for note in result["notes"]:
        print(f"{args.bundle}: note: {note}")
    if not result["ok"]:
        return 1
    if result["ran"]:
        print(f"{args.bundle}: OK; a short greedy generation ran ({result['generation']!r})")
        checked = result["fixture"]
        if checked:
            print(f"{args.bundle}: reference fixture passed ({checked['criterion']}): {len(checked['cases'])} "
                  f"prompts, {checked['steps']} steps, greedy match {checked['greedy_match']}, top-1 agreement "
                  f"{checked['top1_agreement']:.4f}, max |dlogit| on the top-{checked['top_k']} "
                  f"{checked['max_abs_logit_diff_top_k']:.2e}")
    else:
        why = "--no-run" if args.no_run else "see the note above"
        print(f"{args.bundle}: files and manifest OK; entry points not run ({why})")
    return 0
