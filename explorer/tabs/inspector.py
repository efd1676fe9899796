"""The code inspector: one code (what it stands for, its usage in the current image and in
training, its nearest codes, the training crops where the encoder picked it) and, for a cell
of the current image, why the cell got its code: the distances from the cell's encoder
output z_e to its nearest codes, the chosen one first (the quantization step made visible).

The Reconstruct tab opens it on a click on its input, its reconstruction or its code map
(they are one grid: a click anywhere finds its cell, and the cell is outlined on all three);
the Codebook tab opens it on a code of its UMAP plot or its atlas clicked, or a number typed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import gradio as gr
import numpy as np
import PIL.Image
import torch

from vqvae import grid, viz
from vqvae.codes import latent_distances, nearest_codes

from .. import inputs, settings
from ..guards import clear_errors
from ..settings import DISPLAY
from ..store import Model, ModelStore
from ..ui import PIX


class CodeDetails(NamedTuple):
    image: PIL.Image.Image  # what the code stands for (the atlas tile), enlarged
    details: str  # Markdown
    neighbours: list  # (path, caption) of the nearest codes


class CodePatches(NamedTuple):
    image: PIL.Image.Image | None  # training crops where the encoder picked the code
    note: str  # Markdown


class CellView(NamedTuple):
    """A cell clicked: where it is, why it got its code, then that code's inspector."""

    box: dict  # the cell's outline on the pictures (see CellCodes.boxes), for the page
    why: str  # Markdown: the distances from the cell's z_e to its nearest codes
    candidates: list  # (path, caption) of those codes' tiles, the chosen one first
    image: PIL.Image.Image
    details: str
    neighbours: list
    patches: PIL.Image.Image | None
    patches_note: str


@dataclass(frozen=True)
class CellCodes:
    """What the inspector keeps of one reconstruction, per cell of its code grid: the code
    and the ``n`` codes nearest to the cell's encoder output, with their distances (n =
    settings.INSPECT_NEAREST). Small ints and half floats: at the photo cap (1 MP, 4 px
    cells: 65,536 cells) about 1.4 MB, held in the page's session while it is open.

    The pictures the page shows are the image enlarged ``scale`` times (1 for a photo),
    the code map the grid at ``scale * downsample`` px a cell."""

    model: str
    size: tuple[int, int]  # the image (H, W), px
    scale: int  # picture px per image px
    downsample: int  # image px per cell side
    codes: np.ndarray  # (h, w) the grid's codes
    near: np.ndarray  # (h, w, n) int: the nearest codes of each cell's z_e, the chosen first
    dist: np.ndarray  # (h, w, n) float16: their Euclidean distances to z_e

    @classmethod
    def of(
        cls, m: Model, size, scale: int, codes: torch.Tensor, z_e: torch.Tensor, workers: int = 1
    ) -> CellCodes:
        """From one image's codes (1, h, w) and latents z_e (1, D, h, w), computed on
        ``workers`` threads."""
        n = settings.INSPECT_NEAREST
        near, dist = latent_distances(m.model, z_e, codes, n, workers=workers)
        small = np.int16 if m.config.codebook_size <= np.iinfo(np.int16).max else np.int32
        return cls(
            m.name, (int(size[0]), int(size[1])), int(scale), m.config.downsample,
            codes[0].numpy().astype(small), near[0].numpy().astype(small),
            dist[0].numpy().astype(np.float16),
        )  # fmt: skip

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.near.nbytes + self.dist.nbytes

    def cell_at(self, xy, *, code_map: bool) -> tuple[int, int]:
        """The cell (row, column) under pixel ``xy`` = (x, y) of a picture (the input or the
        reconstruction, ``code_map=False``) or of the code map; ValueError outside it."""
        try:
            x, y = (float(v) / self.scale for v in xy)
        except (TypeError, ValueError):
            raise ValueError(f"a pixel position is two numbers (x, y), got {xy!r:.40}") from None
        h, w = self.codes.shape
        d = self.downsample
        # the code map covers whole cells: the padded grid, a little more than the image
        size = (h * d, w * d) if code_map else self.size
        return grid.pixel_cell((y, x), d, size)

    def geometry(self) -> dict:
        """What the page needs to find the cell under the pointer on its own: the grid's
        cells (h, w), a cell's side in picture px, the pictures' and the code map's sizes
        (width, height) in px (the picture's last cells may be cut by its edge)."""
        h, w = self.codes.shape
        s, d = self.scale, self.downsample
        H, W = self.size
        return {"cells": [h, w], "cell_px": d * s, "picture": [W * s, H * s],
                "code_map": [w * d * s, h * d * s]}  # fmt: skip

    def boxes(self, cell) -> dict:
        """The outline of ``cell`` on the pictures and on the code map: for each, the box
        (left, top, right, bottom) in its pixels (right and bottom exclusive) and its size
        (width, height)."""
        top, left, bottom, right = grid.cell_box(cell, self.downsample, self.size)
        h, w = self.codes.shape
        s, d = self.scale, self.downsample
        i, j = (int(v) for v in cell)
        H, W = self.size
        return {
            "cell": [i, j],
            "picture": {
                "box": [left * s, top * s, right * s, bottom * s],
                "size": [W * s, H * s],
            },
            "code_map": {
                "box": [j * d * s, i * d * s, (j + 1) * d * s, (i + 1) * d * s],
                "size": [w * d * s, h * d * s],
            },
        }


