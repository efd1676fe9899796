"""The VQ-VAE explorer: a Gradio app over the ``vqvae`` library.

    python app.py                                  # http://127.0.0.1:7860
    python app.py --host 0.0.0.0 --port 8000 --models-dir pretrained/

Four tabs: Reconstruct (upload, example or drawing -> reconstruction and code map), Codebook
(UMAP of the codes, coloured by usage; what each code decodes to), Edit codes (paint code
cells, re-decode), Interpolate (an animated GIF between two images). Every main action has an
API name (/reconstruct, /codebook, /edit, /interpolate); see docs/api.md.

The app is a thin layer: all model maths is in ``vqvae``; image I/O in ``vqvae.images``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
import PIL.Image
import torch
import torchvision.transforms.v2  # noqa: F401  imported now, not on the first request
import torchvision.utils  # noqa: F401

import vqvae
from vqvae import images
from vqvae.checkpoint import CONFIG_NAME, PRETRAINED_DIR, WEIGHTS_NAME
from vqvae.codes import nearest_codes, usage_ranks
from vqvae.latent import PATHS
from vqvae.metrics import perplexity
from vqvae.projection import load_codebook_info

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "assets" / "examples"
DISPLAY = 256  # side of the enlarged images, px
MAX_FRAMES = 64
MAX_FPS = 50  # GIF delays are whole centiseconds: 50 fps is the finest
# Gradio opens some images itself (the drawing pad); keep PIL's bomb guard at our limit.
PIL.Image.MAX_IMAGE_PIXELS = images.MAX_PIXELS
CONCURRENCY = 2  # requests the queue runs at once
# These models are small: one request gains little from many threads, and threads beyond
# cores / concurrent requests only fight each other (measured: 1 thread is fastest on 2 cores).
torch.set_num_threads(max(1, (os.cpu_count() or 1) // CONCURRENCY))

CSS = """
.pixelated img, .pixelated canvas { image-rendering: pixelated; }
/* small uploads (a 28x28 digit) fill their box instead of sitting there as a dot */
.fill-img img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
.numbers input { font-variant-numeric: tabular-nums; }
footer { display: none !important; }
"""


# -- models ----------------------------------------------------------------------------------


@dataclass
class Model:
    """A loaded model and everything the app shows about it."""

    name: str
    directory: Path
    model: vqvae.VQVAE
    info: dict  # codebook.json: usage, umap_2d, umap_3d
    metrics: dict | None
    card: str | None
    examples: list[str]
    usage: np.ndarray = field(init=False)
    ranks: np.ndarray = field(init=False)
    atlas: torch.Tensor | None = None  # (K, C, H, W): what each code decodes to
    atlas_files: list[str] | None = None  # the same, enlarged, as PNG files

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
    loaded on first use and then kept; thread-safe."""

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
            if (p / WEIGHTS_NAME).is_file() and (p / CONFIG_NAME).is_file()
        )
        # Digits first: they are the quickest to understand.
        order = {"mnist": 0, "fashion-mnist": 1, "cifar10": 2}
        return sorted(names, key=lambda n: (order.get(n, 9), n))

    def get(self, name) -> Model:
        if not isinstance(name, str) or name not in self.names():
            raise gr.Error(
                f"Unknown model {name!r}. Available: {', '.join(self.names()) or 'none'}."
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
        with torch.inference_mode():  # the first call pays for kernel selection; do it now
            model.decode(
                model.encode(
                    torch.zeros(
                        1,
                        model.config.in_channels,
                        model.config.image_size,
                        model.config.image_size,
                    )
                )
            )
        info = load_codebook_info(model, d, cache_dir=self.cache_dir / "codebook")
        metrics = (
            json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").is_file() else None
        )
        card = (d / "README.md").read_text() if (d / "README.md").is_file() else None
        ex_dir = self.examples_dir / name
        examples = (
            sorted(
                str(p)
                for p in ex_dir.glob("*")
                if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")
            )
            if ex_dir.is_dir()
            else []
        )
        return Model(name, d, model, info, metrics, card, examples)

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


# -- handlers --------------------------------------------------------------------------------


class Handlers:
    """Every event of the app as a plain method: inputs are what Gradio passes (file paths,
    numbers, lists), outputs what it displays. Errors a user can fix raise gr.Error."""

    def __init__(self, models_dir=PRETRAINED_DIR, examples_dir=EXAMPLES_DIR, cache_dir=None):
        self.models = ModelStore(models_dir, examples_dir, cache_dir)
        self.out_dir = self.models.cache_dir / "out"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._example_cache: dict[tuple, tuple] = {}

    # helpers
    def _out_path(self, suffix: str) -> str:
        """A fresh file for a download or GIF. Gradio copies what we return into its own
        cache, so ours are only kept for an hour (pruned every 100 files)."""
        self._made = getattr(self, "_made", 0) + 1
        if self._made % 100 == 0:
            old = time.time() - 3600
            for p in self.out_dir.iterdir():
                if p.stat().st_mtime < old:
                    p.unlink(missing_ok=True)
        fd, path = tempfile.mkstemp(suffix=suffix, dir=self.out_dir)
        os.close(fd)
        return path

    def _input(self, m: Model, source, announce: bool = True) -> torch.Tensor:
        """The model's input tensor (1, C, S, S) from an image path / array / PIL image."""
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
            if a.ndim != 2:
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

    # Reconstruct
    def reconstruct(self, image, model_name: str, *, announce: bool = True):
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
        K = m.config.codebook_size
        return (
            images.enlarge(x[0], DISPLAY),
            images.enlarge(recon[0], DISPLAY),
            images.code_map_image(c, K, DISPLAY),
            round(psnr, 2),
            int(len(np.unique(c))),
            round(m.config.bits_per_image, 1),
            self._table(c),
        )

    def reconstruct_if_any(self, image, model_name: str):
        """For live events (clearing an image, an empty canvas): nothing to do is no error."""
        if image is None:
            return tuple(gr.skip() for _ in range(7))
        return self.reconstruct(image, model_name)

    def reconstruct_drawing(self, sketch, model_name: str):
        comp = sketch.get("composite") if isinstance(sketch, dict) else None
        if comp is None:
            return tuple(gr.skip() for _ in range(7))
        a = np.asarray(comp)
        if a.ndim == 3 and a.shape[2] == 4 and a[..., 3].max() == 0:
            return tuple(gr.skip() for _ in range(7))  # empty canvas
        return self.reconstruct(a, model_name, announce=False)  # drawings are always inverted

    def reconstruct_example(self, model_name: str, evt: gr.SelectData):
        """Click on the example gallery -> the example as input, and its (cached) outputs."""
        m = self.models.get(model_name)
        if not m.examples:
            raise gr.Error(f"Model {model_name!r} has no examples.")
        return self.example(model_name, evt.index)

    def example(self, model_name: str, index: int = 0):
        m = self.models.get(model_name)
        if not m.examples:
            return (None,) + tuple(gr.skip() for _ in range(7))
        path = m.examples[int(index) % len(m.examples)]
        key = (model_name, path, os.stat(path).st_mtime_ns)
        if key not in self._example_cache:
            self._example_cache[key] = self.reconstruct(path, model_name)
        return (path,) + self._example_cache[key]

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

    def select_model(self, model_name: str):
        """Model dropdown -> card, example galleries, drawing pad (digit models only), code
        pickers."""
        m = self.models.get(model_name)
        K = m.config.codebook_size
        digits = m.config.in_channels == 1
        ex = [(p, Path(p).stem) for p in m.examples]
        b = m.examples[1 % len(m.examples)] if m.examples else None
        return (
            self.model_card(model_name),
            m.card or "",
            ex,
            gr.update(visible=digits),
            gr.update(visible=not digits),
            ex,
            m.examples[0] if m.examples else None,
            b,
            gr.update(maximum=K - 1, value=int(m.atlas_order[0])),
            gr.update(maximum=K - 1, value=int(m.atlas_order[0])),
        )

    # Codebook
    def codebook(self, model_name: str, view: str = "2-D", codes=None):
        """-> Plotly figure of the codebook's UMAP projection coloured by training-set usage
        (codes of ``codes``, a grid, outlined), and a summary (Markdown)."""
        import plotly.graph_objects as go

        m = self.models.get(model_name)
        if view not in ("2-D", "3-D"):
            raise gr.Error(f"view must be '2-D' or '3-D', got {view!r}")
        in_image = np.zeros(m.config.codebook_size, np.int64)
        has_codes = codes is not None and not (hasattr(codes, "__len__") and len(codes) == 0)
        if isinstance(codes, dict) and not codes.get("data"):
            has_codes = False
        if has_codes:
            in_image = np.bincount(self._grid(m, codes).ravel(), minlength=len(in_image))
        three = view == "3-D"
        xyz = np.asarray(m.info["umap_3d" if three else "umap_2d"], dtype=np.float32)
        u = m.usage
        idx = np.arange(len(u))
        data = np.stack([idx, u, m.ranks, in_image], 1)
        hover = (
            "<b>code %{customdata[0]}</b><br>used %{customdata[1]:,} times "
            "(rank %{customdata[2]})<br>%{customdata[3]} cells of this image<extra></extra>"
        )
        logu = np.log10(1 + u)
        ticks = [0] + [10**t for t in range(1, int(np.log10(max(1, u.max()))) + 1)]
        marker = dict(
            color=logu,
            colorscale="Viridis",
            cmin=0,
            size=4 if three else 7,
            opacity=0.9,
            colorbar=dict(
                title="uses",
                tickvals=np.log10(1 + np.array(ticks)),
                ticktext=[f"{t:,}" for t in ticks],
                thickness=12,
            ),
        )
        sel = in_image > 0
        ring = (
            dict(size=7, color="#e4572e", symbol="diamond")
            if three  # 3-D: no hollow rings
            else dict(size=15, color="rgba(0,0,0,0)", line=dict(color="#e4572e", width=2.5))
        )

        def coords(a):
            return dict(x=a[:, 0], y=a[:, 1], **(dict(z=a[:, 2]) if three else {}))

        Scatter = go.Scatter3d if three else go.Scattergl
        fig = go.Figure(
            [
                Scatter(
                    mode="markers",
                    marker=marker,
                    customdata=data,
                    hovertemplate=hover,
                    name="codes",
                    showlegend=False,
                    **coords(xyz),
                ),
                Scatter(
                    mode="markers",
                    marker=ring,
                    customdata=data[sel],
                    hovertemplate=hover,
                    name="in this image",
                    showlegend=bool(sel.any()),
                    **coords(xyz[sel]),
                ),
            ]
        )
        fig.update_layout(
            height=480,
            margin=dict(l=10, r=10, t=30, b=10),
            template="plotly_white",
            legend=dict(x=0, y=1.06, orientation="h"),
            title=dict(text=f"{m.name}: {len(u)} codes, UMAP {view}", x=0.5, font_size=14),
        )
        if not three:
            fig.update_xaxes(showticklabels=False, title=None)
            fig.update_yaxes(showticklabels=False, title=None, scaleanchor="x")
        else:
            fig.update_scenes(
                xaxis_showticklabels=False,
                yaxis_showticklabels=False,
                zaxis_showticklabels=False,
                xaxis_title="",
                yaxis_title="",
                zaxis_title="",
            )
        used = int((u > 0).sum())
        summary = (
            f"{used} of {len(u)} codes ({100 * used / len(u):.0f}%) are used on the training "
            f"set; usage perplexity {perplexity(torch.as_tensor(u)):.0f}."
        )
        if sel.any():
            summary += (
                f" This image uses **{int(sel.sum())}** distinct codes "
                f"({'red diamonds' if three else 'ringed'})."
            )
        return fig, summary

    def atlas(self, model_name: str):
        """-> the code atlas: (image, caption) per code, most used first."""
        m = self.models.get(model_name)
        files = self.models.atlas(m)
        return [(files[k], f"#{k}") for k in m.atlas_order]

    def atlas_pick(self, model_name: str, evt: gr.SelectData) -> int:
        return int(self.models.get(model_name).atlas_order[evt.index])

    def code(self, model_name: str, index):
        """One code -> (its decoded image, enlarged; details (Markdown); nearest codes
        gallery)."""
        m = self.models.get(model_name)
        K = m.config.codebook_size
        try:
            k = int(index)
            if k != float(index):
                raise ValueError
        except (TypeError, ValueError):
            raise gr.Error(
                f"A code index is a whole number in [0, {K - 1}], got {index!r}."
            ) from None
        if not 0 <= k < K:
            raise gr.Error(f"Code index must be between 0 and {K - 1}, got {k}.")
        files = self.models.atlas(m)
        near, dist = nearest_codes(m.model, k, 8)
        total = max(1, int(m.usage.sum()))
        details = (
            f"### Code {k}\nUsed **{m.usage[k]:,}** times on the training set "
            f"({100 * m.usage[k] / total:.2f}% of all code uses), rank **{m.ranks[k]}** "
            f"of {K}.\n\nNearest codes (embedding distance): "
            + ", ".join(f"{int(j)} ({float(d):.2f})" for j, d in zip(near, dist, strict=False))
        )
        gallery = [(files[int(j)], f"#{int(j)}") for j in near]
        return images.enlarge(m.atlas[k], DISPLAY), details, gallery

    # Edit
    def edit(self, model_name: str, grid):
        """Code grid -> decoded image (enlarged), code map, PNG file (native size), .npy file
        of the codes."""
        m = self.models.get(model_name)
        c = self._grid(m, grid)
        with torch.inference_mode():
            x = m.model.decode(torch.from_numpy(c)[None])
        png, npy = self._out_path(".png"), self._out_path(".npy")
        PIL.Image.fromarray(images.to_uint8(x[0])).save(png)
        np.save(npy, c)
        return (
            images.enlarge(x[0], DISPLAY),
            images.code_map_image(c, m.config.codebook_size, DISPLAY),
            png,
            npy,
        )

    def paint(self, model_name: str, grid, code, evt: gr.SelectData):
        """Click on the code map: set the clicked cell to ``code`` and re-decode."""
        m = self.models.get(model_name)
        c = self._grid(m, grid)
        code = self._code_index(m, code)
        h = c.shape[0]
        cell = max(1, DISPLAY // h)
        x, y = evt.index
        i, j = min(h - 1, int(y) // cell), min(h - 1, int(x) // cell)
        c[i, j] = code
        return (self._table(c),) + self.edit(model_name, c)

    def fill(self, model_name: str, grid, code):
        m = self.models.get(model_name)
        c = self._grid(m, grid)
        c[:] = self._code_index(m, code)
        return (self._table(c),) + self.edit(model_name, c)

    def reset(self, model_name: str, original):
        m = self.models.get(model_name)
        c = self._grid(m, original)
        return (self._table(c),) + self.edit(model_name, c)

    def _code_index(self, m: Model, code) -> int:
        K = m.config.codebook_size
        try:
            k = int(code)
        except (TypeError, ValueError):
            raise gr.Error(f"Choose a code to paint with (0 to {K - 1}).") from None
        if not 0 <= k < K:
            raise gr.Error(f"Code index must be between 0 and {K - 1}, got {k}.")
        return k

    def code_tile(self, model_name: str, code):
        m = self.models.get(model_name)
        try:
            k = self._code_index(m, code)
        except gr.Error:
            return None
        return self.models.atlas(m)[k]

    # Interpolate
    def interpolate(
        self,
        image_a,
        image_b,
        model_name: str,
        frames=24,
        fps=12,
        path: str = "lerp",
        pingpong: bool = True,
    ):
        """Two images -> (animated GIF path, strip of the frames)."""
        m = self.models.get(model_name)
        try:
            n, f = int(frames), float(fps)
        except (TypeError, ValueError):
            raise gr.Error("frames and fps must be numbers.") from None
        if not 2 <= n <= MAX_FRAMES:
            raise gr.Error(f"Number of frames must be between 2 and {MAX_FRAMES}, got {frames}.")
        if not 1 <= f <= MAX_FPS:
            raise gr.Error(f"Frames per second must be between 1 and {MAX_FPS}, got {fps}.")
        if path not in PATHS:
            raise gr.Error(f"Path must be one of {', '.join(PATHS)}, got {path!r}.")
        for side, im in (("A", image_a), ("B", image_b)):
            if im is None:
                raise gr.Error(f"No image {side}: upload one or click an example.")
        a, b = self._input(m, image_a), self._input(m, image_b)
        with torch.inference_mode():
            seq = vqvae.interpolate(m.model, a, b, steps=n, path=path)
        gif = images.write_gif(seq, self._out_path(".gif"), fps=f, pingpong=bool(pingpong))
        return str(gif), images.frame_strip(seq, scale=2, per_row=12)

    def interpolate_if_any(self, image_a, image_b, *args):
        """For page load and model changes: a model without examples is no error."""
        if image_a is None or image_b is None:
            return gr.skip(), gr.skip()
        return self.interpolate(image_a, image_b, *args)

    def interp_example(self, model_name: str, target: str, evt: gr.SelectData):
        """Click on an example: it goes into A or B, and the next click into the other."""
        m = self.models.get(model_name)
        path = m.examples[evt.index]
        if target == "A":
            return path, gr.skip(), "B"
        return gr.skip(), path, "A"


# -- layout ----------------------------------------------------------------------------------

INTRO = """# VQ-VAE explorer
A VQ-VAE squeezes an image into a small grid of **codes**, each an index into a learned
codebook, and decodes the grid back into an image. Pick a model, then look at what it keeps,
what its codes mean, and what happens when you change them."""


def build_app(models_dir=None, examples_dir=None, cache_dir=None) -> gr.Blocks:
    """The app's gr.Blocks. ``models_dir`` (default $VQVAE_MODELS_DIR or pretrained/) holds one
    folder per model; ``examples_dir`` (default $VQVAE_EXAMPLES_DIR or assets/examples) one
    folder of example images per model name."""
    models_dir = models_dir or os.environ.get("VQVAE_MODELS_DIR") or PRETRAINED_DIR
    examples_dir = examples_dir or os.environ.get("VQVAE_EXAMPLES_DIR") or EXAMPLES_DIR
    h = Handlers(models_dir, examples_dir, cache_dir)
    names = h.models.names()
    private = dict(api_visibility="private")
    pix = ["pixelated"]

    with gr.Blocks(title="VQ-VAE explorer", delete_cache=(3600, 3600)) as demo:
        demo.handlers = h  # for tests and benchmarks
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

        with gr.Tabs():
            # 1. Reconstruct ---------------------------------------------------------------
            with gr.Tab("Reconstruct", id="reconstruct"):
                gr.Markdown(
                    "Upload an image, click an example or draw a digit (in *Draw*, pick "
                    "the brush, then draw: it reconstructs as you go). The model "
                    "encodes it to a grid of codes and decodes the grid again; the "
                    "code map shows which code sits where. Images are centre-cropped "
                    "and resized to the model's size; for digit models, dark-on-light "
                    "pictures are inverted to match MNIST."
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
                                recon_btn = gr.Button(
                                    "Reconstruct", elem_id="recon-btn", variant="primary"
                                )
                            with gr.Tab("Draw", id="draw"):
                                no_draw = gr.Markdown(
                                    "The drawing pad is for the digit models "
                                    "(one channel); this model takes colour "
                                    "images.",
                                    visible=False,
                                )
                                sketch = gr.Sketchpad(
                                    label="Draw a digit",
                                    type="numpy",
                                    image_mode="RGBA",
                                    canvas_size=(280, 280),
                                    fixed_canvas=True,
                                    layers=False,
                                    transforms=(),
                                    brush=gr.Brush(
                                        default_size=22, colors=["#000000"], color_mode="fixed"
                                    ),
                                    height=340,
                                )
                        examples = gr.Gallery(
                            elem_id="examples",
                            label="Examples (test set): click one",
                            columns=4,
                            height="auto",
                            allow_preview=False,
                            elem_classes=pix,
                            object_fit="contain",
                        )
                    with gr.Column(scale=5):
                        with gr.Row(equal_height=True):
                            orig = gr.Image(
                                elem_id="orig",
                                label="Input (as the model sees it)",
                                format="png",
                                height=DISPLAY + 64,
                                elem_classes=pix,
                                interactive=False,
                                buttons=["download"],
                            )
                            recon = gr.Image(
                                elem_id="recon",
                                label="Reconstruction",
                                format="png",
                                height=DISPLAY + 64,
                                elem_classes=pix,
                                interactive=False,
                                buttons=["download"],
                            )
                            codemap = gr.Image(
                                elem_id="codemap",
                                label="Code map (index per cell)",
                                format="png",
                                height=DISPLAY + 64,
                                interactive=False,
                                elem_classes=pix,
                                buttons=["download"],
                            )
                        with gr.Row():
                            psnr = gr.Number(
                                elem_id="psnr",
                                label="PSNR (dB)",
                                interactive=False,
                                elem_classes=["numbers"],
                            )
                            used = gr.Number(
                                elem_id="used",
                                label="Distinct codes in this image",
                                interactive=False,
                                elem_classes=["numbers"],
                            )
                            bits = gr.Number(
                                label="Bits per image (h·w·log2 K)",
                                interactive=False,
                                elem_classes=["numbers"],
                            )
                        with gr.Accordion("Code indices as a table", open=False):
                            codes = gr.Dataframe(
                                interactive=False,
                                datatype="number",
                                type="array",
                                label="Code grid",
                                max_height=320,
                            )

            # 2. Codebook ------------------------------------------------------------------
            with gr.Tab("Codebook", id="codebook"):
                gr.Markdown(
                    "Every code is a vector; UMAP lays them out so that similar codes sit "
                    "close together. Colour is how often a code is used on the training "
                    "set (log scale); the codes in your current image are ringed. Hover "
                    "for details. Below, the **atlas** shows what each code decodes to on "
                    "its own (a grid filled with that one code); click one to inspect it."
                )
                with gr.Row():
                    with gr.Column(scale=3):
                        view = gr.Radio(
                            ["2-D", "3-D"],
                            elem_id="view",
                            value="2-D",
                            label="Projection",
                            container=False,
                        )
                        plot = gr.Plot(elem_id="codebook-plot", label="Codebook (UMAP)")
                        summary = gr.Markdown(elem_id="codebook-summary")
                    with gr.Column(scale=2):
                        pick = gr.Number(
                            elem_id="pick", label="Inspect code #", precision=0, minimum=0, value=0
                        )
                        pick_img = gr.Image(
                            label="Decodes to",
                            format="png",
                            height=200,
                            interactive=False,
                            elem_classes=pix,
                        )
                        pick_md = gr.Markdown(
                            elem_id="pick-md",
                        )
                        neighbours = gr.Gallery(
                            label="Nearest codes",
                            columns=8,
                            height=140,
                            allow_preview=False,
                            elem_classes=pix,
                        )
                atlas = gr.Gallery(
                    elem_id="atlas",
                    label="Code atlas (most used first)",
                    columns=16,
                    height=360,
                    allow_preview=False,
                    elem_classes=pix,
                )

            # 3. Edit codes ----------------------------------------------------------------
            with gr.Tab("Edit codes", id="edit"):
                gr.Markdown(
                    "The current image's code grid. Choose a code (type its number or "
                    "click the atlas on the right), then click cells of the code map to "
                    "paint them; the image re-decodes at once. Or edit the numbers in the "
                    "table. *Reset* goes back to the reconstructed image."
                )
                with gr.Row():
                    with gr.Column(scale=3):
                        edit_map = gr.Image(
                            elem_id="edit-map",
                            label="Code map: click a cell to paint it",
                            format="png",
                            height=DISPLAY + 64,
                            interactive=False,
                            elem_classes=pix,
                        )
                    with gr.Column(scale=3):
                        edit_img = gr.Image(
                            elem_id="edit-img",
                            label="Decoded",
                            format="png",
                            height=DISPLAY + 64,
                            interactive=False,
                            elem_classes=pix,
                        )
                    with gr.Column(scale=3, min_width=240):
                        with gr.Row(equal_height=True):
                            paint_code = gr.Number(
                                elem_id="paint-code",
                                label="Paint with code #",
                                precision=0,
                                minimum=0,
                                value=0,
                                scale=2,
                            )
                            paint_tile = gr.Image(
                                height=90,
                                interactive=False,
                                elem_classes=pix,
                                show_label=False,
                                buttons=[],
                                scale=1,
                                min_width=90,
                                container=False,
                            )
                        edit_atlas = gr.Gallery(
                            elem_id="edit-atlas",
                            label="Pick a code",
                            columns=8,
                            height=200,
                            allow_preview=False,
                            elem_classes=pix,
                        )
                        with gr.Row():
                            fill_btn = gr.Button("Fill all cells", size="sm")
                            reset_btn = gr.Button("Reset", size="sm")
                        with gr.Row():
                            dl_png = gr.DownloadButton("Image (.png)", elem_id="dl-png", size="sm")
                            dl_npy = gr.DownloadButton("Codes (.npy)", size="sm")
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

            # 4. Interpolate ---------------------------------------------------------------
            with gr.Tab("Interpolate", id="interpolate"):
                gr.Markdown(
                    "Walk from image A to image B in latent space. **lerp** blends the "
                    "encoder outputs and quantizes each step; **slerp** does so along a "
                    "sphere; **codebook** blends the two quantized grids and decodes "
                    "without re-quantizing. The result is a looping GIF."
                )
                with gr.Row():
                    img_a = image_input(
                        label="A",
                        height=220,
                        elem_classes=["fill-img"],
                        sources=["upload", "clipboard"],
                    )
                    img_b = image_input(
                        label="B",
                        height=220,
                        elem_classes=["fill-img"],
                        sources=["upload", "clipboard"],
                    )
                    with gr.Column(min_width=260):
                        frames = gr.Slider(2, MAX_FRAMES, value=24, step=1, label="Frames")
                        fps = gr.Slider(1, 30, value=12, step=1, label="Frames per second")
                        path = gr.Radio(list(PATHS), value="lerp", label="Path")
                        pingpong = gr.Checkbox(value=True, label="Ping-pong (play back and forth)")
                        interp_btn = gr.Button("Make GIF", elem_id="interp-btn", variant="primary")
                with gr.Row(equal_height=True):
                    interp_ex = gr.Gallery(
                        label="Examples: click to fill",
                        columns=8,
                        height=150,
                        allow_preview=False,
                        elem_classes=pix,
                        scale=3,
                    )
                    target = gr.Radio(
                        ["A", "B"],
                        value="A",
                        label="Next example goes into",
                        scale=1,
                        min_width=160,
                    )
                with gr.Row():
                    gif = gr.Image(
                        elem_id="gif",
                        label="Animation",
                        type="filepath",
                        height=DISPLAY + 64,
                        interactive=False,
                        elem_classes=pix,
                        buttons=["download"],
                        scale=1,
                    )
                    strip = gr.Image(
                        elem_id="strip",
                        label="Frames",
                        format="png",
                        height=DISPLAY + 64,
                        interactive=False,
                        elem_classes=pix,
                        scale=2,
                    )

        # -- events ---------------------------------------------------------------------------
        recon_outs = [orig, recon, codemap, psnr, used, bits, codes]
        edit_outs = [edit_img, edit_map, dl_png, dl_npy]

        # The API: registered first, so these get the plain names (private events that call
        # the same functions are named after them too, with a suffix).
        recon_click = recon_btn.click(
            h.reconstruct, [image, model], recon_outs, api_name="reconstruct"
        )
        view.change(h.codebook, [model, view, codes], [plot, summary], api_name="codebook")
        grid.input(h.edit, [model, grid], edit_outs, api_name="edit")
        interp_btn.click(
            h.interpolate,
            [img_a, img_b, model, frames, fps, path, pingpong],
            [gif, strip],
            api_name="interpolate",
        )
        pick.change(
            h.code,
            [model, pick],
            [pick_img, pick_md, neighbours],
            api_name="code",
            trigger_mode="always_last",
        )

        def after_reconstruct(dep):
            """A new current image: refresh the edit tab and the codebook highlight."""
            return (
                dep.success(h.reset, [model, codes], [grid] + edit_outs, **private)
                .then(lambda c: c, codes, original, **private)
                .then(h.codebook, [model, view, codes], [plot, summary], **private)
            )

        after_reconstruct(recon_click)
        after_reconstruct(image.input(h.reconstruct_if_any, [image, model], recon_outs, **private))
        after_reconstruct(
            examples.select(h.reconstruct_example, [model], [image] + recon_outs, **private)
        )
        after_reconstruct(
            sketch.change(
                h.reconstruct_drawing,
                [sketch, model],
                recon_outs,
                trigger_mode="always_last",
                show_progress="hidden",
                **private,
            )
        )

        atlas.select(h.atlas_pick, [model], pick, **private)
        edit_atlas.select(h.atlas_pick, [model], paint_code, **private)
        paint_code.change(h.code_tile, [model, paint_code], paint_tile, **private)

        edit_map.select(h.paint, [model, grid, paint_code], [grid] + edit_outs, **private)
        fill_btn.click(h.fill, [model, grid, paint_code], [grid] + edit_outs, **private)
        reset_btn.click(h.reset, [model, original], [grid] + edit_outs, **private)

        interp_ex.select(h.interp_example, [model, target], [img_a, img_b, target], **private)

        def on_model(dep):
            """A model was chosen: show its first example, an interpolation, its atlas."""
            after_reconstruct(dep.then(h.example, model, [image] + recon_outs, **private))
            dep.then(
                h.interpolate_if_any,
                [img_a, img_b, model, frames, fps, path, pingpong],
                [gif, strip],
                **private,
            )
            dep.then(h.atlas, model, atlas, **private).then(h.atlas, model, edit_atlas, **private)

        if names:
            sel_outs = [
                card,
                card_full,
                examples,
                sketch,
                no_draw,
                interp_ex,
                img_a,
                img_b,
                pick,
                paint_code,
            ]
            on_model(model.change(h.select_model, model, sel_outs, **private))
            on_model(demo.load(h.select_model, model, sel_outs, **private))
    return demo


def image_input(**kw) -> gr.Image:
    """An image upload whose handler gets the uploaded file's path without Gradio opening it,
    so that vqvae.images.load_image decides what is a usable image and says why not. (An
    instance override rather than a subclass: Gradio writes a .pyi stub beside the source of
    every Image subclass.)"""
    im = gr.Image(type="filepath", image_mode=None, **kw)
    gradio_preprocess = im.preprocess
    im.preprocess = lambda payload: (
        payload.path if payload is not None and payload.path else gradio_preprocess(payload)
    )  # data: URLs: Gradio
    return im


def launch(demo: gr.Blocks, host: str | None = None, port: int | None = None, **kw):
    """Queue with limits and launch; ``host``/``port`` default to GRADIO_SERVER_NAME /
    GRADIO_SERVER_PORT, then 127.0.0.1:7860."""
    h: Handlers = demo.handlers
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=64)
    return demo.launch(
        server_name=host or os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(port or os.environ.get("GRADIO_SERVER_PORT", 7860)),
        theme=gr.themes.Soft(primary_hue="indigo"),
        css=CSS,
        allowed_paths=[str(h.models.examples_dir), str(h.models.cache_dir)],
        max_file_size="25mb",
        show_error=True,
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
    demo = build_app(args.models_dir, args.examples_dir)
    launch(demo, args.host, args.port)


if __name__ == "__main__":
    main()
