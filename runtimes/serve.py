"""OpenAI's chat API over one bundle, on Starlette (the ASGI toolkit under FastAPI) served by uvicorn:
POST /v1/chat/completions, plain or streamed as server-sent events, and GET /v1/models.

What it speaks: messages (system, developer, user, assistant with tool_calls, tool), `tools` and `tool_choice`
("auto" or "none"), thinking returned as `reasoning_content` (vLLM's and SGLang's convention),
`chat_template_kwargs.enable_thinking`, a `thinking_budget` extension, and temperature, top_p, top_k, min_p,
presence_penalty, repetition_penalty, seed and max_tokens (the answer's tokens; thinking is bounded by its budget and
the context). What it bounds: the request body, max_tokens, the prompt against the context, and the work: one
generation at a time, at most `queue_size` waiting (429 past that); a client that goes away stops its generation
at the next token. Errors are JSON in OpenAI's shape.

User and tool text is encoded as text (see runtimes.chat.user_text_as_text) unless the server was started with
special tokens allowed in user text.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from runtimes.errors import UserError
from runtimes.generate import Event, generate, prepare_prompt, thinking_mode
from runtimes.messages import InvalidMessages, check_tools, messages_from_openai
from runtimes.sampling import SamplingParams
from runtimes.tool_calls import parse_output
from runtimes.tokenizer import QwenTokenizer

UNSUPPORTED = ("stop", "logprobs", "top_logprobs", "response_format", "logit_bias", "functions", "audio",
               "prediction")  # refused when set, rather than ignored: the answer would not be what was asked


@dataclass(frozen=True)
class ServeLimits:
    max_request_bytes: int = 4 << 20
    max_tokens: int = 4096  # the most answer tokens a request may ask for
    default_max_tokens: int = 1024
    queue_size: int = 16  # requests that may wait while one generates


@dataclass
class Model:
    """What the server answers with: a bundle's backend and tokenizer, its sampling defaults, its name."""
    backend: object
    tokenizer: QwenTokenizer
    generation_config: dict
    name: str


