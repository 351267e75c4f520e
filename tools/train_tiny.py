"""Train `tiny`, the bundled Qwen3-architecture reasoner, from scratch on synthetic arithmetic.

    OMP_NUM_THREADS=1 python -m tools.train_tiny --out runtimes/models/tiny

Seeded and reproducible (same seed, threads and library versions → same weights; the shipped weights
were trained on one thread). Stage 1 took 49 minutes and stage 2 11 on one core of a 2-core machine
(the other core was busy); on two threads a step takes about 0.32 s instead of 0.55. Trains
transformers' Qwen3ForCausalLM (the checkpoint is the standard HF layout) on three kinds of examples,
as in Qwen3's thinking-mode fusion:
  thinking      <think> digit-by-digit working </think> answer
  non-thinking  the empty think block of the template, then the answer
  truncated     working cut at a random token, Qwen3's stop-thinking text, then the answer
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from exporter.tokenizer_files import CHAT_TOKENS, configure_qwen_pipeline, write_tokenizer_files
from runtimes.backends.reference import ReferenceBackend
from runtimes.chat import render
from runtimes.eval.arithmetic import Problem, heldout_problems, problems
from runtimes.eval.tasks import arithmetic_items, budget_curve
from runtimes.thinking import STOP_THINKING_TEXT
from runtimes.tokenizer import QwenTokenizer

MIX = {"thinking": 0.45, "non_thinking": 0.2, "truncated": 0.35}
# Stage 2 teaches answering from short partial workings: with stage 1's uniform cut points, few
# examples are cut early, and accuracy at budget 8 fell below answering without thinking (26.0% vs 31.6%).
STAGE2_MIX = {"thinking": 0.25, "non_thinking": 0.1, "truncated": 0.65}
STAGE2_EARLY_CUT = 0.8  # share of stage-2 truncated examples cut within the first EARLY_CUT_TOKENS
CURVE_BUDGETS = (0, 8, 16, 32, 64, 128, None)  # the accuracy-vs-budget curve of the model card (None: unlimited)
EARLY_CUT_TOKENS = 10  # budget 8 ends one 7-token step in (after the "\n" that opens the working)
MODEL_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 192,
    "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 6, "num_key_value_heads": 2,
    "head_dim": 32, "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
    "max_position_embeddings": 512, "tie_word_embeddings": True, "attention_bias": False,
    "attention_dropout": 0.0, "use_sliding_window": False, "initializer_range": 0.02,
}
VOCAB_SIZE = 512
TOKENIZER_SEED = 7


def render_prompt(question: str, thinking: bool) -> str:
    return render([{"role": "user", "content": question}], enable_thinking=thinking)


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

    def __init__(self, tokenizer: Tokenizer, early_cut: float = 0.0):
        self.tok = tokenizer
        self.early_cut = early_cut  # share of truncated examples cut within the first EARLY_CUT_TOKENS
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
                early = rng.random() < self.early_cut
                k = rng.randrange(0, min(len(working), EARLY_CUT_TOKENS) if early else len(working))
                reply = self.think_open + working[:k] + self.stop + answer
                mask = [1] * (1 + k) + [0] * len(self.stop) + [1] * len(answer)
        return prompt + reply, [0] * len(prompt) + mask


def stage_problems(examples: int, stage_seed: int) -> list[Problem]:
    """The problems a training stage draws: seed + 1000, never one of the held-out set."""
    return problems(examples, seed=stage_seed + 1000, exclude=set(heldout_problems()))


def batches(encoder: Encoder, pool: list[Problem], batch_size: int, seed: int, mix: dict[str, float] = MIX):
    """Length-bucketed, shuffled batches of padded (input_ids, labels) over `pool`."""
    rng = random.Random(seed)
    kinds = list(mix)
    weights = [mix[k] for k in kinds]
    pad = encoder.tok.token_to_id("<|endoftext|>")
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


def run_stage(model, encoder: Encoder, examples: int, batch_size: int, lr: float, min_lr_ratio: float,
              seed: int, mix: dict[str, float], name: str, log_every: int = 50) -> dict:
    """One pass over `examples` fresh problems with AdamW, warm-up and cosine decay; a fresh optimizer."""
    torch.manual_seed(seed)
    total = math.ceil(examples / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, min(300, total // 10))
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * (
        min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))))
    start, step, seen_tokens = time.time(), 0, 0
    model.train()
    for ids, labels in batches(encoder, stage_problems(examples, seed), batch_size, seed + 1000, mix):
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        schedule.step()
        step += 1
        seen_tokens += ids.numel()
        if step % log_every == 0 or step == total:
            print(f"{name} step {step}/{total} loss {loss.item():.4f} lr {schedule.get_last_lr()[0]:.2e} "
                  f"tokens {seen_tokens / 1e6:.1f}M {time.time() - start:.0f}s", flush=True)
    model.eval()
    return {"examples": examples, "batch_size": batch_size, "lr": lr, "mix": mix, "steps": step, "seed": seed,
            "tokens_seen_incl_padding": seen_tokens, "seconds": round(time.time() - start)}


def train(out: Path, examples: int, stage2_examples: int, batch_size: int, lr: float, seed: int,
          stage1_from: Path | None = None) -> None:
    """Stage 1 from scratch (or loaded from `stage1_from`, a saved stage-1 result), then stage 2; save."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    tokenizer = train_tokenizer()
    special_ids = {name: tokenizer.token_to_id(name) for name in CHAT_TOKENS}
    config = Qwen3Config(**MODEL_CONFIG, vocab_size=tokenizer.get_vocab_size(),
                         bos_token_id=special_ids["<|endoftext|>"], eos_token_id=special_ids["<|im_end|>"],
                         pad_token_id=special_ids["<|endoftext|>"])
    stages = {}
    if stage1_from:
        model = Qwen3ForCausalLM.from_pretrained(stage1_from, dtype=torch.float32)
        stages["stage1"] = json.loads((stage1_from / "training.json").read_text()).get("stage1", "loaded")
    else:
        model = Qwen3ForCausalLM(config)
    model.config._attn_implementation = "sdpa"
    print(f"tiny: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, vocab {config.vocab_size}",
          flush=True)
    if not stage1_from:
        stages["stage1"] = run_stage(model, Encoder(tokenizer), examples, batch_size, lr, 0.1, seed, MIX, "stage1")
    if stage2_examples:
        stages["stage2"] = run_stage(model, Encoder(tokenizer, early_cut=STAGE2_EARLY_CUT), stage2_examples,
                                     batch_size, lr / 4, 0.2, seed + 1, STAGE2_MIX, "stage2")
        stages["stage2"]["early_cut"] = STAGE2_EARLY_CUT
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.update(eos_token_id=[special_ids["<|im_end|>"], special_ids["<|endoftext|>"]],
                                   pad_token_id=special_ids["<|endoftext|>"], bos_token_id=special_ids["<|endoftext|>"],
                                   do_sample=False, temperature=None, top_p=None, top_k=None)
    model.save_pretrained(out, safe_serialization=True)
    write_tokenizer_files(tokenizer, out, model_max_length=MODEL_CONFIG["max_position_embeddings"])
    (out / "training.json").write_text(json.dumps({
        "script": "python -m tools.train_tiny", "seed": seed, **stages,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }, indent=2))


