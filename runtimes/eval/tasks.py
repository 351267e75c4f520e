"""Task accuracy per thinking budget on the arithmetic problems `tiny` was trained for."""

from __future__ import annotations

from typing import Iterable, Sequence

from runtimes.eval.arithmetic import Problem, parse_answer
from runtimes.backends import Backend
from runtimes.generate import run
from runtimes.tokenizer import QwenTokenizer

DEFAULT_BUDGETS: tuple[int | None, ...] = (0, 8, 16, 32, 64, 128, None)  # None: unlimited


def budget_label(budget: int | None) -> str:
    return "unlimited" if budget is None else str(budget)


def arithmetic_accuracy(backend: Backend, tokenizer: QwenTokenizer, problems: Sequence[Problem],
                        budget: int | None, max_new_tokens: int = 16, progress=None) -> dict:
    """Greedy exact-match accuracy: the first integer of the answer against the true result."""
    correct = cut = reasoning_tokens = 0
    for problem in problems:
        result = run(backend, tokenizer, [{"role": "user", "content": problem.question}], budget=budget,
                     max_new_tokens=max_new_tokens)
        correct += parse_answer(result.content) == problem.answer
        cut += result.stopped_by_budget
        reasoning_tokens += result.reasoning_tokens
        if progress is not None:
            progress.update(1)
    n = len(problems)
    return {"budget": budget_label(budget), "problems": n, "accuracy": correct / n,
            "stopped_by_budget": cut / n, "mean_reasoning_tokens": reasoning_tokens / n}


def budget_curve(backend: Backend, tokenizer: QwenTokenizer, problems: Sequence[Problem],
                 budgets: Iterable[int | None] = DEFAULT_BUDGETS, progress: bool = True) -> list[dict]:
    from tqdm import tqdm

    budgets = list(budgets)
    with tqdm(total=len(budgets) * len(problems), desc="accuracy", unit="problem", disable=not progress) as bar:
        return [arithmetic_accuracy(backend, tokenizer, problems, b, progress=bar) for b in budgets]
