"""The models the app serves: each a folder as ``train.export`` writes it (VQ-VAE weights and
config, codebook.json, metrics, a model card, optionally a prior and code patches), loaded on
first use and then kept."""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
import PIL.Image
import torch
from PIL import ImageDraw

import vqvae
from vqvae import hub, images, viz
from vqvae.checkpoint import CONFIG_NAME, WEIGHTS_NAME, read_config_json
from vqvae.codes import usage_ranks
from vqvae.grid_prior import GRID_PRIOR_WEIGHTS, load_grid_prior
from vqvae.prior import PRIOR_CONFIG, PRIOR_WEIGHTS
from vqvae.viz import CODE_PATCHES, CODEBOOK_INFO, load_code_patches, load_codebook_info

from .settings import MODEL_ORDER

log = logging.getLogger("vqvae.app")

EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
ATLAS_TILE = 96  # px, the longer side of an atlas tile
MODEL_FILES = (WEIGHTS_NAME, CONFIG_NAME)
# What the app shows beside a model, when its folder or Hub repo has it.
EXTRAS = (PRIOR_WEIGHTS, PRIOR_CONFIG, CODEBOOK_INFO, "metrics.json", "README.md", CODE_PATCHES)


@dataclass
class Model:
    """A loaded model and everything the app shows about it."""

    name: str
    model: vqvae.VQVAE
    info: dict  # codebook.json: usage, umap_2d, umap_3d
    metrics: dict | None
    card: str | None
    examples: list[str]
    usage: np.ndarray = field(init=False)
    ranks: np.ndarray = field(init=False)
    atlas: torch.Tensor | None = None  # (K, C, H, W): what each code decodes to
    atlas_files: list[str] | None = None  # the same, enlarged, as PNG files
    prior: vqvae.CodePrior | None = None  # prior.safetensors beside the model, if any
    no_prior: str = ""  # why there is none (Markdown), when prior is None
    grid_prior: vqvae.GridPrior | None = None  # grid_prior.safetensors: photos' codec
    patches: dict | None = None  # code_patches.npz: training crops per code (train.export)
    means: torch.Tensor | None = None  # (K, C, s, s): the mean training crop of each code
    seen: torch.Tensor | None = None  # (K,) bool: codes with training crops

    def __post_init__(self):
        self.usage = np.asarray(self.info["usage"], dtype=np.int64)
        self.ranks = usage_ranks(self.usage).numpy()

    @property
    def config(self) -> vqvae.VQVAEConfig:
        return self.model.config

    @property
    def atlas_order(self) -> list[int]:
        """Code indices, most used first (the order of the atlas gallery)."""
        return np.argsort(self.ranks, kind="stable").tolist()


def _is_model_folder(p: Path) -> bool:
    # Hidden folders (``.NAME.tmp``, what an interrupted export leaves) are no models.
    return (
        not p.name.startswith(".") and (p / WEIGHTS_NAME).is_file() and (p / CONFIG_NAME).is_file()
    )


def source_name(source: str) -> str:
    """How a model source is called in the app: a Hub repo id or a shipped name as given, a
    folder by its own name."""
    p = Path(source)
    return p.name if p.is_dir() else str(source)


