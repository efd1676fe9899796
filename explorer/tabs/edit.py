"""Edit codes: paint codes onto the current image's grid (or edit it as a table) and watch it
re-decode; with a prior, mark cells and resample them given the rest, and shade each cell by
its surprise (its bits under the prior)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import gradio as gr
import numpy as np
import PIL.Image
import torch

from vqvae import images, viz

from .. import inputs
from ..context import Context
from ..guards import clear_errors
from ..settings import DISPLAY
from ..ui import CLASS_CHOICE, CODE_NUMBER, PIX, bind, private, public, start
from . import paint as photo


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


class Started(NamedTuple):
    """A grid to edit (a new image, Reset, Fill): the :class:`Edited` fields, then the
    photo editor's (a grid of another size than the thumbnail's is painted on its own map,
    :mod:`explorer.tabs.paint`) and which editor is shown."""

    grid: object  # the table (thumbnails; an empty one for a photo's grid)
    image: object
    code_map: object
    png: str
    npy: str
    canvas: object  # a photo's paint.Canvas, or None
    photo_map: object
    note: str
    thumb_maps: dict  # updates: shown for thumbnails ...
    thumb_tools: dict
    photo_tools: dict  # ... or for photos


class CodeMapView(NamedTuple):
    code_map: PIL.Image.Image  # codes (or their surprise) with the marked cells veiled
    mark_map: PIL.Image.Image  # the same picture, for the map that takes mark clicks
    bits: str  # Markdown: bits under the prior beside h * w * log2 K


class Surprise(NamedTuple):
    image: PIL.Image.Image  # each cell shaded by its bits under the prior
    total: float  # bits of the grid under the prior (no class)
    plain: float  # h * w * log2 K
    bits: object  # bits per cell (h, w) as a table


class Edit:
    """The Edit codes tab's events."""

    def __init__(self, ctx: Context):
        self.models = ctx.models
        self.files = ctx.files

    @clear_errors
    def decode(self, model_name: str, grid) -> Decoded:
        """Code grid -> decoded image (enlarged), code map, PNG file (native size), .npy file
        of the codes."""
        m = self.models.get(model_name)
        c = inputs.code_grid(m, grid)
        with torch.inference_mode():
            x = m.model.decode(torch.from_numpy(c)[None])
        png, npy = self.files.new(".png"), self.files.new(".npy")
        PIL.Image.fromarray(images.to_uint8(x[0])).save(png)
        np.save(npy, c)
        return Decoded(
            image=images.enlarge(x[0], DISPLAY),
            code_map=images.code_map_image(c, m.config.codebook_size, DISPLAY),
            png=png,
            npy=npy,
        )

    def _edited(self, model_name: str, c: np.ndarray) -> Edited:
        return Edited(inputs.table(c), *self.decode(model_name, c))

    def _start(self, model_name: str, c: np.ndarray) -> Started:
        """Grid ``c`` to edit: a thumbnail's in the table and its map, a photo's on its
        canvas."""
        m = self.models.get(model_name)
        if inputs.is_thumbnail(m, c):
            views = (gr.update(visible=True),) * 2 + (gr.update(visible=False),)
            return Started(*self._edited(model_name, c), None, gr.skip(), "", *views)
        h, w = c.shape
        note = f"A {w}x{h} grid of codes: click the map to paint."
        if m.grid_prior is None:
            note += " " + photo.no_grid_prior(m)
        p = photo.painted(m, photo.start(m, c), self.files, note)
        views = (gr.update(visible=False),) * 2 + (gr.update(visible=True),)
        return Started(
            inputs.table(np.zeros((0, 0), np.int64)), p.image, gr.skip(), p.png, p.npy, p.canvas,
            p.photo_map, p.note, *views,
        )  # fmt: skip

    @clear_errors
    def paint_photo(self, model_name: str, canvas, code, tool, radius, evt: gr.SelectData):
        """Click on a photo's code map: paint a brush of ``radius`` cells, or a rectangle's
        corners (``tool``), with ``code`` -> :class:`paint.Painted`."""
        m = self.models.get(model_name)
        return photo.click(m, canvas, code, tool, radius, evt, self.files)

    @clear_errors
    def drag_photo(self, model_name: str, canvas, code, tool, radius, points):
        """A drag over a photo's code map (``points``: the pointer's path, a JSON list of
        [x, y] map pixels): a brush of ``radius`` cells along it, or the rectangle from its
        first point to its last painted or marked (``tool``) -> :class:`paint.Painted`."""
        m = self.models.get(model_name)
        return photo.drag(m, canvas, code, tool, radius, points, self.files)

    @clear_errors
    def resample_photo(self, model_name: str, canvas, temperature=1.0, seed=-1):
        """New codes for the marked cells of a photo's ``canvas``, drawn from the model's
        grid prior given the others, re-decoded around them -> :class:`paint.Painted`.
        seed -1: a fresh one (the note names it)."""
        m = self.models.get(model_name)
        return photo.resample(m, canvas, temperature, seed, self.files)

    @clear_errors
    def clear_photo_marks(self, model_name: str, canvas):
        """A photo's ``canvas`` with no cells marked -> :class:`paint.Painted`."""
        return photo.clear_marks(self.models.get(model_name), canvas, self.files)

    @clear_errors
    def paint(self, model_name: str, grid, code, evt: gr.SelectData) -> Edited:
        """Click on the code map: set the clicked cell to ``code`` and re-decode."""
        m = self.models.get(model_name)
        c = inputs.code_grid(m, grid)
        code = inputs.code_index(m, code)
        i, j = inputs.clicked_cell(evt, c.shape, DISPLAY)
        c[i, j] = code
        return self._edited(model_name, c)

    @clear_errors
    def fill(self, model_name: str, grid, code, canvas=None) -> Started:
        """Every cell set to ``code``: of the table's grid, or of the photo's ``canvas``."""
        m = self.models.get(model_name)
        if canvas is not None:
            c = photo.check_canvas(m, canvas).codes.copy()
        else:
            c = inputs.code_grid(m, grid)
        c[:] = inputs.code_index(m, code)
        return self._start(model_name, c)

    @clear_errors
    def reset(self, model_name: str, original) -> Started:
        """Back to ``original`` (the reconstructed or sampled grid)."""
        return self._start(model_name, inputs.code_grid(self.models.get(model_name), original))

    @clear_errors
    def surprise(self, model_name: str, grid) -> Surprise:
        """Code grid -> each code's bits under the prior (given the codes before it, no
        class) as a shaded map and a table, their total, and h * w * log2 K."""
        m = self.models.get(model_name)
        prior = inputs.prior(m)
        c = inputs.thumbnail_grid(m, inputs.code_grid(m, grid), "The surprise")
        with torch.inference_mode():
            bits = prior.code_bits(torch.from_numpy(c)[None])[0].numpy()
        K = m.config.codebook_size
        image = viz.surprise_image(bits, math.log2(K) * 2, DISPLAY)
        return Surprise(
            image,
            round(float(bits.sum()), 1),
            round(m.config.bits_per_image, 1),
            inputs.table(bits.round(2)),
        )

    @clear_errors
    def code_map_view(
        self, model_name: str, grid, marks=None, surprise: bool = False, canvas=None
    ):  # fmt: skip
        """The code map: the codes (or, with ``surprise``, their bits under the prior),
        marked cells veiled; and the bits of the grid under the prior. With a photo's
        ``canvas`` (drawn by its own events): only its bits."""
        m = self.models.get(model_name)
        if isinstance(canvas, photo.Canvas) and canvas.model == m.name:
            c = canvas.codes
            plain = c.size * math.log2(m.config.codebook_size)
            return CodeMapView(gr.skip(), gr.skip(), f"Plain: **{plain:,.0f} bits** (h·w·log2 K).")
        c = inputs.code_grid(m, grid)
        plain = c.size * math.log2(m.config.codebook_size)
        thumbnail = inputs.is_thumbnail(m, c)  # what the prior and the marks are for
        if m.prior is None or not thumbnail:
            why = "This model has no prior." if m.prior is None else (
                "Its bits under the prior are counted for thumbnails, the grids it knows."
            )  # fmt: skip
            bits = f"Plain: **{plain:,.0f} bits** (h·w·log2 K). {why}"
            shown = None
        else:
            s = self.surprise(model_name, c)
            bits = (
                f"Under the prior: **{s.total:.1f} bits** ({100 * s.total / plain:.0f} % of the "
                f"plain {plain:.0f} bits, h·w·log2 K)."
            )
            shown = s.image if surprise else None
        if shown is None:
            shown = images.code_map_image(c, m.config.codebook_size, DISPLAY)
        mask = inputs.marks(m, marks, strict=False) if thumbnail else np.zeros(c.shape, bool)
        im = viz.mark_cells(shown, mask, DISPLAY)
        return CodeMapView(im, im, bits)

    @clear_errors
    def toggle_mark(self, model_name: str, grid, marks, evt: gr.SelectData):
        """Click on the code map in mark mode: mark the cell, or unmark it -> the marks."""
        m = self.models.get(model_name)
        c = inputs.thumbnail_grid(m, inputs.code_grid(m, grid), "Marking cells to resample")
        mask = inputs.marks(m, marks, strict=False)
        i, j = inputs.clicked_cell(evt, c.shape, DISPLAY)
        mask[i, j] = not mask[i, j]
        return inputs.table(mask * 1)

    @clear_errors
    def mark_all(self, model_name: str, value: bool = True):
        """-> a marks table with every cell marked (or none)."""
        h = self.models.get(model_name).config.latent_size
        return inputs.table(np.full((h, h), int(bool(value))))

    @clear_errors
    def clear_marks(self, model_name: str):
        return self.mark_all(model_name, False)

    @clear_errors
    def resample(
        self, model_name: str, grid, marks, label="any", temperature=1.0, top_k=0, guidance=1.0,
        seed=-1,
    ) -> Edited:  # fmt: skip
        """Resample the marked cells of a code grid with the prior, given the others (in
        raster order: a cell follows the cells above and to its left) -> the new grid and
        its :class:`Decoded` fields. seed -1: random."""
        m = self.models.get(model_name)
        prior = inputs.prior(m)
        c = inputs.thumbnail_grid(m, inputs.code_grid(m, grid), "Resampling")
        mask = inputs.marks(m, marks)
        if not mask.any():
            raise gr.Error("No cells are marked: mark some cells to resample first.")
        cls = inputs.class_label(m, label)
        options = inputs.sampling(m, temperature, top_k, guidance, seed)
        with torch.inference_mode():
            new = prior.complete(torch.from_numpy(c)[None], torch.from_numpy(~mask), cls, **options)
        return self._edited(model_name, new[0].numpy())


