"""The reference fixture: every bundle carries what its parity reference generated, listed and hashed in the
manifest, and verify replays it on the bundle's backend (without torch) with parity's criteria."""

import json
import shutil
import subprocess
import sys

import pytest

from runtimes.bundle import manifest_digest_line
from runtimes.files import sha256_file
from runtimes.fixture import (CASES, EXACT_TOLERANCE, FIXTURE_FILE, NEAR_TIE_MARGIN, TOP_K, dumps,
                              judged_by_agreement, summary)
from runtimes.verify import verify
from tests.conftest import ET_8DA4W, ROOT, run_cli

ONNX_INT4 = ("--model", "tiny", "--target", "onnx", "--quant", "int4", "--max-seq-len", "256")  # rounded: int8 acts
ONNX_FP32 = ("--model", "tiny", "--target", "onnx", "--quant", "fp32", "--max-seq-len", "256")  # exact
FIXTURE_BYTES = 64 * 1024  # bounded: top-k per step, never the vocabulary


def fixture_of(bundle):
    return json.loads((bundle / FIXTURE_FILE).read_bytes())


def resign(bundle, fixture: dict, record: bool = True) -> None:
    """Write `fixture` into the bundle and re-sign it: the files table, the manifest's fixture record (unless
    record is False) and manifest.sha256 follow, so only the fixture's numbers can give it away."""
    path = bundle / FIXTURE_FILE
    path.write_bytes(dumps(fixture))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][FIXTURE_FILE] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    if record:
        manifest["fixture"] = summary(fixture)
    text = (json.dumps(manifest, indent=2) + "\n").encode()
    (bundle / "manifest.json").write_bytes(text)
    (bundle / "manifest.sha256").write_text(manifest_digest_line(text))


def codes(result: dict) -> set[str]:
    return {p["code"] for p in result["problems"]}


