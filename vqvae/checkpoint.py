"""safetensors checkpoints: ``model.safetensors`` beside ``config.json``. Never unpickles."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from .config import VQVAEConfig
from .files import atomic_write

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"

# The repository's shipped models; a bare name resolves here (then under ./pretrained).
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def save_pretrained(model, directory, dtype: str = "float32") -> None:
    """Write ``model``'s weights (safetensors) and config (JSON) into ``directory``.

    ``dtype="float16"`` stores the parameters (conv weights and the codebook) in half
    precision, which halves the file; the EMA statistics stay float32 so training can go
    on from the file. ``load_pretrained`` always gives a float32 model.
    Files are written to a temporary name and renamed, so a crash leaves no half file."""
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {dtype!r}")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    params = {name for name, _ in model.named_parameters()}
    state = {
        k: (v.detach().to(WEIGHT_DTYPES[dtype]) if k in params else v.detach()).cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    with atomic_write(d / WEIGHTS_NAME) as f:
        f.write(save(state, metadata={"format": "pt", "dtype": dtype}))
    with atomic_write(d / CONFIG_NAME, "w") as f:
        f.write(model.config.to_json() + "\n")


def resolve_pretrained(name_or_dir) -> Path:
    """The folder a model name or path refers to; raises FileNotFoundError with the options."""
    p = Path(name_or_dir)
    candidates = [p] if (p.is_absolute() or os.sep in str(name_or_dir) or p.exists()) else []
    candidates += [PRETRAINED_DIR / str(name_or_dir), Path.cwd() / "pretrained" / str(name_or_dir)]
    for c in candidates:
        if (c / WEIGHTS_NAME).is_file() and (c / CONFIG_NAME).is_file():
            return c
    available = sorted(x.name for x in PRETRAINED_DIR.glob("*") if (x / WEIGHTS_NAME).is_file())
    raise FileNotFoundError(
        f"no model at {name_or_dir!r}: expected a folder with {WEIGHTS_NAME} and {CONFIG_NAME}, "
        f"or the name of one in {PRETRAINED_DIR} (available: {', '.join(available) or 'none'})"
    )


def load_pretrained(name_or_dir, device="cpu"):
    """Load a model written by ``save_pretrained``: a folder path, or a bare name that
    resolves to ``pretrained/<name>/``. Returns the model in eval mode on ``device``."""
    from .model import VQVAE

    d = resolve_pretrained(name_or_dir)
    try:
        config = VQVAEConfig.from_json(d / CONFIG_NAME)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{d / CONFIG_NAME} is not a valid VQ-VAE config: {e}") from e
    model = VQVAE(config)
    try:
        state = load_file(str(d / WEIGHTS_NAME), device="cpu")
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{d / WEIGHTS_NAME} is not a readable safetensors file: {e}") from e
    # Parameters stored in float16 are widened to the model's float32 by load_state_dict.
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # missing/unexpected keys or shapes that disagree with config.json
        raise ValueError(
            f"the weights in {d / WEIGHTS_NAME} do not match {d / CONFIG_NAME} "
            f"(was one of them replaced?): {e}"
        ) from e
    return model.to(device).eval()