def show_map(mode: str):
    """Clicks paint or mark: show the code map that takes that kind of click (two images,
    so that the paint event keeps its inputs)."""
    return gr.update(visible=mode != "mark"), gr.update(visible=mode == "mark")


INTRO = (
    "The current image's code grid. Choose a code (type its number or click the atlas on "
    "the right), then click cells of the code map to paint them; the image re-decodes at "
    "once. A thumbnail's grid can also be edited as a table; a photo's is painted with a "
    "brush or a rectangle, clicked or dragged. *Reset* goes back to the reconstructed "
    "image. With a prior, on a thumbnail: switch clicks to *mark*, mark cells and "
    "*resample* them (each is drawn given the cells above and to its left), or shade the "
    "map by each code's surprise; with a grid prior, on a photo: mark rectangles and "
    "resample them."
)


@dataclass
class EditTab:
    grid: gr.Dataframe  # the edited grid (a thumbnail's)
    decoded: dict  # the components of a Decoded, by field
    original: gr.State  # the grid Reset goes back to
    paint_code: gr.Number
    atlas: gr.Gallery
    label: gr.Dropdown  # the class resampling is conditioned on
    redraw: Callable  # redraw(dep): after dep, the code map's overlays and bits again
    started: list  # the output components of a Started result (a new grid to edit)

    @property
    def edited(self) -> list:
        """The output components of :meth:`Edit.reset` (a :class:`Started` result)."""
        return self.started


