"""The packages depend one way: runtimes (and the evaluation on top of it, runtimes/eval) never import exporter,
calibration or tools; calibration never imports exporter or tools; exporter never imports tools; and no module
cycle exists. Checked on the source (every import, deferred ones in functions included), not by importing."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runtimes", "calibration", "exporter", "tools")
FORBIDDEN = {"runtimes": ("exporter", "calibration", "tools"), "calibration": ("exporter", "tools"),
             "exporter": ("tools",)}
# the runtime works without torch (an extra): these runtimes modules may not import torch even in a function
TORCH_FREE = ("runtimes/bundle.py", "runtimes/chat.py", "runtimes/errors.py", "runtimes/files.py",
              "runtimes/generate.py", "runtimes/sampling.py", "runtimes/thinking.py", "runtimes/tokenizer.py",
              "runtimes/verify.py", "runtimes/tool_calls.py", "runtimes/messages.py", "runtimes/serve.py",
              "runtimes/backends/__init__.py", "runtimes/backends/onnxruntime.py",
              "runtimes/backends/coreml.py", "runtimes/backends/qnn.py")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, resolved against our packages (`from a.b import c` may mean module a.b.c)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {name: {m for m in imports(path) if m in files and m != name} for name, path in files.items()}


def test_dependencies_point_one_way():
    wrong = [(name, target) for name, targets in graph().items() for target in targets
             if any(target.split(".")[0] == banned for banned in FORBIDDEN.get(name.split(".")[0], ()))]
    assert wrong == []


def test_no_import_cycles():
    edges = graph()
    # a package's __init__ importing its own submodules is not a cycle of code
    edges = {name: {t for t in targets if not (t.startswith(name + ".") and edges.get(name) is not None)}
             for name, targets in edges.items()}
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


def test_the_runtime_core_does_not_need_torch():
    users = [f for f in TORCH_FREE if any(m == "torch" or m.startswith("torch.") for m in imports(ROOT / f))]
    assert users == []


NO_TORCH = """
import sys
sys.modules["torch"] = None  # as if torch were not installed: importing it raises ImportError
from exporter.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_bundles_run_and_verify_without_torch(tmp_path):
    """The runtime is the base install; torch is an extra. An ONNX bundle verifies and chats without it, and a
    command that needs torch says so in one line."""
    import subprocess
    import sys

    from exporter.cli import main

    bundle = tmp_path / "b"
    assert main(["--model", "tiny", "--target", "onnx", "--quant", "int4", "--out", str(bundle)]) == 0

    def run(*argv):
        return subprocess.run([sys.executable, "-c", NO_TORCH, *argv], cwd=ROOT, capture_output=True, text=True)

    verified = run("verify", "--bundle", str(bundle))
    assert verified.returncode == 0 and "OK; a short greedy generation ran" in verified.stdout, verified.stderr
    chat = run("chat", "--bundle", str(bundle), "--thinking-budget", "8", "What is 12 + 30?")
    assert chat.returncode == 0 and "reasoning tokens" in chat.stderr, chat.stderr
    export = run("--model", "tiny", "--target", "onnx", "--out", str(tmp_path / "x"))
    assert export.returncode == 2 and "pip install 'qwen-edge[torch]'" in export.stderr, export.stderr
    assert len(export.stderr.strip().splitlines()) == 1
