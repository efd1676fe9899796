"""Painting codes on a photo's code grid (the Edit codes tab, for grids of any size): a
brush of a radius in cells, or a rectangle between two clicked corners, on the code map.

Each change re-decodes only the cells within the decoder's reach of the painted ones
(``VQVAE.decode_region``) and pastes them into the last decoded picture, which the session
keeps as a :class:`Canvas`: a 512 x 512 photo's stroke costs a small fraction of decoding
the whole grid again, and the patched picture equals a full decode up to float rounding.

The map takes clicks (Gradio's select events on an image), not drawn strokes: a click
reaches the server as one (x, y) pair, exact to the cell, where a drawing component sends
the whole canvas as image layers each time, to be compared with the map to find the stroke.
So a rectangle is two clicks, its opposite corners, rather than a drag.

With the model's grid prior (:class:`vqvae.GridPrior`, a prior for code grids of any size),
cells marked on the map are resampled given the others (:func:`resample`). Marks are made
with the same two-corner clicks as the rectangle: a region to redraw is an area, not a
stroke, and one click reaches the server as one cell, so two clicks mark hundreds of cells
where a brush of marks would take a click per dab. Marked rectangles add up until the marks
are cleared."""

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
from vqvae.grid_prior import GRID_PRIOR_WEIGHTS

from .. import inputs
from ..files import OutputFiles
from ..settings import EDIT_MAP, RESAMPLE_BOX
from ..store import Model

TOOLS = (
    ("Brush", "brush"),
    ("Rectangle: click two corners", "rectangle"),
    ("Mark a rectangle to resample", "mark"),
)
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
    marks: np.ndarray | None = None  # (h, w) bool: the cells marked to resample


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
    """``canvas`` with the cells of ``mask`` set to ``code``: see :func:`redecode`."""
    codes = canvas.codes.copy()
    codes[mask] = code
    return redecode(m, canvas, codes)


