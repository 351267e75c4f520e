"""Bundle directories: atomic writes (manifest read/write/validate joins here with the targets)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from runtimes.errors import UserError


def _apply_umask(root: Path) -> None:
    """mkdtemp makes 0700 dirs and some writers 0600 files; give the result the user's usual modes."""
    umask = os.umask(0)
    os.umask(umask)
    root.chmod(0o777 & ~umask)
    for path in root.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = False):
    """Yield a temp dir beside `out`; on success it replaces `out`, on any failure it is removed.

    So an interrupted or failed export never leaves a half-written directory at `out`.
    """
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a directory path")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"--out {out} already exists and is not empty; remove it or pass --overwrite")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise UserError(f"cannot write to {out.parent} ({exc.strerror}); choose another --out") from None
    try:
        yield tmp
        _apply_umask(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
