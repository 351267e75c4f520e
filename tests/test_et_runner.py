"""tools/et_runner, the native ExecuTorch runner, and the executorch backend driving it ($QWEN_EDGE_EXECUTORCH_RUNNER).

Here the runner is built for this host; CI's aarch64 step (tools/arm64/ci.sh, run by .ci/run) cross-compiles it and
runs bundles through it under QEMU. pytest never starts QEMU."""

import json
import subprocess
import sys

import numpy as np
import pytest

from runtimes.backends.executorch import ExecuTorchBackend
from runtimes.backends.executorch_runner import RUNNER_ENV, ExecuTorchRunnerBackend
from runtimes.bundle import read_manifest
from runtimes.errors import UserError
from tests.conftest import ET_8DA4W, ROOT, run_module


def test_a_runner_that_cannot_start_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot start.*tools/et_runner/build.sh"):
        ExecuTorchRunnerBackend(tmp_path / "model.pte", {"max_seq_len": 8, "architecture": {"vocab_size": 16}}, str(tmp_path / "no-such-runner"))


def test_a_runner_that_stops_says_why(tmp_path):
    script = tmp_path / "runner.py"
    script.write_text("import sys\nsys.stderr.write('note\\nerror: ExecuTorch cannot load the forward method of "
                      "m.pte\\n')\nsys.exit(2)\n")
    backend = ExecuTorchRunnerBackend(tmp_path / "m.pte", {"max_seq_len": 8, "architecture": {"vocab_size": 16}}, f"{sys.executable} {script}")
    with pytest.raises(UserError, match=r"runner stopped \(error: ExecuTorch cannot load the forward method of "
                                        r"m.pte, exit 2\)"):
        backend.prefill([1, 2])


def test_positions_past_the_context_never_reach_the_runner(tmp_path):
    script = tmp_path / "runner.py"
    script.write_text("import sys\nsys.stdin.read()\n")  # answers nothing: a request sent would hang the test
    backend = ExecuTorchRunnerBackend(tmp_path / "m.pte", {"max_seq_len": 4, "architecture": {"vocab_size": 16}}, f"{sys.executable} {script}")
    with pytest.raises(UserError, match="5 positions exceed the bundle's context of 4"):
        backend.prefill([1, 2, 3, 4, 5])
    backend.close()


def test_verify_reports_a_missing_runner_as_a_problem(shared_export, tmp_path):
    bundle = shared_export(*ET_8DA4W)
    out = tmp_path / "v.json"
    proc = run_module("verify", "--bundle", str(bundle), "--json", str(out),
                      env={RUNNER_ENV: str(tmp_path / "no-such-runner")})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert [p["code"] for p in json.loads(out.read_text())["problems"]] == ["backend"]


@pytest.fixture(scope="module")
def native_runner(tmp_path_factory):
    out = tmp_path_factory.mktemp("et-runner")
    subprocess.run(["bash", str(ROOT / "tools/et_runner/build.sh"), str(out)], check=True, capture_output=True,
                   env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}, timeout=600)
    return out / "et_runner"


def teacher_forced(backend, ids):
    backend.reset()
    return np.stack([backend.prefill(ids[:3])] + [backend.decode(t) for t in ids[3:]])


@pytest.mark.slow
def test_the_runner_computes_what_the_python_runtime_computes(shared_export, native_runner):
    """fp32: the same program on the same libraries; only the two cache ops are the runner's own, so the logits
    agree up to float reordering (parity's fp32 tolerance, 1e-3)."""
    bundle = shared_export(*ET_8DA4W[:5], "fp32", *ET_8DA4W[6:])
    manifest = read_manifest(bundle)
    ids = [5, 17, 42, 9, 100, 3, 77, 12, 250, 31]
    ours = teacher_forced(ExecuTorchRunnerBackend.from_bundle(bundle, manifest, str(native_runner)), ids)
    theirs = teacher_forced(ExecuTorchBackend.from_bundle(bundle, manifest), ids)
    assert ours.shape == theirs.shape == (len(ids) - 2, manifest["architecture"]["vocab_size"])
    assert np.abs(ours - theirs).max() <= 1e-3
    one_shot = json.loads(subprocess.run([str(native_runner), str(bundle / "model.pte"), "5,17,42",
                                          "--new-tokens", "4", "--top", "2"], capture_output=True, text=True,
                                         check=True).stdout)
    backend = ExecuTorchBackend.from_bundle(bundle, manifest)
    expected = [int(backend.prefill([5, 17, 42]).argmax())]
    while len(expected) < 4:
        expected.append(int(backend.decode(expected[-1]).argmax()))
    assert one_shot["greedy"] == expected and [row[0][0] for row in one_shot["top"]] == expected


@pytest.mark.slow
def test_verify_runs_a_bundle_through_the_runner(shared_export, native_runner, tmp_path):
    bundle = shared_export(*ET_8DA4W)
    out = tmp_path / "v.json"
    proc = run_module("verify", "--bundle", str(bundle), "--json", str(out), env={RUNNER_ENV: str(native_runner)})
    result = json.loads(out.read_text())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert result["ran"] and result["execution"] == {"runner": str(native_runner)}
