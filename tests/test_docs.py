"""The documentation a newcomer reads: short README, working links, and benchmark pages that are generated."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))


def test_readme_is_short_and_teaches_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert 'pip install -e ".[dev]" -c constraints.txt && python -m pytest -q' in text
    assert 'pip install -e ".[dev]" -c constraints.txt && python -m exporter --model tiny' in text
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
