import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from exporter.cli import main
from exporter.make_model import SHAPES, write_random_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# exports keep AWQ results in a cache (exporter/quantize.py): the tests' go to a directory of their own, never ~/.cache
os.environ["QWEN_EDGE_CACHE"] = tempfile.mkdtemp(prefix="qwen-edge-test-cache-")

SMALL = {**SHAPES["0.6b"], "vocab_size": 512, "hidden_size": 64, "intermediate_size": 160,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory) -> Path:
    """A tiny random Qwen3 checkpoint (fp32, one file, tied head)."""
    out = tmp_path_factory.mktemp("ckpt") / "small"
    return write_random_checkpoint(out, SMALL, seed=1, dtype="float32")


def copy_checkpoint(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def edit_config(model_dir: Path, **changes) -> None:
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Run the CLI in-process → (exit code, stdout, stderr)."""
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def run_module(*argv, env=None) -> subprocess.CompletedProcess:
    """Run `python -m exporter` as a user would, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "exporter", *argv], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=600)


class SharedExports:
    """Bundles exported once per session, keyed by their exporter flags, for tests that only read them (a test
    that changes a bundle copies it first). Each export runs as a user runs it, in a process of its own, so what
    it printed is kept too (`stderr[flags]`)."""

    def __init__(self, base: Path):
        self.base, self.paths, self.stderr = base, {}, {}

    def __call__(self, *flags: str) -> Path:
        if flags not in self.paths:
            out = self.base / f"bundle-{len(self.paths)}"
            proc = run_module(*flags, "--out", str(out))
            assert proc.returncode == 0, proc.stderr
            self.paths[flags], self.stderr[flags] = out, proc.stderr
        return self.paths[flags]


@pytest.fixture(scope="session")
def shared_export(tmp_path_factory) -> SharedExports:
    return SharedExports(tmp_path_factory.mktemp("shared-exports"))


# the ExecuTorch bundle the fast tests share (ExecuTorch's lowering is the slowest export of tiny)
ET_8DA4W = ("--model", "tiny", "--target", "executorch", "--quant", "8da4w", "--max-seq-len", "256")
# the same on ExecuTorch's stock float32 cache ops (what ExecuTorch's prebuilt Android library runs)
ET_8DA4W_F32 = ET_8DA4W + ("--kv-cache", "float32")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from runtimes.checkpoint import resolve_model_dir
    from runtimes.tokenizer import QwenTokenizer

    return QwenTokenizer(resolve_model_dir("tiny"))


def file_hashes(bundle: Path) -> dict[str, str]:
    """sha256 of every file under a bundle, by relative path."""
    import hashlib

    return {p.relative_to(bundle).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(bundle.rglob("*")) if p.is_file()}