NO_CELL = {"cell": None}  # the page removes the outline


def code_text(m: Model, k: int, cells: CellCodes | None) -> str:
    """Markdown: code ``k``'s usage (in ``cells``' image too, when it is one of model ``m``'s),
    rank, and nearest codes in the codebook."""
    near, dist = nearest_codes(m.model, k, 8)
    total = max(1, int(m.usage.sum()))
    here = ""
    if cells is not None and cells.model == m.name:
        n = int((cells.codes == k).sum())
        here = f"In this image: **{n:,}** of its {cells.codes.size:,} cells.\n\n"
    return (
        f"### Code {k}\n{here}Used **{m.usage[k]:,}** times on the training set "
        f"({100 * m.usage[k] / total:.2f}% of all code uses), rank **{m.ranks[k]}** "
        f"of {m.config.codebook_size}.\n\nNearest codes (embedding distance): "
        + ", ".join(f"{int(j)} ({float(d):.2f})" for j, d in zip(near, dist, strict=True))
    )


def code_details(models: ModelStore, m: Model, k: int, cells: CellCodes | None) -> CodeDetails:
    """Code ``k`` of model ``m``: its tile, :func:`code_text`, its nearest codes' tiles."""
    files = models.atlas(m)
    near, _ = nearest_codes(m.model, k, 8)
    gallery = [(files[int(j)], f"#{int(j)}") for j in near]
    return CodeDetails(models.tile(m, k, DISPLAY), code_text(m, k, cells), gallery)


def code_patches(m: Model, k: int) -> CodePatches:
    """Code ``k``'s training crops (its cell outlined in red), from the model folder's
    code_patches.npz (written by train.export)."""
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


def why_text(cells: CellCodes, cell) -> str:
    """Markdown: the cell's distances to its nearest codes, the chosen one first."""
    i, j = cell
    near, dist = cells.near[i, j], cells.dist[i, j].astype(np.float64)
    top, left, bottom, right = grid.cell_box(cell, cells.downsample, cells.size)
    rows = [
        f"| {'**chosen**' if n == 0 else n + 1} | {int(k)} | {d:.3f} | "
        f"{'' if n == 0 else f'+{d - dist[0]:.3f}'} |"
        for n, (k, d) in enumerate(zip(near, dist, strict=True))
    ]
    return (
        f"### Cell ({i}, {j}): code {int(near[0])}\n"
        f"Pixels x {left}-{right - 1}, y {top}-{bottom - 1}. "
        "The encoder maps the cell to a vector z_e; the quantizer replaces it by the nearest "
        "code vector. Distances from z_e:\n\n| | code | distance | further by |\n"
        "|---|--:|--:|--:|\n" + "\n".join(rows)
    )