def assert_carries_fixture(bundle) -> dict:
    """The fixture is listed, hashed and recorded in the manifest, bounded, and holds every case of CASES."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = manifest["files"][FIXTURE_FILE]
    assert entry == {"sha256": sha256_file(bundle / FIXTURE_FILE), "bytes": (bundle / FIXTURE_FILE).stat().st_size}
    assert entry["bytes"] <= FIXTURE_BYTES
    fixture = fixture_of(bundle)
    assert manifest["fixture"] == summary(fixture) and manifest["fixture"]["file"] == FIXTURE_FILE
    assert [c["name"] for c in fixture["cases"]] == [c.name for c in CASES]
    thinking = {c["name"]: c["thinking"] for c in fixture["cases"]}
    assert thinking["thinking"] and thinking["budget_cut"] and not thinking["no_think"]  # both modes
    assert any(c["stopped_by_budget"] for c in fixture["cases"])  # one budget cut at least
    for case in fixture["cases"]:
        assert len(case["steps"]) == len(case["token_ids"]) > 0
        for step in case["steps"]:
            assert len(step["top_ids"]) == len(step["top_logits"]) == TOP_K
            assert step["top_logits"] == sorted(step["top_logits"], reverse=True)
            assert step["margin"] == pytest.approx(step["top_logits"][0] - step["top_logits"][1])
        # where the model chose (not the budget's forced stop text), greedy took the reference's argmax
        if not case["stopped_by_budget"]:
            assert case["token_ids"] == [s["top_ids"][0] for s in case["steps"]]
    return fixture


@pytest.mark.parametrize("flags", [ONNX_INT4, ONNX_FP32, ET_8DA4W], ids=["onnx-int4", "onnx-fp32", "et-8da4w"])
def test_the_bundle_carries_its_fixture_and_passes_it(shared_export, flags):
    bundle = shared_export(*flags)
    assert_carries_fixture(bundle)
    result = verify(bundle)
    assert result["ok"], result["problems"]
    checked = result["fixture"]
    assert checked["passed"] and checked["steps"] == json.loads((bundle / "manifest.json").read_text())[
        "fixture"]["steps"]
    assert all(case["prompt_matches"] for case in checked["cases"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    if judged_by_agreement(manifest):  # int8 activations / int8 KV cache: parity's agreement criterion
        assert checked["criterion"].startswith("top1_agreement >= 0.99")
    else:  # fp32: computes what the reference computes
        assert checked["criterion"] == f"greedy_match and max_abs_logit_diff_top_k <= {EXACT_TOLERANCE}"
        assert checked["greedy_match"] and checked["max_abs_logit_diff_top_k"] <= EXACT_TOLERANCE


def test_verify_prints_what_the_fixture_check_found(shared_export, capsys):
    bundle = shared_export(*ONNX_FP32)
    code, out, _ = run_cli(capsys, "verify", "--bundle", str(bundle))
    assert code == 0, out
    line = [x for x in out.splitlines() if "reference fixture passed" in x]
    assert len(line) == 1 and "3 prompts" in line[0] and "greedy match True" in line[0], out


def test_a_fixture_of_other_weights_fails(shared_export, tmp_path):
    """The int4 bundle's fixture, re-signed into the fp32 bundle: the files, digest and record all agree, and only
    replaying the numbers shows the fixture no longer belongs to these weights."""
    bundle = tmp_path / "b"
    shutil.copytree(shared_export(*ONNX_FP32), bundle)
    other = fixture_of(shared_export(*ONNX_INT4))
    other["criterion"] = fixture_of(bundle)["criterion"]  # re-signed whole: the criterion is this bundle's
    resign(bundle, other)
    assert verify(bundle, run=False)["ok"]  # the contract holds: nothing but the numbers is wrong
    result = verify(bundle)
    assert codes(result) == {"fixture"}, result["problems"]
    assert result["fixture"]["max_abs_logit_diff_top_k"] > EXACT_TOLERANCE
    assert "the reference fixture fails" in result["problems"][0]["message"]


def test_a_rounded_bundle_fails_a_flip_at_a_wide_margin(shared_export, tmp_path, capsys):
    """int4 (judged by agreement): the fixture's argmax moved, in one step, to the id ranked last in its top-k, with
    a margin far beyond a near tie. One flip in fewer than 100 steps is below 99% agreement and not a near tie."""
    bundle = tmp_path / "b"
    shutil.copytree(shared_export(*ONNX_INT4), bundle)
    fixture = fixture_of(bundle)
    step = fixture["cases"][0]["steps"][0]
    ids, values = step["top_ids"], step["top_logits"]
    step["top_ids"] = [ids[-1], *ids[:-1]]
    step["top_logits"] = [values[0] + 2 * NEAR_TIE_MARGIN, *values[:-1]]
    step["margin"] = step["top_logits"][0] - step["top_logits"][1]
    resign(bundle, fixture)
    report = tmp_path / "v.json"
    code, out, _ = run_cli(capsys, "verify", "--bundle", str(bundle), "--json", str(report))
    result = json.loads(report.read_text())
    assert code == 1 and codes(result) == {"fixture"}, out
    # (another CPU's kernels may flip a near tie elsewhere too: this one is what must fail it)
    assert {"case": "thinking", "step": 0, "reference_margin": step["margin"]} in result["fixture"]["disagreements"]
    assert result["fixture"]["top1_agreement"] < 0.99


def test_a_rounded_bundle_passes_a_flip_at_a_near_tie(shared_export, tmp_path):
    """The same bundle, its fixture's top two swapped at a step where the reference's margin is a near tie: a
    rounding flip, which agreement tolerates. Teacher-forced, so the tokens stay the reference's."""
    bundle = tmp_path / "b"
    shutil.copytree(shared_export(*ONNX_INT4), bundle)
    fixture = fixture_of(bundle)
    case, index = next((c, i) for c in fixture["cases"] for i, s in enumerate(c["steps"])
                       if s["margin"] < NEAR_TIE_MARGIN / 2)
    step = case["steps"][index]
    step["top_ids"][:2] = step["top_ids"][1::-1]
    step["top_logits"][1] = step["top_logits"][0]  # ordered again; the margin is what the reference is said to have
    step["margin"] = 0.0
    resign(bundle, fixture)
    result = verify(bundle)
    assert result["ok"], result["problems"]
    assert {"case": case["name"], "step": index, "reference_margin": 0.0} in result["fixture"]["disagreements"]


@pytest.mark.parametrize("break_it, words", [
    (lambda f: f.update(top_k=1), "no top_k between 2"),
    (lambda f: f["cases"][0]["steps"].pop(), "is malformed"),
    (lambda f: f["cases"][1]["steps"][0]["top_ids"].__setitem__(0, 10 ** 6), "malformed step"),
    (lambda f: f.update(format="other"), "is not a qwen-edge-reference-fixture"),
    (lambda f: f["cases"][2].update(messages=[{"role": "user"}]), "is malformed"),
    (lambda f: f["criterion"].update(near_tie_margin=100.0), "records a criterion other than"),  # loosened
])
def test_a_malformed_fixture_is_a_problem_without_running(shared_export, tmp_path, break_it, words):
    bundle = tmp_path / "b"
    shutil.copytree(shared_export(*ONNX_INT4), bundle)
    fixture = fixture_of(bundle)
    break_it(fixture)
    resign(bundle, fixture, record=False)
    result = verify(bundle, run=False)
    assert codes(result) == {"fixture"} and words in result["problems"][0]["message"], result["problems"]


