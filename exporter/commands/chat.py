"""`python -m exporter chat`: a reply from a model (reference backend) or a bundle (its own backend), the reasoning
streamed dimmed, then the answer and any tool calls; a conversation from a file (--messages, tools with --tools), or
an interactive session on stdin."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from exporter.commands.common import check_writable, memory_argument, need_torch, write_json
from runtimes.errors import UserError

SUMMARY = "talk to a model or bundle with a thinking budget"
DIM, RESET = "\033[2m", "\033[0m"


def add_arguments(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", metavar="DIR|HUB_ID|tiny", help="a checkpoint, run on the reference backend "
                                                                  "(default: tiny)")
    which.add_argument("--bundle", metavar="DIR", help="an exported bundle, run on its own backend")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--thinking-budget", type=int, metavar="N",
                        help="tokens allowed inside <think>; past it the model is told to answer (0: no thinking; "
                             "default: unlimited)")
    budget.add_argument("--no-think", action="store_true", help="answer without thinking (same as budget 0)")
    p.add_argument("--max-new-tokens", type=int, default=256, metavar="N", help="max answer tokens (default: 256)")
    p.add_argument("--max-seq-len", type=int, metavar="N",
                   help="context for --model (default: 4096, or the model's maximum if smaller)")
    p.add_argument("--temperature", type=float, metavar="T",
                   help="0 is greedy (default, by the mode in effect: the checkpoint's generation_config.json for "
                        "thinking, else Qwen's documented values: thinking 0.6, non-thinking 0.7; greedy where the "
                        "config sets do_sample false)")
    p.add_argument("--top-p", type=float, metavar="P", help="(default: thinking 0.95, non-thinking 0.8)")
    p.add_argument("--top-k", type=int, metavar="K", help="(default: 20)")
    p.add_argument("--min-p", type=float, metavar="P", help="(default: 0)")
    p.add_argument("--presence-penalty", type=float, metavar="P",
                   help="-2 to 2 (Qwen suggests 0 to 2), subtracted from the logits of tokens already generated (not the prompt's); "
                        "Qwen suggests it against endless repetition (default: the config's, else 0)")
    p.add_argument("--seed", type=int, metavar="S", help="seed for sampling (default: a random one, reported by --json)")
    p.add_argument("--system", metavar="TEXT", help="a system message")
    p.add_argument("--prompt-file", metavar="FILE", help="read the user message from a UTF-8 file ('-': stdin)")
    p.add_argument("--messages", metavar="FILE",
                   help="a conversation to continue: a JSON list of OpenAI-style messages (system, user, assistant "
                        "with tool_calls, tool results); PROMPT, if given, is added as the last user turn")
    p.add_argument("--tools", metavar="FILE",
                   help='functions the model may call: a JSON list of {"type": "function", "function": {"name": '
                        '..., "description": ..., "parameters": {...}}}; its calls are parsed and printed')
    p.add_argument("--json", metavar="FILE",
                   help="write the result as JSON to FILE ('-': stdout, instead of streaming text): the answer, "
                        "reasoning, parsed tool calls and stats; in an interactive session every turn and the "
                        "conversation")
    p.add_argument("--allow-special-tokens-in-user-text", action="store_true",
                   help="let special-token strings in the user's and tools' text (<|im_start|>, <tool_call>, ...) "
                        "become control tokens, as transformers does (default: they are encoded as plain text)")
    p.add_argument("prompt", metavar="PROMPT", nargs="?",
                   help="the user message ('-': read it from stdin; /think and /no_think switches work). Without "
                        "PROMPT, --prompt-file or --messages: an interactive session, one user turn per line of "
                        "stdin until end of input, the conversation kept as Qwen's template expects (earlier "
                        "turns' thinking dropped)")
    memory_argument(p)


@dataclass
class Session:
    backend: object
    tokenizer: object
    generation_config: dict


@dataclass
class TurnOptions:
    budget: int | None
    max_new_tokens: int
    overrides: dict
    tools: list | None
    stream: bool  # text to stdout as it comes (else only --json's output)


def run(args) -> int:
    from runtimes.sampling import SamplingParams

    overrides = {"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k, "min_p": args.min_p,
                 "presence_penalty": args.presence_penalty, "seed": args.seed}
    SamplingParams().with_overrides(**overrides)  # bad values fail before loading
    if args.max_new_tokens < 1:
        raise UserError("--max-new-tokens must be >= 1")
    if args.bundle and args.max_seq_len is not None:
        raise UserError("--max-seq-len sets the context of --model; a bundle's context is fixed when it is exported "
                        "(export it again with --max-seq-len N)")
    if args.json and args.json != "-":
        check_writable(args.json, "--json", [args.bundle] if args.bundle else [])
    check_text(args.system or "", "--system text")
    if args.prompt is not None and args.prompt_file is not None:
        raise UserError("pass the user message either as PROMPT or with --prompt-file, not both")
    if args.prompt == "-" and args.prompt_file == "-":
        raise UserError("stdin can hold only one thing")
    prompt = read_text(args.prompt_file, "--prompt-file") if args.prompt_file else \
        read_text("-", "PROMPT") if args.prompt == "-" else args.prompt
    if prompt is not None:
        check_text(prompt, "prompt")
    history = read_messages(args.messages) if args.messages else []
    tools = read_tools(args.tools) if args.tools else None
    if args.system:
        if history and history[0]["role"] == "system":
            raise UserError(f"{args.messages} already starts with a system message; drop --system or that message")
        history = [{"role": "system", "content": args.system}] + history
    interactive = prompt is None and not args.messages
    if prompt is None and args.messages and history[-1]["role"] not in ("user", "tool"):
        raise UserError(f"{args.messages} ends with an {history[-1]['role']} turn; end it with a user or tool "
                        "message, or pass PROMPT")
    session = Session(*open_session(args.model, args.bundle, args.max_seq_len,
                                    special_in_user_text=args.allow_special_tokens_in_user_text))
    options = TurnOptions(0 if args.no_think else args.thinking_budget, args.max_new_tokens, overrides, tools,
                          stream=args.json != "-")
    if interactive:
        report = chat_session(session, history, options)
    else:
        messages = history + ([{"role": "user", "content": prompt}] if prompt is not None else [])
        result, parsed = stream_chat(session, messages, options)
        report = turn_json(result, parsed)
    if args.json == "-":
        print(json.dumps(report, indent=2, ensure_ascii=False))
    elif args.json:
        write_json(args.json, report)
    return 0


def read_text(path: str, what: str) -> str:
    """A UTF-8 text file, or stdin for '-': any other kind of file, bytes that are not UTF-8 or a size past
    JSON_LIMIT are one line."""
    from runtimes.files import JSON_LIMIT, regular_file

    if path == "-":
        data = sys.stdin.buffer.read(JSON_LIMIT + 1)
        where = "stdin"
    else:
        file = Path(path)
        if not file.exists():
            raise UserError(f"{what} {path} does not exist")
        if not regular_file(file):
            raise UserError(f"{what} {path} is not a regular file; pass a UTF-8 text file or '-' for stdin")
        if file.stat().st_size > JSON_LIMIT:
            raise UserError(f"{what} {path} is larger than {JSON_LIMIT >> 20} MiB; no context holds that much")
        data, where = file.read_bytes(), path
    if len(data) > JSON_LIMIT:
        raise UserError(f"{what} from {where} is larger than {JSON_LIMIT >> 20} MiB; no context holds that much")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{what} from {where} is not UTF-8 text") from None


def read_messages(path: str) -> list[dict]:
    from runtimes.files import read_json
    from runtimes.messages import messages_from_openai

    value = read_json(Path(path), 'it must be a JSON list of messages such as [{"role": "user", "content": "hi"}]')
    try:
        return messages_from_openai(value)
    except UserError as exc:
        raise UserError(f"--messages {path}: {exc}") from None


def read_tools(path: str) -> list[dict] | None:
    from runtimes.files import read_json
    from runtimes.messages import check_tools

    value = read_json(Path(path), 'it must be a JSON list of {"type": "function", "function": {"name": ...}}')
    try:
        return check_tools(value)
    except UserError as exc:
        raise UserError(f"--tools {path}: {exc}") from None


def check_text(text: str, name: str) -> None:
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        raise UserError(f"the {name} is not valid UTF-8 (it holds undecodable bytes); pass UTF-8 text")
    if name == "prompt" and not text.strip():
        raise UserError("the prompt is empty; pass the message to send, e.g. chat 'What is 12 + 30?'")


def turn_json(result, parsed) -> dict:
    """One turn's result: the generation's fields and stats, its parsed tool calls, and the assistant message
    (OpenAI's shape) that continues the conversation (chat --messages takes it back)."""
    from runtimes.tool_calls import parsed_as_json

    fields = asdict(result)
    fields.pop("token_ids")
    calls = parsed_as_json(parsed)
    fields["tool_calls"] = calls["tool_calls"]
    fields["tool_call_errors"] = [{**e, "message": error.message} for e, error in zip(calls["errors"], parsed.errors)]
    fields["message"] = assistant_message(result, parsed)
    return fields


def assistant_message(result, parsed) -> dict:
    message = {"role": "assistant", "content": parsed.content if parsed.tool_calls else result.content}
    if result.reasoning:
        message["reasoning_content"] = result.reasoning
    if parsed.tool_calls:
        message["tool_calls"] = [{"type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                                 for c in parsed.tool_calls]
    return message


def chat_session(session: Session, history: list[dict], options: TurnOptions) -> dict:
    """An interactive session: one user turn per line of stdin until end of input. The assistant's turns are kept
    with their reasoning and tool calls apart from the answer; Qwen's template drops the reasoning of turns before
    the last user message, as the model was trained."""
    tty = sys.stdin.isatty()
    turns = []
    if tty:
        print("one message per line; end with Ctrl-D", file=sys.stderr)
    while True:
        if tty:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        text = line.rstrip("\n")
        if not text.strip():
            continue
        check_text(text, "prompt")
        history.append({"role": "user", "content": text})
        result, parsed = stream_chat(session, history, options)
        history.append(assistant_message(result, parsed))
        turns.append(turn_json(result, parsed))
    if not turns:
        raise UserError("no message came on stdin; pass PROMPT, --prompt-file or --messages, or type a message")
    return {"turns": turns, "messages": history}


def open_session(model: str | None, bundle: str | None, max_seq_len: int | None, special_in_user_text: bool = False):
    """→ (backend, tokenizer, generation_config dict)."""
    from runtimes.files import input_dir
    from runtimes.sampling import read_generation_config
    from runtimes.tokenizer import QwenTokenizer, check_token_ids

    if bundle:
        from runtimes.bundle import load_backend

        directory = input_dir(bundle, "bundle", "pass a directory written by python -m exporter")
        backend = load_backend(directory)  # after every check of verify --no-run
    else:
        need_torch("chat --model (the reference backend)")
        from runtimes.backends.reference import ReferenceBackend
        from runtimes.checkpoint import load_config, resolve_model_dir

        directory = resolve_model_dir(model or "tiny")
        config = load_config(directory)
        from exporter.export import DEFAULT_MAX_SEQ_LEN, context_limit

        if max_seq_len is None:
            max_seq_len = min(DEFAULT_MAX_SEQ_LEN, context_limit(config)[0])
        if max_seq_len < 16:
            raise UserError("--max-seq-len must be at least 16")
        check_token_ids(QwenTokenizer(directory), config["vocab_size"], read_generation_config(directory), directory)
        backend = ReferenceBackend.from_model(str(directory), max_seq_len=max_seq_len)
    return backend, QwenTokenizer(directory, special_in_user_text), read_generation_config(directory)


def stream_chat(session: Session, messages: list[dict], options: TurnOptions):
    """One assistant turn, streamed to stdout when options.stream → (GenerationResult, ParsedOutput)."""
    from runtimes.generate import generate, thinking_mode
    from runtimes.sampling import SamplingParams
    from runtimes.tool_calls import parse_output

    thinking = thinking_mode(messages, options.budget)
    sampling = SamplingParams.for_mode(session.generation_config, thinking).with_overrides(**options.overrides)
    tty = sys.stdout.isatty()
    channel, started, held = None, False, ""  # newlines at the edges of each channel are not printed
    for event in generate(session.backend, session.tokenizer, messages, budget=options.budget,
                          max_new_tokens=options.max_new_tokens, sampling=sampling, tools=options.tools):
        if event.kind == "done":
            result = event.result
            break
        if not options.stream:
            continue
        if event.kind != channel:
            if channel == "reasoning":
                sys.stdout.write(RESET + "\n" if tty else "\n</think>\n")
            if event.kind == "reasoning":
                sys.stdout.write(DIM if tty else "<think>\n")
            channel, started, held = event.kind, False, ""
        text = held + event.text
        if not started:
            text = text.lstrip("\n")
            started = bool(text)
        held = text[len(text.rstrip("\n")):]
        sys.stdout.write(text[:len(text) - len(held)])
        sys.stdout.flush()
    parsed = parse_output(result.content, reasoning=result.reasoning)
    if options.stream:
        if tty and channel == "reasoning":
            sys.stdout.write(RESET)
        sys.stdout.write("\n")
        sys.stdout.flush()
        for call in parsed.tool_calls:
            print(f"[tool call: {call.name} {json.dumps(call.arguments, ensure_ascii=False)}]", file=sys.stderr)
        for error in parsed.errors:
            print(f"[tool call error: {error.message}]", file=sys.stderr)
        cut = " (cut by budget)" if result.stopped_by_budget else ""
        print(f"[{result.reasoning_tokens} reasoning tokens{cut}, {result.content_tokens} answer tokens, "
              f"finish: {result.finish_reason}, TTFT {result.ttft_ms:.0f} ms, "
              f"decode {result.decode_tokens_per_s:.1f} tok/s]", file=sys.stderr)
    return result, parsed