class BadRequest(Exception):
    """An error answered in OpenAI's shape: 400 unless `status` says otherwise (413, 429, 500)."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.param, self.status, self.kind = message, param, status, kind


def error_response(exc: BadRequest) -> JSONResponse:
    return JSONResponse({"error": {"message": exc.message, "type": exc.kind, "param": exc.param, "code": None}},
                        status_code=exc.status)


@dataclass
class ChatRequest:
    messages: list[dict]
    tools: list[dict] | None  # rendered into the prompt and parsed out of the answer (None: no tools, or "none")
    stream: bool
    include_usage: bool
    sampling: SamplingParams
    max_new_tokens: int
    budget: int | None
    enable_thinking: bool


def _field(body: dict, name: str, types, check=None, what: str = ""):
    """body[name] when absent or null (None), or of `types` and passing `check`; else a 400 saying `what` it must
    be. A boolean is not a number here, though Python counts it as an int."""
    value = body.get(name)
    if value is None:
        return None
    allowed = types if isinstance(types, tuple) else (types,)
    if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed) \
            or (check and not check(value)):
        raise BadRequest(f"{name} must be {what}, not {json.dumps(value)[:80]}", name)
    return value


def _sampling_error(exc: UserError) -> BadRequest:
    """SamplingParams speaks in CLI flags (--top-p); a request names fields (top_p)."""
    message = re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", "_"), str(exc))
    return BadRequest(message)


def parse_request(body, model: Model, limits: ServeLimits) -> ChatRequest:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    for name in UNSUPPORTED:
        if body.get(name) not in (None, False, [], {}):
            raise BadRequest(f"{name} is not supported by this server", name)
    if body.get("n") not in (None, 1):
        raise BadRequest("n must be 1: this server answers with one choice", "n")
    if body.get("frequency_penalty") not in (None, 0, 0.0):
        raise BadRequest("frequency_penalty is not supported; use presence_penalty or repetition_penalty",
                         "frequency_penalty")
    _field(body, "model", str, what="a string")
    try:
        messages = messages_from_openai(body.get("messages"))
        tools = check_tools(body.get("tools"))
    except InvalidMessages as exc:
        raise BadRequest(str(exc), exc.param) from None
    choice = body.get("tool_choice")
    if choice not in (None, "auto", "none"):
        raise BadRequest("tool_choice must be \"auto\" or \"none\": this server does not force a call", "tool_choice")
    if choice == "none":
        tools = None
    stream = bool(_field(body, "stream", bool, what="true or false"))
    options = _field(body, "stream_options", dict, what="an object") or {}
    kwargs = _field(body, "chat_template_kwargs", dict, what="an object") or {}
    enable_thinking = kwargs.get("enable_thinking", True)
    if not isinstance(enable_thinking, bool):
        raise BadRequest("chat_template_kwargs.enable_thinking must be true or false",
                         "chat_template_kwargs.enable_thinking")
    budget = _field(body, "thinking_budget", int, lambda v: v >= 0, "a whole number >= 0 (0: no thinking)")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = min(limits.default_max_tokens, limits.max_tokens)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= limits.max_tokens:
        raise BadRequest(f"max_tokens must be a whole number from 1 to {limits.max_tokens}", "max_tokens")
    number = (int, float)
    overrides = {
        "temperature": _field(body, "temperature", number, lambda v: 0 <= v <= 2, "a number from 0 to 2"),
        "top_p": _field(body, "top_p", number, what="a number in (0, 1]"),
        "top_k": _field(body, "top_k", int, what="a whole number >= 0 (0: off)"),
        "min_p": _field(body, "min_p", number, what="a number in [0, 1)"),
        "presence_penalty": _field(body, "presence_penalty", number, lambda v: 0 <= v <= 2, "a number from 0 to 2"),
        "repetition_penalty": _field(body, "repetition_penalty", number, what="a number > 0"),
        "seed": _field(body, "seed", int, what="a whole number"),
    }
    thinking = thinking_mode(messages, budget, enable_thinking)  # the hard switch beats /think, as in Qwen's template
    try:
        sampling = SamplingParams.for_mode(model.generation_config, thinking).with_overrides(**overrides)
    except UserError as exc:
        raise _sampling_error(exc) from None
    return ChatRequest(messages, tools, stream, bool(options.get("include_usage")), sampling, max_tokens, budget,
                       enable_thinking)


class Ticket:
    """One admitted request: holds a place in the queue, then the one generation slot. `release` is idempotent;
    once a worker runs, the worker releases it when it has stopped."""

    def __init__(self, server: "Server"):
        self.server, self.released, self.holds_gate, self.running = server, False, False, False
        self.stop = threading.Event()

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.server.admitted -= 1
        if self.holds_gate:
            self.server.gate.release()

    def abandon(self) -> None:
        """The client is gone or the response ended: stop the worker, or give the place back if none runs."""
        self.stop.set()
        if not self.running:
            self.release()


class Server:
    def __init__(self, model: Model, limits: ServeLimits = ServeLimits()):
        self.model, self.limits = model, limits
        self.gate = asyncio.Lock()
        self.admitted = 0
        self.completed = 0
        self.stopped_early = 0  # generations stopped because their client went away

    def admit(self) -> Ticket:
        if self.admitted >= 1 + self.limits.queue_size:
            raise BadRequest(f"the server is busy: one generation runs and {self.limits.queue_size} wait; "
                             "retry later", status=429, kind="rate_limit_error")
        self.admitted += 1
        return Ticket(self)

    async def check_prompt(self, request: ChatRequest) -> int:
        """The prompt's length, refused (400) when it leaves no room in the context."""
        try:
            ids, _ = await asyncio.to_thread(prepare_prompt, self.model.tokenizer, request.messages, request.budget,
                                             request.enable_thinking, request.tools)
        except UserError as exc:
            raise BadRequest(str(exc), "messages") from None
        context = self.model.backend.max_seq_len
        if len(ids) >= context:
            raise BadRequest(f"the prompt is {len(ids)} tokens but the context holds {context}; shorten the "
                             "conversation", "messages")
        return len(ids)

    async def events(self, ticket: Ticket, request: ChatRequest) -> AsyncIterator[Event]:
        """The generation's events, from a worker thread; ends with the `done` event."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        try:
            await self.gate.acquire()
            ticket.holds_gate = True
            if ticket.stop.is_set():
                return

            def work():
                try:
                    stream = generate(self.model.backend, self.model.tokenizer, request.messages,
                                      budget=request.budget, max_new_tokens=request.max_new_tokens,
                                      sampling=request.sampling, enable_thinking=request.enable_thinking,
                                      tools=request.tools)
                    for event in stream:
                        loop.call_soon_threadsafe(queue.put_nowait, ("event", event))
                        if ticket.stop.is_set() and event.kind != "done":
                            stream.close()
                            loop.call_soon_threadsafe(self._count_stopped)
                            break
                except UserError as exc:
                    loop.call_soon_threadsafe(queue.put_nowait, ("error", str(exc)))
                except Exception as exc:  # a backend failure: reported as a 500, the server stays up
                    loop.call_soon_threadsafe(queue.put_nowait, ("crash", f"{type(exc).__name__}: {exc}"))
                finally:
                    loop.call_soon_threadsafe(queue.put_nowait, ("end", None))
                    loop.call_soon_threadsafe(ticket.release)

            ticket.running = True
            threading.Thread(target=work, name="generation", daemon=True).start()
            while True:
                kind, value = await queue.get()
                if kind == "end":
                    break
                if kind == "error":
                    raise BadRequest(value, "messages")
                if kind == "crash":
                    raise BadRequest(f"generation failed: {value}", status=500, kind="server_error")
                yield value
        finally:
            ticket.abandon()

    def _count_stopped(self) -> None:
        self.stopped_early += 1


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def _tool_calls_json(calls) -> list[dict]:
    return [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}} for c in calls]


def _finish_reason(result, calls) -> str:
    if calls:
        return "tool_calls"
    return "stop" if result.finish_reason == "stop" else "length"


def _usage(result) -> dict:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": len(result.token_ids),
            "total_tokens": result.prompt_tokens + len(result.token_ids)}


class EdgeTrim:
    """Streams text as generate() trims its result: `lead` characters dropped at the start, trailing `trail`
    characters (None: whitespace) held until more text follows them, and dropped at the end."""

    def __init__(self, lead: str, trail: str | None):
        self.lead, self.trail, self.started, self.held, self.sent = lead, trail, False, "", ""

    def push(self, text: str) -> str:
        text = self.held + text
        if not self.started:
            text = text.lstrip(self.lead)
            if not text:
                self.held = ""
                return ""
            self.started = True
        kept = text.rstrip(self.trail)
        self.held = text[len(kept):]
        self.sent += kept
        return kept

    def rest(self, final: str) -> str:
        """What the final text has beyond what was sent (a character the decoder held back at the end)."""
        return final[len(self.sent):] if final.startswith(self.sent) else ""


class GenerationStream(StreamingResponse):
    """Server-sent events of one generation; however the response ends (done, client gone, error), the
    generation is stopped and its place given back."""

    def __init__(self, content, ticket: Ticket):
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.ticket = ticket

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()
            self.ticket.abandon()


def _sse(payload) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _read_json(request: Request, limit: int):
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadRequest(f"the request is {declared} bytes; at most {limit} are accepted", status=413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(f"the request is over {limit} bytes; at most {limit} are accepted", status=413)
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8") from None
    except RecursionError:
        raise BadRequest("the request body nests its JSON too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"the request body is not JSON ({exc})") from None


def build_app(server: Server) -> Starlette:
    model, limits = server.model, server.limits

    async def models(request: Request):
        return JSONResponse({"object": "list", "data": [{"id": model.name, "object": "model", "created": 0,
                                                         "owned_by": "qwen-edge"}]})

    async def completions(request: Request):
        try:
            chat = parse_request(await _read_json(request, limits.max_request_bytes), model, limits)
            ticket = server.admit()
        except BadRequest as exc:
            return error_response(exc)
        try:
            await server.check_prompt(chat)
        except BadRequest as exc:
            ticket.release()
            return error_response(exc)
        created, ident = int(time.time()), _completion_id()
        if chat.stream:
            return GenerationStream(_stream(server, ticket, chat, created, ident), ticket)
        return await _answer(request, server, ticket, chat, created, ident)

    async def not_found(request: Request, exc: HTTPException):
        return error_response(BadRequest(f"{request.method} {request.url.path}: {exc.detail}", status=exc.status_code))

    async def crashed(request: Request, exc: Exception):
        return error_response(BadRequest(f"internal error: {type(exc).__name__}", status=500, kind="server_error"))

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"]),
                             Route("/v1/models", models, methods=["GET"])],
                     exception_handlers={HTTPException: not_found, Exception: crashed})


async def _answer(request: Request, server: Server, ticket: Ticket, chat: ChatRequest, created: int, ident: str):
    """A plain completion; the generation stops if the client disconnects while waiting or generating."""

    async def collect():
        async for event in server.events(ticket, chat):
            if event.kind == "done":
                return event.result
        return None

    task = asyncio.create_task(collect())
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.25)
            if not task.done() and await request.is_disconnected():
                task.cancel()
        result = await task
    except asyncio.CancelledError:
        ticket.abandon()
        raise
    except BadRequest as exc:
        return error_response(exc)
    finally:
        ticket.abandon()
    if result is None:
        return error_response(BadRequest("the generation was stopped", status=500, kind="server_error"))
    server.completed += 1
    calls = []
    content = result.content
    if chat.tools:
        parsed = parse_output(result.content, reasoning=result.reasoning)
        calls, content = parsed.tool_calls, parsed.content
    message = {"role": "assistant", "content": content if content or not calls else None,
               "reasoning_content": result.reasoning or None}
    if calls:
        message["tool_calls"] = _tool_calls_json(calls)
    return JSONResponse({"id": ident, "object": "chat.completion", "created": created, "model": server.model.name,
                         "choices": [{"index": 0, "message": message, "finish_reason": _finish_reason(result, calls),
                                      "logprobs": None}],
                         "usage": _usage(result)})


async def _stream(server: Server, ticket: Ticket, chat: ChatRequest, created: int, ident: str):
    def chunk(delta: dict, finish: str | None = None) -> str:
        return _sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": server.model.name,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]})

    trims = {"reasoning": EdgeTrim("\n", "\n"), "content": EdgeTrim("\n", None)}
    fields = {"reasoning": "reasoning_content", "content": "content"}
    yield chunk({"role": "assistant", "content": ""})
    result = None
    try:
        async for event in server.events(ticket, chat):
            if event.kind == "done":
                result = event.result
                break
            if event.kind == "content" and chat.tools:
                continue  # the answer goes out whole at the end, its calls parsed
            text = trims[event.kind].push(event.text)
            if text:
                yield chunk({fields[event.kind]: text})
    except BadRequest as exc:
        yield _sse({"error": {"message": exc.message, "type": exc.kind, "param": exc.param, "code": None}})
        yield "data: [DONE]\n\n"
        return
    if result is None:
        return
    server.completed += 1
    calls = []
    tail = trims["reasoning"].rest(result.reasoning)
    if tail:
        yield chunk({"reasoning_content": tail})
    if chat.tools:
        parsed = parse_output(result.content, reasoning=result.reasoning)
        calls = parsed.tool_calls
        if parsed.content:
            yield chunk({"content": parsed.content})
        if calls:
            yield chunk({"tool_calls": [{"index": i, **call} for i, call in enumerate(_tool_calls_json(calls))]})
    else:
        tail = trims["content"].rest(result.content)
        if tail:
            yield chunk({"content": tail})
    yield chunk({}, _finish_reason(result, calls))
    if chat.include_usage:
        yield _sse({"id": ident, "object": "chat.completion.chunk", "created": created, "model": server.model.name,
                    "choices": [], "usage": _usage(result)})
    yield "data: [DONE]\n\n"


class Background:
    """An app served by uvicorn from a thread of this process on a free loopback port (tests, tools/load_serve)."""

    def __init__(self, app: Starlette, host: str = "127.0.0.1", timeout_s: float = 30):
        listener = socket.socket()
        listener.bind((host, 0))
        listener.listen(128)
        self.url = f"http://{host}:{listener.getsockname()[1]}/v1"
        self.uvicorn = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.uvicorn.run, kwargs={"sockets": [listener]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.uvicorn.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(timeout=30)
