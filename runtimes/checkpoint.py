"""Find, validate and read a Qwen3 checkpoint in Hugging Face layout.

A checkpoint is `config.json` plus `model.safetensors` or a sharded set named by
`model.safetensors.index.json`. Every problem a user can cause becomes a `UserError`
whose message says what is wrong and what to do.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from runtimes.errors import UserError
from runtimes.files import read_json
from runtimes.rope import rope_dict, yarn_from_config

SUPPORTED_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
CONFIG_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# generous bounds (Qwen3's largest dense model is far inside them) that stop absurd or hostile configs before
# anything is allocated
SIZE_LIMITS = {"vocab_size": 1 << 20, "hidden_size": 1 << 16, "intermediate_size": 1 << 18, "num_hidden_layers": 512,
               "num_attention_heads": 1024, "num_key_value_heads": 1024, "head_dim": 1024,
               "max_position_embeddings": 1 << 24}
REQUIRED_CONFIG_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads",
)
# (lowest, highest, Qwen3's value): a value outside these is a damaged or foreign config, not a model to run
PHYSICS = {"rms_norm_eps": (1e-12, 1e-2, 1e-6), "rope_theta": (1.0, 1e12, 1e6)}
BOOL_KEYS = ("tie_word_embeddings", "attention_bias", "use_sliding_window", "use_cache")
TOKEN_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")
SHARD_NAME = re.compile(r"^[\w.-]+\.safetensors$")  # a file beside the index: no directories, no '..'
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
QUANT_RECIPE = "quant_recipe.json"  # marks a quantized checkpoint (runtimes.quant.recipe)
BUNDLED_MODELS_DIR = Path(__file__).parent / "models"  # tiny


def resolve_model_dir(model: str) -> Path:
    """`tiny` (bundled), a local directory, or a hub id downloaded through huggingface_hub."""
    bundled = BUNDLED_MODELS_DIR / model
    if "/" not in model and (bundled / "config.json").is_file():
        return bundled
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"--model {model} is a file; pass the checkpoint directory that holds config.json")
        return path
    if HUB_ID.match(model) and not model.startswith((".", "/", "~")):
        return _download_from_hub(model)
    raise UserError(f"model directory {model} does not exist; pass a Qwen3 checkpoint directory, a hub id, or 'tiny'")


def _download_from_hub(repo_id: str) -> Path:
    """The checkpoint's files from the Hugging Face hub (or its local cache), with one-line reasons for failing."""
    try:
        from huggingface_hub import errors, snapshot_download
    except ImportError:
        raise UserError(f"{repo_id} looks like a hub id, and downloading needs huggingface_hub: pip install "
                        "'qwen-edge[torch]', or pass a local checkpoint directory") from None
    patterns = ["config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json",
                "tokenizer.json", "tokenizer_config.json"]
    local = f"download it where there is network (huggingface-cli download {repo_id} --local-dir DIR) and pass DIR"
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except errors.GatedRepoError:
        raise UserError(f"{repo_id} is gated on the Hugging Face hub: accept its terms there and log in "
                        "(huggingface-cli login), or pass a local directory") from None
    except errors.RepositoryNotFoundError:
        raise UserError(f"the Hugging Face hub has no model {repo_id} (or it is private); check the id, or pass a "
                        "local checkpoint directory") from None
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled, OSError) as exc:
        # no network (name resolution, connection refused, HF_HUB_OFFLINE) and not in the local hub cache
        offline = "HF_HUB_OFFLINE is set" if isinstance(exc, errors.OfflineModeIsEnabled) or "HF_HUB_OFFLINE" in str(
            exc) else "the hub cannot be reached from here (no network?)"
        raise UserError(f"cannot download {repo_id}: {offline}, and it is not in the local hub cache; {local}") \
            from None
    except Exception as exc:  # anything else the hub client raises is still the user's side: one line
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError(f"could not fetch {repo_id} from the Hugging Face hub ({reason}); {local}") from None


