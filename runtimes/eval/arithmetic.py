"""Synthetic arithmetic problems with digit-by-digit working, in Qwen3's chat format.

The `tiny` model is trained on these and its task accuracy per thinking budget is measured on them.
A working step names the place it works on and gives the two digits, then the carry (or borrow) out
and the result digit ("tens2+9=12": with a carry of 1 from the ones, 2+9+1 = 12). A step is 7 tokens,
so every thinking budget ends on or near a complete step, and each complete step leaves fewer digits to
answer without working; longer numbers need more steps, so a larger budget lets more problems finish.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

PLACES = ("ones", "tens", "hundreds", "thousands", "myriads")
OPS = ("+", "-", "*")
MAX_DIGITS = {"+": 5, "-": 5, "*": 4}  # "*" multiplies by a single digit


@dataclass(frozen=True)
class Problem:
    a: int
    op: str
    b: int

    @property
    def question(self) -> str:
        return f"What is {self.a} {self.op} {self.b}?"

    @property
    def answer(self) -> int:
        return {"+": self.a + self.b, "-": self.a - self.b, "*": self.a * self.b}[self.op]

    def working(self) -> str:
        """The thinking text: one step per digit place, least significant first, then the answer."""
        if self.op == "*":
            return _multiply_steps(self.a, self.b)
        if self.op == "+":
            return _add_steps(self.a, self.b)
        return _subtract_steps(self.a, self.b)


def _digits(n: int, width: int) -> list[int]:
    return [int(c) for c in str(n).zfill(width)[::-1]]


def _steps(pairs: list[tuple[int, int]], op: str, total) -> tuple[list[str], int, str]:
    """`place{x}{op}{y}={tt}` per place; tt is two digits: the carry (or borrow) out, then the digit."""
    steps, carry, result = [], 0, ""
    for place, (x, y) in zip(PLACES, pairs):
        carry_out, digit = total(x, y, carry)
        steps.append(f"{place}{x}{op}{y}={carry_out}{digit}")
        result = str(digit) + result
        carry = carry_out
    return steps, carry, result


def _add_steps(a: int, b: int) -> str:
    width = max(len(str(a)), len(str(b)))
    steps, carry, result = _steps(list(zip(_digits(a, width), _digits(b, width))), "+",
                                  lambda x, y, c: divmod(x + y + c, 10))
    return " ".join(steps + [f"answer{int(str(carry) + result)}"])


def _subtract_steps(a: int, b: int) -> str:
    sign = ""
    if a < b:  # compute b - a and negate
        a, b, sign = b, a, "-"
    width = len(str(a))
    steps, _, result = _steps(list(zip(_digits(a, width), _digits(b, width))), "-",
                              lambda x, y, c: (1, x - y - c + 10) if x - y - c < 0 else (0, x - y - c))
    if sign:  # "-ones...": the operands were swapped, the answer is negative (still one token)
        steps[0] = "-" + steps[0]
    value = int(result)
    return " ".join(steps + [f"answer{sign if value else ''}{value}"])


def _multiply_steps(a: int, b: int) -> str:
    width = len(str(a))
    steps, carry, result = _steps([(x, b) for x in _digits(a, width)], "*", lambda x, y, c: divmod(x * y + c, 10))
    return " ".join(steps + [f"answer{int(str(carry) + result)}"])


def sample_problem(rng: random.Random) -> Problem:
    """Ops equally likely; operand lengths spread from 1 digit to the op's maximum."""
    op = rng.choice(OPS)
    digits_a = rng.randint(1, MAX_DIGITS[op])
    a = rng.randint(0 if digits_a == 1 else 10 ** (digits_a - 1), 10 ** digits_a - 1)
    if op == "*":
        b = rng.randint(0, 9)
    else:
        digits_b = rng.randint(1, MAX_DIGITS[op])
        b = rng.randint(0 if digits_b == 1 else 10 ** (digits_b - 1), 10 ** digits_b - 1)
    return Problem(a, op, b)


def problems(n: int, seed: int, exclude: set[Problem] | None = None) -> list[Problem]:
    """n distinct problems, deterministic for a seed, none of them in `exclude`."""
    rng = random.Random(seed)
    seen = set(exclude or ())
    out = []
    while len(out) < n:
        p = sample_problem(rng)
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def heldout_problems(n: int = 500) -> list[Problem]:
    """The evaluation set: seed 1234. Training draws from other seeds and skips these problems."""
    return problems(n, seed=1234)
