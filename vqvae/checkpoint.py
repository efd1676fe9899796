"""The files of a saved model: weights (``model.safetensors``, ``prior.safetensors``) beside
their JSON config, written atomically, read without unpickling; and where the shipped models
are. File I/O only: loading and saving a model is :class:`vqvae.base.PretrainedMixin`, finding
a folder for a name or a Hub repo id is :func:`vqvae.hub.resolve`."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from .files import atomic_write

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def _shipped_dir() -> Path:
    """The shipped models: ``vqvae/pretrained/`` inside an installed wheel (pyproject maps the
    repository's ``pretrained/`` there as package data), else ``pretrained/`` beside the
    package, as in a checkout or an editable install."""
    package = Path(__file__).resolve().parent
    installed = package / "pretrained"
    return installed if installed.is_dir() else package.parent / "pretrained"


# The shipped models; a bare name resolves here (then under ./pretrained), see vqvae.hub.
PRETRAINED_DIR = _shipped_dir()

WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def check_weights_dtype(dtype: str) -> torch.dtype:
    """The torch dtype of a weights-file dtype name; ValueError naming the choices."""
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {dtype!r}")
    return WEIGHT_DTYPES[dtype]


def write_pretrained(
    directory,
    tensors: dict[str, torch.Tensor],
    config_json: str,
    dtype: str = "float32",
    *,
    weights_name: str = WEIGHTS_NAME,
    config_name: str = CONFIG_NAME,
) -> None:
    """Write ``tensors`` (CPU, contiguous) to ``directory/weights_name`` and the text
    ``config_json`` to ``directory/config_name``, each through a temporary file and a rename,
    so a crash leaves the old file or the new one, never half a file. ``dtype`` is recorded
    in the weights' metadata."""
    check_weights_dtype(dtype)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    with atomic_write(d / weights_name) as f:
        f.write(save(tensors, metadata={"format": "pt", "dtype": dtype}))
    with atomic_write(d / config_name, "w") as f:
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


MAX_CONFIG_BYTES = 1_000_000  # a config is a few hundred bytes; a bigger file is not one


def read_config_json(path):
    """The JSON value in a config file, read without trusting it: ValueError for a file over
    :data:`MAX_CONFIG_BYTES`, text that is not JSON, or nesting too deep to parse."""
    path = Path(path)
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{path} is over {MAX_CONFIG_BYTES} bytes: not a config file")
    try:
        return json.loads(path.read_bytes())
    except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8, deep nesting
        raise ValueError(f"{path} is not a JSON file: {e}") from e
