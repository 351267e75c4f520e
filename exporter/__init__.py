"""qwen-edge: export Qwen3 models to phone-ready bundles."""

__version__ = "0.1.0"