class Inspector:
    """The inspector's events."""

    def __init__(self, models: ModelStore):
        self.models = models

    def _cells(self, m: Model, cells) -> CellCodes:
        if not isinstance(cells, CellCodes) or cells.model != m.name:
            raise gr.Error(f"Reconstruct an image with model {m.name!r} first, then click it.")
        return cells

    @clear_errors
    def cell(self, model_name: str, cells, row, column) -> CellView:
        """Cell (row, column) of the current image -> its outline on the pictures, why it
        got its code, and the inspector of that code."""
        m = self.models.get(model_name)
        c = self._cells(m, cells)
        h, w = c.codes.shape
        cell = (
            inputs.whole_number(row, 0, h - 1, "The row"),
            inputs.whole_number(column, 0, w - 1, "The column"),
        )
        files = self.models.atlas(m)
        near = c.near[cell]
        candidates = [(files[int(k)], f"#{int(k)}") for k in near]  # distances: in the table
        k = int(near[0])
        return CellView(
            c.boxes(cell), why_text(c, cell), candidates,
            *code_details(self.models, m, k, c), *code_patches(m, k),
        )  # fmt: skip

    @clear_errors
    def picture_click(self, model_name: str, cells, evt: gr.SelectData) -> CellView:
        """A click on the input or the reconstruction -> :meth:`cell` of the cell under it."""
        return self._click(model_name, cells, evt, code_map=False)

    @clear_errors
    def code_map_click(self, model_name: str, cells, evt: gr.SelectData) -> CellView:
        """A click on the code map -> :meth:`cell` of the cell under it."""
        return self._click(model_name, cells, evt, code_map=True)

    def _click(self, model_name, cells, evt, *, code_map: bool) -> CellView:
        c = self._cells(self.models.get(model_name), cells)
        try:
            i, j = c.cell_at(getattr(evt, "index", None), code_map=code_map)
        except ValueError as e:
            raise gr.Error(f"Click a cell of the picture ({e}).") from None
        return self.cell(model_name, cells, i, j)

    @staticmethod
    def clear(cells: CellCodes | None = None) -> CellView:
        """No cell: the outline removed and the inspector emptied (a new image, a new model);
        with the new image's ``cells``, the page also gets their geometry (the cell under
        the pointer is outlined on every picture as it moves)."""
        box = {**NO_CELL, "grid": cells.geometry()} if isinstance(cells, CellCodes) else NO_CELL
        return CellView(box, "", [], None, HINT, [], None, "")  # as the page starts


HINT = (
    "Click a cell of the code map, the input or the reconstruction: its code, and why the "
    "encoder's output there got that code."
)

# A box over a picture (the input, the reconstruction or the code map, by element id): ``part``
# gives the box (left, top, right, bottom) and the size (width, height) in the picture's
# pixels; it is placed over the <img>'s drawn area (scaled with object-fit: contain). ``cls``
# names the box's kind, one box of each kind a picture; ``watch`` places it again whenever
# the picture is resized (the window) or replaced. No part: the box is removed.
_PLACE_JS = """
// where a picture of ``size`` (width, height) is drawn in its <img> (object-fit: contain):
// k screen px per image px, the drawn area's offset in the element, f image px per picture px
const vqFit = (img, size) => {
  const iw = img.naturalWidth || size[0], ih = img.naturalHeight || size[1];
  const k = Math.min(img.clientWidth / iw, img.clientHeight / ih);
  return {k, x: (img.clientWidth - iw * k) / 2, y: (img.clientHeight - ih * k) / 2,
          f: iw / size[0]};
};
const vqPlace = (id, part, cls, watch) => {
  const root = document.getElementById(id);
  const img = root && root.querySelector('img');
  let div = root && root.querySelector('.' + cls);
  if (div && div._watch) div._watch.disconnect();
  if (!img || !part) { if (div) div.remove(); return; }
  if (!div) {
    div = document.createElement('div');
    div.className = cls;
  }
  if (div.parentElement !== img.parentElement) {
    img.parentElement.style.position = 'relative';
    img.parentElement.appendChild(div);
  }
  const draw = () => {
    const fit = vqFit(img, part.size);
    const x0 = img.offsetLeft + fit.x, y0 = img.offsetTop + fit.y;
    const [l, t, r, b] = part.box.map(v => v * fit.f * fit.k);
    Object.assign(div.style, {left: `${x0 + l - 2}px`, top: `${y0 + t - 2}px`,
      width: `${r - l}px`, height: `${b - t}px`});
  };
  draw();
  if (watch) {
    div._watch = new ResizeObserver(draw);
    div._watch.observe(img);
    img.addEventListener('load', draw, {once: true});
  }
  return div;
};
"""

