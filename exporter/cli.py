"""`python -m exporter`: parse the command line, run one command (exporter/commands/), turn user errors into one
line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading

from exporter.commands import COMMANDS
from runtimes import memory, quiet
from runtimes.errors import UserError

EPILOG = """\
examples:
  python -m exporter --model tiny --target onnx --quant int4 --out dist/tiny-onnx
  python -m exporter parity --bundle dist/tiny-onnx
  python -m exporter chat --bundle dist/tiny-onnx --thinking-budget 32 "What is 4821 - 9377?"

python -m exporter COMMAND --help explains each command's flags (export's: python -m exporter export --help)."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str):
        raise UserError(f"{message} (see: {self.prog} --help)")


def build_parser() -> tuple[Parser, dict[str, Parser]]:
    """The main parser, with one subparser per command (exporter/commands/), and those subparsers by name."""
    main = Parser(prog="python -m exporter", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
                  description="Export a Qwen3 checkpoint to phone bundles (ONNX, ExecuTorch, Core ML), then check, "
                              "measure and chat with them. With no command named, the flags are export's.")
    commands = main.add_subparsers(dest="command", metavar="COMMAND", required=True, title="commands")
    for name, module in COMMANDS.items():
        sub = commands.add_parser(name, help=module.SUMMARY, description=module.__doc__)
        module.add_arguments(sub)
        sub.add_argument("--verbose", action="store_true",
                         help="show the libraries' own warnings and logs, and every stage's progress")
    return main, commands.choices


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line, parsed and nothing run; export is the command when the first argument is a flag (or none is
    given). A usage error raises UserError."""
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["export", *argv]
    main, commands = build_parser()
    args, unknown = main.parse_known_args(argv)
    if unknown:  # said by the command's own parser, whose --help lists its flags
        commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def one_line(message: str) -> str:
    """`message` as one printable line: a line break, control character or undecodable byte (a lone surrogate) that
    a user's argument or file name carried into it is shown escaped, so the error is always one line and printing
    it cannot fail."""
    return "".join(ch if ch.isprintable() or ch == "\t" else ch.encode("unicode_escape").decode("ascii")
                   for ch in message)


class Interrupted(BaseException):
    def __init__(self, signum: int):
        self.signum = signum


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C and kill (a CI timeout, say) unwind like an error: temp dirs are removed on the way out
        signal.signal(signal.SIGTERM, _raise_interrupted)
        signal.signal(signal.SIGINT, _raise_interrupted)
    try:
        args = parse(argv)
        quiet.configure(args.verbose)
        memory.configure(getattr(args, "memory_limit", None))
        return COMMANDS[args.command].run(args)
    except UserError as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted) as exc:
        print("error: interrupted; nothing was left half-written", file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise
        where = f" writing {one_line(str(exc.filename))}" if exc.filename else ""
        print(f"error: out of disk space{where} ({exc.strerror}); nothing was left half-written, free some space "
              "or choose another --out", file=sys.stderr)
        return 2
