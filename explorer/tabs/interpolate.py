"""Interpolate: an animated GIF from image A to image B through latent space (``lerp``,
``slerp``, or straight through the ``codebook``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import gradio as gr
import PIL.Image
import torch
from torchvision.transforms.v2 import functional as TF

import vqvae
from vqvae import images
from vqvae.latent import PATHS

from .. import inputs
from ..context import Context
from ..guards import clear_errors, image_input
from ..settings import (
    AUTO_FRAMES,
    DISPLAY,
    INTERPOLATE_AUTO_PIXELS,
    INTERPOLATE_PIXELS,
    MAX_FPS,
    MAX_FRAMES,
    MAX_PHOTO_PIXELS,
    PHOTO_TILE,
)
from ..ui import PIX, bind, private, public, skip

STRIP_FRAME = 96  # px: the longest side of a photo's frame in the strip


class Interpolation(NamedTuple):
    gif: str  # path of a looping animated GIF
    strip: PIL.Image.Image  # the frames side by side


class InterpExample(NamedTuple):
    image_a: str | None
    image_b: str | None
    target: str  # where the next example goes: "A" or "B"


def _number(value, lo: float, hi: float, what: str) -> float:
    """A finite number in [lo, hi] (fractions allowed), or gr.Error."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise gr.Error("frames and fps must be numbers.")
    try:
        f = float(value)
    except ValueError:
        raise gr.Error("frames and fps must be numbers.") from None
    if not (math.isfinite(f) and lo <= f <= hi):
        raise gr.Error(f"{what} must be between {lo} and {hi}, got {value}.")
    return f


