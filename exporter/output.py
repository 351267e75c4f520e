"""Writing a directory the user named with --out, without ever destroying what we did not write.

Everything is written into a temporary directory beside `out` and swapped in when complete, so a failure or a kill
leaves the old directory or the new one, never a mix and never neither. `--overwrite` replaces only a directory
this tool wrote, recognised by what it holds (see `owner`), or an empty one; it never touches a directory that is
or contains the input model, the home or current directory, or a filesystem root.
"""

from __future__ import annotations

import contextlib
import ctypes
import fnmatch
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from runtimes.bundle import DIGEST_FILE, MANIFEST
from runtimes.errors import UserError
from runtimes.files import read_json
from runtimes.quant.recipe import RECIPE_FILE

RANDOM_MODEL_MARKER = "qwen-edge-random-model.json"
CHECKPOINT_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")
TARGET_DIRS = ("onnx", "executorch", "coreml")
KINDS = ("bundle", "bundles", "quantized checkpoint", "random model")


def after_step(step: str) -> None:
    """Called between the steps of a swap; tests replace it to kill the process exactly there."""


def _entries(path: Path) -> list[str]:
    """Every path under `path`, relative and POSIX, without following links."""
    found = []
    for root, dirs, files in os.walk(path, followlinks=False):
        found += [(Path(root) / name).relative_to(path).as_posix() for name in dirs + files]
    return found


def _foreign(entries: list[str], allowed: set[str], patterns: Sequence[str] = ()) -> list[str]:
    return sorted(e for e in entries if e not in allowed and not any(fnmatch.fnmatch(e, p) for p in patterns))


def owner(path: Path) -> tuple[str | None, str]:
    """(which of KINDS this tool wrote at `path`, or "empty", or None; why not, when None)."""
    entries = _entries(path)
    if not entries:
        return "empty", ""
    links = [e for e in entries if (path / e).is_symlink()]
    if links:
        return None, f"it holds a symbolic link ({links[0]})"
    allowed: set[str]
    if (path / MANIFEST).is_file():
        try:
            manifest = read_json(path / MANIFEST, "")
        except UserError:
            return None, f"its {MANIFEST} is unreadable"
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if manifest.get("format") != "qwen-edge-bundle" or not isinstance(files, dict):
            return None, f"its {MANIFEST} is not a qwen-edge bundle manifest"
        allowed = {MANIFEST, DIGEST_FILE} | {str(Path(n).parents[i].as_posix()) for n in files
                                             for i in range(len(Path(n).parts) - 1)} | set(files)
        kind, patterns = "bundle", ()
    elif (path / RECIPE_FILE).is_file():
        allowed, kind, patterns = {RECIPE_FILE, "model.safetensors", *CHECKPOINT_FILES}, "quantized checkpoint", ()
    elif (path / RANDOM_MODEL_MARKER).is_file():
        allowed, kind = {RANDOM_MODEL_MARKER, "model.safetensors.index.json", *CHECKPOINT_FILES}, "random model"
        patterns = ("model.safetensors", "model-*-of-*.safetensors")
    elif all(e.split("/")[0] in TARGET_DIRS for e in entries):
        for name in TARGET_DIRS:
            if (path / name).exists() and owner(path / name)[0] != "bundle":
                return None, f"{name}/ in it is not a bundle this tool wrote"
        return "bundles", ""
    else:
        return None, "it holds no qwen-edge manifest, quantization recipe or model marker"
    foreign = _foreign(entries, allowed, patterns)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        return None, f"it holds files this tool did not write ({shown})"
    return kind, ""


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


def _swap_in(tmp: Path, out: Path) -> None:
    """Put the finished `tmp` at `out`. With an atomic exchange, `out` is always the old or the new directory;
    otherwise the old one is renamed aside first, and a kill between the two renames leaves it there, restored
    by the next run for the same `out` (remove_stale)."""
    if not out.exists():
        os.rename(tmp, out)
        return
    after_step("before-swap")
    if _exchange(tmp, out):
        after_step("after-swap")
        shutil.rmtree(tmp)  # now the old directory
        return
    aside = out.with_name(f".{out.name}.old-{os.getpid()}-{tmp.name.rsplit('-', 1)[-1]}")
    os.rename(out, aside)
    after_step("after-aside")
    os.rename(tmp, out)
    after_step("after-swap")
    shutil.rmtree(aside)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(out: Path) -> None:
    """Leftovers of earlier runs for the same `out` whose process is gone (killed with SIGKILL, or a machine that
    lost power: nothing could clean up then): a temp dir is removed; an old directory set aside is put back when
    `out` is missing (the run died between its two renames), else removed."""
    for tmp in sorted(out.parent.glob(f".{out.name}.*-*")):
        prefix, _, rest = tmp.name[len(out.name) + 2:].partition("-")
        if prefix not in ("partial", "old") or not rest.split("-", 1)[0].isdigit():
            continue
        pid = int(rest.split("-", 1)[0])
        if pid == os.getpid() or _alive(pid):
            continue
        if prefix == "old" and not out.exists():
            os.rename(tmp, out)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


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
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-{os.getpid()}-", dir=path.parent))
    except OSError as exc:
        raise UserError(f"cannot write to {path.parent} ({exc.strerror}); choose another --out") from None
    try:
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
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
