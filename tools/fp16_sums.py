"""Why ExecuTorch's fp16 bundle of `tiny` is further from fp32 than ONNX Runtime's: emulate both kinds of fp16
arithmetic on the fp32 edge module, over the parity prompts (prompt + the reference's continuation).

    python -m tools.fp16_sums

"fp16 storage" rounds weights, every linear's and norm's output and the residual stream to fp16 but sums
each dot product in fp32; "fp16 running sums" also rounds the running sum after every multiply-add, as
XNNPACK's fp16 linears do (native fp16 multiply-adds on phones). Prints max |dlogit| and argmax flips.
"""

import copy

import numpy as np
import torch

from runtimes.model import RMSNorm, from_pretrained
from runtimes.backends.reference import ReferenceBackend
from runtimes.generate import prepare_prompt, run
from runtimes.eval.parity import CHAT_PROMPTS
from runtimes.tokenizer import QwenTokenizer


def r16(t: torch.Tensor) -> torch.Tensor:
    return t.half().float()


def fp16_storage(module):
    m = copy.deepcopy(module)
    for p in m.parameters():
        p.data = r16(p.data)
    for mod in m.modules():
        if isinstance(mod, (torch.nn.Linear, RMSNorm, torch.nn.Embedding)):
            mod.register_forward_hook(lambda _m, _i, out: r16(out))
    for block in m.layers:
        block.register_forward_hook(lambda _m, _i, out: r16(out))
        block.post_attention_layernorm.register_forward_pre_hook(lambda _m, args: (r16(args[0]),))
    return m


def fp16_running_sums(module):
    def linear(mod, args, _out):
        x, w = r16(args[0]), r16(mod.weight)
        acc = torch.zeros(*x.shape[:-1], w.shape[0])
        for k in range(x.shape[-1]):
            acc = r16(acc + x[..., k:k + 1] * w[:, k])
        return acc

    m = fp16_storage(module)
    for mod in m.modules():
        if isinstance(mod, torch.nn.Linear):
            mod.register_forward_hook(linear, prepend=True)
    return m


def main() -> None:
    tok = QwenTokenizer("runtimes/models/tiny")
    fp32, _ = from_pretrained("tiny", max_seq_len=256)
    sequences = []
    for text in CHAT_PROMPTS:
        messages = [{"role": "user", "content": text}]
        ref = run(ReferenceBackend(fp32), tok, messages, budget=32, max_new_tokens=32)
        prompt, _ = prepare_prompt(tok, messages, 32)
        sequences.append((prompt + ref.token_ids)[:-1])

    def logits(m):
        with torch.no_grad():
            return [m.prefill(torch.tensor(s))[0].double().numpy() for s in sequences]

    reference = logits(fp32)
    for name, make in (("fp16 storage, fp32 sums", fp16_storage), ("fp16 running sums", fp16_running_sums)):
        ours = logits(make(fp32))
        flips = sum(int((a.argmax(-1) != b.argmax(-1)).sum()) for a, b in zip(ours, reference))
        worst = max(float(np.abs(a - b).max()) for a, b in zip(ours, reference))
        print(f"{name}: max |dlogit| {worst:.3f}, argmax flips {flips} of {sum(map(len, reference))}")


if __name__ == "__main__":
    main()