@dataclass
class _Controls:
    """The components the Edit tab's events read and write, by role."""

    maps: dict  # code_map, mark_map
    decoded: dict  # image, code_map, png, npy
    photo: dict  # photo_map, note, tool, radius, resample, clear, temperature, seed
    views: dict  # thumb_maps, thumb_tools, photo_tools (columns shown by grid kind)
    paint_code: gr.Number
    paint_tile: gr.Image
    atlas: gr.Gallery
    buttons: dict  # fill, reset, mark_all, clear, resample
    bits: gr.Markdown
    surprise: gr.Checkbox
    mode: gr.Radio
    label: gr.Dropdown
    temperature: gr.Slider


def _picker_column(big: dict) -> tuple:
    """Code picker, atlas, fill/reset, downloads -> (paint_code, tile, atlas, buttons, png, npy)."""
    with gr.Row(equal_height=True):
        paint_code = gr.Number(
            elem_id="paint-code", label="Paint with code #", **CODE_NUMBER, value=0, scale=2
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
        label="Pick a code (scroll for more)",
        columns=8,
        height=200,
        allow_preview=False,
        elem_classes=PIX,
    )
    with gr.Row():
        fill = gr.Button("Fill all cells", size="sm")
        reset = gr.Button("Reset", size="sm")
    with gr.Row():
        png = gr.DownloadButton("Image (.png)", elem_id="dl-png", size="sm")
        npy = gr.DownloadButton("Codes (.npy)", size="sm")
    return paint_code, paint_tile, atlas, dict(fill=fill, reset=reset), png, npy


