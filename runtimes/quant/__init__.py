"""Weight quantization: round-to-nearest (rtn), AWQ (awq), int4 packing (packing) as pure tensor functions, and
recipes, fake-quant references and quantized checkpoints (recipe)."""
