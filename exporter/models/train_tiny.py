"""Train `tiny`, the bundled Qwen3-architecture reasoner, from scratch on synthetic arithmetic.

    python -m exporter.models.train_tiny --out exporter/models/tiny

Seeded and reproducible (same seed, threads and library versions → same weights). About 30 minutes
on 2 CPU cores with the defaults. Trains transformers' Qwen3ForCausalLM (the checkpoint is the
standard HF layout) on three kinds of examples, as in Qwen3's thinking-mode fusion:
  thinking      <think> digit-by-digit working </think> answer
  non-thinking  the empty think block of the template, then the answer
  truncated     working cut at a random token, Qwen3's stop-thinking text, then the answer
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import time
from pathlib import Path

import torch
from jinja2 import Environment
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from calibration.arithmetic import Problem, heldout_problems, problems
from exporter.qwen_tokenizer import CHAT_TEMPLATE, CHAT_TOKENS, configure_qwen_pipeline, write_tokenizer_files
from runtimes.thinking import STOP_THINKING_TEXT

MIX = {"thinking": 0.5, "non_thinking": 0.2, "truncated": 0.3}
MODEL_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 192,
    "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 6, "num_key_value_heads": 2,
    "head_dim": 32, "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
    "max_position_embeddings": 512, "tie_word_embeddings": True, "attention_bias": False,
    "attention_dropout": 0.0, "use_sliding_window": False, "initializer_range": 0.02,
}
VOCAB_SIZE = 512
TOKENIZER_SEED = 7


@functools.lru_cache(maxsize=None)
def _template():
    return Environment().from_string(CHAT_TEMPLATE)


def render_prompt(question: str, thinking: bool) -> str:
    template = _template()
    kwargs = {} if thinking else {"enable_thinking": False}
    return template.render(messages=[{"role": "user", "content": question}], add_generation_prompt=True, **kwargs)


def example_texts(problem: Problem) -> dict[str, str]:
    """Full texts (prompt + reply) for tokenizer training."""
    think = f"<think>\n{problem.working()}\n</think>\n\n{problem.answer}<|im_end|>"
    return {
        "thinking": render_prompt(problem.question, True) + think,
        "non_thinking": render_prompt(problem.question, False) + f"{problem.answer}<|im_end|>",
        "truncated": render_prompt(problem.question, True) + "<think>\n" + problem.working()[:20]
                     + STOP_THINKING_TEXT + f"{problem.answer}<|im_end|>",
    }


def train_tokenizer(seed: int = TOKENIZER_SEED) -> Tokenizer:
    tokenizer = configure_qwen_pipeline(Tokenizer(models.BPE()))
    corpus = [text for p in problems(20_000, seed=seed) for text in example_texts(p).values()]
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=list(CHAT_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer


class Encoder:
    """Turns a problem into (token ids, loss mask): loss on the assistant's own tokens only."""

    def __init__(self, tokenizer: Tokenizer):
        self.tok = tokenizer
        self.think_open = [tokenizer.token_to_id("<think>")]
        self.think_close = [tokenizer.token_to_id("</think>")]
        self.im_end = [tokenizer.token_to_id("<|im_end|>")]
        self.stop = self.encode(STOP_THINKING_TEXT)
        self.prompt_cache: dict[tuple[str, bool], list[int]] = {}

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def example(self, problem: Problem, kind: str, rng: random.Random) -> tuple[list[int], list[int]]:
        prompt = self.encode(render_prompt(problem.question, kind != "non_thinking"))
        answer = self.encode(str(problem.answer)) + self.im_end
        if kind == "non_thinking":
            reply, mask = answer, [1] * len(answer)
        else:
            working = self.encode(f"\n{problem.working()}\n")
            if kind == "thinking":
                reply = self.think_open + working + self.think_close + self.encode("\n\n") + answer
                mask = [1] * len(reply)
            else:  # cut where a budget would: after k tokens inside <think>; the forced text is not learned
                k = rng.randrange(0, len(working))
                reply = self.think_open + working[:k] + self.stop + answer
                mask = [1] * (1 + k) + [0] * len(self.stop) + [1] * len(answer)
        return prompt + reply, [0] * len(prompt) + mask


