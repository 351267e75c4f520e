"""Reading the files users hand us without trusting them: JSON that is too large, nested past Python's recursion
limit, not UTF-8, or not a regular file (a FIFO would block the read forever) becomes a UserError; hashing."""

from __future__ import annotations

import hashlib
import json
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


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
