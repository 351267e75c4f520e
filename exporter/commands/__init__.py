"""One module per subcommand of `python -m exporter`: each has SUMMARY (a line for the main help), add_arguments(parser)
and run(args) -> exit code. `export` is also what runs when no subcommand is named.

These modules import without torch (the CLI starts, and bundles run, where it is not installed): what needs torch is
imported inside run(), after need_torch() has said in one line that the command needs it."""

from exporter.commands import bench, chat, deploy, export, make_model, parity, quantize, serve, verify

COMMANDS = {"export": export, "parity": parity, "bench": bench, "chat": chat, "quantize": quantize,
            "make-model": make_model, "verify": verify, "deploy": deploy, "serve": serve}