def _thumb_tools() -> tuple[gr.Checkbox, gr.Radio, dict, gr.Dropdown, gr.Slider]:
    """Surprise, click mode, marks and resampling (thumbnail grids)."""
    with gr.Row():
        with gr.Column(scale=3, min_width=200):
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
                    buttons = dict(
                        mark_all=gr.Button("Mark all", size="sm"),
                        clear=gr.Button("Clear marks", size="sm"),
                        resample=gr.Button(
                            "Resample marked cells", elem_id="resample-btn", variant="primary"
                        ),
                    )
            with gr.Row():
                label = gr.Dropdown(["any"], value="any", label="Resample as class", **CLASS_CHOICE)
                temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature")
    return surprise, mode, buttons, label, temperature


def _layout() -> _Controls:
    big = dict(height=DISPLAY + 64, interactive=False, elem_classes=PIX, format="png")
    with gr.Row():
        with gr.Column(scale=3, min_width=240):
            with gr.Column() as thumb_maps:
                code_map = gr.Image(
                    elem_id="edit-map", label="Code map: click a cell to paint it", **big
                )
                mark_map = gr.Image(
                    elem_id="mark-map", label="Code map: click cells to mark them",
                    visible=False, **big,
                )  # fmt: skip
            photo_tools, photo_parts = photo.tools(big)
        with gr.Column(scale=3, min_width=240):
            image = gr.Image(elem_id="edit-img", label="Decoded", **big)
        with gr.Column(scale=3, min_width=240):
            paint_code, paint_tile, atlas, buttons, png, npy = _picker_column(big)
    bits = gr.Markdown(elem_id="edit-bits")
    with gr.Column() as thumb_tools:
        surprise, mode, more, label, temperature = _thumb_tools()
    return _Controls(
        maps=dict(code_map=code_map, mark_map=mark_map),
        decoded=dict(image=image, code_map=code_map, png=png, npy=npy),
        photo=photo_parts,
        views=dict(thumb_maps=thumb_maps, thumb_tools=thumb_tools, photo_tools=photo_tools),
        paint_code=paint_code, paint_tile=paint_tile, atlas=atlas, buttons={**buttons, **more},
        bits=bits, surprise=surprise, mode=mode, label=label, temperature=temperature,
    )  # fmt: skip


def _tables() -> tuple[gr.Dataframe, gr.Dataframe]:
    table = dict(interactive=True, datatype="number", type="array", max_height=360)
    with gr.Accordion("Edit the marks as a table (1 = marked)", open=False):
        marks = gr.Dataframe(elem_id="marks", label="Marked cells", **table)
    with gr.Accordion("Edit the grid as a table", open=False):
        grid = gr.Dataframe(elem_id="grid", label="Code grid", **table)
    return marks, grid