class ModelStore:
    """The models in a folder (each a subfolder with model.safetensors and config.json) and
    any other ``sources`` (a shipped model's name, a model folder or a Hugging Face Hub repo
    id, as vqvae.hub.resolve takes them; a Hub model is downloaded on first use), loaded on
    first use and then kept; thread-safe."""

    def __init__(self, models_dir, examples_dir, cache_dir=None, sources=()):
        self.models_dir = Path(models_dir)
        self.examples_dir = Path(examples_dir)
        self.cache_dir = Path(cache_dir or tempfile.mkdtemp(prefix="vqvae-app-"))
        self.sources = {source_name(str(s)): str(s) for s in sources}
        self._models: dict[str, Model] = {}
        self._lock = threading.Lock()
        self.atlas_dir = self.cache_dir / "atlas"

    def names(self) -> list[str]:
        """The models' names: those of the models folder (digits first), then the sources."""
        names = []
        if self.models_dir.is_dir():
            names = [p.name for p in self.models_dir.iterdir() if _is_model_folder(p)]
        order = {n: i for i, n in enumerate(MODEL_ORDER)}
        names = sorted(names, key=lambda n: (order.get(n, len(order)), n))
        return names + [n for n in self.sources if n not in names]

    def colour_names(self) -> list[str]:
        """The colour models' names, in :meth:`names`' order: those loaded, and those of the
        models folder whose config says 3 channels (read, not loaded; a Hub source not loaded
        yet is not fetched to ask)."""
        out = []
        for name in self.names():
            m = self._models.get(name)
            if m is not None:
                channels = m.config.in_channels
            elif name in self.sources:
                continue
            else:
                try:
                    config = read_config_json(self.models_dir / name / CONFIG_NAME)
                    channels = config.get("in_channels") if isinstance(config, dict) else None
                except (OSError, ValueError):
                    continue
            if channels == 3:
                out.append(name)
        return out

    def get(self, name) -> Model:
        """The model called ``name``, loaded on first use; gr.Error for an unknown name. A
        loaded model is returned at once (every event asks for its model: the models folder
        is listed only for a name not loaded yet)."""
        loaded = self._models.get(name) if isinstance(name, str) else None
        if loaded is not None:
            return loaded
        if not isinstance(name, str) or name not in self.names():
            choices = ", ".join(self.names()) or "none (this server has no models)"
            if name is None or name == "":
                raise gr.Error(f"No model chosen: choose one of {choices}.")
            shown = repr(name)[:60] if isinstance(name, str) else f"of type {type(name).__name__}"
            raise gr.Error(f"Unknown model {shown}: choose one of {choices}.")
        with self._lock:
            if name not in self._models:
                self._models[name] = self._load(name)
            return self._models[name]

    def _folder(self, name: str) -> Path:
        """The local folder of model ``name``: in the models folder, or its source resolved
        (a Hub repo is downloaded once into the Hub cache, with the extras it has)."""
        if name not in self.sources:
            return self.models_dir / name
        return hub.resolve(self.sources[name], MODEL_FILES, optional=EXTRAS)

    def _examples(self, name: str, colour: bool) -> list[str]:
        """The model's example images; for a colour model the photos (examples/photos/)
        first, then its own test-set thumbnails."""
        folders = [self.examples_dir / "photos"] if colour else []
        folders.append(self.examples_dir / Path(name).name)
        found = []
        for d in folders:
            if d.is_dir():
                found += sorted(str(p) for p in d.glob("*") if p.suffix.lower() in EXAMPLE_SUFFIXES)
        return found

    def _load(self, name: str) -> Model:
        try:
            d = self._folder(name)
            model = vqvae.load_pretrained(d)
        except (ValueError, OSError) as e:
            raise gr.Error(f"Model {name!r} could not be loaded: {e}") from e
        c = model.config
        with torch.inference_mode():  # the first call pays for kernel selection; do it now
            model.decode(model.encode(torch.zeros(1, c.in_channels, c.image_size, c.image_size)))
        info = load_codebook_info(model, d, cache_dir=self.cache_dir / "codebook")
        metrics_file, card_file = d / "metrics.json", d / "README.md"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
        card = card_file.read_text() if card_file.is_file() else None
        prior, no_prior = self._load_prior(name, d, model)
        grid_prior = self._load_grid_prior(name, d, model)
        patches = None
        if (d / CODE_PATCHES).is_file():
            try:
                patches = load_code_patches(d / CODE_PATCHES, c.codebook_size)
            except (ValueError, OSError) as e:
                log.warning("model %s: no code patches: %s", name, e)
        return Model(
            name, model, info, metrics, card, self._examples(name, c.in_channels == 3), prior=prior,
            no_prior=no_prior, grid_prior=grid_prior, patches=patches,
        )  # fmt: skip

    @staticmethod
    def _load_grid_prior(name: str, d: Path, model: vqvae.VQVAE):
        """The model's grid prior (photos' codec) or None: like the prior, optional, and a
        broken or mismatched one is logged and left out."""
        if not (d / GRID_PRIOR_WEIGHTS).is_file():
            return None
        try:
            return load_grid_prior(d, model=model)
        except (ValueError, OSError, RuntimeError) as e:
            log.warning("model %s: grid prior not loaded: %s", name, e)
            return None

    @staticmethod
    def _load_prior(name: str, d: Path, model: vqvae.VQVAE) -> tuple:
        """(prior or None, why none). A broken, hostile or mismatched prior leaves the model
        usable: whatever loading it raises is logged, and the model is served without it."""
        if not (d / PRIOR_WEIGHTS).is_file():
            return None, (
                f"Model **{name}** has no prior (no `{PRIOR_WEIGHTS}` in its folder): train one "
                f"with `python -m train.prior --vqvae {name}` to sample, resample and compress "
                "its codes."
            )
        try:
            prior = vqvae.load_prior(d, model=model)
        except (ValueError, OSError, RuntimeError) as e:  # the prior is optional: the model stays
            log.warning("model %s: prior not loaded: %s", name, e)  # the reason names paths
            return None, (
                f"Model **{name}** has no prior that can be used: its prior file could not be "
                "loaded (the server log says why)."
            )
        with torch.inference_mode():  # kernel selection now, not on the first request
            prior.sample(1, top_k=1)
        return prior, ""

    def atlas(self, m: Model) -> list[str]:
        """PNG files, one per code, of what it stands for (:meth:`tile` at ``ATLAS_TILE``
        px): a palette of the pieces codes are used for. Written once per model."""
        with self._lock:
            if m.atlas_files is None:
                with torch.inference_mode():
                    m.atlas = vqvae.code_atlas(m.model)
                if m.patches:
                    m.means, m.seen = viz.mean_patches(m.patches)
                out = self.atlas_dir / m.name.replace("/", "--")
                out.mkdir(parents=True, exist_ok=True)
                files = []
                for k in range(len(m.atlas)):
                    p = out / f"code-{k:04d}.png"
                    self._tile(m, k, ATLAS_TILE).save(p, compress_level=1)
                    files.append(str(p))
                m.atlas_files = files
            return m.atlas_files

    def tile(self, m: Model, k: int, size: int) -> PIL.Image.Image:
        """What code ``k`` stands for, enlarged (by a whole factor) to at most ``size`` px:
        with training patches, the mean of its training crops with its cell outlined
        (vqvae.viz.mean_patches); else, or for a code never picked, what a grid of that code
        alone decodes to (vqvae.code_atlas)."""
        self.atlas(m)
        return self._tile(m, k, size)

    @staticmethod
    def _tile(m: Model, k: int, size: int) -> PIL.Image.Image:
        if m.seen is not None and m.seen[k]:
            im = images.enlarge(m.means[k], size).convert("RGB")
            scale = im.width // m.means.shape[-1]
            viz.outline_cell(ImageDraw.Draw(im), m.patches, scale, width=max(1, scale // 8))
            return im
        return images.enlarge(m.atlas[k], size)