def redecode(m: Model, canvas: Canvas, codes: np.ndarray) -> tuple[Canvas, tuple]:
    """``canvas`` with its codes replaced by ``codes`` (h, w) -> (the new canvas, the box of
    cells decoded again, (top, left, bottom, right), or () if no cell changed). The box is
    the changed cells' bounding box widened by the decoder's reach: only its pixels can
    differ from the last picture's."""
    changed = codes != canvas.codes
    if not changed.any():
        return dataclasses.replace(canvas, corner=None), ()
    rows, cols = np.nonzero(changed)
    changed_box = (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
    box = grid.widen(changed_box, m.model.decoder_halo, codes.shape)
    with torch.inference_mode():
        patch = m.model.decode_region(torch.from_numpy(codes)[None], box)
    d = m.config.downsample
    picture = canvas.picture.clone()
    picture[..., box[0] * d : box[2] * d, box[1] * d : box[3] * d] = patch
    return dataclasses.replace(canvas, codes=codes, picture=picture, corner=None), box


def photo_map(m: Model, canvas: Canvas) -> PIL.Image.Image:
    """The canvas's code map, EDIT_MAP px on its longer side, the marked cells and a
    rectangle's first corner veiled."""
    im = images.code_map_image(canvas.codes, m.config.codebook_size, EDIT_MAP)
    veiled = np.zeros(canvas.codes.shape, bool) if canvas.marks is None else canvas.marks
    if canvas.corner is not None:
        veiled = veiled | rectangle(canvas.codes.shape, canvas.corner, canvas.corner)
    return viz.mark_cells(im, veiled, EDIT_MAP) if veiled.any() else im


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
    or (``tool`` "rectangle" or "mark") remember the first corner, then fill the rectangle
    to the second with ``code`` or add it to the marked cells."""
    canvas = check_canvas(m, canvas)
    code = inputs.code_index(m, code)
    if tool not in dict(TOOLS).values():
        raise gr.Error(f"The tool must be 'brush', 'rectangle' or 'mark', got {tool!r:.20}.")
    radius = inputs.whole_number(radius, 0, MAX_RADIUS, "The brush radius")
    cell = inputs.clicked_cell(evt, canvas.codes.shape, EDIT_MAP)
    shape = canvas.codes.shape
    if tool != "brush" and canvas.corner is None:
        note = f"Corner at row {cell[0]}, column {cell[1]}: now click the opposite corner."
        return painted(m, dataclasses.replace(canvas, corner=cell), files, note)
    if tool == "mark":
        return mark(m, canvas, rectangle(shape, canvas.corner, cell), files)
    if tool == "rectangle":
        mask, what = rectangle(shape, canvas.corner, cell), "rectangle"
    else:
        mask, what = brush(shape, cell, radius), f"brush of radius {radius}"
    t0 = time.perf_counter()
    new, box = paint(m, canvas, mask, code)
    if not box:
        return painted(m, new, files, f"Those cells hold code {code} already.")
    seconds = time.perf_counter() - t0
    return painted(
        m, new, files,
        f"Painted code {code} ({what}, {int(mask.sum())} cells): {_redecoded(box, shape)} "
        f"in {seconds:.2f} s.",
    )  # fmt: skip


def _redecoded(box, shape) -> str:
    cells = (box[2] - box[0]) * (box[3] - box[1])
    return f"re-decoded {cells} of {math.prod(shape)} cells"


# -- resampling marked cells with the grid prior ---------------------------------------------


def no_grid_prior(m: Model) -> str:
    """Why model ``m``'s photo cells cannot be resampled, and how to make it possible
    (Markdown)."""
    return (
        f"*Resample* needs a grid prior (a prior for code grids of any size), and model "
        f"**{m.name}** has none (no `{GRID_PRIOR_WEIGHTS}` in its folder): train one with "
        f"`python -m train.grid_prior --vqvae {m.name}` and put the `grid_prior.*` files it "
        "writes into the model's folder."
    )


def mark(m: Model, canvas: Canvas, mask: np.ndarray, files: OutputFiles) -> Painted:
    """``canvas`` with the cells of ``mask`` (bool (h, w)) added to its marks."""
    marks = mask if canvas.marks is None else canvas.marks | mask
    new = dataclasses.replace(canvas, corner=None, marks=marks)
    if m.grid_prior is None:
        then = no_grid_prior(m)
    else:
        then = "*Resample* draws new codes for them; *Clear marks* unmarks them."
    note = f"Marked {int(mask.sum())} cells ({int(marks.sum())} in all). {then}"
    return painted(m, new, files, note)


def clear_marks(m: Model, canvas, files: OutputFiles) -> Painted:
    """``canvas`` with no cells marked (and no rectangle corner pending)."""
    canvas = check_canvas(m, canvas)
    return painted(m, dataclasses.replace(canvas, corner=None, marks=None), files, "No marks.")


def resample(m: Model, canvas, temperature, seed, files: OutputFiles) -> Painted:
    """New codes for the canvas's marked cells, drawn from the model's grid prior given
    every other cell (``GridPrior.complete``: five passes of its network, each cell given
    the kept cells and those drawn in earlier passes), at ``temperature``; ``seed`` -1 or
    None: a fresh one, named in the note. The marks stay, to draw again."""
    canvas = check_canvas(m, canvas)
    if m.grid_prior is None:
        raise gr.Error(inputs.plain_text(no_grid_prior(m)), title="No grid prior")
    if canvas.marks is None or not canvas.marks.any():
        raise gr.Error(
            "No cells are marked: choose the tool 'Mark a rectangle to resample' and click "
            "two opposite corners of the region first."
        )
    rows, cols = np.nonzero(canvas.marks)
    span = (rows.max() + 1 - rows.min()) * (cols.max() + 1 - cols.min())
    if span > RESAMPLE_BOX:
        raise gr.Error(
            f"The marked cells span a box of {span:,} cells; at most {RESAMPLE_BOX:,} are "
            "resampled at once (a 512 x 512 photo's grid): clear the marks and resample the "
            "region in parts."
        )
    options = inputs.sampling(m, temperature, 0, 1.0, seed)
    seed = options["generator"].initial_seed()
    t0 = time.perf_counter()
    with torch.inference_mode():
        codes = m.grid_prior.complete(
            torch.from_numpy(canvas.codes)[None],
            torch.from_numpy(~canvas.marks),
            temperature=options["temperature"],
            generator=options["generator"],
        )[0].numpy()
    t1 = time.perf_counter()
    new, box = redecode(m, canvas, codes)
    t2 = time.perf_counter()
    n = int(canvas.marks.sum())
    changed = int((codes != canvas.codes).sum())
    note = (
        f"Resampled {n} marked cells at temperature {options['temperature']:g} with seed "
        f"**{seed}** (enter it as the seed to draw the same again): {changed} codes changed, "
        f"drawn in {t1 - t0:.2f} s"
    )
    if box:
        note += f", {_redecoded(box, canvas.codes.shape)} in {t2 - t1:.2f} s"
    return painted(m, new, files, note + ".")


NOTE = (
    "A photo's grid, at its own resolution: click the map to paint a round brush of the "
    "radius you set, or click two opposite corners to fill a rectangle. Only the cells "
    "near the change are decoded again. With the model's grid prior (a prior for code "
    "grids of any size), mark rectangles and *Resample* them: each marked cell is drawn "
    "given the cells around it. The surprise shading and the thumbnail prior's class "
    "need a thumbnail (reconstruct the image *as trained* to use them)."
)


def tools(big: dict) -> tuple[gr.Column, dict]:
    """A photo's code map, its brush and its resampling: (the column, its components by
    role). ``big``: the code map's image options."""
    with gr.Column(visible=False) as column:
        label = "Code map: click to paint or mark"
        photo_map = gr.Image(elem_id="photo-map", label=label, **{**big, "format": "png"})
        note = gr.Markdown(elem_id="paint-note")  # what the last click did
        tool = gr.Radio(TOOLS, value="brush", label="Tool", elem_id="paint-tool")
        radius = gr.Slider(
            0, MAX_RADIUS, value=2, step=1, label="Brush radius (cells)", elem_id="brush-radius"
        )
        with gr.Row():
            resample = gr.Button(
                "Resample marked cells", elem_id="photo-resample", size="sm", variant="primary"
            )
            clear = gr.Button("Clear marks", size="sm")
        with gr.Row():
            temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature")
            seed = gr.Number(
                value=-1, label="Seed (-1: a new one each click)", precision=None, minimum=-1
            )
        gr.Markdown(NOTE)
    return column, dict(
        photo_map=photo_map, note=note, tool=tool, radius=radius, resample=resample,
        clear=clear, temperature=temperature, seed=seed,
    )  # fmt: skip
