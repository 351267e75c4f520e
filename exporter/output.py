"""Writing a directory the user named with --out, without ever destroying what we did not write.

Everything is written into a temporary directory beside `out` and swapped in when complete, so a failure or a kill
leaves the old directory or the new one, never a mix and never neither. `--overwrite` replaces only a directory
this tool wrote, recognised by what it holds (see `owner`), or an empty one; it never touches a directory that is
or contains the input model, the home or current directory, or a filesystem root.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Sequence

from exporter.targets.registry import TARGETS
from runtimes.bundle import MANIFEST, check_bundle, unsafe_path
from runtimes.errors import UserError
from runtimes.files import read_json, regular_file, sha256_file
from runtimes.quant.recipe import RECIPE_FILE

RANDOM_MODEL_MARKER = "qwen-edge-random-model.json"
# inside each temporary (.NAME.partial-PID-TOKEN) and set-aside (.NAME.old-PID-TOKEN) directory: {"pid", "token"},
# the same as in its name; remove_stale touches no directory without it
WORK_MARKER = ".qwen-edge-work.json"
KINDS = ("bundle", "bundles", "quantized checkpoint", "random model")


def after_step(step: str) -> None:
    """Called between the steps of a swap; tests replace it to kill the process exactly there."""


def _entries(path: Path) -> list[str]:
    """Every path under `path`, relative and POSIX, without following links."""
    found = []
    for root, dirs, files in os.walk(path, followlinks=False):
        found += [(Path(root) / name).relative_to(path).as_posix() for name in dirs + files]
    return found


def _listing(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def marker_differences(path: Path, marker: str) -> list[str]:
    """How the directory `path` differs from what its `marker` (a JSON object whose "files" lists every other file
    with its size and sha256, as exporter.make_model and runtimes.quant.recipe write it) says was written; empty
    when it is exactly that."""
    try:
        data = read_json(path / marker, "")
    except UserError:
        return [f"its {marker} is unreadable"]
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not files:
        return [f"its {marker} lists no files with their sha256 (not written by this version of the tool)"]
    malformed = sorted(name for name, entry in files.items()
                       if unsafe_path(name) or name == marker or not isinstance(entry, dict)
                       or type(entry.get("bytes")) is not int or not isinstance(entry.get("sha256"), str))
    if malformed:
        return [f"its {marker} has malformed entries ({_listing(malformed)})"]
    parents = {"/".join(name.split("/")[:i]) for name in files for i in range(1, name.count("/") + 1)}
    differences = []
    for name in _entries(path):
        full = path / name
        if name == marker or (name in parents and full.is_dir()):
            continue
        if name not in files:
            differences.append(f"{name} is not listed in its {marker}")
        elif not regular_file(full):
            differences.append(f"{name} is not a regular file")
    for name, entry in sorted(files.items()):
        full = path / name
        if not regular_file(full):
            if not full.exists():
                differences.append(f"{name} is missing (its {marker} lists it)")
        elif full.stat().st_size != entry["bytes"]:
            differences.append(f"{name} has {full.stat().st_size} bytes, its {marker} says {entry['bytes']}")
        elif sha256_file(full) != entry["sha256"]:
            differences.append(f"{name} was changed (its sha256 is not the one its {marker} records)")
    return differences


def owner(path: Path) -> tuple[str | None, str]:
    """(which of KINDS this tool wrote at `path`, or "empty", or None; why not, when None). Proven by content:
    a bundle must pass verify --no-run in full (manifest digest, every file with its size and sha256, nothing
    extra); a quantized checkpoint or random model must hold exactly the files its marker lists, unchanged."""
    entries = _entries(path)
    if not entries:
        return "empty", ""
    links = [e for e in entries if (path / e).is_symlink()]
    if links:
        return None, f"it holds a symbolic link ({links[0]})"
    if os.path.lexists(path / MANIFEST):
        try:
            _, problems = check_bundle(path)
        except UserError as exc:
            return None, str(exc)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            return None, (f"it is not a bundle exactly as this tool wrote it: {problems[0].message}{more}; "
                          f"python -m exporter verify --bundle {path} lists every difference")
        return "bundle", ""
    for marker, kind in ((RECIPE_FILE, "quantized checkpoint"), (RANDOM_MODEL_MARKER, "random model")):
        if os.path.lexists(path / marker):
            differences = marker_differences(path, marker)
            if differences:
                more = f" (and {len(differences) - 1} more)" if len(differences) > 1 else ""
                return None, f"it is not a {kind} exactly as this tool wrote it: {differences[0]}{more}"
            return kind, ""
    if all(e.split("/")[0] in TARGETS for e in entries):
        for name in TARGETS:
            if os.path.lexists(path / name):
                found, why = owner(path / name) if (path / name).is_dir() else (None, "it is a file")
                if found != "bundle":
                    return None, f"{name}/ in it is not a bundle this tool wrote ({why or 'it is empty'})"
        return "bundles", ""
    return None, "it holds no qwen-edge manifest, quantization recipe or model marker"


def _protected(out: Path, inputs: Sequence[Path]) -> str | None:
    """Why `out` may never be replaced, or None."""
    if out == Path(out.anchor) or os.path.ismount(out):
        return "it is a filesystem root"
    for name, place in (("the home directory", Path.home()), ("the current directory", Path.cwd())):
        place = place.resolve()
        if place == out or place.is_relative_to(out):
            return f"it is or contains {name}"
    for model in inputs:
        model = Path(model).resolve()
        if model == out or model.is_relative_to(out):
            return f"it is or contains the input model {model}"
    return None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _work_dir(out: Path, kind: str) -> Path:
    """A new directory .NAME.KIND-PID-TOKEN beside `out` (KIND: partial or old) holding WORK_MARKER, which repeats
    the pid and the random token of its name: the proof remove_stale asks for before it touches a directory."""
    pid, token = os.getpid(), secrets.token_hex(8)
    work = out.with_name(f".{out.name}.{kind}-{pid}-{token}")
    work.mkdir(mode=0o700)
    (work / WORK_MARKER).write_text(json.dumps({"out": out.name, "pid": pid, "token": token}))
    return work


def _swap_in(tmp: Path, out: Path) -> None:
    """Put the finished `tmp` at `out`. With an atomic exchange, `out` is always the old or the new directory (the
    old one lands at `tmp`, inside the caller's work directory); otherwise the old one is moved into a marked
    set-aside directory first, and a kill between the two renames leaves it there, restored by the next run for
    the same `out` (remove_stale)."""
    if not out.exists():
        os.rename(tmp, out)
        return
    after_step("before-swap")
    if _exchange(tmp, out):
        after_step("after-swap")
        return
    aside = _work_dir(out, "old")
    os.rename(out, aside / out.name)
    after_step("after-aside")
    os.rename(tmp, out)
    after_step("after-swap")
    shutil.rmtree(aside)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _work_of(out: Path, work: Path) -> tuple[str, int] | None:
    """(kind, pid) when `work` is a work directory this tool made for `out` (its marker repeats its name's pid and
    token); None for anything else, a user's look-alike included."""
    kind, _, rest = work.name[len(out.name) + 2:].partition("-")
    pid, _, token = rest.partition("-")
    if kind not in ("partial", "old") or not pid.isdigit() or not token or work.is_symlink() or not work.is_dir():
        return None
    marker = work / WORK_MARKER
    if not regular_file(marker) or marker.stat().st_size > 4096:
        return None
    try:
        recorded = json.loads(marker.read_bytes())
    except (OSError, ValueError):
        return None
    return (kind, int(pid)) if recorded == {"out": out.name, "pid": int(pid), "token": token} else None


def remove_stale(out: Path) -> None:
    """Leftovers of earlier runs for the same `out` whose process is gone (killed with SIGKILL, or a machine that
    lost power: nothing could clean up then): a temporary directory is removed; a set-aside old directory is put
    back when `out` is missing (the run died between its two renames), else removed. Only directories whose marker
    proves this tool made them are touched."""
    prefix = f".{out.name}."
    try:
        names = sorted(n for n in os.listdir(out.parent) if n.startswith(prefix))
    except OSError:
        return
    for name in names:
        work = out.parent / name
        found = _work_of(out, work)
        if found is None:
            continue
        kind, pid = found
        if pid == os.getpid() or _alive(pid):
            continue
        kept = work / out.name
        if kind == "old" and not os.path.lexists(out) and kept.is_dir() and not kept.is_symlink():
            os.rename(kept, out)
        shutil.rmtree(work, ignore_errors=True)


def _apply_umask(root: Path) -> None:
    """mkdtemp makes 0700 dirs and some writers 0600 files; give the result the user's usual modes."""
    umask = os.umask(0)
    os.umask(umask)
    root.chmod(0o777 & ~umask)
    for path in root.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def check_output(out: str | Path, kind: str, overwrite: bool, inputs: Sequence[Path] = ()) -> Path:
    """The absolute --out, once it is clear that writing `kind` there is safe; a UserError otherwise."""
    given = Path(out).expanduser()
    if given.is_symlink():
        raise UserError(f"--out {out} is a symbolic link; pass the directory itself")
    path = given.resolve()
    why = _protected(path, inputs)
    if why:
        raise UserError(f"--out {out} cannot be written: {why}; choose a new directory")
    if not path.exists():
        return path
    if not path.is_dir():
        raise UserError(f"--out {out} is a file; pass a directory path")
    found, reason = owner(path)
    if found == "empty":
        return path
    if not overwrite:
        raise UserError(f"--out {out} already exists and is not empty; choose another directory, or pass --overwrite "
                        f"to replace it (only a {kind} this tool wrote is replaced)")
    if found is None:
        raise UserError(f"--overwrite refuses to replace {out}: {reason}; only a {kind} this tool wrote, or an empty "
                        "directory, is replaced. Choose another --out")
    if found != kind:
        raise UserError(f"--overwrite refuses to replace {out}: it is a {found}, and this command writes a {kind}; "
                        "choose another --out")
    return path


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, kind: str, overwrite: bool = False, inputs: Sequence[Path] = ()):
    """Yield a temp dir beside `out`; on success it replaces `out` (see check_output for when that is allowed), on
    any failure it is removed. Errors that name the temp dir name `out` instead."""
    path = check_output(out, kind, overwrite, inputs)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(path)
        work = _work_dir(path, "partial")
    except OSError as exc:
        raise UserError(f"cannot write to {path.parent} ({exc.strerror}); choose another --out") from None
    tmp = work / path.name
    try:
        tmp.mkdir()
        try:
            yield tmp
        except UserError as exc:
            raise UserError(str(exc).replace(str(tmp), str(path))) from None
        except OSError as exc:
            if exc.filename:
                exc.filename = str(exc.filename).replace(str(tmp), str(path))
            raise
        check_output(out, kind, overwrite, inputs)  # nothing else took the place meanwhile
        _apply_umask(tmp)
        _swap_in(tmp, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
