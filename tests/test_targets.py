"""Targets are plug-ins: a target registered by a test alone exports a bundle that verify accepts; the generic
export path names no target; no function of the exporter or the runtime takes more than 8 parameters."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from exporter.options import ExportOptions
from exporter.targets.registry import TARGETS
from exporter.targets.schemes import QuantScheme
from exporter.targets.target import Artifact, BundleRequest
from runtimes.bundle import read_manifest
from runtimes.errors import UserError
from runtimes.verify import verify
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
MAX_PARAMETERS = 8


class ToyTarget:
    """The fp32 module as one ONNX graph, through the onnx cpu writer's graph builder, run by the onnxruntime
    backend. Named "reference" because the bundle schema (shared with the apps) lists the targets it knows."""
    name = "reference"
    backend = "onnxruntime"
    libraries = ("onnx",)
    own_options = ()
    hints: dict[str, str] = {}
    choices: dict[str, tuple] = {}

    def scheme_for(self, scheme: QuantScheme) -> QuantScheme:
        return scheme

    def needs_int8_table(self, options: ExportOptions) -> bool:
        return False

    def stores_float16(self, options: ExportOptions) -> bool:
        return False

    def symmetric_only(self, options: ExportOptions) -> str | None:
        return None

    def check_options(self, options: ExportOptions, scheme: QuantScheme, alone: bool) -> None:
        if scheme.name != "fp32":
            raise UserError("the toy target writes fp32 only")

    def check_libraries(self, options: ExportOptions) -> None:
        pass

    def write(self, request: BundleRequest) -> Artifact:
        from exporter.targets.onnx_cpu import export_cpu

        entry_points = export_cpu(request.module, request.weights, request.into, request.options.max_seq_len)
        return Artifact(entry_points, "float32", "[layers] x key/value x [1, kv_heads, positions, head_dim]")


def test_a_registered_target_exports_a_bundle_verify_accepts(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(TARGETS, ToyTarget.name, ToyTarget())
    out = tmp_path / "toy"
    code, _, err = run_cli(capsys, "--model", "tiny", "--target", "reference", "--quant", "int8", "--out", str(out))
    assert code == 2 and err.strip() == "error: the toy target writes fp32 only"
    code, _, err = run_cli(capsys, "--model", "tiny", "--target", "reference", "--quant", "fp32", "--delegate",
                           "coreml", "--out", str(out))
    assert code == 2 and "--delegate applies to --target executorch only" in err  # another target's option
    code, printed, err = run_cli(capsys, "--model", "tiny", "--target", "reference", "--quant", "fp32",
                                 "--max-seq-len", "64", "--out", str(out))
    assert code == 0, err
    manifest = read_manifest(out)
    assert (manifest["target"], manifest["backend"], manifest["quant"]["name"]) == ("reference", "onnxruntime", "fp32")
    assert set(manifest["versions"]) >= {"qwen-edge", "onnx"}
    result = verify(out)
    assert result["ok"] and result["ran"], result


def test_the_cli_offers_only_registered_targets(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(capsys, "--model", "tiny", "--target", "reference", "--out", str(tmp_path / "x"))
    assert code == 2 and "invalid choice: 'reference'" in err


def _functions(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield path.relative_to(ROOT), node


def _parameter_count(node) -> int:
    a = node.args
    names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)] + [p.arg for p in (a.vararg, a.kwarg) if p]
    return len(names) - (names[:1] in (["self"], ["cls"]))


@pytest.mark.parametrize("package", ["exporter", "runtimes"])
def test_no_function_takes_more_than_8_parameters(package):
    """Past 8, the parameters are one object's fields: a dataclass says so once (self and cls do not count)."""
    long = [f"{path}:{node.lineno} {getattr(node, 'name', 'lambda')} ({_parameter_count(node)})"
            for path, node in _functions(package) if _parameter_count(node) > MAX_PARAMETERS]
    assert long == []


def test_the_counter_counts():
    node = ast.parse("def f(self, a, b=1, *c, d, **e): pass").body[0]
    assert _parameter_count(node) == 5
    assert _parameter_count(ast.parse("def g(a, b, c, d, e, f, g, h, i): pass").body[0]) == 9


# the target-independent export path: it reaches targets through the registry only
GENERIC = ("exporter/export.py", "exporter/options.py", "exporter/bundle.py", "exporter/output.py",
           "exporter/quantize.py", "exporter/commands/export.py", "exporter/commands/quantize.py",
           "exporter/commands/common.py")


@pytest.mark.parametrize("path", GENERIC)
def test_the_generic_export_path_names_no_target(path):
    names = set(TARGETS)
    tree = ast.parse((ROOT / path).read_text())
    literals = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value in names]
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
                and node.module.startswith("exporter.targets.") and node.module.split(".")[-1] not in
                ("registry", "target", "schemes")]
    assert (literals, imported) == ([], [])