# The pointer over a picture outlines the cell under it on all three (the linked views: the
# code map and the pictures are one grid), found on the page from the grid's geometry
# (CellCodes.geometry); its picture's tooltip names the cell. Installed once, on the first
# geometry; each new image's replaces it.
_HOVER_JS = """
const PICTURES = ['orig', 'recon', 'codemap'];
const hoverOff = () => {
  window.vqHover = null;
  PICTURES.forEach(id => vqPlace(id, null, 'cell-hover'));
};
if (!window.vqHoverOn) {
  window.vqHoverOn = true;
  document.addEventListener('mousemove', (e) => {
    const g = window.vqGrid, img = e.target;
    const root = img && img.tagName === 'IMG' && img.closest('#orig, #recon, #codemap');
    if (!g || !root) { if (window.vqHover) hoverOff(); return; }
    const fit = vqFit(img, root.id === 'codemap' ? g.code_map : g.picture);
    const r = img.getBoundingClientRect();
    const x = (e.clientX - r.left - fit.x) / fit.k / fit.f;
    const y = (e.clientY - r.top - fit.y) / fit.k / fit.f;
    const c = g.cell_px, i = Math.floor(y / c), j = Math.floor(x / c);
    if (x < 0 || y < 0 || i >= g.cells[0] || j >= g.cells[1]) { hoverOff(); return; }
    if (window.vqHover === `${i},${j}`) return;
    window.vqHover = `${i},${j}`;
    const [W, H] = g.picture;
    const pic = {box: [j * c, i * c, Math.min((j + 1) * c, W), Math.min((i + 1) * c, H)],
                 size: g.picture};
    const map = {box: [j * c, i * c, (j + 1) * c, (i + 1) * c], size: g.code_map};
    PICTURES.forEach(id => {
      const div = vqPlace(id, id === 'codemap' ? map : pic, 'cell-hover', false);
      if (div) div.dataset.cell = `${i},${j}`;
    });
    img.title = `cell (${i}, ${j}): click to inspect it`;
  });
}
"""

# Outlines the clicked cell on the input, the reconstruction and the code map; a box with
# the grid's geometry (a new image) also sets what the pointer's outline reads.
OUTLINE_JS = (
    "(box) => {"
    + _PLACE_JS
    + _HOVER_JS
    + """
  if (box && box.grid) { window.vqGrid = box.grid; hoverOff(); }
  const cell = box && box.cell;
  for (const [id, part] of [['orig', box && box.picture], ['recon', box && box.picture],
                            ['codemap', box && box.code_map]]) {
    const div = vqPlace(id, cell ? part : null, 'cell-outline', true);
    if (div) div.dataset.cell = cell.join(',');
  }
  return [];
}
"""
)


@dataclass
class InspectorPanel:
    """The inspector's components, by the fields of CodeDetails / CodePatches / CellView."""

    details: dict  # CodeDetails fields
    patches: dict  # CodePatches fields
    cell: dict | None  # CellView fields (a panel that inspects cells)


def layout(prefix: str, *, cells: bool) -> InspectorPanel:
    """The inspector's components (element ids start with ``prefix``); ``cells``: with the
    part for a clicked cell (its distances, the candidate codes, the outline)."""
    why = candidates = box = None
    with gr.Row():
        with gr.Column(scale=2, min_width=200):
            image = gr.Image(
                elem_id=f"{prefix}tile", label="What it stands for", format="png", height=200,
                interactive=False, elem_classes=PIX,
            )  # fmt: skip
            details = gr.Markdown(HINT if cells else "", elem_id=f"{prefix}md")
        if cells:
            with gr.Column(scale=3, min_width=280):
                why = gr.Markdown(elem_id=f"{prefix}why")
                candidates = gr.Gallery(
                    label="Its nearest codes, the chosen one first", columns=5, height=110,
                    allow_preview=False, elem_classes=PIX, elem_id=f"{prefix}candidates",
                )  # fmt: skip
                box = gr.JSON(visible="hidden", elem_id=f"{prefix}box")
    with gr.Row():
        neighbours = gr.Gallery(
            label="Nearest codes in the codebook", columns=8, height=110,
            allow_preview=False, elem_classes=PIX, min_width=240,
        )  # fmt: skip
        with gr.Column(min_width=240):
            patches = gr.Image(
                elem_id=f"{prefix}patches", label="Where the encoder picks it (training crops)",
                format="png", interactive=False, elem_classes=PIX,
            )  # fmt: skip
            patches_note = gr.Markdown(elem_id=f"{prefix}patches-md")
    return InspectorPanel(
        dict(image=image, details=details, neighbours=neighbours),
        dict(image=patches, note=patches_note),
        None if not cells else dict(
            box=box, why=why, candidates=candidates, image=image, details=details,
            neighbours=neighbours, patches=patches, patches_note=patches_note,
        ),
    )  # fmt: skip
