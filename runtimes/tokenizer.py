"""Tokenizer of a bundle or checkpoint (`tokenizer.json`), its chat-token ids, streaming detokenization."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from tokenizers import Tokenizer

from runtimes.chat import encoding_chunks, user_text_as_text
from runtimes.errors import UserError
from runtimes.files import JSON_LIMIT, read_json, regular_file
from runtimes.quiet import c_stderr_hidden

REPLACEMENT = "\ufffd"
# what a checkpoint and a bundle carry beside the weights for chat: tokenizer, chat template, sampling defaults
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")


@dataclass(frozen=True)
class SpecialIds:
    im_start: int
    im_end: int
    think_open: int
    think_close: int
    endoftext: int

    @property
    def stop(self) -> frozenset[int]:
        return frozenset({self.im_end, self.endoftext})


class QwenTokenizer:
    def __init__(self, directory: str | Path, special_in_user_text: bool = False):
        """`special_in_user_text`: encode special-token strings that users and tools write (`<|im_start|>`,
        `<tool_call>`, ...) as the control tokens they name, as transformers does; by default they stay text."""
        directory = Path(directory)
        self.special_in_user_text = special_in_user_text
        path = directory / "tokenizer.json"
        fix = "restore it from the checkpoint"
        if not regular_file(path):
            raise UserError(f"{directory} has no tokenizer.json; copy the checkpoint's tokenizer files "
                            "(tokenizer.json, tokenizer_config.json) into it")
        if path.stat().st_size > 4 * JSON_LIMIT:
            raise UserError(f"{path} is {path.stat().st_size} bytes, far larger than any tokenizer; {fix}")
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:
            raise UserError(f"{path} cannot be read ({str(exc).splitlines()[0]}); {fix}") from None
        config_path = directory / "tokenizer_config.json"
        self.config = read_json(config_path, fix) if config_path.exists() else {}
        if not isinstance(self.config, dict):
            raise UserError(f"{config_path} is not a JSON object; {fix}")
        self.chat_template = self.config.get("chat_template")
        if self.chat_template is not None:
            check_chat_template(self.chat_template, config_path)
        # Qwen3's own template is rendered by our code (which the apps mirror); any other by the template itself
        self.own_template = self.chat_template is not None and self.chat_template.strip() != _qwen3_template()
        ids = {}
        for name, token in (("im_start", "<|im_start|>"), ("im_end", "<|im_end|>"), ("think_open", "<think>"),
                            ("think_close", "</think>"), ("endoftext", "<|endoftext|>")):
            ids[name] = self.tokenizer.token_to_id(token)
            if ids[name] is None:
                raise UserError(f"{path} lacks Qwen3's {token} token; this is not a Qwen3 tokenizer")
        self.special = SpecialIds(**ids)
        self.added_tokens = [token.content for token in self.tokenizer.get_added_tokens_decoder().values()]

    def render(self, messages, add_generation_prompt: bool = True, enable_thinking: bool = True,
               tools=None) -> str:
        """The prompt text of a conversation, by the checkpoint's chat template."""
        from runtimes.chat import TemplateBudgetExceeded, render, render_template

        if not self.own_template:
            return render(messages, add_generation_prompt, enable_thinking, tools)
        special = {name: _token_text(self.config.get(name)) for name in ("bos_token", "eos_token", "pad_token")}
        try:
            return render_template(self.chat_template, messages=list(messages), tools=tools,
                                   add_generation_prompt=add_generation_prompt, enable_thinking=enable_thinking,
                                   **special)
        except TemplateBudgetExceeded as exc:
            raise UserError(f"the checkpoint's chat template does too much work for this conversation ({exc})") from None
        except Exception as exc:  # the template's own raise_exception, or its errors on this conversation
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise UserError(f"the checkpoint's chat template cannot render this conversation ({reason})") from None

    def encode_conversation(self, messages, enable_thinking: bool = True, tools=None) -> list[int]:
        """The prompt ids of a conversation: only the template's own control tokens are special, unless
        special_in_user_text (see runtimes.chat.user_text_as_text)."""
        if self.special_in_user_text:
            return self.encode(self.render(messages, enable_thinking=enable_thinking, tools=tools))
        text = self.render(user_text_as_text(messages, self.added_tokens), enable_thinking=enable_thinking,
                           tools=tools)
        return [i for chunk in encoding_chunks(text, self.added_tokens) for i in self.encode(chunk)]

    def encode(self, text: str) -> list[int]:
        try:
            return encode_ids(self.tokenizer, text)
        except TypeError:  # lone surrogates: bytes that were not UTF-8, smuggled into a str by the shell or a file
            if any("\ud800" <= ch <= "\udfff" for ch in text):
                raise UserError("the text is not valid UTF-8 (it holds undecodable bytes); pass UTF-8 text") from None
            raise

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()


