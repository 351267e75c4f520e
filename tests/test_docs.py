"""The documentation a newcomer reads: short README, working links, and benchmark pages that are generated."""

import contextlib
import importlib
import io
import re
import shlex
from pathlib import Path

from exporter.cli import build_parser, parse
from runtimes.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
# a word in a command or in `code` that starts with one of these names a file or directory of the repo
REPO_PATH = re.compile(r"(android-demo|calibration|docs|exporter|ios-demo|runtimes|tests|tools|\.ci|\.github)"
                       r"(/[\w.-]+)*/?")
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(home|Users|work|tmp|root|mnt)/")
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*|.*\$.*")  # DIR, N, M, B06, dist/tiny-$t-$q


def fenced_blocks(text: str) -> list[list[str]]:
    return [block.splitlines() for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.DOTALL | re.MULTILINE)]


def shell_lines(lines: list[str]) -> list[str]:
    """Lines joined where the shell joins them (a trailing backslash, &&, || or |), comments kept."""
    joined, pending = [], ""
    for line in lines:
        line = pending + (line.strip() if pending else line.rstrip())
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
        elif re.search(r"(&&|\|\||\|)$", line):
            pending = line + " "
        else:
            joined.append(line.strip())
            pending = ""
    return joined + ([pending.strip()] if pending else [])


def doc_commands() -> list[tuple[str, str, list[str]]]:
    """(page, module, argv) for every `python -m exporter ...` / `python -m tools.X ...` in a code block or in
    `code` in the text, usage notation included (brackets, a|b alternatives, ..., PLACEHOLDERS)."""
    found = []
    for page in PAGES:
        text = page.read_text()
        lines = [line for block in fenced_blocks(text) for line in shell_lines(block)]
        prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
        lines += [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]
        for line in lines:
            line = re.sub(r"(^|\s)#.*", "", line)  # a comment
            for piece in re.split(r"\s(?:&&|\|\||\||;)\s|;\s|\s&(?=\s|$)", line):  # and, or, pipe, then, background
                match = re.search(r"\bpython -m (exporter|tools(?:\.\w+)+)\b(.*)", piece)
                if match:
                    argv = [t.strip("[]") for t in shlex.split(match.group(2))]
                    found.append((page.name, match.group(1), [t for t in argv if t]))
    return found


def parser_of(module: str, argv: list[str]):
    if module == "exporter":
        main, commands = build_parser()
        return commands[argv[0] if argv and not argv[0].startswith("-") else "export"]
    return importlib.import_module(module).build_parser()


def concrete(parser, argv: list[str]) -> list[list[str]]:
    """The command lines a usage line stands for: every a|b alternative once, placeholders as values that the flag
    before them accepts."""
    options = {s: a for a in parser._actions for s in a.option_strings}
    filled = []
    for i, token in enumerate(argv):
        action = options.get(argv[i - 1]) if i else None
        if PLACEHOLDER.fullmatch(token) and not token.startswith("-"):
            if action is not None and action.choices:
                token = str(next(iter(action.choices)))
            else:
                token = {int: "2", float: "0.5"}.get(action.type if action else None, "x")
        filled.append(token.split("|") if "|" in token and "/" not in token else [token])
    lines = []
    for i, alternatives in enumerate(filled):
        for alternative in alternatives[1:] if len(alternatives) > 1 else []:
            lines.append([alt[0] if j != i else alternative for j, alt in enumerate(filled)])
    return [[alt[0] for alt in filled]] + lines


def check_command(module: str, argv: list[str]) -> str | None:
    """What is wrong with one documented command line, or None."""
    if module == "exporter":
        named = argv[0] if argv and not argv[0].startswith("-") and argv[0] != "..." else None
        if named is not None and named not in build_parser()[1]:
            return f"no command {named!r}"
    elif not (ROOT / (module.replace(".", "/") + ".py")).is_file():
        return f"no module {module}"
    flags = [t for t in argv if t.startswith("-")]
    if not flags or "--help" in flags:
        return None  # a mention of the command, not a command line
    parser = parser_of(module, argv)
    if "..." in argv:  # elided: the flags shown must exist
        unknown = {f.split("=")[0] for f in flags} - {s for a in parser._actions for s in a.option_strings}
        return f"unknown flags {sorted(unknown)}" if unknown else None
    for line in concrete(parser, argv):
        try:
            with contextlib.redirect_stderr(io.StringIO()) as err:
                parse(line) if module == "exporter" else parser.parse_args(line)
        except UserError as exc:
            return f"{line}: {exc}"
        except SystemExit:
            return f"{line}: {err.getvalue().strip().splitlines()[-1]}"
    return None


def test_every_documented_command_parses():
    """Each python -m command in README.md and docs/ names a command that exists, with flags and values that its
    parser accepts (parsed only, nothing run)."""
    commands = doc_commands()
    assert len(commands) > 40 and {m for _, m, _ in commands} >= {"exporter", "tools.bench_peers"}
    wrong = [f"{page}: python -m {module} {shlex.join(argv)}: {problem}" for page, module, argv in commands
             if (problem := check_command(module, argv))]
    assert wrong == []


