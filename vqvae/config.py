"""Model configurations: plain dataclasses that round-trip through JSON and check every field
(:class:`VQVAEConfig` and its presets, :class:`PriorConfig` for :class:`vqvae.CodePrior`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .files import atomic_write
from .metrics import bits_per_image

# Version of the config.json layout; a file without one is version 1.
FORMAT_VERSION = 1


def check_field_types(config) -> None:
    """Check every field of the dataclass ``config`` against its annotation (``int``,
    ``float``, ``bool``, ``str`` or ``list[str]``), as a crafted JSON file may hold anything:
    ValueError naming the first bad field. Integers stored as integral floats or booleans
    are refused (``512.0`` and ``true`` are not sizes); numbers are normalised to Python
    ``int`` and ``float``."""
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        if f.type == "int":
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ValueError(f"{f.name} must be an integer, got {v!r} ({type(v).__name__})")
            setattr(config, f.name, int(v))
        elif f.type == "float":
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise ValueError(f"{f.name} must be a finite number, got {v!r}")
            setattr(config, f.name, float(v))
        elif f.type == "bool":
            if not isinstance(v, bool):
                raise ValueError(f"{f.name} must be true or false, got {v!r}")
        elif f.type == "str":
            if not isinstance(v, str):
                raise ValueError(f"{f.name} must be a string, got {v!r}")
        elif f.type == "list[str]":
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ValueError(f"{f.name} must be a list of strings, got {v!r}"[:200])
        else:  # a field type this check does not know: a programming error, not bad input
            raise TypeError(f"{type(config).__name__}.{f.name}: unchecked type {f.type!r}")


def check_keys(cls, d, what: str, extra: tuple[str, ...] = ()) -> dict:
    """``d`` if it is a dict whose keys are all fields of the dataclass ``cls`` (or in
    ``extra``); ValueError naming the unknown keys otherwise (``what``: "config", ...)."""
    if not isinstance(d, dict):
        raise ValueError(f"a {what} must be a JSON object, got {type(d).__name__}")
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)} - set(extra)
    if unknown:
        raise ValueError(f"unknown {what} keys: {sorted(map(str, unknown))[:20]}")
    return d


def config_from_dict(cls, d, what: str):
    """``cls(**d)`` for a dataclass ``cls`` read from a JSON file: ValueError naming the
    unknown keys (:func:`check_keys`) or the missing required ones (``what``: "prior
    config", ...); the fields themselves are checked by ``cls``."""
    d = check_keys(cls, d, what)
    required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]  # fmt: skip
    missing = [k for k in required if k not in d]
    if missing:
        raise ValueError(f"missing {what} keys: {missing}")
    return cls(**d)


def check_bounds(config, bounds: dict[str, tuple[float, float]]) -> None:
    """ValueError naming the first field of ``config`` outside its inclusive ``(low, high)``
    range in ``bounds``."""
    for name, (low, high) in bounds.items():
        v = getattr(config, name)
        if not low <= v <= high:
            raise ValueError(f"{name} must be in [{low}, {high}], got {v}")


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
    # residual quantizer: stage s codes what stages < s left of z_e, with a codebook of its
    # own (K codes); the first n stages decode on their own (a rate per n). 1 = plain VQ-VAE
    num_stages: int = 1
    # bookkeeping (not used by the network itself)
    name: str = "custom"

    def __post_init__(self) -> None:
        # Types first: a crafted config.json (512.0, true, "8") must fail here with a clear
        # message, not deep inside torch with a TypeError or RuntimeError.
        check_field_types(self)
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
        check_bounds(self, _VQVAE_BOUNDS)

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
        d = dict(check_keys(cls, d, "config", extra=("format_version",)))
        version = d.pop("format_version", 1)
        if isinstance(version, bool) or not isinstance(version, int):
            raise ValueError(f"format_version must be an integer, got {version!r}")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"format_version {version} is not supported: this vqvae reads format_version "
                f"{FORMAT_VERSION}" + (" (written by a newer vqvae?)" if version > 1 else "")
            )
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


# The largest sizes a VQ-VAE may have: far beyond any real one (the presets: hidden 256,
# K 512), small enough that a crafted config.json is refused by its numbers, and its
# shapes (built on the meta device) are compared with the weights in a fraction of a second.
_VQVAE_BOUNDS = {
    "in_channels": (1, 64),
    "image_size": (1, 65536),
    "hidden_channels": (1, 8192),
    "res_layers": (0, 64),
    "res_channels": (1, 8192),
    "embedding_dim": (1, 8192),
    "codebook_size": (2, 2**24),
    "dead_code_threshold": (0, 2**40),
    "num_stages": (1, 16),
}

