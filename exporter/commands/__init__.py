"""One module per subcommand of `python -m exporter`: each has SUMMARY (a line for the main help), add_arguments(parser)
and run(args) -> exit code. `export` is also what runs when no subcommand is named."""

from exporter.commands import bench, chat, deploy, export, make_model, parity, quantize, serve, verify

COMMANDS = {"export": export, "parity": parity, "bench": bench, "chat": chat, "quantize": quantize,
            "make-model": make_model, "verify": verify, "deploy": deploy, "serve": serve}
