"""Tokenizer of a bundle or checkpoint (`tokenizer.json`), its chat-token ids, streaming detokenization."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from runtimes.errors import UserError

REPLACEMENT = "\ufffd"


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
    def __init__(self, directory: str | Path):
        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise UserError(f"{directory} has no tokenizer.json; copy the checkpoint's tokenizer files "
                            "(tokenizer.json, tokenizer_config.json) into it")
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:
            raise UserError(f"{path} cannot be read ({str(exc).splitlines()[0]}); restore it from the checkpoint") from None
        config_path = directory / "tokenizer_config.json"
        self.config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        self.chat_template = self.config.get("chat_template")
        ids = {}
        for name, token in (("im_start", "<|im_start|>"), ("im_end", "<|im_end|>"), ("think_open", "<think>"),
                            ("think_close", "</think>"), ("endoftext", "<|endoftext|>")):
            ids[name] = self.tokenizer.token_to_id(token)
            if ids[name] is None:
                raise UserError(f"{path} lacks Qwen3's {token} token; this is not a Qwen3 tokenizer")
        self.special = SpecialIds(**ids)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()


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