# Version of the prior.json layout (a field of the file).
PRIOR_FORMAT_VERSION = 1
MAX_NAME = 200  # characters of a class or model name
# The sizes a prior may have (inclusive): generous for real priors (the shipped ones are
# K 512, 8x8, d_model 192), and they refuse a crafted prior.json by its numbers alone.
_PRIOR_BOUNDS = {
    "codebook_size": (2, 2**24),
    "height": (1, 256),
    "width": (1, 256),
    "num_classes": (0, 100_000),
    "d_model": (1, 8192),
    "n_layers": (1, 64),
    "n_heads": (1, 8192),
    "mlp_ratio": (1, 16),
    "format_version": (1, PRIOR_FORMAT_VERSION),
}


def codebook_fingerprint(model) -> str:
    """A short hex digest of a VQ-VAE's codebook (its float32 bytes): the identity a prior
    is checked against. Equal codebooks give equal fingerprints on every machine."""
    cb = model.codebook.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha256(cb.numpy().tobytes()).hexdigest()[:16]


def hash_weights(h, state: dict) -> None:
    """Feed ``h`` (a hashlib object) a state dict's names and its tensors as float32 bytes,
    in name order: equal weights hash equally on every machine, whatever their dtype."""
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())


@dataclass
class PriorConfig:
    """Everything needed to rebuild a :class:`vqvae.CodePrior`, and the VQ-VAE it belongs to."""

    # the VQ-VAE's codes
    codebook_size: int  # K
    height: int  # h: rows of the code grid
    width: int  # w
    vqvae_fingerprint: str = ""  # codebook_fingerprint(model); "" = not tied to a model
    vqvae_name: str = ""  # for messages only
    # conditioning: 0 = unconditional
    num_classes: int = 0
    class_names: list[str] = field(default_factory=list)  # empty or num_classes names
    # the transformer
    d_model: int = 256
    n_layers: int = 6
    n_heads: int = 8
    mlp_ratio: int = 4
    dropout: float = 0.0
    format_version: int = PRIOR_FORMAT_VERSION

    def __post_init__(self) -> None:
        # Types, then sizes: a crafted prior.json must fail here with a ValueError naming the
        # field, before anything is built from it.
        check_field_types(self)
        if self.format_version > PRIOR_FORMAT_VERSION:
            raise ValueError(
                f"prior format version {self.format_version} is newer than this library "
                f"reads ({PRIOR_FORMAT_VERSION}); update vqvae"
            )
        check_bounds(self, _PRIOR_BOUNDS)
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} names for {self.num_classes} classes"
            )
        if any(len(n) > MAX_NAME for n in self.class_names):
            raise ValueError(f"class_names must be at most {MAX_NAME} characters each")
        if len(self.vqvae_name) > MAX_NAME or len(self.vqvae_fingerprint) > 64:
            raise ValueError(
                f"vqvae_name must be at most {MAX_NAME} characters and vqvae_fingerprint 64"
            )
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def for_model(cls, model, **kw) -> PriorConfig:
        """A config for priors over ``model``'s codes (K, h, w and fingerprint filled in)."""
        c = model.config
        return cls(
            codebook_size=c.codebook_size,
            height=c.latent_size,
            width=c.latent_size,
            vqvae_fingerprint=codebook_fingerprint(model),
            vqvae_name=c.name,
            **kw,
        )

    @property
    def seq_len(self) -> int:
        """Codes per grid: h * w."""
        return self.height * self.width

    @property
    def uniform_bits(self) -> float:
        """Bits of a grid without a prior: h * w * log2(K)."""
        return self.seq_len * math.log2(self.codebook_size)

    def class_name(self, label: int) -> str:
        """How to show class index ``label``: its name (or index if the classes have no
        names), "none" for -1."""
        if label < 0:
            return "none"
        return self.class_names[label] if self.class_names else str(label)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PriorConfig:
        """A config from a dict of fields, as ``prior.json`` holds it; ValueError for a
        missing, unknown or bad field."""
        return config_from_dict(cls, d, "prior config")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PriorConfig:
        return cls.from_dict(json.loads(text))


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
