"""genai_config.json: what ONNX Runtime GenAI needs to run an ONNX CPU bundle unchanged.

ORT-GenAI's Java/Kotlin, Swift/Objective-C, C# and C APIs are how apps usually run ONNX LLMs. Without this file
it stops with an unrelated "Model package support requires ..." message. What its config reader (0.18) takes for
a decoder-only model:

- model.type "qwen3" picks its decoder-only state machine; model.context_length (required) caps max_length, so
  set to the bundle's max_seq_len it refuses a longer generation when the generator is made ("max_length (N)
  cannot be greater than model context_length (M)") instead of failing inside attention on the RoPE cache;
- model.decoder: the graph file, its input/output names (%d is the layer), the sizes of the KV buffers it
  allocates, and session options (the onnxruntime backend's own, so both compute the same);
- search: greedy unless the checkpoint's generation_config.json samples; past_present_share_buffer true is what
  the onnxruntime backend does (one max_seq_len buffer per cache, written in place by GroupQueryAttention).

GenAI's tokenizer reads the bundle's tokenizer.json and tokenizer_config.json. It does not render Qwen3's thinking
switch (enable_thinking) and drops special tokens such as <think> when decoding: an app renders the prompt with the
chat template itself, feeds token ids, and splits reasoning by token id.
"""

from __future__ import annotations

GENAI_CONFIG = "genai_config.json"


def genai_config(args, max_seq_len: int, special, generation_config: dict, model_file: str,
                 session_options: dict[str, str]) -> dict:
    """`args` the model's ModelArgs, `special` the tokenizer's SpecialIds, `generation_config` the checked
    generation_config.json (sampling defaults; greedy without one)."""
    sampling = bool(generation_config.get("do_sample", False))
    return {
        "model": {
            "type": "qwen3",
            "bos_token_id": special.endoftext,  # Qwen3 adds no BOS; GenAI wants an id (it only pads with it)
            "eos_token_id": sorted(special.stop),
            "pad_token_id": special.endoftext,
            "context_length": max_seq_len,
            "vocab_size": args.vocab_size,
            "decoder": {
                "filename": model_file,
                "session_options": {"log_id": "qwen-edge", **session_options},
                "head_size": args.head_dim,
                "hidden_size": args.hidden_size,
                "num_attention_heads": args.num_attention_heads,
                "num_key_value_heads": args.num_key_value_heads,
                "num_hidden_layers": args.num_hidden_layers,
                "inputs": {"input_ids": "input_ids", "position_ids": "position_ids",
                           "past_key_names": "past_key_%d", "past_value_names": "past_value_%d"},
                "outputs": {"logits": "logits", "present_key_names": "present_key_%d",
                            "present_value_names": "present_value_%d"},
            },
        },
        "search": {
            "do_sample": sampling,
            "max_length": max_seq_len,
            "min_length": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": True,
            "repetition_penalty": float(generation_config.get("repetition_penalty") or 1.0),
            "temperature": float(generation_config.get("temperature") or 1.0),
            "top_k": int(generation_config.get("top_k") or 50) if sampling else 1,
            "top_p": float(generation_config.get("top_p") or 1.0),
        },
    }
