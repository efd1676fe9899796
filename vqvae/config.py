"""Model configuration: a plain dataclass that round-trips through JSON, plus presets."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path

from .files import atomic_write
from .metrics import bits_per_image

# Version of the config.json layout; a file without one is version 1.
FORMAT_VERSION = 1


@dataclass
class VQVAEConfig:
    """Everything needed to rebuild a :class:`vqvae.VQVAE`.

    Defaults follow the VQ-VAE paper (van den Oord et al., 2017): codebook loss with
    commitment cost beta=0.25, no EMA, no dead-code restarts. Presets turn on the
    project's recipe (EMA codebook, dead-code restarts) explicitly.
    """

    # data
    in_channels: int = 3
    image_size: int = 32  # square images; H and W must be divisible by `downsample`
    # encoder / decoder
    hidden_channels: int = 128
    res_layers: int = 2
    res_channels: int = 32
    downsample: int = 4  # 2, 4, 8 or 16: log2 of it stride-2 4x4 convolutions
    # quantizer
    embedding_dim: int = 64  # D
    codebook_size: int = 512  # K
    beta: float = 0.25  # commitment cost
    use_ema: bool = False  # EMA codebook updates instead of the codebook loss
    ema_decay: float = 0.99
    ema_eps: float = 1e-5  # Laplace smoothing of cluster sizes
    dead_code_threshold: int = 0  # restart codes unused for this many training steps; 0 = off
    # bookkeeping (not used by the network itself)
    name: str = "custom"

    def __post_init__(self) -> None:
        # Types first: a crafted config.json (512.0, true, "8") must fail here with a clear
        # message, not deep inside torch with a TypeError or RuntimeError.
        for name in _INT_FIELDS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ValueError(f"{name} must be an integer, got {v!r} ({type(v).__name__})")
            setattr(self, name, int(v))
        for name in _FLOAT_FIELDS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
            setattr(self, name, float(v))
        if not isinstance(self.use_ema, bool):
            raise ValueError(f"use_ema must be true or false, got {self.use_ema!r}")
        if not isinstance(self.name, str):
            raise ValueError(f"name must be a string, got {self.name!r}")
        # then ranges
        for name in ("in_channels", "image_size", "hidden_channels", "res_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.res_layers < 0:
            raise ValueError(f"res_layers must be >= 0, got {self.res_layers}")
        if self.downsample not in (2, 4, 8, 16):
            raise ValueError(f"downsample must be 2, 4, 8 or 16, got {self.downsample}")
        if self.image_size % self.downsample:
            raise ValueError(
                f"image_size {self.image_size} is not divisible by downsample {self.downsample}"
            )
        narrowest = self.downsample // 2  # the encoder's first conv has hidden // that channels
        if self.hidden_channels < narrowest:
            raise ValueError(
                f"hidden_channels must be >= {narrowest} with downsample {self.downsample}, "
                f"got {self.hidden_channels}"
            )
        if self.codebook_size < 2 or self.embedding_dim < 1:
            raise ValueError(
                f"codebook_size must be >= 2 and embedding_dim >= 1, got "
                f"{self.codebook_size} and {self.embedding_dim}"
            )
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.ema_eps <= 0:
            raise ValueError(f"ema_eps must be > 0, got {self.ema_eps}")
        if self.dead_code_threshold < 0:
            raise ValueError(f"dead_code_threshold must be >= 0, got {self.dead_code_threshold}")

    @property
    def latent_size(self) -> int:
        """Side of the code grid: image_size // downsample."""
        return self.image_size // self.downsample

    @property
    def bits_per_image(self) -> float:
        """Bits needed to store one image's code grid: h * w * log2(K)
        (:func:`vqvae.metrics.bits_per_image`)."""
        return bits_per_image(self.latent_size, self.latent_size, self.codebook_size)

    def to_dict(self) -> dict:
        """The fields as a plain dict (no ``format_version``: that belongs to the file)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VQVAEConfig:
        """A config from a dict of fields, as ``config.json`` holds it. ``format_version`` may
        be present: missing means 1 (files written before it existed); any other version
        than :data:`FORMAT_VERSION` raises ValueError."""
        if not isinstance(d, dict):
            raise ValueError(f"a config must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        version = d.pop("format_version", 1)
        if isinstance(version, bool) or not isinstance(version, int):
            raise ValueError(f"format_version must be an integer, got {version!r}")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"format_version {version} is not supported: this vqvae reads format_version "
                f"{FORMAT_VERSION}" + (" (written by a newer vqvae?)" if version > 1 else "")
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)

    def to_json(self, path: str | Path | None = None) -> str:
        """The config as JSON text with its ``format_version``; written atomically to
        ``path`` when one is given."""
        text = json.dumps(
            {"format_version": FORMAT_VERSION, **self.to_dict()}, indent=2, sort_keys=True
        )
        if path is not None:
            with atomic_write(path, "w") as f:
                f.write(text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> VQVAEConfig:
        """A config from JSON text or from a file holding it (see :meth:`from_dict`)."""
        p = Path(text_or_path)
        text = (
            p.read_text() if not str(text_or_path).lstrip().startswith("{") else str(text_or_path)
        )
        return cls.from_dict(json.loads(text))

    def replace(self, **changes) -> VQVAEConfig:
        return dataclasses.replace(self, **changes)


_INT_FIELDS = (
    "in_channels", "image_size", "hidden_channels", "res_layers", "res_channels", "downsample",
    "embedding_dim", "codebook_size", "dead_code_threshold",
)  # fmt: skip
_FLOAT_FIELDS = ("beta", "ema_decay", "ema_eps")


# Presets: small overrides of the defaults. The project's recipe (EMA + restarts) is on here,
# and the network is the wide one (hidden 256, residual 64): at the presets' full budgets it
# beat hidden 128 / residual 32 by 1.7 dB on MNIST and 0.3 dB on CIFAR-10 (GPU runs,
# BENCHMARKS.md), 0.9 dB on Fashion-MNIST (against the CPU run of the same budget).
# The narrow network is --hidden-channels 128 --res-channels 32.
_RECIPE = dict(use_ema=True, ema_decay=0.99, beta=0.25, dead_code_threshold=200)
_NETWORK = dict(hidden_channels=256, res_layers=2, res_channels=64, downsample=4,
                embedding_dim=64, codebook_size=512)  # fmt: skip

PRESETS: dict[str, dict] = {
    # 28x28x1 -> 7x7 codes
    "mnist": dict(name="mnist", in_channels=1, image_size=28, **_NETWORK, **_RECIPE),
    "fashion-mnist": dict(
        name="fashion-mnist", in_channels=1, image_size=28, **_NETWORK, **_RECIPE
    ),
    # 32x32x3 -> 8x8 codes
    "cifar10": dict(name="cifar10", in_channels=3, image_size=32, **_NETWORK, **_RECIPE),
}


def preset(name: str, /, **overrides) -> VQVAEConfig:
    """Return the config of a named preset (``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``),
    with any field overridden by keyword."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return VQVAEConfig(**{**PRESETS[name], **overrides})
