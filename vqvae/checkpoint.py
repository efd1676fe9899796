"""The files of a saved model: ``model.safetensors`` beside ``config.json``, written
atomically, read without unpickling. File I/O only: the model logic is
``VQVAE.from_pretrained`` / ``VQVAE.save_pretrained`` (``vqvae/model.py``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from .files import atomic_write

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"

# The repository's shipped models; a bare name resolves here (then under ./pretrained).
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"

WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def check_weights_dtype(dtype: str) -> torch.dtype:
    """The torch dtype of a weights-file dtype name; ValueError naming the choices."""
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {dtype!r}")
    return WEIGHT_DTYPES[dtype]


def write_pretrained(
    directory, tensors: dict[str, torch.Tensor], config_json: str, dtype: str = "float32"
) -> None:
    """Write ``tensors`` (CPU, contiguous) to ``directory/model.safetensors`` and the text
    ``config_json`` to ``directory/config.json``, each through a temporary file and a rename,
    so a crash leaves the old file or the new one, never half a file. ``dtype`` is recorded
    in the weights' metadata."""
    check_weights_dtype(dtype)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    with atomic_write(d / WEIGHTS_NAME) as f:
        f.write(save(tensors, metadata={"format": "pt", "dtype": dtype}))
    with atomic_write(d / CONFIG_NAME, "w") as f:
        f.write(config_json.rstrip("\n") + "\n")


def read_weight_shapes(path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a safetensors file, read from its header alone
    (nothing is allocated for the tensors themselves). ValueError if it is not readable."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{path} is not a readable safetensors file: {e}") from e


def read_weights(path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, on the CPU. Never unpickles; ValueError if the
    file is not readable."""
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{path} is not a readable safetensors file: {e}") from e


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
