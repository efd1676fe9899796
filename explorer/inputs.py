"""What events receive, checked. Any client can call any event with any values, so every
input is parsed here into what the library expects, or refused with a ``gr.Error`` that
says what was expected (never a traceback, never a server path)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import gradio as gr
import numpy as np
import PIL.Image
import torch

from vqvae import images

from . import settings
from .store import Model, ModelStore


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


def code_index(m: Model, code) -> int:
    """A code index in [0, K)."""
    return whole_number(code, 0, m.config.codebook_size - 1, "The code index")


def clicked_cell(evt, shape: tuple[int, int], display: int) -> tuple[int, int]:
    """The (row, column) of a click on a code map of ``shape`` cells drawn ``display`` px wide."""
    try:
        return images.code_map_cell(getattr(evt, "index", None), shape, display)
    except ValueError as e:
        raise gr.Error(f"Click a cell of the code map ({e}).") from None


def dragged_cells(points, shape: tuple[int, int], display: int, most: int) -> list:
    """The cells (row, column) of a drag's path over a code map of ``shape`` cells drawn
    ``display`` px wide: ``points`` a JSON list of at most ``most`` [x, y] pixel pairs (as
    the page sends them); points off the map count at its nearest edge (a drag may leave
    it). Consecutive repeats are dropped. gr.Error for anything else."""
    try:
        xy = np.asarray(json.loads(points) if isinstance(points, str) else points, float)
    except (TypeError, ValueError, RecursionError):
        xy = None
    if xy is None or xy.ndim != 2 or xy.shape[1:] != (2,) or not 1 <= len(xy) <= most:
        raise gr.Error(f"A drag is a list of 1 to {most} [x, y] points on the code map.")
    if not np.isfinite(xy).all():
        raise gr.Error("A drag's points must be finite numbers.")
    cell = images.code_map_cell_size(shape, display)
    right, bottom = shape[1] * cell - 1e-6, shape[0] * cell - 1e-6
    cells = [images.code_map_cell((min(max(x, 0.0), right), min(max(y, 0.0), bottom)), shape,
                                  display) for x, y in xy]  # fmt: skip
    return [c for k, c in enumerate(cells) if k == 0 or c != cells[k - 1]]


class TableError(ValueError):
    """A table that is not a table of numbers of the expected size."""


def _rows(value) -> list | np.ndarray | None:
    """The rows of a table as Gradio sends it: {"data": rows}, a DataFrame, lists or an array."""
    if isinstance(value, dict):
        value = value.get("data")
    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    return value


def _empty(rows) -> bool:
    return rows is None or (hasattr(rows, "__len__") and len(rows) == 0)


def parse_table(
    value, max_shape: tuple[int, int], *, blank: float, max_cells: int | None = None
) -> np.ndarray | None:
    """A table of numbers as a float array; None when it is empty. Blank cells become
    ``blank``. Raises :class:`TableError` for anything that is not a 2-D table of numbers of
    at most ``max_shape`` and ``max_cells`` (default: all of ``max_shape``), checked row by
    row before any array is built, so a huge request costs nothing; the caller checks the
    exact shape and the values."""
    rows = _rows(value)
    if _empty(rows):
        return None
    h, w = max_shape
    if isinstance(rows, np.ndarray):
        if rows.ndim != 2 or rows.shape[0] > h or rows.shape[1] > w:
            raise TableError
    elif not isinstance(rows, (list, tuple)) or len(rows) > h:
        raise TableError
    elif any(not isinstance(r, (list, tuple, np.ndarray)) or len(r) > w for r in rows):
        raise TableError
    if max_cells is not None and sum(len(r) for r in rows) > max_cells:
        raise TableError

    def number(v) -> float:
        if isinstance(v, str):
            v = v.strip()
            return float(v) if v else blank
        if v is None:
            return blank
        return float(v)

    try:
        a = np.array(rows, dtype=object)
        if a.ndim != 2:
            raise TableError
        return np.vectorize(number, otypes=[float])(a)
    except (ValueError, TypeError, OverflowError):
        raise TableError from None


def takes_photos(m: Model) -> bool:
    """Colour models read photos at their own resolution; digit models their thumbnails."""
    return m.config.in_channels == 3


def is_thumbnail(m: Model, c: np.ndarray) -> bool:
    """Whether code grid ``c`` is the model's thumbnail grid (the one its prior knows)."""
    return c.shape == (m.config.latent_size, m.config.latent_size)