def batches(encoder: Encoder, n_examples: int, batch_size: int, seed: int, exclude: set[Problem]):
    """Length-bucketed, shuffled batches of padded (input_ids, labels)."""
    rng = random.Random(seed)
    kinds = list(MIX)
    weights = [MIX[k] for k in kinds]
    pad = encoder.tok.token_to_id("<|endoftext|>")
    pool = problems(n_examples, seed=seed, exclude=exclude)
    examples = [encoder.example(p, rng.choices(kinds, weights)[0], rng) for p in pool]
    examples.sort(key=lambda e: len(e[0]))
    groups = [examples[i:i + batch_size] for i in range(0, len(examples), batch_size)]
    rng.shuffle(groups)
    for group in groups:
        width = max(len(ids) for ids, _ in group)
        ids = torch.full((len(group), width), pad)
        labels = torch.full((len(group), width), -100)
        for row, (seq, mask) in enumerate(group):
            ids[row, :len(seq)] = torch.tensor(seq)
            labels[row, :len(seq)] = torch.tensor([t if m else -100 for t, m in zip(seq, mask)])
        yield ids, labels


def train(out: Path, examples: int, epochs: int, batch_size: int, lr: float, seed: int, log_every: int = 50) -> None:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    tokenizer = train_tokenizer()
    encoder = Encoder(tokenizer)
    special_ids = {name: tokenizer.token_to_id(name) for name in CHAT_TOKENS}
    config = Qwen3Config(**MODEL_CONFIG, vocab_size=tokenizer.get_vocab_size(),
                         bos_token_id=special_ids["<|endoftext|>"], eos_token_id=special_ids["<|im_end|>"],
                         pad_token_id=special_ids["<|endoftext|>"])
    model = Qwen3ForCausalLM(config)
    model.config._attn_implementation = "sdpa"
    exclude = set(heldout_problems())
    steps_per_epoch = math.ceil(examples / batch_size)
    total = steps_per_epoch * epochs
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = min(300, total // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))))
    print(f"tiny: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, vocab {config.vocab_size}, "
          f"{total} steps", flush=True)
    start, step, seen_tokens = time.time(), 0, 0
    model.train()
    for epoch in range(epochs):
        for ids, labels in batches(encoder, examples, batch_size, seed + 1000 * (epoch + 1), exclude):
            loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            schedule.step()
            step += 1
            seen_tokens += ids.numel()
            if step % log_every == 0 or step == total:
                print(f"step {step}/{total} loss {loss.item():.4f} lr {schedule.get_last_lr()[0]:.2e} "
                      f"tokens {seen_tokens / 1e6:.1f}M {time.time() - start:.0f}s", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.generation_config.update(eos_token_id=[special_ids["<|im_end|>"], special_ids["<|endoftext|>"]],
                                   pad_token_id=special_ids["<|endoftext|>"], bos_token_id=special_ids["<|endoftext|>"],
                                   do_sample=False, temperature=None, top_p=None, top_k=None)
    model.save_pretrained(out, safe_serialization=True)
    write_tokenizer_files(tokenizer, out, model_max_length=MODEL_CONFIG["max_position_embeddings"])
    (out / "training.json").write_text(json.dumps({
        "script": "python -m exporter.models.train_tiny", "seed": seed, "examples_per_epoch": examples,
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "mix": MIX, "steps": step,
        "tokens_seen_incl_padding": seen_tokens, "train_seconds": round(time.time() - start),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }, indent=2))


def evaluate(model_dir: Path, n: int = 500) -> list[dict]:
    """The budget curve on the held-out problems, through the project's own runtime; writes eval.json."""
    from runtimes.accuracy import budget_curve
    from runtimes.backends.reference import ReferenceBackend
    from runtimes.tokenizer import QwenTokenizer

    backend = ReferenceBackend.from_model(str(model_dir), max_seq_len=MODEL_CONFIG["max_position_embeddings"])
    curve = budget_curve(backend, QwenTokenizer(model_dir), heldout_problems(n))
    (model_dir / "eval.json").write_text(json.dumps({
        "command": f"python -m exporter.models.train_tiny --evaluate {model_dir} --problems {n}",
        "heldout_seed": 1234, "decoding": "greedy", "curve": curve}, indent=2))
    for row in curve:
        print(f"budget {row['budget']:>9}: accuracy {row['accuracy']:.3f}  "
              f"cut by budget {row['stopped_by_budget']:.2f}  mean reasoning tokens {row['mean_reasoning_tokens']:.1f}")
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="where to write the trained checkpoint")
    parser.add_argument("--evaluate", type=Path, metavar="DIR", help="only measure DIR's accuracy per budget")
    parser.add_argument("--problems", type=int, default=500, help="held-out problems for --evaluate")
    parser.add_argument("--examples", type=int, default=200_000, help="distinct problems per epoch")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.evaluate:
        evaluate(args.evaluate, args.problems)
        return
    if not args.out:
        parser.error("--out is required to train")
    train(args.out, args.examples, args.epochs, args.batch_size, args.lr, args.seed)
    evaluate(args.out)


if __name__ == "__main__":
    main()
