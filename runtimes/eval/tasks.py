"""Task accuracy per thinking budget: question/answer items, one answer parser, greedy generation on any backend.

Items are {"question", "answer", "match": "numeric" | "exact"}: the arithmetic problems `tiny` was trained for
(held out), or a user's .jsonl.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Sequence

from tqdm import tqdm

from runtimes.errors import UserError
from runtimes.eval.arithmetic import heldout_problems
from runtimes.files import read_text_file
from runtimes.generate import run

DEFAULT_BUDGETS: tuple[int | None, ...] = (0, 32, 128, None)  # None: unlimited
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def budget_label(budget: int | None) -> str:
    return "unlimited" if budget is None else str(budget)


def first_number(text: str) -> float | None:
    """The first number an answer states (thousands separators ignored), or None."""
    found = NUMBER.search(text.replace(",", ""))
    return float(found.group()) if found else None


def arithmetic_items(problems) -> list[dict]:
    return [{"question": p.question, "answer": str(p.answer), "match": "numeric"} for p in problems]


def read_tasks(spec: str, n: int) -> tuple[list[dict], str]:
    """(the first n items, where they came from): 'arithmetic' (tiny's held-out problems) or a .jsonl file of
    {"question", "answer", optional "match": "exact"|"numeric"}."""
    if spec == "arithmetic":
        return arithmetic_items(heldout_problems(n)), "arithmetic (held-out, seed 1234)"
    path = Path(spec)
    text = read_text_file(path, "--tasks", "give a .jsonl of question/answer pairs, or 'arithmetic'")
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            question, answer = str(item["question"]), str(item["answer"])
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise UserError(f"{path}:{number}: not a JSON object with question and answer ({exc})") from None
        match = item.get("match", "numeric" if first_number(answer) is not None else "exact")
        if match not in ("exact", "numeric"):
            raise UserError(f"{path}:{number}: match must be 'exact' or 'numeric', not {match!r}")
        items.append({"question": question, "answer": answer, "match": match})
    if not items:
        raise UserError(f"{path} has no tasks")
    return items[:n], str(path)


def is_correct(content: str, item: dict) -> bool:
    if item["match"] == "numeric":
        got, want = first_number(content), first_number(item["answer"])
        return got is not None and want is not None and abs(got - want) <= 1e-9 * max(1.0, abs(want))
    return content.strip() == item["answer"].strip()


def task_accuracy(backend, tokenizer, items: Sequence[dict], budget: int | None, max_new_tokens: int = 32,
                  progress=None) -> dict:
    """Greedy accuracy on `items` with a thinking budget, and how often the budget cut the thinking."""
    correct = cut = reasoning_tokens = 0
    for item in items:
        result = run(backend, tokenizer, [{"role": "user", "content": item["question"]}], budget=budget,
                     max_new_tokens=max_new_tokens)
        correct += is_correct(result.content, item)
        cut += result.stopped_by_budget
        reasoning_tokens += result.reasoning_tokens
        if progress is not None:
            progress.update(1)
    n = len(items)
    return {"budget": budget_label(budget), "problems": n, "accuracy": correct / n, "stopped_by_budget": cut / n,
            "mean_reasoning_tokens": reasoning_tokens / n}


def budget_curve(backend, tokenizer, items: Sequence[dict], budgets: Iterable[int | None] = DEFAULT_BUDGETS,
                 progress: bool = True) -> list[dict]:
    budgets = list(budgets)
    with tqdm(total=len(budgets) * len(items), desc="accuracy", unit="problem", disable=not progress) as bar:
        return [task_accuracy(backend, tokenizer, items, b, progress=bar) for b in budgets]