def photo_cells(m: Model) -> int:
    """The most codes a photo's grid has: the largest photo's pixels over a cell's."""
    return settings.MAX_PHOTO_PIXELS // m.config.downsample**2


def _table_bounds(m: Model) -> dict:
    """What a code table for ``m`` may hold before its exact check (parse_table's bounds),
    with room for a clear message on near misses: twice the thumbnail grid a side, or for a
    colour model photo grids up to the longest side and four times the cells."""
    if takes_photos(m):
        side = settings.MAX_PHOTO_SIDE // m.config.downsample
        return dict(max_shape=(side, side), max_cells=4 * photo_cells(m))
    return dict(max_shape=(2 * m.config.latent_size, 2 * m.config.latent_size))


def code_grid(m: Model, grid) -> np.ndarray:
    """A code grid (h, w) int64 from a table; gr.Error unless it is whole numbers in [0, K)
    of the model's thumbnail grid (h = w = latent size) or, for a colour model, the grid of
    any photo within the size cap."""
    s = m.config.latent_size
    K = m.config.codebook_size
    photo = takes_photos(m)
    what = f"{s}x{s}" + (" (or a photo's grid)" if photo else "")
    try:
        f = parse_table(grid, blank=np.nan, **_table_bounds(m))
    except TableError:
        raise gr.Error(f"The code grid must be a {what} table of whole numbers.") from None
    if f is None:
        raise gr.Error("The code grid is empty: reconstruct an image first.")
    if not is_thumbnail(m, f) and not (photo and f.size <= photo_cells(m)):
        raise gr.Error(
            f"The code grid must be {what} for model {m.name!r}, got {f.shape[0]}x{f.shape[1]}."
        )
    if not np.isfinite(f).all() or (f != np.round(f)).any():
        raise gr.Error("Every cell of the code grid must be a whole number.")
    if f.min() < 0 or f.max() >= K:
        raise gr.Error(
            f"Code indices must be between 0 and {K - 1}; got values from "
            f"{int(f.min())} to {int(f.max())}."
        )
    return f.astype(np.int64)


def thumbnail_grid(m: Model, c: np.ndarray, what: str) -> np.ndarray:
    """``c`` if it is the model's thumbnail grid (what its prior knows), else gr.Error
    saying that ``what`` works on thumbnails."""
    s = m.config.latent_size
    if not is_thumbnail(m, c):
        raise gr.Error(
            f"{what} works on {s}x{s} grids, the thumbnails the prior was trained on; this "
            f"grid is {c.shape[0]}x{c.shape[1]} (a photo): reconstruct it as a thumbnail."
        )
    return c


def has_table(value) -> bool:
    """Whether ``value`` holds a table with at least one row (an empty one means "none")."""
    return not _empty(_rows(value))


def marks(m: Model, value, *, strict: bool = True) -> np.ndarray:
    """A (h, w) bool mask from a table of 0/1 (or bools); empty: nothing marked. A table of
    another shape is a gr.Error, or (``strict=False``, e.g. after a model change) nothing
    marked."""
    h = w = m.config.latent_size
    none = np.zeros((h, w), dtype=bool)
    try:
        f = parse_table(value, (2 * h, 2 * w), blank=0.0)
    except TableError:
        if not strict:
            return none
        raise gr.Error(f"The marks must be a {h}x{w} table of 0 and 1.") from None
    if f is None:
        return none
    if f.shape != (h, w):
        if not strict:
            return none
        raise gr.Error(
            f"The marks must be {h}x{w} for model {m.name!r}, got {f.shape[0]}x{f.shape[1]}."
        )
    if not np.isin(f, (0.0, 1.0)).all():
        if not strict:
            return none
        raise gr.Error("Every cell of the marks must be 0 (kept) or 1 (marked).")
    return f.astype(bool)


