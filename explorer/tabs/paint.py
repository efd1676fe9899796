"""Painting codes on a photo's code grid (the Edit codes tab, for grids of any size): a
brush of a radius in cells, or a rectangle between two clicked corners, on the code map.

Each change re-decodes only the cells within the decoder's reach of the painted ones
(``VQVAE.decode_region``) and pastes them into the last decoded picture, which the session
keeps as a :class:`Canvas`: a 512 x 512 photo's stroke costs a small fraction of decoding
the whole grid again, and the patched picture equals a full decode up to float rounding.

The map takes clicks (Gradio's select events on an image), not drawn strokes: a click
reaches the server as one (x, y) pair, exact to the cell, where a drawing component sends
the whole canvas as image layers each time, to be compared with the map to find the stroke.
So a rectangle is two clicks, its opposite corners, rather than a drag."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import NamedTuple

import gradio as gr
import numpy as np
import PIL.Image
import torch

from vqvae import grid, images, viz

from .. import inputs
from ..files import OutputFiles
from ..settings import EDIT_MAP
from ..store import Model

TOOLS = (("Brush", "brush"), ("Rectangle: click two corners", "rectangle"))
MAX_RADIUS = 16  # cells: a brush stroke stays a small part of a 1 MP photo's grid


@dataclass(frozen=True)
class Canvas:
    """A photo's code grid being edited and its decode, kept in the session between
    clicks (never sent to the page; a 1 MP photo's picture is 12 MB of floats, gone with the
    session when its page closes). Changes make a new Canvas: a failed event leaves the last
    one as it was."""

    model: str  # the name of the model the codes belong to
    codes: np.ndarray  # (h, w) int64
    picture: torch.Tensor  # (1, C, h d, w d) float in [0, 1]: the decode of ``codes``
    corner: tuple[int, int] | None = None  # a rectangle's first corner, awaiting the second


class Painted(NamedTuple):
    canvas: Canvas
    image: str  # the decoded picture at its own size (a PNG file, also the download)
    photo_map: PIL.Image.Image  # the code map, EDIT_MAP px on its longer side
    png: str
    npy: str  # the code grid
    note: str  # Markdown: what the click did


def brush(shape, cell, radius: int) -> np.ndarray:
    """The cells (bool (h, w)) of a round brush of ``radius`` cells centred on ``cell``
    (row, column): those whose centres lie within radius + 1/2 of its centre; radius 0 is
    the cell alone."""
    i, j = np.ogrid[: shape[0], : shape[1]]
    return (i - cell[0]) ** 2 + (j - cell[1]) ** 2 <= (radius + 0.5) ** 2


def rectangle(shape, a, b) -> np.ndarray:
    """The cells (bool (h, w)) of the rectangle with opposite corners ``a`` and ``b``
    (row, column), both included."""
    mask = np.zeros(shape, dtype=bool)
    (r0, r1), (c0, c1) = sorted((a[0], b[0])), sorted((a[1], b[1]))
    mask[r0 : r1 + 1, c0 : c1 + 1] = True
    return mask


def start(m: Model, codes: np.ndarray) -> Canvas:
    """A canvas of ``codes`` (h, w), decoded whole."""
    with torch.inference_mode():
        picture = m.model.decode_codes(torch.from_numpy(codes)[None])
    return Canvas(m.name, codes, picture)


def paint(m: Model, canvas: Canvas, mask: np.ndarray, code: int) -> tuple[Canvas, tuple]:
    """``canvas`` with the cells of ``mask`` set to ``code`` -> (the new canvas, the box of
    cells decoded again, (top, left, bottom, right), or () if no cell changed). The box is
    the changed cells' bounding box widened by the decoder's reach: only its pixels can
    differ from the last picture's."""
    changed = mask & (canvas.codes != code)
    if not changed.any():
        return dataclasses.replace(canvas, corner=None), ()
    codes = canvas.codes.copy()
    codes[changed] = code
    rows, cols = np.nonzero(changed)
    changed_box = (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
    box = grid.widen(changed_box, m.model.decoder_halo, codes.shape)
    with torch.inference_mode():
        patch = m.model.decode_region(torch.from_numpy(codes)[None], box)
    d = m.config.downsample
    picture = canvas.picture.clone()
    picture[..., box[0] * d : box[2] * d, box[1] * d : box[3] * d] = patch
    return Canvas(canvas.model, codes, picture), box


def photo_map(m: Model, canvas: Canvas) -> PIL.Image.Image:
    """The canvas's code map, EDIT_MAP px on its longer side, a rectangle's first corner
    veiled."""
    im = images.code_map_image(canvas.codes, m.config.codebook_size, EDIT_MAP)
    if canvas.corner is None:
        return im
    return viz.mark_cells(im, rectangle(canvas.codes.shape, canvas.corner, canvas.corner), EDIT_MAP)


def check_canvas(m: Model, canvas) -> Canvas:
    """The session's canvas, if it belongs to model ``m``; else gr.Error."""
    if not isinstance(canvas, Canvas) or canvas.model != m.name:
        raise gr.Error("There is no photo to paint on for this model: reconstruct one first.")
    return canvas


def painted(m: Model, canvas: Canvas, files: OutputFiles, note: str = "") -> Painted:
    """The outputs of a canvas: its picture written once as a PNG (shown and downloaded)."""
    png, npy = files.new(".png"), files.new(".npy")
    # compress_level 1: a 512 x 512 picture in ~15 ms instead of ~60, for a few % more bytes
    PIL.Image.fromarray(images.to_uint8(canvas.picture[0])).save(png, compress_level=1)
    np.save(npy, canvas.codes)
    return Painted(canvas, png, photo_map(m, canvas), png, npy, note)


def click(
    m: Model, canvas, code, tool: str, radius, evt, files: OutputFiles
) -> Painted:  # fmt: skip
    """A click on the photo's code map: paint a brush of ``radius`` cells with ``code``,
    or (``tool`` "rectangle") remember the first corner, then fill the rectangle to the
    second."""
    canvas = check_canvas(m, canvas)
    code = inputs.code_index(m, code)
    if tool not in dict(TOOLS).values():
        raise gr.Error(f"The tool must be 'brush' or 'rectangle', got {tool!r:.20}.")
    radius = inputs.whole_number(radius, 0, MAX_RADIUS, "The brush radius")
    cell = inputs.clicked_cell(evt, canvas.codes.shape, EDIT_MAP)
    shape = canvas.codes.shape
    if tool == "rectangle" and canvas.corner is None:
        note = f"Corner at row {cell[0]}, column {cell[1]}: now click the opposite corner."
        return painted(m, dataclasses.replace(canvas, corner=cell), files, note)
    if tool == "rectangle":
        mask, what = rectangle(shape, canvas.corner, cell), "rectangle"
    else:
        mask, what = brush(shape, cell, radius), f"brush of radius {radius}"
    t0 = time.perf_counter()
    new, box = paint(m, canvas, mask, code)
    if not box:
        return painted(m, new, files, f"Those cells hold code {code} already.")
    seconds = time.perf_counter() - t0
    cells = (box[2] - box[0]) * (box[3] - box[1])
    return painted(
        m, new, files,
        f"Painted code {code} ({what}, {int(mask.sum())} cells): re-decoded {cells} of "
        f"{math.prod(shape)} cells in {seconds:.2f} s.",
    )  # fmt: skip
