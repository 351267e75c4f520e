"""The layers: every module belongs to one, and imports only from its own layer or lower ones. Checked on the source
over resolved module names (absolute and relative imports, deferred ones inside functions, and modules loaded by name
through importlib from a literal "package.module" or "package.module:Class" string), and, for the modules that must
run without torch, by importing them in a fresh process where torch cannot be imported."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from exporter.cli import main

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runtimes", "calibration", "exporter", "tools")

# Bottom to top. "pkg.*" covers a package and everything in it, a plain name one module. Every module must be placed:
# a new one that is not fails test_every_module_has_a_layer until it is written here.
LAYERS = (
    ("base", ("runtimes", "runtimes.errors", "runtimes.files", "runtimes.quiet", "runtimes.memory",
              "runtimes.weights", "runtimes.rope")),
    # one file per backend; bundle.load_backend and generate sit above them
    ("backends", ("runtimes.backends", "runtimes.backends.onnxruntime", "runtimes.backends.qnn",
                  "runtimes.backends.coreml", "runtimes.backends.executorch",
                  "runtimes.backends.executorch_runner", "runtimes.backends.executorch_kernels")),
    # running a bundle: the contract, the chat format, generation
    ("runtime", ("runtimes.bundle", "runtimes.verify", "runtimes.chat", "runtimes.tokenizer", "runtimes.thinking",
                 "runtimes.sampling", "runtimes.generate", "runtimes.tool_calls", "runtimes.messages",
                 "runtimes.serve", "runtimes.fixture", "runtimes.models.*")),
    # [torch] the one Qwen3 module and checkpoints; above them quantization (an int8 cache is a cache class of
    # quant/kv.py's, which the model never imports) and the backend that runs the module
    ("model", ("runtimes.model", "runtimes.checkpoint")),
    ("quant", ("runtimes.quant.*", "runtimes.backends.reference", "runtimes.reference")),
    ("eval", ("runtimes.eval.*",)),
    ("calibration", ("calibration.*",)),  # its builtin text includes eval's arithmetic chats
    ("exporter", ("exporter.*",)),
    ("tools", ("tools.*",)),  # not shipped
)
# the layers a bundle runs on: none of their modules imports torch, even inside a function...
TORCH_FREE_LAYERS = ("base", "backends", "runtime")
# ...except these, whose own extra installs torch and which import it only when they run
TORCH_WHEN_RUN = {"runtimes.backends.executorch": "ExecuTorch's pybindings need libtorch loaded first"}
# modules that use torch when they run but import without it: the CLI, which says in one line that a command needs
# torch, and the evaluation, which bench --no-accuracy runs without torch
IMPORTED_WITHOUT_TORCH = ("exporter", "exporter.cli", "exporter.commands.*", "runtimes.eval.*")


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path) -> dict[str, Path]:
    return {module_name(root, p): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}


def imported_names(name: str, path: Path) -> set[str]:
    """Every name `path` imports, absolute: `from .x import y` in package p is p.x.y (which may be a module or an
    attribute of p.x); a literal "pkg.b:C" or "pkg.b" string in one of our packages counts too (importlib loads such
    strings)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found |= {module} | {f"{module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            module = node.value.split(":")[0]
            if module.split(".")[0] in PACKAGES and re.fullmatch(r"\w+(\.\w+)+(:\w+)?|\w+:\w+", node.value):
                found.add(module)
    return found


def resolve(name: str, known) -> str | None:
    """The project module a name lives in (a.b.c may be attribute c of module a.b), or None outside the project."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def graph(root: Path) -> dict[str, set[str]]:
    """module → the project modules it imports (itself excluded)."""
    files = modules(root)
    return {name: {m for m in map(lambda n: resolve(n, files), imported_names(name, path)) if m and m != name}
            for name, path in files.items()}


def is_member(name: str, member: str) -> bool:
    """`name` is `member`, or inside it when member is "package.*"."""
    return name == member.removesuffix(".*") or (member.endswith(".*") and name.startswith(member[:-1]))


def layer_of(name: str) -> str | None:
    return next((layer for layer, members in LAYERS if any(is_member(name, m) for m in members)), None)


def layer_violations(root: Path) -> list[str]:
    """Every import that points up: `a (layer) -> b (higher layer)`."""
    rank = {layer: i for i, (layer, _) in enumerate(LAYERS)}
    return [f"{name} ({layer_of(name)}) -> {target} ({layer_of(target)})"
            for name, targets in sorted(graph(root).items()) for target in sorted(targets)
            if rank[layer_of(target)] > rank[layer_of(name)]]


def imports_torch(name: str, path: Path) -> bool:
    return any(m == "torch" or m.startswith("torch.") for m in imported_names(name, path))


def torch_free_modules(root: Path) -> list[str]:
    return [name for name in modules(root) if layer_of(name) in TORCH_FREE_LAYERS]


def torch_users(root: Path) -> list[str]:
    """Torch-free modules that import torch, themselves or through any chain of project imports (deferred ones
    included); a TORCH_WHEN_RUN module's own torch import does not count."""
    files, edges = modules(root), graph(root)
    direct = {name for name, path in files.items() if name not in TORCH_WHEN_RUN and imports_torch(name, path)}
    users = []
    for start in torch_free_modules(root):
        seen, todo = set(), [start]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(edges[name])
        if seen & direct:
            users.append(f"{start} -> {', '.join(sorted(seen & direct))}")
    return users


IMPORT_WITHOUT_TORCH = """
import importlib, json, sys

class NoTorch:  # as if torch were not installed
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"No module named {name!r} (blocked)")

sys.meta_path.insert(0, NoTorch())
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failed))
"""


def import_failures_without_torch(root: Path) -> dict[str, str]:
    """Imports every torch-free module, and every IMPORTED_WITHOUT_TORCH one, in one fresh process where torch
    cannot be imported."""
    names = torch_free_modules(root) + [name for name in modules(root) if layer_of(name) not in TORCH_FREE_LAYERS
                                        and any(is_member(name, m) for m in IMPORTED_WITHOUT_TORCH)]
    done = subprocess.run([sys.executable, "-c", IMPORT_WITHOUT_TORCH, *names], cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_every_module_has_a_layer():
    assert [name for name in modules(ROOT) if layer_of(name) is None] == []


def test_imports_point_down():
    assert layer_violations(ROOT) == []


def test_no_import_cycles():
    edges = graph(ROOT)
    # a package's __init__ importing its own submodules is not a cycle of code
    edges = {name: {t for t in targets if not t.startswith(name + ".")} for name, targets in edges.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_runtime_needs_no_torch():
    assert torch_users(ROOT) == []
    assert import_failures_without_torch(ROOT) == {}


def copy_of_the_tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=lambda folder, names: [  # the code alone
            n for n in names if n == "__pycache__" or (Path(folder, n).is_file() and not n.endswith(".py"))])
    return tmp_path


def plant(path: Path, line: str) -> None:
    """`line` inside a new function at the end of the module: a deferred import."""
    path.write_text(path.read_text() + f"\n\ndef _planted():\n    {line}\n")


def test_the_checks_see_deferred_and_relative_imports(tmp_path):
    tree = copy_of_the_tree(tmp_path)
    plant(tree / "runtimes/generate.py", "from .eval import parity")
    assert layer_violations(tree) == ["runtimes.generate (runtime) -> runtimes.eval (eval)",
                                      "runtimes.generate (runtime) -> runtimes.eval.parity (eval)"]

    shutil.copy2(ROOT / "runtimes/generate.py", tree / "runtimes/generate.py")
    plant(tree / "runtimes/tokenizer.py", "from .checkpoint import load_checkpoint")
    assert layer_violations(tree) == ["runtimes.tokenizer (runtime) -> runtimes.checkpoint (model)"]
    users = torch_users(tree)
    assert "runtimes.tokenizer -> runtimes.checkpoint" in users
    assert any(user.startswith("runtimes.generate -> ") for user in users)  # it imports the tokenizer


def test_the_checks_see_modules_loaded_by_name(tmp_path):
    tree = copy_of_the_tree(tmp_path)
    table = tree / "runtimes/bundle.py"
    table.write_text(table.read_text().replace('"runtimes.backends.coreml:CoreMLBackend"',
                                               '"runtimes.backends.reference:ReferenceBackend"'))
    assert layer_violations(tree) == ["runtimes.bundle (runtime) -> runtimes.backends.reference (quant)"]


def test_the_import_without_torch_fails_on_a_top_level_torch_import(tmp_path):
    tree = copy_of_the_tree(tmp_path)
    thinking = tree / "runtimes/thinking.py"
    thinking.write_text("import torch  # noqa: F401\n" + thinking.read_text())
    failures = import_failures_without_torch(tree)
    assert {"runtimes.thinking", "runtimes.generate"} <= set(failures)  # generate imports thinking
    assert all("torch" in message for message in failures.values()), failures


NO_TORCH = """
import sys
sys.modules["torch"] = None  # as if torch were not installed: importing it raises ImportError
from exporter.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_bundles_run_and_verify_without_torch(tmp_path):
    """The runtime is the base install; torch is an extra. An ONNX bundle verifies and chats without it, and a
    command that needs torch says so in one line."""
    bundle = tmp_path / "b"
    assert main(["--model", "tiny", "--target", "onnx", "--quant", "int4", "--out", str(bundle)]) == 0

    def run(*argv):
        return subprocess.run([sys.executable, "-c", NO_TORCH, *argv], cwd=ROOT, capture_output=True, text=True)

    verified = run("verify", "--bundle", str(bundle))
    assert verified.returncode == 0 and "OK; a short greedy generation ran" in verified.stdout, verified.stderr
    assert "reference fixture passed" in verified.stdout  # the fixture's numbers, replayed without torch
    chat = run("chat", "--bundle", str(bundle), "--thinking-budget", "8", "What is 12 + 30?")
    assert chat.returncode == 0 and "reasoning tokens" in chat.stderr, chat.stderr
    export = run("--model", "tiny", "--target", "onnx", "--out", str(tmp_path / "x"))
    assert export.returncode == 2 and "pip install 'qwen-edge[torch]'" in export.stderr, export.stderr
    assert len(export.stderr.strip().splitlines()) == 1