def table(a: np.ndarray):
    """A 2-D array as the DataFrame a gr.Dataframe shows (columns named 0, 1, ...)."""
    import pandas as pd

    return pd.DataFrame(a, columns=[str(j) for j in range(a.shape[1])])


def photo_input(
    m: Model, source, *, announce: bool = True, max_pixels: int = settings.MAX_PHOTO_PIXELS
) -> torch.Tensor:
    """A colour model's input at the image's own resolution (1, 3, H, W) in [0, 1],
    downscaled (never cropped) above ``max_pixels`` (the photo size cap)."""
    if not (source is None or isinstance(source, (str, Path, np.ndarray, PIL.Image.Image))):
        raise gr.Error("An image is a file path or an array.", title="Unusable image")
    try:
        x, notes = images.load_photo(source, channels=3, max_pixels=max_pixels)
    except images.ImageError as e:
        raise gr.Error(str(e), title="Unusable image") from e
    if notes and announce:
        gr.Info("Input: " + "; ".join(notes) + ".", duration=4)
    return x


def choose_colour(names: Sequence[str]) -> str:
    """What to choose for a photo: the colour models ``names`` by name, in the Model menu."""
    if not names:
        return "choose a colour model for photos."
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return f"for photos choose {listed} in the Model menu."


def model_input(
    m: Model, source, *, announce: bool = True, models: ModelStore | None = None
) -> torch.Tensor:
    """The model's input tensor (1, C, S, S) in [0, 1] from an image path / array / PIL image.
    ``announce``: tell the user how the input was adjusted (inverted, alpha flattened...).
    A colour picture sent to a greyscale model is refused, naming the colour models of
    ``models`` to choose instead (looked up only then)."""
    if not (source is None or isinstance(source, (str, Path, np.ndarray, PIL.Image.Image))):
        raise gr.Error("An image is a file path or an array.", title="Unusable image")
    try:
        im, notes = images.load_image(source)
        if m.config.in_channels == 1 and images.is_colour(im):
            raise images.ColourImageError(
                f"This is a colour picture, and model {m.name!r} reads greyscale images (it "
                f"would turn it into grey mush): "
                + choose_colour(models.colour_names() if models is not None else ())
            )
        x, inverted = images.to_model_input(im, m.config.in_channels, m.config.image_size)
    except images.ImageError as e:
        raise gr.Error(str(e), title="Unusable image") from e
    if inverted:
        notes.append("inverted to light-on-dark, as the model was trained on")
    if notes and announce:
        gr.Info("Input: " + "; ".join(notes) + ".", duration=4)
    return x


def class_label(m: Model, label) -> int | None:
    """The class index of a class name of the model's prior ("any" or None: no class)."""
    if label is None or label == "any":
        return None
    names = m.prior.config.class_names if m.prior is not None else []
    if not isinstance(label, str) or label not in names:
        raise gr.Error(
            f"Unknown class {repr(label)[:40]}: choose 'any' or one of {', '.join(names)}."
        )
    return names.index(label)


def sampling(m: Model, temperature, top_k, guidance, seed) -> dict:
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
    return dict(temperature=t, top_k=k, guidance=g, generator=torch.Generator().manual_seed(seed))


def plain_text(markdown: str) -> str:
    """Markdown with emphasis and code spans as plain text (for an error message)."""
    return markdown.replace("*", "").replace("`", "'")


def no_prior_text(m: Model) -> str:
    """Why the model has no prior, as plain text (for an error message)."""
    return plain_text(m.no_prior)


def prior(m: Model):
    """The model's prior, or gr.Error saying why it has none."""
    if m.prior is None:
        raise gr.Error(no_prior_text(m), title="No prior")
    return m.prior