def evaluate(model_dir: Path, n: int = 500, fresh_seed: int | None = None) -> list[dict]:
    """The budget curve through the project's own runtime: on the held-out problems (writes eval.json), or
    with `fresh_seed` on problems of that seed that neither training (per training.json) nor the held-out set
    drew, a second check for a recipe chosen on the held-out set (prints only)."""
    if fresh_seed is None:
        chosen = heldout_problems(n)
    else:
        record = json.loads((model_dir / "training.json").read_text())
        seen = set(heldout_problems())
        for stage in (record[k] for k in ("stage1", "stage2") if k in record):
            seen.update(stage_problems(stage["examples"], stage["seed"]))
        chosen = problems(n, seed=fresh_seed, exclude=seen)
    backend = ReferenceBackend.from_model(str(model_dir), max_seq_len=MODEL_CONFIG["max_position_embeddings"])
    curve = budget_curve(backend, QwenTokenizer(model_dir), arithmetic_items(chosen), CURVE_BUDGETS)
    if fresh_seed is None:
        (model_dir / "eval.json").write_text(json.dumps({
            "command": f"python -m tools.train_tiny --evaluate {model_dir} --problems {n}",
            "heldout_seed": 1234, "decoding": "greedy", "curve": curve}, indent=2))
    else:
        print(f"{n} fresh problems of seed {fresh_seed}, none trained on nor held out:")
    for row in curve:
        print(f"budget {row['budget']:>9}: accuracy {row['accuracy']:.3f}  "
              f"cut by budget {row['stopped_by_budget']:.2f}  mean reasoning tokens {row['mean_reasoning_tokens']:.1f}")
    return curve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.train_tiny", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="where to write the trained checkpoint")
    parser.add_argument("--evaluate", type=Path, metavar="DIR", help="only measure DIR's accuracy per budget")
    parser.add_argument("--problems", type=int, default=500, help="held-out problems for --evaluate")
    parser.add_argument("--fresh-seed", type=int, metavar="S",
                        help="with --evaluate: problems of seed S instead, none trained on nor held out (e.g. 4321)")
    parser.add_argument("--examples", type=int, default=320_000, help="problems in stage 1")
    parser.add_argument("--stage2-examples", type=int, default=80_000, help="problems in stage 2 (0: skip)")
    parser.add_argument("--stage1-from", type=Path, metavar="DIR",
                        help="skip stage 1 and load its saved result (a checkpoint this script wrote)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.evaluate:
        if args.fresh_seed is not None and not (args.evaluate / "training.json").is_file():
            parser.error(f"--fresh-seed needs {args.evaluate / 'training.json'} (written by this script) to know "
                         "which problems training drew")
        evaluate(args.evaluate, args.problems, args.fresh_seed)
        return
    if not args.out:
        parser.error("--out is required to train")
    train(args.out, args.examples, args.stage2_examples, args.batch_size, args.lr, args.seed, args.stage1_from)
    evaluate(args.out)


if __name__ == "__main__":
    main()
