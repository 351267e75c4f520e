"""`python -m exporter serve`: OpenAI's chat API (/v1/chat/completions, plain and streamed, and /v1/models) over one
bundle, on loopback unless told otherwise (runtimes/serve.py)."""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from pathlib import Path

from exporter.commands.common import memory_argument
from runtimes.errors import UserError

SUMMARY = "serve a bundle over OpenAI's chat API (loopback by default)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, metavar="DIR", help="the exported bundle to serve")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 opens it to the "
                        "network, with no authentication)")
    p.add_argument("--port", type=int, default=8000, metavar="N", help="port (default: 8000)")
    p.add_argument("--model-name", metavar="NAME", help="the model id /v1/models lists (default: the bundle's "
                                                        "directory name)")
    p.add_argument("--max-tokens", type=int, default=4096, metavar="N",
                   help="the most answer tokens a request may ask for (default: 4096)")
    p.add_argument("--queue", type=int, default=16, metavar="N",
                   help="requests that may wait while one generates; more get 429 (default: 16)")
    p.add_argument("--max-request-bytes", type=int, default=4 << 20, metavar="N",
                   help="the largest request body accepted (default: 4 MiB)")
    p.add_argument("--allow-special-tokens-in-user-text", action="store_true",
                   help="let special-token strings in user and tool messages (<|im_start|>, <tool_call>, ...) "
                        "become control tokens, as transformers does (default: they are encoded as plain text)")
    memory_argument(p)


def run(args) -> int:
    from exporter.commands.chat import open_session

    for flag, value, low in (("--port", args.port, 0), ("--max-tokens", args.max_tokens, 1),
                             ("--queue", args.queue, 0), ("--max-request-bytes", args.max_request_bytes, 1024)):
        if value < low:
            raise UserError(f"{flag} must be >= {low}, not {value}")
    if args.port > 65535:
        raise UserError(f"--port must be at most 65535, not {args.port}")
    try:
        import uvicorn

        from runtimes.serve import Model, ServeLimits, Server, build_app
    except ImportError as exc:
        raise UserError(f"serve needs {exc.name}, which is not installed: pip install 'qwen-edge[serve]'") from None
    listener = listen(args.host, args.port)  # a taken port fails before the bundle loads
    try:
        backend, tokenizer, generation_config = open_session(
            None, args.bundle, None, special_in_user_text=args.allow_special_tokens_in_user_text)
        name = args.model_name or Path(args.bundle).resolve().name
        limits = ServeLimits(max_request_bytes=args.max_request_bytes, max_tokens=args.max_tokens,
                             queue_size=args.queue)
        app = build_app(Server(Model(backend, tokenizer, generation_config, name), limits))
        server = uvicorn.Server(uvicorn.Config(app, log_level="info" if args.verbose else "warning",
                                               access_log=args.verbose))
        host, port = listener.getsockname()[:2]
        print(f"serving {args.bundle} as {name!r} on http://{host}:{port}/v1 (Ctrl-C stops)", file=sys.stderr,
              flush=True)
        if threading.current_thread() is threading.main_thread():
            # uvicorn shuts down cleanly on Ctrl-C or SIGTERM, then raises the signal again: here that ends the
            # command with exit 0, not as an interrupted export
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            server.run(sockets=[listener])
        except KeyboardInterrupt:
            pass
    finally:
        listener.close()
    return 0


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound here so that a taken port or a bad address is one line, not uvicorn's log."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick a free --port or another "
                        "--host") from None
    return listener