class Interpolate:
    """The Interpolate tab's events."""

    def __init__(self, ctx: Context):
        self.models = ctx.models
        self.files = ctx.files

    @clear_errors
    def gif(
        self, image_a, image_b, model_name: str, frames=24, fps=12, path: str = "lerp",
        pingpong: bool = True, *, max_pixels: int = MAX_PHOTO_PIXELS,
    ) -> Interpolation:  # fmt: skip
        """Two images -> (animated GIF path, strip of the frames). A colour model reads both
        as photos at A's own resolution, downscaled above ``max_pixels`` (B resized to cover
        A's size and centre-cropped to it); a digit model reads their thumbnails."""
        m = self.models.get(model_name)
        n = _number(frames, 2, MAX_FRAMES, "Number of frames")
        f = _number(fps, 1, MAX_FPS, "Frames per second")
        if not isinstance(path, str) or path not in PATHS:
            raise gr.Error(f"Path must be one of {', '.join(PATHS)}, got {path!r:.20}.")
        for side, im in (("A", image_a), ("B", image_b)):
            if im is None:
                raise gr.Error(f"No image {side}: upload one or click an example.")
        a, b = self._pair(m, image_a, image_b, n, max_pixels)
        with torch.inference_mode():
            seq = vqvae.interpolate(m.model, a, b, steps=int(n), path=path, tile=PHOTO_TILE)
        gif = images.write_gif(seq, self.files.new(".gif"), fps=f, pingpong=bool(pingpong))
        return Interpolation(str(gif), _strip(seq))

    def _pair(
        self, m, image_a, image_b, frames: float, max_pixels: int
    ) -> tuple[torch.Tensor, ...]:
        """The two images as the model reads them, of one size, within the frame budget:
        frames cost in proportion to their pixels."""
        if not inputs.takes_photos(m):
            a = inputs.model_input(m, image_a, models=self.models)
            b = inputs.model_input(m, image_b, models=self.models)
            what = f"this model's {m.config.image_size}px images"
        else:
            a = inputs.photo_input(m, image_a, announce=max_pixels == MAX_PHOTO_PIXELS,
                                   max_pixels=max_pixels)  # fmt: skip
            b = images.cover(inputs.photo_input(m, image_b, announce=False), a.shape[-2:])
            what = f"a {a.shape[-1]}x{a.shape[-2]} image A"
        most = INTERPOLATE_PIXELS // (a.shape[-2] * a.shape[-1])
        if frames > most:
            raise gr.Error(
                f"At most {most} frames for {what}, got {frames:g}: the limit keeps every "
                "request within a few seconds of the server's time"
                + (" (use a smaller image A for more frames)." if most < MAX_FRAMES else ".")
            )
        return a, b

    @clear_errors
    def gif_if_any(self, image_a, image_b, model_name: str, frames=24, *args) -> Interpolation:
        """For page load and model changes: a model without examples is no error, and photos
        are walked in at most AUTO_FRAMES frames, downscaled to fit INTERPOLATE_AUTO_PIXELS
        in all: what the page asks for by itself stays cheap and still shows a walk (Make
        GIF walks them at their own resolution)."""
        if image_a is None or image_b is None:
            return skip(Interpolation)
        m = self.models.get(model_name)
        if not inputs.takes_photos(m):
            return self.gif(image_a, image_b, model_name, frames, *args)
        frames = min(_number(frames, 2, MAX_FRAMES, "Number of frames"), AUTO_FRAMES)
        small = int(INTERPOLATE_AUTO_PIXELS // frames)
        return self.gif(image_a, image_b, model_name, frames, *args, max_pixels=small)

    @clear_errors
    def example_click(
        self, model_name: str, target: str, evt: gr.SelectData, image_a=None, image_b=None
    ) -> InterpExample:
        """Click on an example: it goes into A or B (``target``), and the next click into the
        other. The other image is handed back as it was (not skipped: Gradio would replace
        that component's session copy, losing its file-path input)."""
        m = self.models.get(model_name)
        if target not in ("A", "B"):
            raise gr.Error(f"The target must be 'A' or 'B', got {target!r:.20}.")
        path = m.examples[inputs.selected_index(evt, len(m.examples), "examples")]
        if target == "A":
            return InterpExample(path, image_b, "B")
        return InterpExample(image_a, path, "A")


def _strip(seq: torch.Tensor) -> PIL.Image.Image:
    """The frames side by side: thumbnails enlarged twice, photos' frames shrunk to at most
    STRIP_FRAME px a side (a strip of 24 full-size photos would be 12,000 px wide)."""
    if max(seq.shape[-2:]) <= STRIP_FRAME:
        return images.frame_strip(seq, scale=2, per_row=12)
    s = STRIP_FRAME / max(seq.shape[-2:])
    small = [max(1, round(v * s)) for v in seq.shape[-2:]]
    return images.frame_strip(TF.resize(seq, small, antialias=True).clamp(0, 1), scale=1)


INTRO = (
    "Walk from image A to image B in latent space. **lerp** blends the encoder outputs and "
    "quantizes each step; **slerp** does so along a sphere; **codebook** blends the two "
    "quantized grids and decodes without re-quantizing. The result is a looping GIF. "
    "Colour models walk at A's own resolution: B is resized to cover A's size and "
    "centre-cropped to it. Each frame costs in proportion to its pixels: a large A allows "
    "fewer frames."
)


@dataclass
class InterpolateTab:
    image_a: gr.Image
    image_b: gr.Image
    examples: gr.Gallery
    settings: list  # frames, fps, path, ping-pong
    outputs: list  # the components of an Interpolation


def build(h: Interpolate, model: gr.Dropdown) -> InterpolateTab:
    gr.Markdown(INTRO)
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
            height=190,
            allow_preview=False,
            elem_classes=PIX,
            scale=3,
        )
        target = gr.Radio(
            ["A", "B"], value="A", label="Next example goes into", scale=1, min_width=160
        )
    with gr.Row():
        big = dict(height=DISPLAY + 64, interactive=False, elem_classes=PIX)
        gif = gr.Image(
            elem_id="gif", label="Animation", type="filepath", buttons=["download"], scale=1, **big
        )
        strip = gr.Image(elem_id="strip", label="Frames", format="png", scale=2, **big)

    settings = [frames, fps, path, pingpong]
    outputs = bind(Interpolation, gif=gif, strip=strip)
    button.click(
        h.gif, [img_a, img_b, model, *settings], outputs, **public("interpolate", expensive=True)
    )
    examples.select(
        h.example_click,
        [model, target, img_a, img_b],
        bind(InterpExample, image_a=img_a, image_b=img_b, target=target),
        **private("interpolate_example", quick=True),
    )
    return InterpolateTab(img_a, img_b, examples, settings, outputs)
