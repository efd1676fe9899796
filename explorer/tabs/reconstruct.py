"""Reconstruct: upload an image, click an example or draw a digit -> the input as the model
sees it, its reconstruction and its code map; the codec panel (explorer.tabs.codec) below."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import NamedTuple

import gradio as gr
import numpy as np
import PIL.Image
import torch

import vqvae
from vqvae import images

from .. import inputs, settings
from ..context import Context
from ..files import named
from ..guards import clear_errors, guard_drawing_pad, image_input
from ..settings import DISPLAY, PHOTO_TILE
from ..ui import PIX, bind, private, public, skip
from . import codec, inspector


class Reconstruction(NamedTuple):
    original: PIL.Image.Image  # the input as the model sees it, enlarged
    reconstruction: PIL.Image.Image
    code_map: PIL.Image.Image
    psnr: float  # dB
    codes_used: int  # distinct codes in the image
    bits: float  # bits per image, h * w * log2 K
    grid: object  # the code grid (h, w) as a table
    cells: object = None  # inspector.CellCodes: what a click on a cell shows (a session state)


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
    cells: object = None


# How a colour model reads an upload: the photo at its own resolution, or the thumbnail it
# was trained on (centre-cropped and resized). Digit models always read thumbnails.
SIZES = (("At its own resolution (up to 1 MP)", "own"), ("As trained (a thumbnail)", "thumbnail"))


class Reconstruct:
    """The Reconstruct tab's events."""

    def __init__(self, ctx: Context):
        self.models = ctx.models
        self.inspector = inspector.Inspector(ctx.models)
        self._example_cache: dict[tuple, Reconstruction] = {}

    @clear_errors
    def image(
        self, image, model_name: str, size: str = "own", *, announce: bool = True
    ) -> Reconstruction:
        """image (path) -> original, reconstruction, code map, PSNR (dB), codes used,
        bits, code grid (table). A colour model reads the image at its own resolution
        (``size="own"``, up to settings.MAX_PHOTO_PIXELS, never cropped) or as the thumbnail
        it was trained on (``"thumbnail"``); a digit model always reads the thumbnail.
        ``announce``: tell the user how the input was adjusted (inverted, downscaled...)."""
        m = self.models.get(model_name)
        if size not in dict(SIZES).values():
            raise gr.Error(f"size must be 'own' or 'thumbnail', got {size!r:.20}.")
        if inputs.takes_photos(m) and size == "own":
            out = self._photo(m, image, announce)
        else:
            x = inputs.model_input(m, image, announce=announce, models=self.models)
            with torch.inference_mode():
                codes, z_e = m.model.encode_image(x, return_latents=True)
                recon = m.model.decode(codes)
            out = self._result(m, x, recon, codes, z_e, DISPLAY)
        named(out.original, image)  # its download, and the panel's .vqz, keep the file's name
        return out

    def _photo(self, m, image, announce: bool) -> Reconstruction:
        x = inputs.photo_input(m, image, announce=announce)
        H, W = x.shape[-2:]
        n = settings.photo_workers()
        with torch.inference_mode():
            codes, z_e = m.model.encode_image(x, return_latents=True, tile=PHOTO_TILE, workers=n)
            recon = m.model.decode_codes(codes, (H, W), tile=PHOTO_TILE, workers=n)
        # at the photo's own size (the page scales it, pixelated); code cells of d pixels
        out = self._result(m, x, recon, codes, z_e, max(H, W), workers=n)
        if announce:
            h, w = out.grid.shape
            gr.Info(
                f"At its own size: {W}x{H} pixels -> {w}x{h} codes, {out.bits:,.0f} bits "
                f"({out.bits / (H * W):.3f} bits per pixel).",
                duration=4,
            )
        return out

    @staticmethod
    def _result(
        m, x, recon, codes: torch.Tensor, z_e: torch.Tensor, side: int, workers: int = 1
    ) -> Reconstruction:
        """The outputs for input ``x``, its reconstruction, codes (1, h, w) and latents z_e,
        the pictures ``side`` px on their longer side (enlarged ``scale`` times), the code
        map's cells aligned with them; the inspector's cells on ``workers`` threads."""
        c = codes[0].numpy()
        scale = max(1, side // max(x.shape[-2:]))
        return Reconstruction(
            original=images.enlarge(x[0], side),
            reconstruction=images.enlarge(recon[0], side),
            code_map=images.code_map_image(
                c, m.config.codebook_size, scale * m.config.downsample * max(c.shape)
            ),
            psnr=round(float(vqvae.psnr(x, recon)[0]), 2),
            codes_used=int(len(np.unique(c))),
            bits=round(c.size * math.log2(m.config.codebook_size), 1),
            grid=inputs.table(c),
            cells=inspector.CellCodes.of(m, x.shape[-2:], scale, codes, z_e, workers),
        )

    @clear_errors
    def upload(self, image, model_name: str, size: str = "own") -> Reconstruction:
        """For live events (an upload, clearing it, another size): no image is no error."""
        if image is None:
            return skip(Reconstruction)
        return self.image(image, model_name, size)

    @clear_errors
    def drawing(self, sketch, model_name: str) -> Reconstruction:
        """The drawing pad's composite -> its reconstruction; an empty canvas changes nothing."""
        comp = sketch.get("composite") if isinstance(sketch, dict) else None
        if comp is None:
            return skip(Reconstruction)
        a = np.asarray(comp)
        if a.ndim == 3 and a.shape[2] == 4 and a[..., 3].max() == 0:
            return skip(Reconstruction)  # empty canvas
        return self.image(a, model_name, announce=False)  # drawings are always inverted

    @clear_errors
    def example_click(self, model_name: str, size: str, evt: gr.SelectData) -> Example:
        """Click on the example gallery -> the example as input, and its (cached) outputs."""
        m = self.models.get(model_name)
        index = inputs.selected_index(evt, len(m.examples), "examples")
        return self.example(model_name, index, size)

    @clear_errors
    def example(self, model_name: str, index: int = 0, size: str = "own") -> Example:
        """The model's example ``index`` and its reconstruction (computed once per file)."""
        m = self.models.get(model_name)
        if not m.examples:
            return Example(None, *skip(Reconstruction))
        path = m.examples[inputs.whole_number(index, 0, len(m.examples) - 1, "The example index")]
        key = (model_name, path, os.stat(path).st_mtime_ns, size)
        if key not in self._example_cache:
            self._example_cache[key] = self.image(path, model_name, size, announce=False)
        return Example(path, *self._example_cache[key])


INTRO = (
    "Upload an image, click an example or draw a digit (*Draw*: it reconstructs as you go). "
    "The model encodes it to a grid of codes and decodes the grid again; the code map shows "
    "which code sits where (click a cell to inspect it). Below: the codes as a **.vqz** file, "
    "entropy-coded under the model's prior, beside JPEG and WebP at the same size."
)


@dataclass
class ReconstructTab:
    image: gr.Image
    size: gr.Radio  # own resolution or thumbnail (colour models)
    examples: gr.Gallery
    draw: gr.Column  # holds the drawing pad
    no_draw: gr.Markdown
    outputs: dict  # the components of a Reconstruction, by field
    new_image: list  # events after which there is a new current image
    inspector: inspector.InspectorPanel  # opened by a click on a cell
    codec: codec.CodecPanel

    @property
    def cells(self) -> gr.State:
        """What the inspector shows of the current image's cells."""
        return self.outputs["cells"]

    @property
    def grid(self) -> gr.Dataframe:
        """The current image's codes."""
        return self.outputs["grid"]


def _input_column(h: Reconstruct):
    """Upload / Draw tabs and the examples -> (image, size, sketch, button, draw, no_draw,
    examples)."""
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
            size = gr.Radio(
                SIZES,
                value="own",
                label="Read the image",
                info="A photo at its own resolution (up to 1 megapixel; larger ones are "
                "downscaled, never cropped), or as the thumbnail the model was trained on",
                elem_id="recon-size",
                visible=False,
            )
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
    return image, size, sketch, button, draw, no_draw, examples


def _result_panel() -> dict:
    """The components of a Reconstruction, by field."""
    # full screen: a photo's thousands of cells, enlarged (the outlines follow the picture)
    big = dict(height=DISPLAY + 64, elem_classes=PIX, interactive=False, format="png",
               buttons=["download", "fullscreen"])  # fmt: skip
    with gr.Row(equal_height=True):
        original = gr.Image(
            elem_id="orig",
            label="Input (as the model sees it)",
            # as /compress's input: the file's path, Gradio opens nothing
            type="filepath",
            image_mode=None,
            **big,
        )
        reconstruction = gr.Image(elem_id="recon", label="Reconstruction", **big)
        code_map = gr.Image(elem_id="codemap", label="Code map (click a cell to inspect it)", **big)
    number = dict(interactive=False, elem_classes=["numbers"])
    with gr.Row():
        psnr = gr.Number(elem_id="psnr", label="PSNR (dB)", **number)
        used = gr.Number(elem_id="used", label="Distinct codes in this image", **number)
        bits = gr.Number(label="Bits per image (h·w·log2 K)", **number)
    return dict(
        original=original, reconstruction=reconstruction, code_map=code_map, psnr=psnr,
        codes_used=used, bits=bits,
    )  # fmt: skip


def build(h: Reconstruct, codec_events: codec.Codec, model: gr.Dropdown) -> ReconstructTab:
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            image, size, sketch, button, draw, no_draw, examples = _input_column(h)
        with gr.Column(scale=5):
            out = _result_panel()
            with gr.Accordion("Code inspector", open=True, elem_id="inspector"):
                look = inspector.layout("cell-", cells=True)
            panel = codec.layout()
            # a photo's grid is thousands of cells: its code map, clicked, is the way in
            with gr.Accordion(
                "Code indices as a table (for a photo: click the code map)", open=False
            ):
                out["grid"] = gr.Dataframe(
                    interactive=False,
                    datatype="number",
                    type="array",
                    label="Code grid",
                    max_height=320,
                )
    out["cells"] = gr.State()

    outputs = bind(Reconstruction, **out)
    new_image = [
        button.click(h.image, [image, model, size], outputs, **public("reconstruct")),
        image.input(h.upload, [image, model, size], outputs, **private("reconstruct_upload")),
        examples.select(
            h.example_click,
            [model, size],
            bind(Example, image=image, **out),
            **private("reconstruct_example"),
        ),  # fmt: skip
        sketch.change(
            h.drawing,
            [sketch, model],
            outputs,
            trigger_mode="always_last",
            show_progress="hidden",
            **private("reconstruct_drawing"),
        ),
        size.input(h.upload, [image, model, size], outputs, **private("reconstruct_size")),
    ]
    codec.connect(codec_events, panel, model, out["original"])
    _connect_inspector(h.inspector, look, model, out)
    return ReconstructTab(image, size, examples, draw, no_draw, out, new_image, look, panel)


def _connect_inspector(h: inspector.Inspector, look, model, out: dict) -> None:
    """A click on any of the three pictures inspects the cell under it; the page outlines the
    cell (or removes the outline) as its box changes (a new image: :func:`follow_new_image`)."""
    shows = bind(inspector.CellView, **look.cell)
    quick = dict(show_progress="hidden", trigger_mode="always_last")
    for picture, name in ((out["original"], "input"), (out["reconstruction"], "reconstruction")):
        picture.select(
            h.picture_click, [model, out["cells"]], shows, **quick,
            **private(f"inspect_{name}", quick=True),
        )  # fmt: skip
    out["code_map"].select(
        h.code_map_click, [model, out["cells"]], shows, **quick,
        **private("inspect_code_map", quick=True),
    )  # fmt: skip
    look.cell["box"].change(None, look.cell["box"], None, js=inspector.OUTLINE_JS)


def follow_new_image(h: inspector.Inspector, tab: ReconstructTab, dep) -> None:
    """After ``dep`` made a new current image (the tab's own events, a model's first
    example): the inspector emptied, the page given the new grid's geometry."""
    shows = bind(inspector.CellView, **tab.inspector.cell)
    dep.success(h.clear, tab.cells, shows, **private("inspect_clear", quick=True))


def clear_on_switch(h: Reconstruct, tab: ReconstructTab, trigger) -> None:
    """On ``trigger`` (a model chosen): the codec panel and the inspector emptied at once
    (they follow the current image, which the new model's first example replaces)."""
    outputs = (
        bind(codec.Compressed, **tab.codec.compressed)
        + bind(codec.Decompressed, **tab.codec.decompressed)
        + bind(inspector.CellView, **tab.inspector.cell)
    )
    blank = [None] * (len(codec.Compressed._fields) + len(codec.Decompressed._fields))

    def cleared():
        return (*blank, *inspector.Inspector.clear())

    trigger(cleared, None, outputs, show_progress="hidden", **private("switch_clear", quick=True))
