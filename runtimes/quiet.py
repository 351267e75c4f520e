"""What the tool prints and what the libraries under it may print.

The libraries speak up on import and as they work: torchao's `Failed to load ..._C_*.so`, torch's
`KernelPreference` deprecation, ExecuTorch's cpuinfo lines (written by C code straight to file descriptor 2),
coremltools' per-pass progress bars. None of it is for our users, so it is hidden unless `--verbose` asks for it.
Our own progress (`stage`) shows where someone watches: on a terminal, or with --verbose.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
import time
import warnings

from tqdm import std

VERBOSE = False
NOISY_LOGGERS = ("torchao", "torch.utils._pytree", "torch._export", "torch.export", "coremltools",
                 "executorch", "onnxscript", "onnx_ir")


def configure(verbose: bool = False) -> None:
    """Once, before the libraries load: quiet them unless verbose."""
    global VERBOSE
    VERBOSE = verbose
    if verbose:
        return
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)


_STDERR_SWAP = threading.RLock()


@contextlib.contextmanager
def c_stderr_hidden(python_too: bool = False):
    """Hide what C code writes to file descriptor 2 inside the block (Python's own sys.stderr keeps working, so
    our errors and progress bars still show). python_too: sys.stderr is hidden as well, for C++ code whose streams
    pybind11 redirects into Python's (ExecuTorch's pybindings log cpuinfo's lines so). A no-op with --verbose."""
    if VERBOSE:
        yield
        return
    # one block at a time: file descriptor 2 and sys.stderr are the process's, and two threads that saved and
    # restored them interleaved (serve tokenizes in worker threads) would leave a closed sys.stderr behind
    with _STDERR_SWAP:
        sys.stderr.flush()
        saved = os.dup(2)
        python_stderr = sys.stderr
        sys.stderr = open(os.devnull, "w") if python_too else os.fdopen(
            os.dup(saved), "w", buffering=1, encoding=python_stderr.encoding or "utf-8", errors="backslashreplace")
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                sys.stderr.flush()
                sys.stderr.close()
                sys.stderr = python_stderr


@contextlib.contextmanager
def progress_bars_hidden():
    """Hide the tqdm progress bars library code draws inside the block (coremltools draws one per conversion
    stage and pass pipeline, to Python's sys.stderr, so c_stderr_hidden does not catch them). Every tqdm made in
    the block is disabled; our own bars are made outside such blocks. A no-op with --verbose."""
    if VERBOSE:
        yield
        return
    original = std.tqdm.__dict__["__init__"]  # a function, or tqdm's partialmethod of one (its TQDM_* overrides)

    def disabled_init(self, *args, **kwargs):
        if len(args) > 10:  # disable is tqdm's 11th positional parameter
            args = (*args[:10], True, *args[11:])
        else:
            kwargs["disable"] = True
        original.__get__(self, type(self))(*args, **kwargs)

    std.tqdm.__init__ = disabled_init
    try:
        yield
    finally:
        std.tqdm.__init__ = original


@contextlib.contextmanager
def stage(what: str):
    """One line when a long step starts and one with its time when it ends, where someone watches."""
    show = VERBOSE or sys.stderr.isatty()
    start = time.perf_counter()
    if show:
        print(f"{what} ...", file=sys.stderr, flush=True)
    yield
    if show:
        print(f"{what}: done in {time.perf_counter() - start:.1f}s", file=sys.stderr, flush=True)
