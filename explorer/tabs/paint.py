"""Painting codes on a photo's code grid (the Edit codes tab, for grids of any size): a
brush of a radius in cells, clicked or dragged, or a rectangle dragged or between two
clicked corners, on the code map.

Each change re-decodes only the cells within the decoder's reach of the painted ones
(``VQVAE.decode_region``) and pastes them into the last decoded picture, which the session
keeps as a :class:`Canvas`: a 512 x 512 photo's stroke costs a small fraction of decoding
the whole grid again, and the patched picture equals a full decode up to float rounding.

The map takes clicks (Gradio's select events on an image) and drags: a click reaches the
server as one (x, y) pair, exact to the cell; a drag as the pointer's path, a list of (x, y)
pairs the page collects while the button is down (:data:`DRAG_JS`) and sends on release
(:func:`drag`), where a drawing component would send the whole canvas as image layers each
time, to be compared with the map to find the stroke. A dragged brush paints every cell
within its radius of the path; a dragged rectangle spans the drag's first and last points.

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
    ("Rectangle: drag, or click two corners", "rectangle"),
    ("Mark a rectangle to resample: drag, or click two corners", "mark"),
)
MAX_RADIUS = 16  # cells: a brush stroke stays a small part of a 1 MP photo's grid
MAX_STROKE = 4096  # points of a dragged path the server takes (a long drag sends ~60 a second)


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


def along(shape, cells, radius: int) -> np.ndarray:
    """The cells (bool (h, w)) a brush of ``radius`` cells covers dragged through ``cells``
    ((row, column) pairs in order): every cell within radius + 1/2 of a cell on the straight
    steps between consecutive ones (a fast drag's points can be cells apart)."""
    path = np.zeros(shape, dtype=bool)
    for (r0, c0), (r1, c1) in zip(cells, cells[1:] or cells, strict=False):
        n = max(abs(r1 - r0), abs(c1 - c0), 1)
        t = np.arange(n + 1) / n
        rows, cols = np.rint(r0 + (r1 - r0) * t), np.rint(c0 + (c1 - c0) * t)
        path[rows.astype(int), cols.astype(int)] = True
    disk = torch.from_numpy(brush((2 * radius + 1,) * 2, (radius, radius), radius)).float()
    hits = torch.nn.functional.conv2d(
        torch.from_numpy(path).float()[None, None], disk[None, None], padding=radius
    )
    return hits[0, 0].numpy() > 0


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
    _check_tool(tool)
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
    return _paint_mask(m, canvas, mask, code, what, files)


def drag(
    m: Model, canvas, code, tool: str, radius, points, files: OutputFiles
) -> Painted:  # fmt: skip
    """A drag over the photo's code map, ``points`` the pointer's path in the map's pixels (a
    JSON list of [x, y] pairs, as :data:`DRAG_JS` sends it; points off the map are moved to
    its edge): paint a brush of ``radius`` cells along it with ``code``, or (``tool``
    "rectangle" or "mark") fill or mark the rectangle from its first point to its last."""
    canvas = check_canvas(m, canvas)
    code = inputs.code_index(m, code)
    _check_tool(tool)
    radius = inputs.whole_number(radius, 0, MAX_RADIUS, "The brush radius")
    cells = inputs.dragged_cells(points, canvas.codes.shape, EDIT_MAP, MAX_STROKE)
    shape = canvas.codes.shape
    if tool == "mark":
        return mark(m, canvas, rectangle(shape, cells[0], cells[-1]), files)
    if tool == "rectangle":
        mask, what = rectangle(shape, cells[0], cells[-1]), "dragged rectangle"
    else:
        mask, what = along(shape, cells, radius), f"brush of radius {radius} dragged"
    return _paint_mask(m, canvas, mask, code, what, files)


def _check_tool(tool: str) -> None:
    if tool not in dict(TOOLS).values():
        raise gr.Error(f"The tool must be 'brush', 'rectangle' or 'mark', got {tool!r:.20}.")


def _paint_mask(m: Model, canvas: Canvas, mask, code: int, what: str, files) -> Painted:
    """``canvas`` with the cells of ``mask`` set to ``code``, and a note of what that did."""
    t0 = time.perf_counter()
    new, box = paint(m, canvas, mask, code)
    if not box:
        return painted(m, new, files, f"Those cells hold code {code} already.")
    seconds = time.perf_counter() - t0
    return painted(
        m, new, files,
        f"Painted code {code} ({what}, {int(mask.sum())} cells): "
        f"{_redecoded(box, canvas.codes.shape)} in {seconds:.2f} s.",
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
            "No cells are marked: choose the tool 'Mark a rectangle to resample' and drag "
            "over the region (or click two opposite corners of it) first."
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
    "A photo's grid, at its own resolution: click or drag on the map to paint a round brush "
    "of the radius you set; drag a rectangle, or click two opposite corners, to fill it. "
    "Only the cells "
    "near the change are decoded again. With the model's grid prior (a prior for code "
    "grids of any size), mark rectangles and *Resample* them: each marked cell is drawn "
    "given the cells around it. The surprise shading and the thumbnail prior's class "
    "need a thumbnail (reconstruct the image *as trained* to use them)."
)


def tools(big: dict) -> tuple[gr.Column, dict]:
    """A photo's code map, its brush and its resampling: (the column, its components by
    role). ``big``: the code map's image options."""
    with gr.Column(visible=False) as column:
        label = "Code map: click or drag to paint or mark"
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
        # what a drag sends: the page fills the path and presses the button (DRAG_JS)
        path = gr.Textbox(elem_id="paint-path", elem_classes="vq-hidden", show_label=False)
        drag = gr.Button("drag", elem_id="paint-drag", elem_classes="vq-hidden")
    return column, dict(
        photo_map=photo_map, note=note, tool=tool, radius=radius, resample=resample,
        clear=clear, temperature=temperature, seed=seed, path=path, drag=drag,
    )  # fmt: skip


# A drag over the photo's code map: while the button is down the page collects the pointer's
# path in the map's own pixels and draws it (a line for the brush, a box for the rectangle
# tools); on release it keeps the path in window.vqPath and presses the hidden #paint-drag,
# whose event sends it (SEND_PATH_JS). A press without a move of 5 px is a click, left to the
# map's select event; the click a drag ends in is swallowed. Installed once.
DRAG_JS = """() => {
  if (window.vqDragOn) return [];
  window.vqDragOn = true;
  const MOST = MAX_STROKE;
  let drag = null;
  const onMap = (t) => t && t.tagName === 'IMG' && t.closest && t.closest('#photo-map');
  const fit = (img) => {
    const r = img.getBoundingClientRect();
    const k = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
    return {r, k, x: (r.width - img.naturalWidth * k) / 2,
            y: (r.height - img.naturalHeight * k) / 2};
  };
  const mapXY = (img, e) => {
    const f = fit(img);
    return [(e.clientX - f.r.left - f.x) / f.k, (e.clientY - f.r.top - f.y) / f.k];
  };
  const draw = (d) => {
    if (!d.canvas) {
      const c = document.createElement('canvas');
      c.className = 'paint-path';
      d.img.parentElement.style.position = 'relative';
      Object.assign(c.style, {position: 'absolute', pointerEvents: 'none',
        left: d.img.offsetLeft + 'px', top: d.img.offsetTop + 'px'});
      c.width = d.img.clientWidth; c.height = d.img.clientHeight;
      c.style.width = c.width + 'px'; c.style.height = c.height + 'px';
      d.img.parentElement.appendChild(c);
      d.canvas = c;
    }
    const f = fit(d.img), g = d.canvas.getContext('2d');
    const px = ([x, y]) => [f.x + x * f.k, f.y + y * f.k];
    g.clearRect(0, 0, d.canvas.width, d.canvas.height);
    const tool = document.querySelector('#paint-tool input:checked');
    g.lineJoin = g.lineCap = 'round';
    for (const [width, colour] of [[5, '#fff'], [2, '#ff1493']]) {
      g.lineWidth = width; g.strokeStyle = colour; g.beginPath();
      if (tool && tool.value !== 'brush') {
        const [a, b] = [px(d.points[0]), px(d.points[d.points.length - 1])];
        g.rect(a[0], a[1], b[0] - a[0], b[1] - a[1]);
      } else {
        d.points.map(px).forEach(([x, y], i) => i ? g.lineTo(x, y) : g.moveTo(x, y));
      }
      g.stroke();
    }
  };
  document.addEventListener('dragstart', (e) => { if (onMap(e.target)) e.preventDefault(); },
                            true);
  document.addEventListener('pointerdown', (e) => {
    if (e.button !== 0 || !onMap(e.target)) return;
    drag = {img: e.target, start: [e.clientX, e.clientY], points: [mapXY(e.target, e)],
            moved: false};
  }, true);
  document.addEventListener('pointermove', (e) => {
    if (!drag) return;
    if (!drag.moved && Math.hypot(e.clientX - drag.start[0], e.clientY - drag.start[1]) < 5)
      return;
    drag.moved = true;
    const p = mapXY(drag.img, e);
    if (drag.points.length < MOST) drag.points.push(p);
    else drag.points[MOST - 1] = p;
    draw(drag);
  }, true);
  const clear = (d) => {
    if (!d || !d.canvas) return;
    const c = d.canvas;
    d.img.addEventListener('load', () => c.remove(), {once: true});
    setTimeout(() => c.remove(), 10000);
  };
  document.addEventListener('pointercancel', () => { clear(drag); drag = null; }, true);
  document.addEventListener('pointerup', () => {
    const d = drag;
    drag = null;
    if (!d || !d.moved) return;
    clear(d);
    window.vqSwallowClick = performance.now() + 300;
    window.vqPath = JSON.stringify(d.points.map(p => p.map(v => Math.round(v * 10) / 10)));
    document.querySelector('#paint-drag').click();
  }, true);
  document.addEventListener('click', (e) => {
    if (onMap(e.target) && performance.now() < (window.vqSwallowClick || 0)) {
      window.vqSwallowClick = 0;
      e.stopPropagation();
      e.preventDefault();
    }
  }, true);
  return [];
}""".replace("MAX_STROKE", str(MAX_STROKE))

# The drag event's inputs: the path the page kept in place of the hidden textbox's value.
SEND_PATH_JS = "(...args) => [...args.slice(0, -1), window.vqPath || '']"