def test_a_record_that_lies_about_its_fixture_is_a_problem(shared_export, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(shared_export(*ONNX_INT4), bundle)
    fixture = fixture_of(bundle)
    fixture["cases"].pop()
    resign(bundle, fixture, record=False)  # the manifest still says three cases
    result = verify(bundle, run=False)
    assert codes(result) == {"fixture"} and "manifest's fixture record" in result["problems"][0]["message"]


def test_a_bundle_without_a_fixture_verifies_with_a_note(shared_export, tmp_path):
    """Bundles exported before fixtures still verify; the note says their numbers were not checked."""
    bundle = tmp_path / "b"
    shutil.copytree(shared_export(*ONNX_INT4), bundle)
    (bundle / FIXTURE_FILE).unlink()
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["fixture"], manifest["files"][FIXTURE_FILE]
    text = (json.dumps(manifest, indent=2) + "\n").encode()
    (bundle / "manifest.json").write_bytes(text)
    (bundle / "manifest.sha256").write_text(manifest_digest_line(text))
    result = verify(bundle)
    assert result["ok"] and result["fixture"] is None
    assert any("no reference fixture" in note for note in result["notes"])


NO_TORCH = """
import json, sys
sys.modules["torch"] = None  # as if torch were not installed: importing it raises ImportError
from runtimes.verify import verify
result = verify(sys.argv[1])
assert "torch" not in [m for m, v in sys.modules.items() if v is not None]
print(json.dumps(result))
"""


def test_the_fixture_check_needs_no_torch(shared_export):
    bundle = shared_export(*ONNX_INT4)
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, str(bundle)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] and result["fixture"]["passed"] and result["fixture"]["steps"] > 0


def test_the_apps_golden_fixture_is_tinys(shared_export):
    """tests/golden/reference_fixture.json, which the Java and Swift FixtureCheck tests replay, is tiny's int4 ONNX
    bundle's fixture: it still passes on that bundle (else copy the bundle's reference_fixture.json over it)."""
    from runtimes.bundle import load_backend, read_manifest
    from runtimes.fixture import check, criterion
    from runtimes.tokenizer import QwenTokenizer

    golden = json.loads((ROOT / "tests" / "golden" / FIXTURE_FILE).read_text())
    bundle = shared_export(*ONNX_INT4)
    manifest = read_manifest(bundle)
    assert golden["criterion"] == criterion(manifest)
    assert check(load_backend(bundle, manifest), QwenTokenizer(bundle), golden, manifest)["passed"]


def test_a_short_context_keeps_the_cases_that_fit(shared_export):
    """24 positions: the /no_think prompt (27 tokens with tiny's tokenizer) does not fit and is left out; the others
    fill the context and stop there, in the export as in verify."""
    bundle = shared_export("--model", "tiny", "--target", "onnx", "--quant", "fp32", "--max-seq-len", "24")
    fixture = fixture_of(bundle)
    assert [c["name"] for c in fixture["cases"]] == ["thinking", "budget_cut"]
    assert all(len(c["prompt_ids"]) + len(c["token_ids"]) == 24 for c in fixture["cases"])  # to the last position
    result = verify(bundle)
    assert result["ok"] and result["fixture"]["greedy_match"], result["problems"]


def test_a_context_too_short_for_every_prompt_gets_no_fixture(tiny_tokenizer):
    from runtimes.backends.reference import ReferenceBackend
    from runtimes.fixture import record
    from runtimes.model import from_pretrained

    module, _ = from_pretrained("tiny", max_seq_len=16)
    manifest = {"quant": {"name": "fp32"}, "kv_cache": {"dtype": "float32"}}
    assert record(ReferenceBackend(module), tiny_tokenizer, "fp32", manifest) is None


def test_an_export_whose_reference_does_not_fit_is_written_without_a_fixture(tmp_path, capsys, monkeypatch):
    """The fixture's fp32 reference is a second copy of the model (~16 GB for 4B): where it does not fit beside the
    export, the bundle is written all the same, without a fixture, and the export says why."""
    import exporter.fixture
    from runtimes import memory

    monkeypatch.setattr(exporter.fixture, "model_need", lambda arch, positions: memory.MemoryNeed(1 << 50, 0, 0,
                                                                                                   positions))
    out = tmp_path / "b"
    code, _, err = run_cli(capsys, "--model", "tiny", "--target", "onnx", "--max-seq-len", "128", "--out", str(out))
    assert code == 0, err
    assert "the bundle is written without a fixture" in err and err.count("\n") <= 6
    manifest = json.loads((out / "manifest.json").read_text())
    assert "fixture" not in manifest and not (out / FIXTURE_FILE).exists()
    result = verify(out)
    assert result["ok"] and any("no reference fixture" in note for note in result["notes"])