def test_the_checks_catch_a_wrong_command():
    assert check_command("exporter", ["bench-peers", "--model", "m06"]) == "no command 'bench-peers'"
    assert "--frobnicate" in check_command("exporter", ["parity", "--bundle", "DIR", "--frobnicate"])
    assert "invalid choice" in check_command("exporter", ["--model", "M", "--target", "onnx|tflite", "--out", "DIR"])
    assert "invalid int" in check_command("tools.bench_gqa", ["--buffer", "many"])
    assert check_command("tools.no_such_tool", []) == "no module tools.no_such_tool"


def test_every_repository_path_the_docs_name_exists():
    named = set()
    for page in PAGES:
        text = page.read_text()
        words = [w for block in fenced_blocks(text) for line in block for w in line.split()]
        words += [w for span in re.findall(r"`([^`]+)`", text) for w in span.split()]
        named |= {(page.name, w.strip(",;:()'\"")) for w in words}
    missing = [f"{page}: {path}" for page, path in sorted(named)
               if REPO_PATH.fullmatch(path) and not (ROOT / path).exists()]
    assert missing == []


def test_no_machine_paths_in_the_docs():
    assert [f"{p.name}: {m.group(0)}" for p in PAGES for m in MACHINE_PATH.finditer(p.read_text())] == []


def architecture_modules() -> set[str]:
    """The .py files docs/architecture.md's module list names: in its first code block, the first column (up to two
    spaces) holds a `dir/` or comma-separated module names, nested two spaces per level; a line with nothing in the
    first column (deeper than the level below it allows) goes on the description above it."""
    text = (ROOT / "docs/architecture.md").read_text()
    block = fenced_blocks(text[text.index("## Layers"):])[0]
    listed, folders = set(), {}
    for line in block:
        depth = (len(line) - len(line.lstrip())) // 2
        if depth > max(folders, default=-1) + 1:
            continue  # a description's second line
        names = re.split(r"\s{2,}", line.strip())[0]
        parent = folders.get(depth - 1, "")
        if names.endswith("/"):
            folders[depth] = parent + names
            listed.add(parent + names + "__init__.py")
        else:
            listed |= {f"{parent}{name.strip()}.py" for name in names.split(",") if name.strip()}
    return listed


def test_the_architecture_page_lists_every_module():
    tree = {str(p.relative_to(ROOT)) for d in ("runtimes", "calibration", "exporter", "tools")
            for p in (ROOT / d).rglob("*.py")}
    listed = architecture_modules()
    assert sorted(listed - tree) == []  # listed, not in the tree
    assert sorted(tree - listed) == []  # in the tree, not listed


def test_readme_is_short_and_teaches_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    setup = fenced_blocks(text)[0]
    assert max(map(len, setup)) <= 110  # readable without scrolling sideways
    commands = [line for line in shell_lines(setup) if line and not line.startswith("#")]
    assert len(commands) == 2
    assert commands[0].startswith('pip install -e ".[dev]" -c constraints.txt && python -m exporter --model tiny')
    assert commands[1] == 'pip install -e ".[dev]" -c constraints.txt && python -m pytest -q'
    ci = (ROOT / ".ci/run").read_text()
    assert 'pip install -q -e ".[dev]" -c constraints.txt' in ci and "python -m pytest -q" in ci


def test_every_relative_link_resolves():
    broken = []
    for page in [ROOT / "README.md", *DOCS]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken


def test_nothing_cites_material_outside_the_repository():
    code = [p for d in ("exporter", "runtimes", "calibration", "tools", "tests") for p in (ROOT / d).rglob("*.py")]
    outside = "PEERS" + ".md"  # spelled apart so that this file does not cite it either
    assert [str(p) for p in [ROOT / "README.md", *DOCS, *code] if outside in p.read_text()] == []


def test_benchmarks_page_is_what_the_generator_writes(tmp_path):
    from tools.benchmarks_doc import main

    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    assert main(["--out", str(tmp_path), "--readme", str(readme)]) == 0
    assert (tmp_path / "benchmarks.md").read_text() == (ROOT / "docs/benchmarks.md").read_text()
    assert readme.read_text() == (ROOT / "README.md").read_text()  # its peers table too
    for image in re.findall(r"\]\((img/[^)]+\.png)\)", (ROOT / "docs/benchmarks.md").read_text()):
        assert (tmp_path / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (ROOT / "docs" / image).exists()


def test_measure_export_records_time_memory_and_size(tmp_path):
    from tools.measure_export import main

    out = tmp_path / "out"
    records = tmp_path / "exports.json"
    script = (f"import pathlib; x = bytearray(300_000_000); x[::4096] = b'1' * len(x[::4096]); "
              f"pathlib.Path({str(out)!r}).write_bytes(b'0' * 12345)")
    assert main(["--label", "a", "--output", str(out), "--json", str(records), "--", "python", "-c", script]) == 0
    assert main(["--label", "b", "--json", str(records), "--", "python", "-c", "raise SystemExit(3)"]) == 3
    first, failed = __import__("json").loads(records.read_text())["records"]
    assert first["label"] == "a" and first["output_bytes"] == 12345 and first["peak_rss_bytes"] >= 300_000_000
    assert first["command"].startswith("python -c ") and failed["exit_code"] == 3
