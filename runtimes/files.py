"""Reading the files users hand us without trusting them: JSON that is too large, nested past Python's recursion
limit, not UTF-8, or not a regular file (a FIFO would block the read forever) becomes a UserError; hashing, and the
table of every file's size and sha256 that proves a directory is still what this tool wrote."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

from runtimes.errors import UserError

JSON_LIMIT = 64 << 20  # bytes: Qwen's tokenizer.json is 11 MB, configs and manifests a few KB


def regular_file(path: Path) -> bool:
    """True for a regular file (not following a symbolic link); FIFOs, sockets and devices are not."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def what_is(path: Path) -> str:
    """'a directory', 'a FIFO', ... for a path that exists (following links), for messages."""
    mode = path.stat().st_mode
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def input_file(path: str | Path, flag: str, fix: str) -> Path:
    """`path` when it is a regular file (a link to one is fine); otherwise a UserError, before anything opens it:
    a FIFO or a device would block or never end, a directory cannot be read as text."""
    return _input_of_kind(path, "a regular file", flag, fix)


def input_dir(path: str | Path, what: str, fix: str) -> Path:
    """`path` when it is a directory (a link to one is fine); otherwise a UserError that says what it is."""
    return _input_of_kind(path, "a directory", what, fix)


def _input_of_kind(path: str | Path, kind: str, name: str, fix: str) -> Path:
    path = Path(path).expanduser()
    try:
        found = what_is(path)
    except OSError as exc:
        why = "does not exist" if not os.path.lexists(path) else f"cannot be read ({exc.strerror})"
        raise UserError(f"{name} {path} {why}; {fix}") from None
    if found != kind:
        raise UserError(f"{name} {path} is {found}, not {kind}; {fix}")
    return path


def read_text_file(path: str | Path, flag: str, fix: str, limit: int = 1 << 30) -> str:
    """The UTF-8 text of a user's regular file, or one UserError naming `flag` and saying `fix`."""
    path = input_file(path, flag, fix)
    if path.stat().st_size > limit:
        raise UserError(f"{flag} {path} is larger than {limit >> 20} MiB; {fix}")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{flag} {path} is not UTF-8 text (byte {exc.start}); {fix}") from None
    except OSError as exc:
        raise UserError(f"cannot read {flag} {path} ({exc.strerror}); {fix}") from None


def read_json(path: Path, fix: str, limit: int = JSON_LIMIT):
    """The JSON value in `path`; any way the file is unreadable is a UserError that ends with `fix`."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror}); {fix}") from None
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{path} is not a regular file; {fix}")
    if info.st_size > limit:
        raise UserError(f"{path} is {info.st_size} bytes, more than the {limit >> 20} MiB such a file can be; {fix}")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; {fix}") from None
    except RecursionError:
        raise UserError(f"{path} nests its JSON too deeply to read; {fix}") from None
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); {fix}") from None
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror}); {fix}") from None


def as_os_error(exc: Exception, path: str | Path) -> Exception:
    """A library's error that wraps an operating-system one (safetensors' Rust writer says "(os error 28)") as the
    OSError it is, so that a full disk is reported as one everywhere (exporter.cli); any other error unchanged."""
    found = re.search(r"\(os error (\d+)\)", str(exc))
    if not found:
        return exc
    number = int(found.group(1))
    return OSError(number, os.strerror(number), str(path))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_table(root: Path, skip: tuple[str, ...] = ()) -> dict[str, dict]:
    """{relative POSIX path: {"bytes", "sha256"}} for every file under `root` but those named in `skip`: written
    into a directory's marker, it lets --overwrite prove later that the directory is unchanged."""
    table = {}
    for path in sorted(Path(root).rglob("*")):
        name = path.relative_to(root).as_posix()
        if path.is_file() and name not in skip:
            table[name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return table


def cache_root() -> Path:
    """Where exports and runtimes keep what is slow to recompute: $QWEN_EDGE_CACHE, else $XDG_CACHE_HOME/qwen-edge, else
    ~/.cache/qwen-edge."""
    if os.environ.get("QWEN_EDGE_CACHE"):
        return Path(os.environ["QWEN_EDGE_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "qwen-edge"
