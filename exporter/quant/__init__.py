"""Weight quantization as pure tensor functions: no file I/O, no target knowledge."""

from exporter.quant.rtn import QuantizedTensor, dequantize, quantize  # noqa: F401
