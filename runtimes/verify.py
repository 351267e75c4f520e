"""`verify`: a bundle's contract (runtimes.bundle.check_bundle), then its backend, running a short generation and
the bundle's reference fixture (runtimes.fixture: the tokens and top-k logits its parity reference produced at
export, judged with parity's criteria), on whatever backend runs here and without torch.

Each check adds one problem; a bundle is good when there are none. The demo apps apply the same file and path
rules with the same problem codes (tests/golden/tamper.json drives all three), so a bundle that passes here is one
they accept.

An onnx npu bundle is checked further here (the apps do not run it): its precompiled HTP contexts (`qnn`) must
name files the manifest lists, record the binaries as the files table does and the SoC ids the qnn backend uses;
when it runs, the result says what ran it (Qualcomm's HTP, simulated on an x86 host, or ONNX Runtime's CPU provider
where onnxruntime-qnn is not installed), and with onnxruntime-qnn every SoC's context binary must load.
"""

from __future__ import annotations

from pathlib import Path

from runtimes import fixture as reference_fixture
from runtimes.backends.qnn import SOCS, create_session
from runtimes.bundle import Problem, check_bundle, load_backend
from runtimes.errors import UserError
from runtimes.generate import run
from runtimes.tokenizer import QwenTokenizer
from runtimes.weights import bundle_nonfinite


def verify(bundle: str | Path, run: bool = True, new_tokens: int = 8) -> dict:
    """→ {"bundle", "ok", "problems": [{"code", "message"}], "notes": [...], "ran": bool,
    "generation": text or None, "fixture": the fixture check's report (runtimes.fixture.check) or None, and
    "execution" (what ran it) when the backend says}."""
    bundle = Path(bundle)
    manifest, problems = check_bundle(bundle)
    notes: list[str] = []
    generation, ran, execution, checked, fixture = None, False, None, None, None
    if manifest is not None and not problems:
        problems += _qnn_context_problems(manifest)
    if manifest is not None and not problems:
        found, unread = bundle_nonfinite(bundle, list(manifest["files"]))
        problems += [Problem("weights", line) for line in found]
        notes += unread
        fixture, fixture_problems = reference_fixture.read(bundle, manifest)
        problems += fixture_problems
        if fixture is None and not fixture_problems:
            notes.append("this bundle has no reference fixture (exported before bundles carried one): its numbers "
                         "were not checked; export it again to check them")
    if manifest is not None and not problems and run:
        generation, ran, execution, checked = _generate(bundle, manifest, new_tokens, notes, problems, fixture)
        if ran and not problems and execution and execution.get("execution_provider") == "QNNExecutionProvider":
            problems += _load_other_contexts(bundle, manifest, execution["soc"])
    result = {"bundle": str(bundle), "ok": not problems, "problems": [vars(p) for p in problems], "notes": notes,
              "ran": ran, "generation": generation, "fixture": checked}
    return {**result, "execution": execution} if execution else result


def _qnn_context_problems(manifest: dict) -> list[Problem]:
    """An npu bundle's precompiled contexts against the files table and the qnn backend's SoC table."""
    problems, files = [], manifest["files"]
    for context in (manifest.get("qnn") or {}).get("contexts", []):
        soc = context["soc"]
        for name, file in context["entry_points"].items():
            if file not in files:
                problems.append(Problem("entry_point", f"the {soc} context's {name} entry point names {file!r}, which "
                                                       "the manifest does not list"))
        for file, entry in context["binaries"].items():
            if files.get(file) != entry:
                problems.append(Problem("schema", f"manifest: qnn context {soc}: binary {file} is not recorded as "
                                                  "the files table records it"))
        chip = SOCS[soc]
        if (context["soc_model"], context["htp_arch"]) != (chip.soc_model, chip.htp_arch):
            problems.append(Problem("schema", f"manifest: qnn context {soc}: soc_model {context['soc_model']} / "
                                              f"htp_arch {context['htp_arch']} are not {chip.title}'s "
                                              f"({chip.soc_model} / {chip.htp_arch})"))
    return problems


def _load_other_contexts(bundle: Path, manifest: dict, ran_on: str) -> list[Problem]:
    """Each precompiled context the generation did not use, loaded on HTP for its own SoC (not run)."""
    problems = []
    for context in (manifest.get("qnn") or {}).get("contexts", []):
        if context["soc"] == ran_on:
            continue
        for name, file in context["entry_points"].items():
            try:
                create_session(bundle / file, context["soc"])
            except UserError as exc:
                problems.append(Problem("backend", f"the {context['soc']} context's {name} graph does not load: {exc}"))
    return problems


def _execution_note(execution: dict) -> str:
    if execution.get("execution_provider") != "QNNExecutionProvider":
        return ("the npu graphs ran on ONNX Runtime's CPU provider (onnxruntime-qnn is not installed, or "
                "QWEN_EDGE_NPU_PROVIDER=cpu): whether Qualcomm's HTP takes them was not checked")
    how = "from its precompiled context binary" if execution["context_binary"] else "compiled at load"
    where = "simulated on this x86 host (the NPU's outputs, not its speed)" if execution["simulated"] else "on the NPU"
    return (f"the npu graphs ran whole on QNN's HTP for {execution['soc_name']} (HTP v{execution['htp_arch']}), {how}, "
            f"{where}; CPU fallback disabled")


def _generate(bundle: Path, manifest: dict, new_tokens: int, notes: list[str], problems: list[Problem],
              fixture: dict | None = None):
    """A short greedy chat on the bundle's backend, then its reference fixture → (text or None, ran, what ran it or
    None, the fixture check's report or None)."""
    try:
        backend = load_backend(bundle, manifest)  # checked just now by check_bundle: not hashed again
    except UserError as exc:
        if "needs macOS" in str(exc) or "runs on the device" in str(exc) or "not installed" in str(exc):
            notes.append(f"entry points not run here: {exc}" + ("; nor was the reference fixture" if fixture else ""))
            return None, False, None, None
        problems.append(Problem("backend", f"the backend cannot load the bundle: {exc}"))
        return None, False, None, None
    execution = backend.describe() if hasattr(backend, "describe") else None
    if execution and "npu" in manifest:
        notes.append(_execution_note(execution))
    try:
        tokenizer = QwenTokenizer(bundle)
        result = run(backend, tokenizer, [{"role": "user", "content": "What is 2 + 2?"}], budget=0,
                     max_new_tokens=new_tokens)
    except Exception as exc:  # a bundle that loads but cannot run is bad, whatever the reason
        problems.append(Problem("backend", f"a short generation failed: {_reason(exc)}"))
        return None, True, execution, None
    if not result.token_ids:
        problems.append(Problem("backend", "a short generation produced no tokens"))
    checked = None
    if fixture is not None:
        try:
            checked = reference_fixture.check(backend, tokenizer, fixture, manifest)
        except Exception as exc:
            problems.append(Problem("backend", f"the reference fixture could not run: {_reason(exc)}"))
    if checked is not None and not checked["passed"]:
        problems.append(Problem("fixture", reference_fixture.describe_failure(checked)))
    return result.content, True, execution, checked


def _reason(exc: Exception) -> str:
    """One line for a failure: a UserError's own words, else the exception's type and first line."""
    if isinstance(exc, UserError):
        return str(exc)
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