def encode_ids(tokenizer: Tokenizer, text: str) -> list[int]:
    """The ids of `text` (no special tokens added). A pre-tokenizer regex that backtracks past Oniguruma's retry
    limit makes the tokenizers library panic (a BaseException, its report written by Rust to file descriptor 2):
    that becomes a UserError, the report hidden."""
    with c_stderr_hidden():
        try:
            return tokenizer.encode(text, add_special_tokens=False).ids
        except BaseException as exc:
            if type(exc).__name__ != "PanicException":
                raise
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "a panic"
    raise UserError(f"the tokenizer fails on this text ({reason}); its tokenizer.json is broken (a pre-tokenizer "
                    "regex that backtracks without end?): restore the checkpoint's tokenizer files")


def token_id_problems(tokenizer: QwenTokenizer, rows: int, generation_config: dict) -> list[str]:
    """Every id the tokenizer can give (its vocabulary and added tokens, the chat tokens among them) and the
    generation config's bos/eos/pad ids, against the `rows` of the embedding they index: an id past them would
    read outside the table (a crash in one backend, garbage or an error in another)."""
    problems = []
    vocab = tokenizer.tokenizer.get_vocab(with_added_tokens=True)
    if vocab:
        token, top = max(vocab.items(), key=lambda item: item[1])
        if top >= rows:
            problems.append(f"tokenizer.json maps {token[:40]!r} to id {top}, past the embedding's {rows} rows")
    for name, value in asdict(tokenizer.special).items():
        if value >= rows:
            problems.append(f"the {name} token's id {value} is past the embedding's {rows} rows")
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = generation_config.get(key)
        past = [i for i in (value if isinstance(value, list) else [value]) if isinstance(i, int) and i >= rows]
        if past:
            problems.append(f"generation_config.json's {key} {past[0]} is past the embedding's {rows} rows")
    return problems


def check_token_ids(tokenizer: QwenTokenizer, rows: int, generation_config: dict, where) -> None:
    """token_id_problems as a UserError naming the first, before a model sees an id."""
    problems = token_id_problems(tokenizer, rows, generation_config)
    if problems:
        raise UserError(f"{where}: {problems[0]}; its tokenizer does not belong to this model (restore the "
                        "checkpoint's tokenizer files)")


def _qwen3_template() -> str:
    from runtimes.chat import QWEN3_CHAT_TEMPLATE

    return QWEN3_CHAT_TEMPLATE.read_text().strip()


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json gives it: a string, an AddedToken object, or null."""
    return value.get("content") if isinstance(value, dict) else value if isinstance(value, str) else None


def check_chat_template(template, where) -> None:
    """The checkpoint's chat template must render a short thinking conversation, within the sandbox and budget of
    runtimes.chat.render_template."""
    from runtimes.chat import TemplateBudgetExceeded, render_template

    if not isinstance(template, str):
        raise UserError(f"{where}: chat_template is not a single template string; qwen-edge expects Qwen3's")
    messages = [{"role": "user", "content": "What is 2 + 2?"},
                {"role": "assistant", "content": "4", "reasoning_content": "2 plus 2"},
                {"role": "user", "content": "And 3 + 3?"}]
    try:
        render_template(template, messages=messages, add_generation_prompt=True, enable_thinking=True,
                        bos_token="", eos_token="<|im_end|>")
    except TemplateBudgetExceeded as exc:
        raise UserError(f"{where}: the chat template does too much work to render a short conversation ({exc}); "
                        "restore the checkpoint's original tokenizer_config.json") from None
    except Exception as exc:  # syntax errors, raise_exception, sandbox violations, type errors in the template
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise UserError(f"{where}: the chat template fails to render a conversation ({reason}); "
                        "restore the checkpoint's original tokenizer_config.json") from None


class StreamDecoder:
    """Turns token ids into text pieces; never emits half a UTF-8 character.

    Byte-level BPE can split one character over several tokens; until the bytes complete it, the
    decoded text ends in U+FFFD, so those tokens are held back.
    """

    def __init__(self, tokenizer: QwenTokenizer):
        self.tokenizer = tokenizer
        self.pending: list[int] = []

    def push(self, token_id: int) -> str:
        self.pending.append(token_id)
        text = self.tokenizer.decode(self.pending)
        if text.endswith(REPLACEMENT) and len(self.pending) < 8:
            return ""
        self.pending = []
        return text

    def flush(self) -> str:
        text = self.tokenizer.decode(self.pending) if self.pending else ""
        self.pending = []
        return text
