"""`verify`: a bundle's contract (runtimes.bundle.check_bundle), then its backend, running a short generation.

Each check adds one problem; a bundle is good when there are none. The demo apps apply the same file and path
rules with the same problem codes (tests/golden/tamper.json drives all three), so a bundle that passes here is one
they accept.
"""

from __future__ import annotations

from pathlib import Path

from runtimes.bundle import Problem, check_bundle
from runtimes.errors import UserError


def verify(bundle: str | Path, run: bool = True, new_tokens: int = 8) -> dict:
    """→ {"bundle", "ok", "problems": [{"code", "message"}], "notes": [...], "ran": bool,
    "generation": text or None}."""
    bundle = Path(bundle)
    manifest, problems = check_bundle(bundle)
    notes: list[str] = []
    generation, ran = None, False
    if manifest is not None and not problems and run:
        generation, ran = _generate(bundle, new_tokens, notes, problems)
    return {"bundle": str(bundle), "ok": not problems, "problems": [vars(p) for p in problems], "notes": notes,
            "ran": ran, "generation": generation}


def _generate(bundle: Path, new_tokens: int, notes: list[str], problems: list[Problem]) -> tuple[str | None, bool]:
    from runtimes.bundle import load_backend
    from runtimes.generate import run
    from runtimes.tokenizer import QwenTokenizer

    try:
        backend = load_backend(bundle)
    except UserError as exc:
        if "needs macOS" in str(exc) or "runs on the device" in str(exc) or "not installed" in str(exc):
            notes.append(f"entry points not run here: {exc}")
            return None, False
        problems.append(Problem("backend", f"the backend cannot load the bundle: {exc}"))
        return None, False
    try:
        tokenizer = QwenTokenizer(bundle)
        result = run(backend, tokenizer, [{"role": "user", "content": "What is 2 + 2?"}], budget=0,
                     max_new_tokens=new_tokens)
    except UserError as exc:
        problems.append(Problem("backend", f"a short generation failed: {exc}"))
        return None, True
    except Exception as exc:  # a bundle that loads but cannot run is bad, whatever the reason
        problems.append(Problem("backend", f"a short generation failed: {type(exc).__name__}: "
                                           f"{str(exc).splitlines()[0][:200]}"))
        return None, True
    if not result.token_ids:
        problems.append(Problem("backend", "a short generation produced no tokens"))
    return result.content, True
