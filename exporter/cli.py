"""`python -m exporter`: parse the command line, run one command (exporter/commands/), turn user errors into one
line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading

from runtimes import memory, quiet
from runtimes.errors import UserError

EPILOG = """\
examples:
  python -m exporter --model tiny --target onnx --quant int4 --out dist/tiny-onnx
  python -m exporter parity --bundle dist/tiny-onnx
  python -m exporter chat --bundle dist/tiny-onnx --thinking-budget 32 "What is 4821 - 9377?"

python -m exporter COMMAND --help explains each command's flags."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str):
        raise UserError(f"{message} (see: {self.prog} --help)")


def build_parser() -> tuple[Parser, dict[str, Parser]]:
    """The main parser (which takes export's flags: export is the default command) and one parser per command."""
    from exporter.commands import COMMANDS

    listing = "\n".join(f"  {name:<11} {module.SUMMARY}" for name, module in COMMANDS.items())
    main = Parser(prog="python -m exporter", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
                  description="Export a Qwen3 checkpoint to phone bundles (ONNX, ExecuTorch, Core ML), then check, "
                              f"measure and chat with them.\n\ncommands (default: export):\n{listing}")
    COMMANDS["export"].add_arguments(main)
    subs = {}
    for name, module in COMMANDS.items():
        subs[name] = Parser(prog=f"python -m exporter {name}", description=module.__doc__)
        module.add_arguments(subs[name])
    for parser in (main, *subs.values()):
        parser.add_argument("--verbose", action="store_true",
                            help="show the libraries' own warnings and logs, and every stage's progress")
    return main, subs


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
    from exporter.commands import COMMANDS

    argv = sys.argv[1:] if argv is None else argv
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C and kill (a CI timeout, say) unwind like an error: temp dirs are removed on the way out
        signal.signal(signal.SIGTERM, _raise_interrupted)
        signal.signal(signal.SIGINT, _raise_interrupted)
    try:
        parser, subs = build_parser()
        if argv and argv[0] in subs:
            name, args = argv[0], subs[argv[0]].parse_args(argv[1:])
        else:  # no command named: export, with the main parser's help
            name, args = "export", parser.parse_args(argv)
        quiet.configure(args.verbose)
        memory.configure(getattr(args, "memory_limit", None))
        return COMMANDS[name].run(args)
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
