"""The VQ-VAE explorer: a Gradio app over the ``vqvae`` library.

    python app.py                                  # http://127.0.0.1:7860
    python app.py --host 0.0.0.0 --port 8000 --models-dir pretrained/

Five tabs: Reconstruct (upload, example or drawing -> reconstruction and code map; with a
prior, the image as a .vqz file beside JPEG and WebP at the same size), Codebook (UMAP of the
codes, coloured by usage; what each code decodes to and the training patches it stands for),
Edit codes (paint code cells, re-decode; with a prior: mark cells and resample them, see each
code's surprise), Interpolate (an animated GIF between two images), Sample (new images from
the model's prior, when its folder has one). Every main action has an API name
(/reconstruct, /codebook, /edit, /interpolate, /code, /code_patches, /sample, /resample,
/compress, /decompress); see docs/api.md.

The app is a thin layer: all model maths is in ``vqvae``, image I/O in ``vqvae.images``,
figures in ``vqvae.viz``. Reading order: models, handlers (one method per event, results as
named tuples), then one builder per tab (its layout and its events), then ``build_app``, which
only wires the tabs to each other.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import logging
import math
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import gradio as gr
import numpy as np
import PIL.Image
import torch
import torchvision.transforms.v2  # noqa: F401  imported now, not on the first request
import torchvision.utils  # noqa: F401

import vqvae
from vqvae import codec, images, viz
from vqvae.checkpoint import CONFIG_NAME, PRETRAINED_DIR, WEIGHTS_NAME
from vqvae.codes import nearest_codes, usage_ranks
from vqvae.latent import PATHS
from vqvae.metrics import perplexity
from vqvae.prior import PRIOR_WEIGHTS
from vqvae.viz import CODE_PATCHES, codebook_figure, load_code_patches, load_codebook_info

log = logging.getLogger("vqvae.app")

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "assets" / "examples"
DISPLAY = 256  # side of the enlarged images, px
MAX_FRAMES = 64
MAX_FPS = 50  # GIF delays are whole centiseconds: 50 fps is the finest
# Gradio opens some images itself (the drawing pad); keep PIL's bomb guard at our limit.
PIL.Image.MAX_IMAGE_PIXELS = images.MAX_PIXELS
CONCURRENCY = 2  # model-running events the queue runs at once (see MODEL)
# Disk: our copies of files handed to Gradio, and Gradio's cache of what it served.
# Budgets in bytes. Beyond them, the newest 2 * CONCURRENCY files (those of requests in
# flight) are kept: with GIFs of at most ~2 MB (64 frames of noise, ping-pong, 224 px) both
# folders together stay under 200 MB.
OUTPUT_BUDGET = 16 * 2**20  # Gradio has its own copy of a file once its event has answered
GRADIO_CACHE_BUDGET = 96 * 2**20  # only when the app owns Gradio's cache folder
GRADIO_CACHE_LIFETIME = (600, 1800)  # delete_cache: every 10 min, files older than 30 min
MAX_VQZ_BYTES = 64 * 1024  # a .vqz file is a few dozen bytes; anything this big is no .vqz
# What JPEG and WebP are matched to: the whole .vqz file, or its payload against their
# entropy-coded data (at a few dozen bytes a JPEG's tables alone outweigh a whole .vqz).
MATCH = ("whole file", "without headers")

CSS = """
.pixelated img, .pixelated canvas { image-rendering: pixelated; }
/* small uploads (a 28x28 digit) fill their box instead of sitting there as a dot */
.fill-img img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
.numbers input { font-variant-numeric: tabular-nums; }
footer { display: none !important; }
"""


# -- the machine -----------------------------------------------------------------------------


def usable_cpus(cgroup: str | Path = "/sys/fs/cgroup") -> int:
    """CPUs this process may really use: its affinity mask, capped by the cgroup v2 CPU quota
    (``cpu.max``: "200000 100000" is 2 CPUs; "max ..." no quota). ``os.cpu_count()`` reports
    the host's CPUs instead (16 on a 2-vCPU Hugging Face Space)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        n = os.cpu_count() or 1
    try:
        quota, period = (Path(cgroup) / "cpu.max").read_text().split()[:2]
        if quota != "max" and float(period) > 0:
            n = min(n, max(1, math.ceil(float(quota) / float(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota readable: the affinity mask is the limit
    return max(1, n)


def set_torch_threads(cpus: int | None = None) -> int:
    """One share of the usable CPUs per concurrent request. These models are small: threads
    beyond cores / concurrent requests only fight each other (1 thread is fastest on 2 cores)."""
    n = max(1, (cpus or usable_cpus()) // CONCURRENCY)
    torch.set_num_threads(n)
    return n


set_torch_threads()


def trim_folder(folder: Path, max_bytes: int, keep: int = 4) -> None:
    """Delete the oldest files under ``folder`` (and then empty subfolders) until their sizes
    add up to at most ``max_bytes``; the ``keep`` newest files always stay."""
    files = []
    for p in Path(folder).rglob("*"):
        try:
            st = p.stat()
        except OSError:  # deleted meanwhile
            continue
        if stat.S_ISREG(st.st_mode):
            files.append((st.st_mtime, st.st_size, p))
    files.sort(reverse=True)
    total = sum(s for _, s, _ in files)
    for _, size, p in files[keep:][::-1]:
        if total <= max_bytes:
            break
        p.unlink(missing_ok=True)
        total -= size
        try:
            if p.parent != Path(folder):
                p.parent.rmdir()  # Gradio keeps one file per hash folder
        except OSError:
            pass


# -- models ----------------------------------------------------------------------------------


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
    patches: dict | None = None  # code_patches.npz: training crops per code (train.export)

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


class ModelStore:
    """The models in a folder (each a subfolder with model.safetensors and config.json),
    loaded on first use and then kept; thread-safe. Hidden folders (``.NAME.tmp``, what an
    interrupted export leaves) are no models."""

    def __init__(self, models_dir, examples_dir, cache_dir=None):
        self.models_dir = Path(models_dir)
        self.examples_dir = Path(examples_dir)
        self.cache_dir = Path(cache_dir or tempfile.mkdtemp(prefix="vqvae-app-"))
        self._models: dict[str, Model] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        if not self.models_dir.is_dir():
            return []
        names = sorted(
            p.name
            for p in self.models_dir.iterdir()
            if not p.name.startswith(".")
            and (p / WEIGHTS_NAME).is_file()
            and (p / CONFIG_NAME).is_file()
        )
        # Digits first: they are the quickest to understand.
        order = {"mnist": 0, "fashion-mnist": 1, "cifar10": 2}
        return sorted(names, key=lambda n: (order.get(n, 9), n))

    def get(self, name) -> Model:
        if not isinstance(name, str) or name not in self.names():
            shown = repr(name)[:60] if isinstance(name, str) else f"of type {type(name).__name__}"
            raise gr.Error(
                f"Unknown model {shown}. Available: {', '.join(self.names()) or 'none'}."
            )
        with self._lock:
            if name not in self._models:
                self._models[name] = self._load(name)
            return self._models[name]

    def _load(self, name: str) -> Model:
        d = self.models_dir / name
        try:
            model = vqvae.load_pretrained(d)
        except (ValueError, OSError) as e:
            raise gr.Error(f"Model {name!r} could not be loaded: {e}") from e
        c = model.config
        with torch.inference_mode():  # the first call pays for kernel selection; do it now
            model.decode(model.encode(torch.zeros(1, c.in_channels, c.image_size, c.image_size)))
        info = load_codebook_info(model, d, cache_dir=self.cache_dir / "codebook")
        metrics = (
            json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").is_file() else None
        )
        card = (d / "README.md").read_text() if (d / "README.md").is_file() else None
        ex_dir = self.examples_dir / name
        suffixes = (".png", ".jpg", ".jpeg", ".webp")
        examples = (
            sorted(str(p) for p in ex_dir.glob("*") if p.suffix.lower() in suffixes)
            if ex_dir.is_dir()
            else []
        )
        prior, no_prior = self._load_prior(name, d, model)
        patches = None
        if (d / CODE_PATCHES).is_file():
            try:
                patches = load_code_patches(d / CODE_PATCHES, c.codebook_size)
            except (ValueError, OSError) as e:
                log.warning("model %s: no code patches: %s", name, e)
        return Model(
            name, model, info, metrics, card, examples, prior=prior, no_prior=no_prior,
            patches=patches,
        )  # fmt: skip

    @staticmethod
    def _load_prior(name: str, d: Path, model: vqvae.VQVAE) -> tuple:
        """(prior or None, why none). A broken or mismatched prior leaves the model usable."""
        if not (d / PRIOR_WEIGHTS).is_file():
            return None, (
                f"Model **{name}** has no prior (no `{PRIOR_WEIGHTS}` in its folder): train one "
                f"with `python -m train.prior --vqvae {name}` to sample, resample and compress "
                "its codes."
            )
        try:
            prior = vqvae.load_prior(d, model=model)
        except (ValueError, OSError) as e:
            log.warning("model %s: prior not loaded: %s", name, e)  # the reason names paths
            return None, (
                f"Model **{name}** has no prior that can be used: its prior file could not be "
                "loaded (the server log says why)."
            )
        with torch.inference_mode():  # kernel selection now, not on the first request
            prior.sample(1, top_k=1)
        return prior, ""

    def atlas(self, m: Model) -> list[str]:
        """PNG files of what each code decodes to (vqvae.code_atlas), written once per model."""
        with self._lock:
            if m.atlas_files is None:
                with torch.inference_mode():
                    tiles = m.atlas = vqvae.code_atlas(m.model)
                out = self.cache_dir / "atlas" / m.name
                out.mkdir(parents=True, exist_ok=True)
                files = []
                for k, tile in enumerate(tiles):
                    p = out / f"code-{k:04d}.png"
                    images.enlarge(tile, 96).save(p, compress_level=1)
                    files.append(str(p))
                m.atlas_files = files
            return m.atlas_files


# -- handler results -------------------------------------------------------------------------
# One named tuple per event's outputs, in the order of the components they fill.


class Reconstruction(NamedTuple):
    original: PIL.Image.Image  # the input as the model sees it, enlarged
    reconstruction: PIL.Image.Image
    code_map: PIL.Image.Image
    psnr: float  # dB
    codes_used: int  # distinct codes in the image
    bits: float  # bits per image, h * w * log2 K
    grid: object  # the code grid (h, w) as a table


class Example(NamedTuple):
    """An example picked: the image itself, then its :class:`Reconstruction` fields."""

    image: str | None
    original: PIL.Image.Image
    reconstruction: PIL.Image.Image
    code_map: PIL.Image.Image
    psnr: float
    codes_used: int
    bits: float
    grid: object


class ModelView(NamedTuple):
    card: str  # one paragraph: shapes and test-set metrics
    card_full: str  # the model folder's README.md
    examples: list  # (path, caption) for the Reconstruct gallery
    draw: dict  # update: the drawing pad is shown for 1-channel models only
    no_draw: dict  # update: ... and this note for the others
    interp_examples: list  # (path, caption) for the Interpolate gallery
    image_a: str | None
    image_b: str | None
    pick: dict  # update of the code picker (its maximum, the most used code)
    paint_code: dict  # same for the paint code


class CodebookView(NamedTuple):
    figure: object  # plotly go.Figure
    summary: str  # Markdown


class CodeDetails(NamedTuple):
    image: PIL.Image.Image  # what the code decodes to, enlarged
    details: str  # Markdown
    neighbours: list  # (path, caption) of the nearest codes


class CodePatches(NamedTuple):
    image: PIL.Image.Image | None  # training crops where the encoder picked the code
    note: str  # Markdown


class Decoded(NamedTuple):
    image: PIL.Image.Image  # enlarged
    code_map: PIL.Image.Image
    png: str  # the decoded image at native size
    npy: str  # the code grid


class Edited(NamedTuple):
    """A changed grid (as a table) and its :class:`Decoded` fields."""

    grid: object
    image: PIL.Image.Image
    code_map: PIL.Image.Image
    png: str
    npy: str


class Interpolation(NamedTuple):
    gif: str  # path of a looping animated GIF
    strip: PIL.Image.Image  # the frames side by side


class Compressed(NamedTuple):
    sizes: str  # Markdown: the code's sizes, and JPEG / WebP at the matched size
    vqz: str | None  # path of the .vqz file; None when the model has no prior
    jpeg: PIL.Image.Image  # the input as a JPEG of about the .vqz's size, decoded, enlarged
    webp: PIL.Image.Image  # the same as WebP


class Decompressed(NamedTuple):
    image: PIL.Image.Image  # the decoded image, enlarged
    details: str  # Markdown: the file's sizes, its class


class InterpExample(NamedTuple):
    image_a: str | None
    image_b: str | None
    target: str  # where the next example goes: "A" or "B"


class SampleSetup(NamedTuple):
    """What the prior's controls show for a model (update dicts)."""

    note: str  # Markdown: the prior, or why the model has none
    label: dict  # the Sample tab's class dropdown
    resample_label: dict  # the Edit tab's
    top_k: dict


class Samples(NamedTuple):
    gallery: list  # (image, caption) per sample, enlarged
    codes: list  # the sampled grids (n, h, w) as nested lists
    note: str  # Markdown: timing, bits under the prior


class CodeMapView(NamedTuple):
    code_map: PIL.Image.Image  # codes (or their surprise) with the marked cells veiled
    mark_map: PIL.Image.Image  # the same picture, for the map that takes mark clicks
    bits: str  # Markdown: bits under the prior beside h * w * log2 K


class Surprise(NamedTuple):
    image: PIL.Image.Image  # each cell shaded by its bits under the prior
    total: float  # bits of the grid under the prior (no class)
    plain: float  # h * w * log2 K
    bits: object  # bits per cell (h, w) as a table


def skip(result: type[NamedTuple]):
    """A result that changes none of its components."""
    return result(*(gr.skip() for _ in result._fields))


def clear_errors(fn: Callable) -> Callable:
    """Events answer with gr.Error (its message is for the user); any other exception is a bug:
    it is logged here with its traceback and the client gets a generic message, without
    internals such as server paths."""

    @functools.wraps(fn)
    def event(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception:
            log.exception("event %s failed", fn.__name__)
            raise gr.Error(
                "Something went wrong on the server; it has been logged.", title="Server error"
            ) from None

    return event


def whole_number(value, lo: int, hi: int, what: str) -> int:
    """``value`` as an int in [lo, hi], or gr.Error saying what was expected."""
    try:
        f = float(value)
        ok = not isinstance(value, bool) and math.isfinite(f) and f == int(f)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise gr.Error(f"{what} must be a whole number from {lo} to {hi}, got {value!r:.40}.")
    if not lo <= int(f) <= hi:
        raise gr.Error(f"{what} must be between {lo} and {hi}, got {int(f)}.")
    return int(f)


def selected_index(evt, n: int, what: str) -> int:
    """The index of a click on a gallery of ``n`` items, checked (events can be sent by
    anyone, not only by the page)."""
    if n == 0:
        raise gr.Error(f"There are no {what} to pick from.")
    index = getattr(evt, "index", None)
    if isinstance(index, bool) or not isinstance(index, (int, float, str)):
        raise gr.Error(f"Pick one of the {what} (0 to {n - 1}).")
    return whole_number(index, 0, n - 1, f"The index of the {what[:-1]}")


# -- handlers --------------------------------------------------------------------------------


class Handlers:
    """Every event of the app as a plain method: inputs are what Gradio passes (file paths,
    numbers, lists), outputs what it displays, as named tuples. Inputs are checked (any client
    can call any event, with any values): errors a user can fix raise gr.Error, others raise a
    generic gr.Error and are logged.

    Disk: files handed to Gradio (PNG, .npy, GIF) are written to ``out_dir`` and deleted,
    oldest first, once they add up to ``output_budget`` bytes (Gradio copies each into its
    own cache as its event answers); ``gradio_cache``, when given, is trimmed to
    ``gradio_cache_budget`` bytes the same way (only for a folder the app owns)."""

    def __init__(
        self,
        models_dir=PRETRAINED_DIR,
        examples_dir=EXAMPLES_DIR,
        cache_dir=None,
        *,
        output_budget: int = OUTPUT_BUDGET,
        gradio_cache: str | Path | None = None,
        gradio_cache_budget: int = GRADIO_CACHE_BUDGET,
    ):
        self.models = ModelStore(models_dir, examples_dir, cache_dir)
        self.out_dir = self.models.cache_dir / "out"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.output_budget = output_budget
        self.gradio_cache = Path(gradio_cache) if gradio_cache else None
        self.gradio_cache_budget = gradio_cache_budget
        self._example_cache: dict[tuple, Reconstruction] = {}
        self._disk_lock = threading.Lock()
        # The coder pins torch to one thread while it runs (its floats must not depend on
        # the split); one coding at a time, so no other coding restores the count meanwhile.
        self._codec_lock = threading.Lock()

    # helpers
    def _out_path(self, suffix: str) -> str:
        """A fresh file for a download or GIF. Older ones (and Gradio's copies, when the app
        owns Gradio's cache) are trimmed to their budgets first."""
        with self._disk_lock:
            trim_folder(self.out_dir, self.output_budget, keep=2 * CONCURRENCY)
            if self.gradio_cache is not None and self.gradio_cache.is_dir():
                trim_folder(self.gradio_cache, self.gradio_cache_budget, keep=2 * CONCURRENCY)
        fd, path = tempfile.mkstemp(suffix=suffix, dir=self.out_dir)
        os.close(fd)
        return path

    def _input(self, m: Model, source, announce: bool = True) -> torch.Tensor:
        """The model's input tensor (1, C, S, S) from an image path / array / PIL image."""
        if not (source is None or isinstance(source, (str, Path, np.ndarray, PIL.Image.Image))):
            raise gr.Error("An image is a file path or an array.", title="Unusable image")
        try:
            im, notes = images.load_image(source)
            x, inverted = images.to_model_input(im, m.config.in_channels, m.config.image_size)
        except images.ImageError as e:
            raise gr.Error(str(e), title="Unusable image") from e
        if inverted:
            notes.append("inverted to light-on-dark, as the model was trained on")
        if notes and announce:
            gr.Info("Input: " + "; ".join(notes) + ".", duration=4)
        return x

    def _grid(self, m: Model, grid) -> np.ndarray:
        """A code grid (h, w) int64 from a table / list of lists / array; gr.Error if it is
        not h x w integers in [0, K)."""
        h = w = m.config.latent_size
        K = m.config.codebook_size
        if isinstance(grid, dict):
            grid = grid.get("data")
        if hasattr(grid, "to_numpy"):
            grid = grid.to_numpy()
        if grid is None or (hasattr(grid, "__len__") and len(grid) == 0):
            raise gr.Error("The code grid is empty: reconstruct an image first.")
        try:
            a = np.array(grid, dtype=object)
            if a.ndim != 2 or a.size > 4 * h * w:
                raise ValueError
            f = np.vectorize(
                lambda v: float(str(v).strip()) if str(v).strip() else np.nan, otypes=[float]
            )(a)
        except (ValueError, TypeError):
            raise gr.Error(f"The code grid must be a {h}x{w} table of whole numbers.") from None
        if f.shape != (h, w):
            raise gr.Error(
                f"The code grid must be {h}x{w} for model {m.name!r}, got "
                f"{f.shape[0]}x{f.shape[1]}."
            )
        if not np.isfinite(f).all() or (f != np.round(f)).any():
            raise gr.Error("Every cell of the code grid must be a whole number.")
        if f.min() < 0 or f.max() >= K:
            raise gr.Error(
                f"Code indices must be between 0 and {K - 1}; got values from "
                f"{int(f.min())} to {int(f.max())}."
            )
        return f.astype(np.int64)

    @staticmethod
    def _table(codes: np.ndarray):
        import pandas as pd

        return pd.DataFrame(codes, columns=[str(j) for j in range(codes.shape[1])])

    def _code_index(self, m: Model, code) -> int:
        return whole_number(code, 0, m.config.codebook_size - 1, "The code index")

    # Model
    def model_card(self, model_name: str) -> str:
        m = self.models.get(model_name)
        c = m.config
        lines = [
            f"**{m.name}**: {c.in_channels}-channel {c.image_size}x{c.image_size} images "
            f"-> {c.latent_size}x{c.latent_size} codes from a codebook of "
            f"{c.codebook_size} ({c.bits_per_image:.0f} bits per image)."
        ]
        if m.metrics:
            r = m.metrics
            lines.append(
                f"Test set ({r.get('num_images', '?')} images of {r.get('dataset', '?')}, "
                f"{r.get('data_source', '')}): PSNR **{r.get('psnr', float('nan')):.2f} dB**, "
                f"SSIM **{r.get('ssim', float('nan')):.3f}**, codes used "
                f"**{r.get('codes_used', '?')} / {c.codebook_size}**, perplexity "
                f"**{r.get('perplexity', float('nan')):.1f}**."
            )
        return "\n\n".join(lines)

    @clear_errors
    def select_model(self, model_name: str) -> ModelView:
        """Model dropdown -> card, example galleries, drawing pad (digit models only), code
        pickers."""
        m = self.models.get(model_name)
        K = m.config.codebook_size
        digits = m.config.in_channels == 1
        ex = [(p, Path(p).stem) for p in m.examples]
        first = int(m.atlas_order[0])
        return ModelView(
            card=self.model_card(model_name),
            card_full=m.card or "",
            examples=ex,
            draw=gr.update(visible=digits),
            no_draw=gr.update(visible=not digits),
            interp_examples=ex,
            image_a=m.examples[0] if m.examples else None,
            image_b=m.examples[1 % len(m.examples)] if m.examples else None,
            pick=gr.update(maximum=K - 1, value=first),
            paint_code=gr.update(maximum=K - 1, value=first),
        )

    # Reconstruct
    @clear_errors
    def reconstruct(self, image, model_name: str, *, announce: bool = True) -> Reconstruction:
        """image (path) -> original, reconstruction, code map, PSNR (dB), codes used,
        bits per image, code grid (table). ``announce``: tell the user how the input was
        adjusted (inverted, alpha flattened...)."""
        m = self.models.get(model_name)
        x = self._input(m, image, announce)
        with torch.inference_mode():
            codes = m.model.encode(x)
            recon = m.model.decode(codes)
            psnr = float(vqvae.psnr(x, recon)[0])
        c = codes[0].numpy()
        return Reconstruction(
            original=images.enlarge(x[0], DISPLAY),
            reconstruction=images.enlarge(recon[0], DISPLAY),
            code_map=images.code_map_image(c, m.config.codebook_size, DISPLAY),
            psnr=round(psnr, 2),
            codes_used=int(len(np.unique(c))),
            bits=round(m.config.bits_per_image, 1),
            grid=self._table(c),
        )

    @clear_errors
    def reconstruct_if_any(self, image, model_name: str) -> Reconstruction:
        """For live events (clearing an image, an empty canvas): nothing to do is no error."""
        if image is None:
            return skip(Reconstruction)
        return self.reconstruct(image, model_name)

    @clear_errors
    def reconstruct_drawing(self, sketch, model_name: str) -> Reconstruction:
        comp = sketch.get("composite") if isinstance(sketch, dict) else None
        if comp is None:
            return skip(Reconstruction)
        a = np.asarray(comp)
        if a.ndim == 3 and a.shape[2] == 4 and a[..., 3].max() == 0:
            return skip(Reconstruction)  # empty canvas
        return self.reconstruct(a, model_name, announce=False)  # drawings are always inverted

    @clear_errors
    def reconstruct_example(self, model_name: str, evt: gr.SelectData) -> Example:
        """Click on the example gallery -> the example as input, and its (cached) outputs."""
        m = self.models.get(model_name)
        return self.example(model_name, selected_index(evt, len(m.examples), "examples"))

    @clear_errors
    def example(self, model_name: str, index: int = 0) -> Example:
        m = self.models.get(model_name)
        if not m.examples:
            return Example(None, *skip(Reconstruction))
        path = m.examples[whole_number(index, 0, len(m.examples) - 1, "The example index")]
        key = (model_name, path, os.stat(path).st_mtime_ns)
        if key not in self._example_cache:
            self._example_cache[key] = self.reconstruct(path, model_name)
        return Example(path, *self._example_cache[key])

    # Codebook
    @clear_errors
    def codebook(self, model_name: str, view: str = "2-D", codes=None) -> CodebookView:
        """-> Plotly figure of the codebook's UMAP projection coloured by training-set usage
        (codes of ``codes``, a grid, outlined), and a summary (Markdown)."""
        m = self.models.get(model_name)
        if view not in ("2-D", "3-D"):
            raise gr.Error(f"view must be '2-D' or '3-D', got {view!r:.20}")
        has_codes = codes is not None and not (hasattr(codes, "__len__") and len(codes) == 0)
        if isinstance(codes, dict) and not codes.get("data"):
            has_codes = False
        grid = self._grid(m, codes) if has_codes else None
        three = view == "3-D"
        u = m.usage
        fig = codebook_figure(
            m.info["umap_3d" if three else "umap_2d"],
            u,
            grid,
            title=f"{m.name}: {len(u)} codes, UMAP {view}",
        )
        used = int((u > 0).sum())
        summary = (
            f"{used} of {len(u)} codes ({100 * used / len(u):.0f}%) are used on the training "
            f"set; usage perplexity {perplexity(torch.as_tensor(u)):.0f}."
        )
        if grid is not None:
            summary += (
                f" This image uses **{len(np.unique(grid))}** distinct codes "
                f"({'red diamonds' if three else 'ringed'})."
            )
        return CodebookView(fig, summary)

    @clear_errors
    def atlas(self, model_name: str) -> list[tuple[str, str]]:
        """-> the code atlas: (image, caption) per code, most used first."""
        m = self.models.get(model_name)
        files = self.models.atlas(m)
        return [(files[k], f"#{k}") for k in m.atlas_order]

    @clear_errors
    def atlas_pick(self, model_name: str, evt: gr.SelectData) -> int:
        m = self.models.get(model_name)
        return int(m.atlas_order[selected_index(evt, m.config.codebook_size, "codes")])

    @clear_errors
    def code(self, model_name: str, index) -> CodeDetails:
        """One code -> its decoded image (enlarged), details (Markdown), nearest codes."""
        m = self.models.get(model_name)
        K = m.config.codebook_size
        k = self._code_index(m, index)
        files = self.models.atlas(m)
        near, dist = nearest_codes(m.model, k, 8)
        total = max(1, int(m.usage.sum()))
        details = (
            f"### Code {k}\nUsed **{m.usage[k]:,}** times on the training set "
            f"({100 * m.usage[k] / total:.2f}% of all code uses), rank **{m.ranks[k]}** "
            f"of {K}.\n\nNearest codes (embedding distance): "
            + ", ".join(f"{int(j)} ({float(d):.2f})" for j, d in zip(near, dist, strict=True))
        )
        gallery = [(files[int(j)], f"#{int(j)}") for j in near]
        return CodeDetails(images.enlarge(m.atlas[k], DISPLAY), details, gallery)

    @clear_errors
    def code_patches(self, model_name: str, index) -> CodePatches:
        """One code -> the training-image crops it stands for (its cell outlined in red),
        from the model folder's code_patches.npz (written by train.export)."""
        m = self.models.get(model_name)
        k = self._code_index(m, index)
        if m.patches is None:
            return CodePatches(None, "No training patches for this model (its folder has no "
                               "`code_patches.npz`; `python -m train.export --patches-only` "
                               "writes one).")  # fmt: skip
        sheet = viz.code_patch_sheet(m.patches, k)
        if sheet is None:
            return CodePatches(None, f"Code {k} is never picked on the training set.")
        n = int(m.patches["offsets"][k + 1] - m.patches["offsets"][k])
        return CodePatches(
            sheet,
            f"{n} training crops where the encoder picked code {k}: its cell (red) and "
            "one cell around it.",
        )

    @clear_errors
    def code_tile(self, model_name: str, code) -> str | None:
        m = self.models.get(model_name)
        try:
            k = self._code_index(m, code)
        except gr.Error:
            return None  # half-typed numbers: no tile yet
        return self.models.atlas(m)[k]

    # Edit
    @clear_errors
    def edit(self, model_name: str, grid) -> Decoded:
        """Code grid -> decoded image (enlarged), code map, PNG file (native size), .npy file
        of the codes."""
        m = self.models.get(model_name)
        c = self._grid(m, grid)
        with torch.inference_mode():
            x = m.model.decode(torch.from_numpy(c)[None])
        png, npy = self._out_path(".png"), self._out_path(".npy")
        PIL.Image.fromarray(images.to_uint8(x[0])).save(png)
        np.save(npy, c)
        return Decoded(
            image=images.enlarge(x[0], DISPLAY),
            code_map=images.code_map_image(c, m.config.codebook_size, DISPLAY),
            png=png,
            npy=npy,
        )

    @clear_errors
    def paint(self, model_name: str, grid, code, evt: gr.SelectData) -> Edited:
        """Click on the code map: set the clicked cell to ``code`` and re-decode."""
        m = self.models.get(model_name)
        c = self._grid(m, grid)
        code = self._code_index(m, code)
        try:
            i, j = images.code_map_cell(getattr(evt, "index", None), c.shape, DISPLAY)
        except ValueError as e:
            raise gr.Error(f"Click a cell of the code map ({e}).") from None
        c[i, j] = code
        return Edited(self._table(c), *self.edit(model_name, c))

    @clear_errors
    def fill(self, model_name: str, grid, code) -> Edited:
        m = self.models.get(model_name)
        c = self._grid(m, grid)
        c[:] = self._code_index(m, code)
        return Edited(self._table(c), *self.edit(model_name, c))

    @clear_errors
    def reset(self, model_name: str, original) -> Edited:
        m = self.models.get(model_name)
        c = self._grid(m, original)
        return Edited(self._table(c), *self.edit(model_name, c))

    # Interpolate
    @clear_errors
    def interpolate(
        self,
        image_a,
        image_b,
        model_name: str,
        frames=24,
        fps=12,
        path: str = "lerp",
        pingpong: bool = True,
    ) -> Interpolation:
        """Two images -> (animated GIF path, strip of the frames)."""
        m = self.models.get(model_name)
        for v in (frames, fps):
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                raise gr.Error("frames and fps must be numbers.")
        try:
            f = float(fps)
            n = float(frames)
        except ValueError:
            raise gr.Error("frames and fps must be numbers.") from None
        if not (math.isfinite(n) and 2 <= n <= MAX_FRAMES):
            raise gr.Error(f"Number of frames must be between 2 and {MAX_FRAMES}, got {frames}.")
        if not (math.isfinite(f) and 1 <= f <= MAX_FPS):
            raise gr.Error(f"Frames per second must be between 1 and {MAX_FPS}, got {fps}.")
        if not isinstance(path, str) or path not in PATHS:
            raise gr.Error(f"Path must be one of {', '.join(PATHS)}, got {path!r:.20}.")
        for side, im in (("A", image_a), ("B", image_b)):
            if im is None:
                raise gr.Error(f"No image {side}: upload one or click an example.")
        a, b = self._input(m, image_a), self._input(m, image_b)
        with torch.inference_mode():
            seq = vqvae.interpolate(m.model, a, b, steps=int(n), path=path)
        gif = images.write_gif(seq, self._out_path(".gif"), fps=f, pingpong=bool(pingpong))
        return Interpolation(str(gif), images.frame_strip(seq, scale=2, per_row=12))

    @clear_errors
    def interpolate_if_any(self, image_a, image_b, *args) -> Interpolation:
        """For page load and model changes: a model without examples is no error."""
        if image_a is None or image_b is None:
            return skip(Interpolation)
        return self.interpolate(image_a, image_b, *args)

    @clear_errors
    def interp_example(
        self, model_name: str, target: str, evt: gr.SelectData, image_a=None, image_b=None
    ) -> InterpExample:
        """Click on an example: it goes into A or B (``target``), and the next click into the
        other. The other image is handed back as it was (not skipped: Gradio would replace
        that component's session copy, losing its file-path input)."""
        m = self.models.get(model_name)
        if target not in ("A", "B"):
            raise gr.Error(f"The target must be 'A' or 'B', got {target!r:.20}.")
        path = m.examples[selected_index(evt, len(m.examples), "examples")]
        if target == "A":
            return InterpExample(path, image_b, "B")
        return InterpExample(image_a, path, "A")

    # Codec: .vqz files (vqvae.codec) and JPEG / WebP at the same size
    @staticmethod
    def _codec_prior(m: Model) -> vqvae.CodePrior | None:
        """The model's prior for coding (loaded with the model), or None."""
        return m.prior

    def _shown_input(self, m: Model, image) -> torch.Tensor:
        """The model input from an image file. A whole-number nearest-neighbour enlargement
        of an S x S image (the *Input* the Reconstruct tab shows) is first reduced back to
        that image, exactly; anything else is read as /reconstruct reads it."""
        S = m.config.image_size
        if image is None:
            raise gr.Error("No image: upload one, or reconstruct one first.")
        if not isinstance(image, (str, Path, np.ndarray, PIL.Image.Image)):
            raise gr.Error("An image is a file path or an array.", title="Unusable image")
        try:
            im, _ = images.load_image(image)
        except images.ImageError as e:
            raise gr.Error(str(e), title="Unusable image") from e
        k = im.width // S
        if k > 1 and im.size == (S * k, S * k):
            a = np.asarray(im)
            small = a[k // 2 :: k, k // 2 :: k]
            if np.array_equal(small.repeat(k, 0).repeat(k, 1), a):
                im = PIL.Image.fromarray(small)
        return self._input(m, im, announce=False)

    @clear_errors
    def compress(self, image, model_name: str, match: str = MATCH[0]) -> Compressed:
        """image -> its .vqz file under the model's prior, a table of sizes (plain code
        bits, bits under the prior, the file's bytes, bits per pixel, the ratio to the
        input's PNG), and JPEG and WebP of the input at the quality whose size is closest
        to the .vqz's (``match``: "whole file" or "without headers"), with PSNR and SSIM.
        Without a prior: no file; JPEG and WebP are matched to the plain code bits."""
        m = self.models.get(model_name)
        if not isinstance(match, str) or match not in MATCH:
            raise gr.Error(f"match must be one of {', '.join(MATCH)}, got {match!r:.30}.")
        headerless = match == MATCH[1]
        x = self._shown_input(m, image)
        prior = self._codec_prior(m)
        with torch.inference_mode():
            codes = m.model.encode(x)
            recon = m.model.decode(codes)
        c = m.config
        pixels = c.image_size * c.image_size
        plain = c.bits_per_image
        png = io.BytesIO()
        PIL.Image.fromarray(images.to_uint8(x[0])).save(png, format="PNG", optimize=True)
        png_bytes = png.tell()

        def row(what, bits, bytes_):
            b = f"{bytes_:,}" if isinstance(bytes_, int) else f"{bytes_:,.1f}"
            ratio = f"{8 * png_bytes / bits:.1f}×" if bits else ""
            return f"| {what} | {bits:,.0f} | {b} | {bits / pixels:.3f} | {ratio} |"

        head = f"**Sizes** ({c.image_size}×{c.image_size} = {pixels:,} pixels)\n\n"
        lines = [
            "| | bits | bytes | bits / pixel | PNG is |",
            "|---|--:|--:|--:|--:|",
            row(
                f"codes, plain ({c.latent_size}·{c.latent_size}·log2 {c.codebook_size})",
                plain,
                plain / 8,
            ),
        ]
        vqz_path = None
        if prior is None:
            target = math.ceil(plain / 8)
            vqz_bytes, vqz_data = target, target
            head = m.no_prior + "\n\n" + head
            vqz_label = "codes, plain"
        else:
            with self._codec_lock:  # the class that makes the file smallest, coded with it
                label = codec.cheapest_labels(prior, codes)[0]
                data = codec.compress_codes(prior, codes, label, model=m.model)[0]
            with torch.inference_mode():
                nll = float(prior.nll_bits(codes, label)[0])
            info = codec.read_header(data)
            vqz_bytes, vqz_data = info.total_bytes, info.payload_bytes
            target = vqz_data if headerless else vqz_bytes
            if prior.num_classes:
                cls = prior.config.class_name(label)
                what = f"codes under the prior, class {cls} (their NLL + the class)"
                nll += codec.class_bits(prior)
            else:
                what = "codes under the prior (their NLL)"
            lines.append(row(what, nll, nll / 8))
            lines.append(
                row(
                    f"**.vqz file** ({info.header_bytes} header + {info.payload_bytes} payload)",
                    8 * vqz_bytes,
                    vqz_bytes,
                )
            )
            vqz_path = self._out_path(codec.SUFFIX)
            Path(vqz_path).write_bytes(data)
            vqz_label = ".vqz"
        lines.append(row("the input as PNG (lossless)", 8 * png_bytes, png_bytes))

        def quality(y: torch.Tensor) -> tuple[float, float]:
            return float(vqvae.psnr(x, y)[0]), float(vqvae.ssim(x, y)[0])

        what = "payload / entropy-coded data" if headerless else "whole files"
        cmp = [
            f"\n\n**At the same size** (matched on {what}: {target} bytes)\n",
            "| | quality | file bytes | without headers | PSNR (dB) | SSIM |",
            "|---|--:|--:|--:|--:|--:|",
            "| VQ-VAE ({}) | | {} | {} | {:.2f} | {:.3f} |".format(
                vqz_label, vqz_bytes, vqz_data, *quality(recon)
            ),
        ]
        shown = []
        for fmt in codec.FORMATS:
            sm = codec.match_size(x[0], target, fmt, headerless=headerless)
            y = torch.tensor(sm.image).float().div(255.0)  # (a read-only array)
            y = y[None, None] if y.dim() == 2 else y.permute(2, 0, 1)[None]
            got = sm.data_bytes if headerless else sm.file_bytes
            note = " (the lowest quality; still larger)" if sm.quality == 1 and got > target else ""
            cmp.append(
                "| {}{} | {} | {} | {} | {:.2f} | {:.3f} |".format(
                    fmt.upper() if fmt == "jpeg" else "WebP",
                    note,
                    sm.quality,
                    sm.file_bytes,
                    sm.data_bytes,
                    *quality(y),
                )
            )
            shown.append(images.enlarge(sm.image, DISPLAY))
        return Compressed(head + "\n".join(lines) + "\n".join(cmp), vqz_path, *shown)

    @clear_errors
    def decompress(self, file, model_name: str) -> Decompressed:
        """A .vqz file (path, at most MAX_VQZ_BYTES) -> the image it decodes to with the
        model and its prior (enlarged), and what its header says. Files for another model
        or prior, truncated, corrupted or not .vqz at all are answered with gr.Error."""
        m = self.models.get(model_name)
        if file is None:
            raise gr.Error("No file: upload a .vqz file.")
        if not isinstance(file, (str, Path)):
            raise gr.Error("A .vqz file is given as a file.")
        try:
            size = os.path.getsize(file)
            if size > MAX_VQZ_BYTES:
                raise gr.Error(
                    f"The file has {size:,} bytes: a .vqz file has at most "
                    f"{MAX_VQZ_BYTES // 1024} kB (most have a few dozen bytes)."
                )
            data = Path(file).read_bytes()[: MAX_VQZ_BYTES + 1]
        except OSError:
            raise gr.Error("The uploaded file could not be read.") from None
        prior = self._codec_prior(m)
        if prior is None:
            raise gr.Error(
                m.no_prior.replace("**", "").replace("`", "'") + " Choose a model that has one."
            )
        try:
            info = codec.read_header(data)
            with self._codec_lock:
                codes, labels = codec.decompress_codes(prior, data, model=m.model)
        except ValueError as e:
            hint = self._vqz_owner(data, m.name)
            raise gr.Error(
                f"This file cannot be decoded with model {m.name!r}: {e}."
                + (f" It decodes with model {hint!r}: choose that one." if hint else "")
            ) from None
        with torch.inference_mode():
            x = m.model.decode(codes)
        cls = prior.config.class_name(int(labels[0]))
        details = (
            f"Decoded a {info.total_bytes}-byte file ({info.header_bytes} header + "
            f"{info.payload_bytes} payload): {codes.shape[1]}×{codes.shape[2]} codes, "
            f"class: {cls}."
        )
        return Decompressed(images.enlarge(x[0], DISPLAY), details)

    def _vqz_owner(self, data: bytes, tried: str) -> str | None:
        """The name of another model whose prior decodes ``data`` (its checksum matches),
        for the error message of a file uploaded with the wrong model selected."""
        for name in self.models.names():
            if name == tried:
                continue
            other = self.models.get(name)
            prior = self._codec_prior(other)
            if prior is None:
                continue
            try:
                with self._codec_lock:
                    codec.decompress_codes(prior, data, model=other.model)
            except ValueError:
                continue
            return name
        return None

    # Prior: sample, resample, surprise
    MAX_SAMPLES = 64

    def _prior(self, m: Model) -> vqvae.CodePrior:
        if m.prior is None:
            raise gr.Error(m.no_prior.replace("**", "").replace("`", "'"), title="No prior")
        return m.prior

    @staticmethod
    def _label(m: Model, label) -> int | None:
        """The class index of a class name ("any" or None: no class)."""
        if label is None or label == "any":
            return None
        names = m.prior.config.class_names if m.prior is not None else []
        if not isinstance(label, str) or label not in names:
            shown = repr(label)[:40]
            raise gr.Error(f"Unknown class {shown}: choose 'any' or one of {', '.join(names)}.")
        return names.index(label)

    @staticmethod
    def _sampling(m: Model, temperature, top_k, guidance, seed) -> dict:
        """Checked sampling options for CodePrior.sample/complete; top-k 0 or None: all codes;
        seed None or -1: a fresh random one."""
        K = m.config.codebook_size
        try:
            t, g = float(temperature), float(guidance)
        except (TypeError, ValueError):
            raise gr.Error("Temperature and guidance must be numbers.") from None
        if not (math.isfinite(t) and 0 < t <= 10):
            raise gr.Error(f"Temperature must be above 0 (and at most 10), got {temperature}.")
        if not (math.isfinite(g) and 0 <= g <= 20):
            raise gr.Error(f"Guidance must be between 0 and 20, got {guidance}.")
        if top_k is None or (not isinstance(top_k, bool) and top_k == 0):
            k = None
        else:
            k = whole_number(top_k, 1, K, "Top-k (0 for all codes)")
        if seed is None or (not isinstance(seed, bool) and seed == -1):
            seed = int(torch.seed() % 2**31)
        seed = whole_number(seed, 0, 2**31 - 1, "The seed")
        gen = torch.Generator().manual_seed(seed)
        return dict(temperature=t, top_k=k, guidance=g, generator=gen)

    def _marks(self, m: Model, marks, strict: bool = True) -> np.ndarray:
        """A (h, w) bool mask from a table of 0/1 (or bools); empty: nothing marked. A table
        of another shape is a gr.Error, or (``strict=False``, e.g. after a model change)
        nothing marked."""
        h = w = m.config.latent_size
        if isinstance(marks, dict):
            marks = marks.get("data")
        if hasattr(marks, "to_numpy"):
            marks = marks.to_numpy()
        if marks is None or (hasattr(marks, "__len__") and len(marks) == 0):
            return np.zeros((h, w), dtype=bool)
        try:
            a = np.array(marks, dtype=object)
            if a.ndim != 2 or a.size > 4 * h * w:
                raise ValueError
            f = np.vectorize(lambda v: float(v) if str(v).strip() else 0.0, otypes=[float])(a)
        except (ValueError, TypeError):
            if not strict:
                return np.zeros((h, w), dtype=bool)
            raise gr.Error(f"The marks must be a {h}x{w} table of 0 and 1.") from None
        if f.shape != (h, w):
            if not strict:
                return np.zeros((h, w), dtype=bool)
            raise gr.Error(
                f"The marks must be {h}x{w} for model {m.name!r}, got {f.shape[0]}x{f.shape[1]}."
            )
        if not np.isin(f, (0.0, 1.0)).all():
            if not strict:
                return np.zeros((h, w), dtype=bool)
            raise gr.Error("Every cell of the marks must be 0 (kept) or 1 (marked).")
        return f.astype(bool)

    @clear_errors
    def sample_setup(self, model_name: str) -> SampleSetup:
        """Model chosen -> the prior's description (or why there is none), class choices."""
        m = self.models.get(model_name)
        K = m.config.codebook_size
        if m.prior is None:
            choices, note = ["any"], m.no_prior
        else:
            c = m.prior.config
            choices = ["any", *c.class_names]
            kind = f"conditioned on {c.num_classes} classes" if c.num_classes else "unconditional"
            note = (
                f"Prior of **{m.name}**: a transformer over its {c.height}x{c.width} code grids "
                f"({c.n_layers} layers, width {c.d_model}), {kind}."
            )
        label = gr.update(choices=choices, value="any")
        return SampleSetup(note, label, label, gr.update(maximum=K))

    @clear_errors
    def sample(
        self, model_name: str, label="any", n=16, temperature=1.0, top_k=0, guidance=1.0, seed=0
    ) -> Samples:
        """-> ``n`` (1-64) decoded samples of the model's prior (of class ``label``, or "any"),
        their code grids, a note. top_k 0: all codes; seed -1: random."""
        m = self.models.get(model_name)
        prior = self._prior(m)
        n = whole_number(n, 1, self.MAX_SAMPLES, "The number of samples")
        cls = self._label(m, label)
        options = self._sampling(m, temperature, top_k, guidance, seed)
        start = time.perf_counter()
        with torch.inference_mode():
            codes = prior.sample(n, cls, **options)
            x = m.model.decode(codes)
        ms = 1000 * (time.perf_counter() - start)
        a = images.to_uint8(x)  # enlarged by the browser (pixelated), not here
        gallery = [(a[i], f"#{i}") for i in range(n)]
        note = (
            f"{n} sample{'s' * (n > 1)} of class **{label if cls is not None else 'any'}** "
            f"drawn and decoded in {ms:.0f} ms. Click one to edit its codes."
        )
        return Samples(gallery, codes.tolist(), note)

    @clear_errors
    def sample_pick(self, model_name: str, codes, evt: gr.SelectData):
        """Click on a sample -> its code grid (table)."""
        m = self.models.get(model_name)
        if not isinstance(codes, list):
            raise gr.Error("There are no samples to pick from: sample first.")
        i = selected_index(evt, len(codes), "samples")
        return self._table(self._grid(m, codes[i]))

    @clear_errors
    def surprise(self, model_name: str, grid) -> Surprise:
        """Code grid -> each code's bits under the prior (given the codes before it, no
        class) as a shaded map and a table, their total, and h * w * log2 K."""
        m = self.models.get(model_name)
        prior = self._prior(m)
        c = self._grid(m, grid)
        with torch.inference_mode():
            bits = prior.code_bits(torch.from_numpy(c)[None])[0].numpy()
        K = m.config.codebook_size
        image = viz.surprise_image(bits, math.log2(K) * 2, DISPLAY)
        table = self._table(bits.round(2))
        return Surprise(
            image, round(float(bits.sum()), 1), round(m.config.bits_per_image, 1), table
        )

    @clear_errors
    def code_map_view(self, model_name: str, grid, marks=None, surprise: bool = False):
        """The Edit tab's code map: the codes (or, with ``surprise``, their bits under the
        prior), marked cells veiled; and the bits of the grid under the prior."""
        m = self.models.get(model_name)
        c = self._grid(m, grid)
        plain = m.config.bits_per_image
        if m.prior is None:
            bits = f"Plain: **{plain:.0f} bits** (h·w·log2 K). This model has no prior."
            im = images.code_map_image(c, m.config.codebook_size, DISPLAY)
        else:
            s = self.surprise(model_name, c)
            bits = (
                f"Under the prior: **{s.total:.1f} bits** ({100 * s.total / plain:.0f} % of the "
                f"plain {plain:.0f} bits, h·w·log2 K)."
            )
            im = s.image if surprise else images.code_map_image(c, m.config.codebook_size, DISPLAY)
        im = viz.mark_cells(im, self._marks(m, marks, strict=False), DISPLAY)
        return CodeMapView(im, im, bits)

    @clear_errors
    def toggle_mark(self, model_name: str, grid, marks, evt: gr.SelectData):
        """Click on the code map in mark mode: mark the cell, or unmark it -> the marks."""
        m = self.models.get(model_name)
        c = self._grid(m, grid)
        mask = self._marks(m, marks, strict=False)
        try:
            i, j = images.code_map_cell(getattr(evt, "index", None), c.shape, DISPLAY)
        except ValueError as e:
            raise gr.Error(f"Click a cell of the code map ({e}).") from None
        mask[i, j] = not mask[i, j]
        return self._table(mask * 1)

    @clear_errors
    def mark_all(self, model_name: str, value: bool = True):
        """-> a marks table with every cell marked (or none)."""
        m = self.models.get(model_name)
        h = m.config.latent_size
        return self._table(np.full((h, h), int(bool(value))))

    @clear_errors
    def clear_marks(self, model_name: str):
        return self.mark_all(model_name, False)

    @clear_errors
    def resample(
        self,
        model_name: str,
        grid,
        marks,
        label="any",
        temperature=1.0,
        top_k=0,
        guidance=1.0,
        seed=-1,
    ) -> Edited:
        """Resample the marked cells of a code grid with the prior, given the others (in
        raster order: a cell follows the cells above and to its left) -> the new grid and
        its :class:`Decoded` fields. seed -1: random."""
        m = self.models.get(model_name)
        prior = self._prior(m)
        c = self._grid(m, grid)
        mask = self._marks(m, marks)
        if not mask.any():
            raise gr.Error("No cells are marked: mark some cells to resample first.")
        cls = self._label(m, label)
        options = self._sampling(m, temperature, top_k, guidance, seed)
        with torch.inference_mode():
            new = prior.complete(torch.from_numpy(c)[None], torch.from_numpy(~mask), cls, **options)
        new = new[0].numpy()
        return Edited(self._table(new), *self.edit(model_name, new))


# -- the drawing pad's uploads -----------------------------------------------------------------

PAD_BLOB_BYTES = 1_000_000  # a 280x280 RGBA PNG is under 320 kB
PAD_BLOB_PIXELS = 1024 * 1024
PAD_BLOBS = 64  # drawings waiting for their event, all sessions together
PAD_BLOB_SECONDS = 120.0


def guard_drawing_pad(pad: gr.ImageEditor) -> None:
    """Replace the pad's ``accept_blobs`` server function (POST /gradio_api/component_server,
    outside the queue) by one that stores only what the app reads, within bounds.

    Gradio's own trusts the client: a layer ``index`` of 50 000 000 allocates a list of that
    length, and blobs under new ids are kept until an event consumes them. This one keeps
    only the composite (the app never reads layers or the background), refuses blobs over
    ``PAD_BLOB_BYTES`` or ``PAD_BLOB_PIXELS`` (PNG header checked, nothing decoded), and keeps
    at most ``PAD_BLOBS`` drawings for at most ``PAD_BLOB_SECONDS``. (The pad is never
    updated with gr.update, which would replace it in the session by a fresh, unguarded
    copy: its visibility is set on the column around it.)"""
    from fastapi import HTTPException
    from gradio.components.image_editor import EditorDataBlobs

    store = pad.blob_storage  # id -> blobs; Gradio's preprocess pops the id it uses
    born: dict[str, float] = {}
    lock = threading.Lock()

    def accept_blobs(data):
        def refuse(status: int, why: str):
            return HTTPException(status_code=status, detail=why)

        try:
            kind, blob_id = data.data["type"], data.data["id"]
            files = data.files
        except (AttributeError, KeyError, TypeError):
            raise refuse(400, "Malformed drawing upload.") from None
        if kind != "composite":
            return  # layers and background: never read by the app, not kept
        if not (isinstance(blob_id, str) and 0 < len(blob_id) <= 64) or len(files) != 1:
            raise refuse(400, "Malformed drawing upload.")
        blob = files[0][1]
        if len(blob) > PAD_BLOB_BYTES:
            raise refuse(413, "The drawing is too large.")
        try:
            with PIL.Image.open(io.BytesIO(blob)) as im:  # reads the header only
                pixels = im.width * im.height
        except (OSError, ValueError, PIL.Image.DecompressionBombError):
            raise refuse(415, "The drawing is not an image.") from None
        if pixels > PAD_BLOB_PIXELS:
            raise refuse(413, "The drawing is too large.")
        with lock:
            now = time.monotonic()
            for k in [k for k, t in born.items() if k not in store or now - t > PAD_BLOB_SECONDS]:
                store.pop(k, None)
                born.pop(k, None)
            while len(born) >= PAD_BLOBS:
                oldest = min(born, key=born.get)
                store.pop(oldest, None)
                born.pop(oldest)
            store[blob_id] = EditorDataBlobs(background=None, layers=[], composite=blob)
            born[blob_id] = now

    accept_blobs._is_server_fn = True  # what Gradio's component_server route looks for
    pad.accept_blobs = accept_blobs


def image_input(**kw) -> gr.Image:
    """An image upload whose handler gets the uploaded file's path without Gradio opening it,
    so that vqvae.images.load_image decides what is a usable image and says why not. (An
    instance override rather than a subclass: Gradio writes a .pyi stub beside the source of
    every Image subclass. So never send it gr.update or gr.skip: that replaces it in the
    session by a plain gr.Image.)"""
    im = gr.Image(type="filepath", image_mode=None, **kw)
    gradio_preprocess = im.preprocess
    im.preprocess = lambda payload: (
        payload.path if payload is not None and payload.path else gradio_preprocess(payload)
    )  # data: URLs: Gradio
    return im


# -- tabs ------------------------------------------------------------------------------------
# Each builder lays out one tab and registers the events that stay inside it; it returns what
# build_app needs to connect the tabs. Public events (the API) carry their api_name; every
# other event is private and named explicitly, so the API names never get suffixes.

PIX = ["pixelated"]
# Code numbers reach the handlers unrounded (Gradio's rounding fails on inf and NaN with an
# unclear message); the handlers check them. select_model sets the model's maximum.
CODE_NUMBER = dict(precision=None, minimum=0)


# Events that run a model share one queue of CONCURRENCY slots (Gradio gives every event its
# own by default, so a busy app would run 2 x (number of events) at once); quick ones that
# only pick or pass values on keep their own, so the page stays responsive under load.
MODEL = dict(concurrency_id="model")
# Class choices change with the model; the handlers check the class (Gradio would check it
# against the choices the page was built with).
CLASS_CHOICE = dict(allow_custom_value=True, min_width=140)


def public(name: str) -> dict:
    return dict(api_name=name, **MODEL)


def private(name: str, *, quick: bool = False) -> dict:
    return dict(api_name=name, api_visibility="private", **({} if quick else MODEL))


@dataclass
class ReconstructTab:
    image: gr.Image
    examples: gr.Gallery
    draw: gr.Column  # holds the drawing pad
    no_draw: gr.Markdown
    outputs: list  # the components of a Reconstruction, in order
    grid: gr.Dataframe  # the current image's codes
    new_image: list  # events after which there is a new current image


def reconstruct_tab(h: Handlers, model: gr.Dropdown) -> ReconstructTab:
    gr.Markdown(
        "Upload an image, click an example or draw a digit (in *Draw*, pick the brush, then "
        "draw: it reconstructs as you go). The model encodes it to a grid of codes and decodes "
        "the grid again; the code map shows which code sits where. Images are centre-cropped "
        "and resized to the model's size; for digit models, dark-on-light pictures are "
        "inverted to match MNIST. Below them: the codes as a file (**.vqz**, entropy-coded "
        "under the model's learned prior) beside JPEG and WebP squeezed to the same size."
    )
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            with gr.Tabs():
                with gr.Tab("Upload", id="upload"):
                    image = image_input(
                        elem_id="input-image",
                        label="Your image",
                        height=280,
                        elem_classes=["fill-img"],
                        sources=["upload", "clipboard"],
                    )
                    button = gr.Button("Reconstruct", elem_id="recon-btn", variant="primary")
                with gr.Tab("Draw", id="draw"):
                    no_draw = gr.Markdown(
                        "The drawing pad is for the digit models (one channel); this model "
                        "takes colour images.",
                        visible=False,
                    )
                    with gr.Column() as draw:
                        sketch = gr.Sketchpad(
                            label="Draw a digit",
                            type="numpy",
                            image_mode="RGBA",
                            canvas_size=(280, 280),
                            fixed_canvas=True,
                            layers=False,
                            transforms=(),
                            brush=gr.Brush(default_size=22, colors=["#000000"], color_mode="fixed"),
                            height=340,
                        )
                        guard_drawing_pad(sketch)
            examples = gr.Gallery(
                elem_id="examples",
                label="Examples (test set): click one",
                columns=4,
                height="auto",
                allow_preview=False,
                elem_classes=PIX,
                object_fit="contain",
            )
        with gr.Column(scale=5):
            big = dict(height=DISPLAY + 64, elem_classes=PIX, interactive=False, format="png")
            with gr.Row(equal_height=True):
                orig = gr.Image(
                    elem_id="orig",
                    label="Input (as the model sees it)",
                    buttons=["download"],
                    # as /compress's input: the file's path, Gradio opens nothing
                    type="filepath",
                    image_mode=None,
                    **big,
                )
                recon = gr.Image(
                    elem_id="recon", label="Reconstruction", buttons=["download"], **big
                )
                codemap = gr.Image(
                    elem_id="codemap",
                    label="Code map (index per cell)",
                    buttons=["download"],
                    **big,
                )
            number = dict(interactive=False, elem_classes=["numbers"])
            with gr.Row():
                psnr = gr.Number(elem_id="psnr", label="PSNR (dB)", **number)
                used = gr.Number(elem_id="used", label="Distinct codes in this image", **number)
                bits = gr.Number(label="Bits per image (h·w·log2 K)", **number)
            with gr.Row(equal_height=True):
                small = dict(height=200, elem_classes=PIX, interactive=False, format="png")
                jpeg = gr.Image(elem_id="jpeg", label="JPEG at the .vqz's size", **small)
                webp = gr.Image(elem_id="webp", label="WebP at the .vqz's size", **small)
                with gr.Column(min_width=220):
                    match = gr.Radio(
                        list(MATCH),
                        value=MATCH[0],
                        elem_id="match",
                        label="Match JPEG and WebP to the .vqz's size:",
                        info="without headers: the .vqz payload against their coded data",
                    )
                    vqz = gr.DownloadButton("Download .vqz", elem_id="dl-vqz", size="sm")
            sizes = gr.Markdown(elem_id="codec-sizes")
            with gr.Accordion("Decode a .vqz file", open=False):
                with gr.Row():
                    vqz_file = gr.File(
                        elem_id="vqz-file",
                        label=f".vqz file (at most {MAX_VQZ_BYTES // 1024} kB)",
                        file_types=[codec.SUFFIX],
                        type="filepath",
                        height=140,
                    )
                    decoded = gr.Image(elem_id="decoded", label="Decoded", **small)
                    decoded_md = gr.Markdown(elem_id="decoded-md")
            with gr.Accordion("Code indices as a table", open=False):
                grid = gr.Dataframe(
                    interactive=False,
                    datatype="number",
                    type="array",
                    label="Code grid",
                    max_height=320,
                )

    outputs = [orig, recon, codemap, psnr, used, bits, grid]
    new_image = [
        button.click(h.reconstruct, [image, model], outputs, **public("reconstruct")),
        image.input(h.reconstruct_if_any, [image, model], outputs, **private("reconstruct_upload")),
        examples.select(
            h.reconstruct_example, [model], [image] + outputs, **private("reconstruct_example")
        ),
        sketch.change(
            h.reconstruct_drawing,
            [sketch, model],
            outputs,
            trigger_mode="always_last",
            show_progress="hidden",
            **private("reconstruct_drawing"),
        ),
    ]
    # The codec panel follows each new input as an event of its own, so /reconstruct stays
    # as fast as before (the prior's coding and ~20 JPEG/WebP encodes run after it). As the
    # API, /compress takes any image, or the Input shown above.
    gr.on(
        [orig.change, match.change],
        h.compress,
        [orig, model, match],
        [sizes, vqz, jpeg, webp],
        trigger_mode="always_last",
        show_progress="minimal",
        **public("compress"),
    )
    vqz_file.upload(h.decompress, [vqz_file, model], [decoded, decoded_md], **public("decompress"))
    return ReconstructTab(image, examples, draw, no_draw, outputs, grid, new_image)


@dataclass
class CodebookTab:
    view: gr.Radio
    plot: gr.Plot
    summary: gr.Markdown
    pick: gr.Number
    atlas: gr.Gallery


def codebook_tab(h: Handlers, model: gr.Dropdown, grid: gr.Dataframe) -> CodebookTab:
    """``grid``: the current image's codes, ringed in the plot."""
    gr.Markdown(
        "Every code is a vector; UMAP lays them out so that similar codes sit close together. "
        "Colour is how often a code is used on the training set (log scale); the codes in "
        "your current image are ringed. Hover for details. Below, the **atlas** shows what "
        "each code decodes to on its own (a grid filled with that one code); click one to "
        "inspect it."
    )
    with gr.Row():
        with gr.Column(scale=3):
            view = gr.Radio(
                ["2-D", "3-D"], elem_id="view", value="2-D", label="Projection", container=False
            )
            plot = gr.Plot(elem_id="codebook-plot", label="Codebook (UMAP)")
            summary = gr.Markdown(elem_id="codebook-summary")
        with gr.Column(scale=2):
            pick = gr.Number(elem_id="pick", label="Inspect code #", value=0, **CODE_NUMBER)
            pick_img = gr.Image(
                label="Decodes to", format="png", height=200, interactive=False, elem_classes=PIX
            )
            pick_md = gr.Markdown(elem_id="pick-md")
            neighbours = gr.Gallery(
                label="Nearest codes", columns=8, height=140, allow_preview=False, elem_classes=PIX
            )
            patches = gr.Image(
                elem_id="code-patches",
                label="Where the encoder picks it (training crops)",
                format="png",
                interactive=False,
                elem_classes=PIX,
            )
            patches_md = gr.Markdown(elem_id="code-patches-md")
    atlas = gr.Gallery(
        elem_id="atlas",
        label="Code atlas (most used first)",
        columns=16,
        height=360,
        allow_preview=False,
        elem_classes=PIX,
    )

    view.change(h.codebook, [model, view, grid], [plot, summary], **public("codebook"))
    pick.change(
        h.code,
        [model, pick],
        [pick_img, pick_md, neighbours],
        **public("code"),
        trigger_mode="always_last",
    )
    pick.change(
        h.code_patches,
        [model, pick],
        [patches, patches_md],
        **public("code_patches"),
        trigger_mode="always_last",
    )
    atlas.select(h.atlas_pick, [model], pick, **private("atlas_pick", quick=True))
    return CodebookTab(view, plot, summary, pick, atlas)


@dataclass
class EditTab:
    grid: gr.Dataframe  # the edited grid
    outputs: list  # the components of a Decoded, in order
    original: gr.State  # the grid Reset goes back to
    paint_code: gr.Number
    atlas: gr.Gallery
    label: gr.Dropdown  # the class resampling is conditioned on
    redraw: Callable  # redraw(dep): after dep, the code map's overlays and bits again


def edit_tab(h: Handlers, model: gr.Dropdown) -> EditTab:
    gr.Markdown(
        "The current image's code grid. Choose a code (type its number or click the atlas on "
        "the right), then click cells of the code map to paint them; the image re-decodes at "
        "once. Or edit the numbers in the table. *Reset* goes back to the reconstructed image. "
        "With a prior: switch clicks to *mark*, mark cells and *resample* them (each is drawn "
        "given the cells above and to its left), or shade the map by each code's surprise."
    )
    big = dict(height=DISPLAY + 64, interactive=False, elem_classes=PIX, format="png")
    with gr.Row():
        with gr.Column(scale=3):
            edit_map = gr.Image(
                elem_id="edit-map", label="Code map: click a cell to paint it", **big
            )
            mark_map = gr.Image(
                elem_id="mark-map", label="Code map: click cells to mark them", visible=False, **big
            )
        with gr.Column(scale=3):
            edit_img = gr.Image(elem_id="edit-img", label="Decoded", **big)
        with gr.Column(scale=3, min_width=240):
            with gr.Row(equal_height=True):
                paint_code = gr.Number(
                    elem_id="paint-code",
                    label="Paint with code #",
                    **CODE_NUMBER,
                    value=0,
                    scale=2,
                )
                paint_tile = gr.Image(
                    height=90,
                    interactive=False,
                    elem_classes=PIX,
                    show_label=False,
                    buttons=[],
                    scale=1,
                    min_width=90,
                    container=False,
                )
            atlas = gr.Gallery(
                elem_id="edit-atlas",
                label="Pick a code",
                columns=8,
                height=200,
                allow_preview=False,
                elem_classes=PIX,
            )
            with gr.Row():
                fill_btn = gr.Button("Fill all cells", size="sm")
                reset_btn = gr.Button("Reset", size="sm")
            with gr.Row():
                dl_png = gr.DownloadButton("Image (.png)", elem_id="dl-png", size="sm")
                dl_npy = gr.DownloadButton("Codes (.npy)", size="sm")
    with gr.Row():
        with gr.Column(scale=3):
            bits = gr.Markdown(elem_id="edit-bits")
            surprise = gr.Checkbox(
                label="Surprise: shade each cell by its bits under the prior (pale 0, orange "
                "log2 K as without a prior, dark twice that)",
                elem_id="surprise",
            )
        with gr.Column(scale=6):
            with gr.Row():
                mode = gr.Radio(
                    ["paint", "mark"],
                    value="paint",
                    label="Clicks on the code map",
                    elem_id="click-mode",
                    min_width=160,
                )
                with gr.Column(min_width=160):
                    mark_all_btn = gr.Button("Mark all", size="sm")
                    clear_btn = gr.Button("Clear marks", size="sm")
                    resample_btn = gr.Button(
                        "Resample marked cells", elem_id="resample-btn", variant="primary"
                    )
            with gr.Row():
                label = gr.Dropdown(["any"], value="any", label="Resample as class", **CLASS_CHOICE)
                temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature")
    with gr.Accordion("Edit the marks as a table (1 = marked)", open=False):
        marks = gr.Dataframe(
            elem_id="marks",
            interactive=True,
            datatype="number",
            label="Marked cells",
            type="array",
            max_height=360,
        )
    with gr.Accordion("Edit the grid as a table", open=False):
        grid = gr.Dataframe(
            elem_id="grid",
            interactive=True,
            datatype="number",
            label="Code grid",
            type="array",
            max_height=360,
        )
    original = gr.State()

    outputs = [edit_img, edit_map, dl_png, dl_npy]
    n_redraws = iter(range(1000))

    def redraw(dep):
        """The grid changed: draw its map again with the marks (and surprise), new bits."""
        return dep.success(
            h.code_map_view,
            [model, grid, marks, surprise],
            [edit_map, mark_map, bits],
            **private(f"edit_overlay_{next(n_redraws)}"),
        )

    redraw(grid.input(h.edit, [model, grid], outputs, **public("edit")))
    atlas.select(h.atlas_pick, [model], paint_code, **private("paint_code_pick", quick=True))
    paint_code.change(
        h.code_tile, [model, paint_code], paint_tile, **private("paint_tile", quick=True)
    )
    redraw(
        edit_map.select(h.paint, [model, grid, paint_code], [grid] + outputs, **private("paint"))
    )
    redraw(mark_map.select(h.toggle_mark, [model, grid, marks], marks, **private("mark")))
    mode.change(show_map, mode, [edit_map, mark_map], **private("click_mode", quick=True))
    redraw(fill_btn.click(h.fill, [model, grid, paint_code], [grid] + outputs, **private("fill")))
    redraw(reset_btn.click(h.reset, [model, original], [grid] + outputs, **private("reset")))
    redraw(
        resample_btn.click(
            h.resample,
            [model, grid, marks, label, temperature],
            [grid] + outputs,
            **public("resample"),
        )
    )
    redraw(mark_all_btn.click(h.mark_all, model, marks, **private("mark_all", quick=True)))
    redraw(clear_btn.click(h.clear_marks, model, marks, **private("clear_marks", quick=True)))
    redraw(marks.input(keep, marks, None, **private("marks_typed", quick=True)))
    redraw(surprise.input(keep, surprise, None, **private("surprise_toggle", quick=True)))
    return EditTab(grid, outputs, original, paint_code, atlas, label, redraw)


@dataclass
class SampleTab:
    note: gr.Markdown  # the prior, or why the model has none
    label: gr.Dropdown
    top_k: gr.Number
    gallery: gr.Gallery
    codes: gr.JSON  # the sampled grids, for picking one


def show_map(mode: str):
    """Clicks paint or mark: show the code map that takes that kind of click (two images,
    so that the paint event keeps its inputs)."""
    return gr.update(visible=mode != "mark"), gr.update(visible=mode == "mark")


def sample_tab(h: Handlers, model: gr.Dropdown) -> SampleTab:
    gr.Markdown(
        "Draw new images from the model's **prior**, a transformer that has learned which "
        "code grids are likely, one code at a time, then decode them. Lower temperature or "
        "top-k: safer, less varied samples; guidance above 1 sharpens the class. Click a "
        "sample to edit its codes."
    )
    note = gr.Markdown(elem_id="sample-note")
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            label = gr.Dropdown(
                ["any"], value="any", label="Class", elem_id="sample-class", **CLASS_CHOICE
            )
            n = gr.Slider(1, Handlers.MAX_SAMPLES, value=16, step=1, label="Number of samples")
            temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature")
            top_k = gr.Number(value=0, label="Top-k (0: all codes)", precision=None, minimum=0)
            guidance = gr.Slider(0.0, 5.0, value=1.0, step=0.25, label="Guidance (with a class)")
            seed = gr.Number(value=0, label="Seed (-1: random)", precision=None, minimum=-1)
            button = gr.Button("Sample", elem_id="sample-btn", variant="primary")
        with gr.Column(scale=3):
            gallery = gr.Gallery(
                elem_id="samples",
                label="Samples: click one to edit its codes",
                columns=8,
                height=DISPLAY + 160,
                allow_preview=False,
                elem_classes=PIX,
                object_fit="contain",
                format="png",
            )
            info = gr.Markdown(elem_id="sample-info")
            codes = gr.JSON(visible=False)
    button.click(
        h.sample,
        [model, label, n, temperature, top_k, guidance, seed],
        [gallery, codes, info],
        **public("sample"),
    )
    return SampleTab(note, label, top_k, gallery, codes)


@dataclass
class InterpolateTab:
    image_a: gr.Image
    image_b: gr.Image
    examples: gr.Gallery
    settings: list  # frames, fps, path, ping-pong
    outputs: list  # the components of an Interpolation


def interpolate_tab(h: Handlers, model: gr.Dropdown) -> InterpolateTab:
    gr.Markdown(
        "Walk from image A to image B in latent space. **lerp** blends the encoder outputs and "
        "quantizes each step; **slerp** does so along a sphere; **codebook** blends the two "
        "quantized grids and decodes without re-quantizing. The result is a looping GIF."
    )
    side = dict(height=220, elem_classes=["fill-img"], sources=["upload", "clipboard"])
    with gr.Row():
        img_a = image_input(label="A", **side)
        img_b = image_input(label="B", **side)
        with gr.Column(min_width=260):
            frames = gr.Slider(2, MAX_FRAMES, value=24, step=1, label="Frames")
            fps = gr.Slider(1, 30, value=12, step=1, label="Frames per second")
            path = gr.Radio(list(PATHS), value="lerp", label="Path")
            pingpong = gr.Checkbox(value=True, label="Ping-pong (play back and forth)")
            button = gr.Button("Make GIF", elem_id="interp-btn", variant="primary")
    with gr.Row(equal_height=True):
        examples = gr.Gallery(
            label="Examples: click to fill",
            columns=8,
            height=150,
            allow_preview=False,
            elem_classes=PIX,
            scale=3,
        )
        target = gr.Radio(
            ["A", "B"], value="A", label="Next example goes into", scale=1, min_width=160
        )
    with gr.Row():
        gif = gr.Image(
            elem_id="gif",
            label="Animation",
            type="filepath",
            height=DISPLAY + 64,
            interactive=False,
            elem_classes=PIX,
            buttons=["download"],
            scale=1,
        )
        strip = gr.Image(
            elem_id="strip",
            label="Frames",
            format="png",
            height=DISPLAY + 64,
            interactive=False,
            elem_classes=PIX,
            scale=2,
        )

    settings = [frames, fps, path, pingpong]
    button.click(
        h.interpolate, [img_a, img_b, model, *settings], [gif, strip], **public("interpolate")
    )
    examples.select(
        h.interp_example,
        [model, target, img_a, img_b],
        [img_a, img_b, target],
        **private("interpolate_example", quick=True),
    )
    return InterpolateTab(img_a, img_b, examples, settings, [gif, strip])


# -- the app ---------------------------------------------------------------------------------

INTRO = """# VQ-VAE explorer
A VQ-VAE squeezes an image into a small grid of **codes**, each an index into a learned
codebook, and decodes the grid back into an image. Pick a model, then look at what it keeps,
what its codes mean, and what happens when you change them."""


def keep(value):
    """Pass a value on unchanged (the reconstructed grid becomes the edit tab's original)."""
    return value


def open_edit_tab():
    return gr.Tabs(selected="edit")


def build_app(
    models_dir=None, examples_dir=None, cache_dir=None, **handler_options
) -> tuple[gr.Blocks, Handlers]:
    """The app's gr.Blocks and the handlers behind its events. ``models_dir`` (default
    $VQVAE_MODELS_DIR or pretrained/) holds one folder per model; ``examples_dir`` (default
    $VQVAE_EXAMPLES_DIR or assets/examples) one folder of example images per model name;
    ``handler_options`` go to :class:`Handlers` (disk budgets)."""
    models_dir = models_dir or os.environ.get("VQVAE_MODELS_DIR") or PRETRAINED_DIR
    examples_dir = examples_dir or os.environ.get("VQVAE_EXAMPLES_DIR") or EXAMPLES_DIR
    h = Handlers(models_dir, examples_dir, cache_dir, **handler_options)
    names = h.models.names()

    with gr.Blocks(title="VQ-VAE explorer", delete_cache=GRADIO_CACHE_LIFETIME) as demo:
        gr.Markdown(INTRO)
        if not names:
            gr.Markdown(
                f"**No models found in `{models_dir}`.** Train one (see README) or "
                f"start with `--models-dir` pointing at a folder of models."
            )
        with gr.Row(equal_height=True):
            model = gr.Dropdown(
                names, value=names[0] if names else None, label="Model", scale=1, min_width=200
            )
            card = gr.Markdown(elem_id="model-card")
        with gr.Accordion("Model card", open=False):
            card_full = gr.Markdown()

        with gr.Tabs() as tabs:
            with gr.Tab("Reconstruct", id="reconstruct"):
                rec = reconstruct_tab(h, model)
            with gr.Tab("Codebook", id="codebook"):
                cb = codebook_tab(h, model, rec.grid)
            with gr.Tab("Edit codes", id="edit"):
                ed = edit_tab(h, model)
            with gr.Tab("Sample", id="sample"):
                sa = sample_tab(h, model)
            with gr.Tab("Interpolate", id="interpolate"):
                it = interpolate_tab(h, model)

        # -- wiring: what one tab's events change in the others ------------------------------
        def after_reconstruct(dep):
            """A new current image: the edit tab starts from its grid, the codebook rings it."""
            ed.redraw(
                dep.success(
                    h.reset, [model, rec.grid], [ed.grid] + ed.outputs, **private("edit_new")
                )
            )
            dep.success(keep, rec.grid, ed.original, **private("edit_original", quick=True))
            dep.success(
                h.codebook, [model, cb.view, rec.grid], [cb.plot, cb.summary], **private("ring")
            )

        for dep in rec.new_image:
            after_reconstruct(dep)

        # a sample picked: it becomes the edit tab's image
        pick = sa.gallery.select(
            h.sample_pick, [model, sa.codes], ed.original, **private("sample_pick", quick=True)
        )
        ed.redraw(pick.success(h.reset, [model, ed.original], [ed.grid] + ed.outputs,
                               **private("edit_sample")))  # fmt: skip
        pick.success(open_edit_tab, None, tabs, **private("open_edit", quick=True))

        def on_model(dep):
            """A model was chosen: show its first example, an interpolation, its atlas."""
            after_reconstruct(
                dep.then(h.example, model, [rec.image] + rec.outputs, **private("first_example"))
            )
            dep.then(
                h.interpolate_if_any,
                [it.image_a, it.image_b, model, *it.settings],
                it.outputs,
                **private("first_interpolation"),
            )
            dep.then(h.atlas, model, cb.atlas, **private("atlas")).then(
                h.atlas, model, ed.atlas, **private("edit_atlas")
            )
            dep.then(
                h.sample_setup,
                model,
                [sa.note, sa.label, ed.label, sa.top_k],
                **private("sample_setup", quick=True),
            )

        if names:
            shows = [
                card,
                card_full,
                rec.examples,
                rec.draw,
                rec.no_draw,
                it.examples,
                it.image_a,
                it.image_b,
                cb.pick,
                ed.paint_code,
            ]
            on_model(model.change(h.select_model, model, shows, **private("select_model")))
            on_model(demo.load(h.select_model, model, shows, **private("load_model")))
    return demo, h


def launch(demo: gr.Blocks, handlers: Handlers, host=None, port=None, **kw):
    """Queue with limits and launch; ``host``/``port`` default to GRADIO_SERVER_NAME /
    GRADIO_SERVER_PORT, then 127.0.0.1:7860. Errors reach clients only as gr.Error messages
    (``show_error=False``): anything else is logged here and answered generically."""
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=64)
    return demo.launch(
        server_name=host or os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(port or os.environ.get("GRADIO_SERVER_PORT", 7860)),
        theme=gr.themes.Soft(primary_hue="indigo"),
        css=CSS,
        allowed_paths=[str(handlers.models.examples_dir), str(handlers.models.cache_dir)],
        max_file_size="25mb",
        show_error=False,
        **kw,
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default=None, help="default: $GRADIO_SERVER_NAME or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: $GRADIO_SERVER_PORT or 7860")
    p.add_argument(
        "--models-dir",
        default=None,
        help="folder of model folders (default: $VQVAE_MODELS_DIR or pretrained/)",
    )
    p.add_argument(
        "--examples-dir",
        default=None,
        help="folder of <model>/ example images (default: $VQVAE_EXAMPLES_DIR or assets/examples/)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cache_dir = Path(tempfile.mkdtemp(prefix="vqvae-app-"))
    options = {}
    if not os.environ.get("GRADIO_TEMP_DIR"):
        # Gradio's cache in a folder of our own, so the app may trim it to a budget.
        os.environ["GRADIO_TEMP_DIR"] = str(cache_dir / "gradio")
        options["gradio_cache"] = cache_dir / "gradio"
    demo, handlers = build_app(args.models_dir, args.examples_dir, cache_dir, **options)
    launch(demo, handlers, args.host, args.port)


if __name__ == "__main__":
    main()