def build(h: Edit, pick_code: Callable, code_tile: Callable, model: gr.Dropdown) -> EditTab:
    """``pick_code``/``code_tile``: the codebook's atlas click and code tile events."""
    gr.Markdown(INTRO)
    ui = _layout()
    with ui.views["thumb_tools"]:
        marks, grid = _tables()
    original, canvas = gr.State(), gr.State()
    ph = ui.photo
    started = bind(
        Started, grid=grid, **ui.decoded, canvas=canvas, photo_map=ph["photo_map"],
        note=ph["note"], **ui.views,
    )  # fmt: skip
    tab = EditTab(grid, ui.decoded, original, ui.paint_code, ui.atlas, ui.label, None, started)
    decoded = bind(Decoded, **ui.decoded)
    edited = bind(Edited, grid=grid, **ui.decoded)
    n_redraws = iter(range(1000))

    def redraw(dep):
        """The grid changed: draw its map again with the marks (and surprise), new bits."""
        return dep.success(
            h.code_map_view,
            [model, grid, marks, ui.surprise, canvas],
            bind(CodeMapView, **ui.maps, bits=ui.bits),
            **private(f"edit_overlay_{next(n_redraws)}"),
        )

    tab.redraw = redraw
    b = ui.buttons
    redraw(grid.input(h.decode, [model, grid], decoded, **public("edit")))
    ui.atlas.select(pick_code, [model], ui.paint_code, **private("paint_code_pick", quick=True))
    ui.paint_code.change(
        code_tile, [model, ui.paint_code], ui.paint_tile, **private("paint_tile", quick=True)
    )
    paint = ui.maps["code_map"].select(h.paint, [model, grid, ui.paint_code], edited,
                                       **private("paint"))  # fmt: skip
    redraw(paint)
    painted = bind(
        photo.Painted, canvas=canvas, image=ui.decoded["image"], photo_map=ph["photo_map"],
        png=ui.decoded["png"], npy=ui.decoded["npy"], note=ph["note"],
    )  # fmt: skip
    brush_in = [model, canvas, ui.paint_code, ph["tool"], ph["radius"]]
    ph["photo_map"].select(h.paint_photo, brush_in, painted, **private("paint_photo"))
    # a drag: the page collects the path and presses the hidden button (photo.DRAG_JS)
    ph["photo_map"].change(None, None, None, js=photo.DRAG_JS)
    ph["drag"].click(
        h.drag_photo, [*brush_in, ph["path"]], painted, js=photo.SEND_PATH_JS,
        **private("drag_photo"),
    )  # fmt: skip
    ph["resample"].click(
        h.resample_photo, [model, canvas, ph["temperature"], ph["seed"]], painted,
        **private("resample_photo", expensive=True),
    )  # fmt: skip
    ph["clear"].click(h.clear_photo_marks, [model, canvas], painted, **private("clear_photo_marks"))
    mark = ui.maps["mark_map"].select(h.toggle_mark, [model, grid, marks], marks, **private("mark"))
    redraw(mark)
    ui.mode.change(show_map, ui.mode, list(ui.maps.values()), **private("click_mode", quick=True))
    fill_in = [model, grid, ui.paint_code, canvas]
    redraw(b["fill"].click(h.fill, fill_in, started, **private("fill")))
    redraw(b["reset"].click(h.reset, [model, original], started, **private("reset")))
    resample_in = [model, grid, marks, ui.label, ui.temperature]
    redraw(
        b["resample"].click(h.resample, resample_in, edited, **public("resample", expensive=True))
    )
    redraw(b["mark_all"].click(h.mark_all, model, marks, **private("mark_all", quick=True)))
    redraw(b["clear"].click(h.clear_marks, model, marks, **private("clear_marks", quick=True)))
    redraw(marks.input(start, None, None, **private("marks_typed", quick=True)))
    redraw(ui.surprise.input(start, None, None, **private("surprise_toggle", quick=True)))
    return tab