def config_sha256(config: dict) -> str:
    """How a bundle names the exact config it came from."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def load_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.exists():
        raise UserError(f"{model_dir} has no config.json; pass a Hugging Face checkpoint directory of a Qwen3 model")
    config = read_json(path, "restore the file from the original checkpoint")
    validate_config(config, path)
    return config


def validate_config(config: dict, where: Path | str = "config.json") -> None:
    if not isinstance(config, dict):
        raise UserError(f"{where} is not a JSON object; restore the checkpoint's original config.json")
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
        raise UserError(f"{where}: architectures must be a list of names, e.g. [\"Qwen3ForCausalLM\"]")
    if model_type != "qwen3" or (architectures and "Qwen3ForCausalLM" not in architectures):
        found = f"model_type={model_type!r}, architectures={architectures}"
        raise UserError(f"{where} is not a Qwen3 checkpoint ({found}); qwen-edge exports Qwen3ForCausalLM models only")
    missing = [k for k in REQUIRED_CONFIG_KEYS if k not in config]
    if missing:
        raise UserError(f"{where} lacks {', '.join(missing)}; restore the checkpoint's original config.json")
    for key in BOOL_KEYS:
        if key in config and not isinstance(config[key], bool):
            raise UserError(f"{where}: {key} is {config[key]!r}; it must be true or false (a JSON boolean, "
                            "not a string)")
    dtype = config.get("torch_dtype") or config.get("dtype")
    if dtype is not None and (not isinstance(dtype, str) or dtype not in CONFIG_DTYPES):
        raise UserError(f"{where} declares dtype {dtype!r}; supported are float32, float16 and bfloat16 "
                        "(for a pre-quantized checkpoint, export its full-precision original)")
    if config.get("use_sliding_window"):
        raise UserError(f"{where} enables sliding-window attention, which the edge module does not implement; "
                        "set use_sliding_window to false")
    yarn_from_config(config, where)  # default RoPE or YaRN, its parameters checked
    rope = rope_dict(config)
    if config.get("hidden_act", "silu") != "silu":  # (any non-string is not "silu" either)
        raise UserError(f"{where} uses activation {config['hidden_act']!r}; Qwen3 uses silu")
    for key, limit in SIZE_LIMITS.items():
        if key not in config:
            continue
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise UserError(f"{where}: {key} is {value!r}; it must be a whole number from 1 to {limit}")
    for key, (low, high, typical) in PHYSICS.items():
        value = config.get(key, rope.get(key, typical))  # transformers 5 may keep rope_theta in rope_parameters
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise UserError(f"{where}: {key} is {value!r}; it must be a number from {low:g} to {high:g} "
                            f"(Qwen3 uses {typical:g})")
    for key in TOKEN_ID_KEYS:
        value = config.get(key)
        ids = value if isinstance(value, list) else [value]
        if value is not None and not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < (1 << 31)
                                         for i in ids):
            raise UserError(f"{where}: {key} is {value!r}; it must be a token id, a list of them, or null")
    if config["num_attention_heads"] % config["num_key_value_heads"]:
        raise UserError(f"{where}: num_attention_heads must be a multiple of num_key_value_heads")
    if config.get("head_dim", 2) % 2 or ("head_dim" not in config
                                         and config["hidden_size"] % config["num_attention_heads"]):
        raise UserError(f"{where}: head_dim must be even (RoPE rotates halves) and, when absent, hidden_size "
                        "a multiple of num_attention_heads")


def shard_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a checkpoint, checked to exist."""
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        fix = "restore it from the original checkpoint"
        content = read_json(index, fix)
        weight_map = content.get("weight_map") if isinstance(content, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise UserError(f"{index} has no weight_map object (tensor name -> shard file); {fix}")
        bad = [f for f in weight_map.values() if not isinstance(f, str) or not SHARD_NAME.match(f)]
        if bad:
            raise UserError(f"{index}: weight_map names {bad[0]!r}, which is not a .safetensors file name in the "
                            f"checkpoint directory; {fix}")
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (model_dir / n).is_file()]
        if missing:
            raise UserError(f"{model_dir} is missing {len(missing)} of {len(names)} shards ({', '.join(missing)}); "
                            "download the complete checkpoint")
        return [model_dir / n for n in names]
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    others = sorted(model_dir.glob("*.safetensors"))
    if others:
        return others
    raise UserError(f"{model_dir} has no model.safetensors (nor an index of shards); "
                    "qwen-edge reads safetensors weights only: convert .bin files with transformers' save_pretrained")


class LazyTensor:
    """A checkpoint tensor read from its file only when asked for (`load`), checked like an eager one. Exports
    that quantize a weight read it then, so the whole model is never in memory at once."""

    def __init__(self, path: Path, name: str, shape: tuple[int, ...]):
        self.path, self.name, self.shape = path, name, shape

    def load(self) -> torch.Tensor:
        try:
            with safe_open(self.path, framework="pt") as f:
                return _checked(self.path, self.name, f.get_tensor(self.name))
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise UserError(f"{self.path} is corrupt or truncated ({str(exc).splitlines()[0]}); "
                            "download the file again") from None


def _checked(path: Path, name: str, tensor: torch.Tensor) -> torch.Tensor:
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        raise UserError(f"{path.name}: tensor {name} holds NaN or infinite values; the checkpoint "
                        "is damaged (re-download it, or re-save it from a healthy model)")
    return tensor


def load_state_dict(model_dir: Path, lazy=None) -> dict[str, torch.Tensor | LazyTensor]:
    """Every tensor of the checkpoint, HF names, in the dtypes stored. Names for which `lazy(name)` is true come
    as LazyTensors (shape and dtype checked now, values read and checked on load())."""
    tensors: dict[str, torch.Tensor | LazyTensor] = {}
    for path in shard_files(model_dir):
        try:
            with safe_open(path, framework="pt") as f:
                for name in f.keys():
                    dtype = f.get_slice(name).get_dtype()
                    if dtype not in SUPPORTED_DTYPES:
                        raise UserError(f"{path.name}: tensor {name} is {dtype}; supported are F32, F16 and BF16 "
                                        "(export the full-precision checkpoint, qwen-edge quantizes it itself)")
                    if lazy is not None and lazy(name):
                        tensors[name] = LazyTensor(path, name, tuple(f.get_slice(name).get_shape()))
                    else:
                        tensors[name] = _checked(path, name, f.get_tensor(name))
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise UserError(f"{path} is corrupt or truncated ({str(exc).splitlines()[0]}); "
                            "download the file again") from None
    return tensors
