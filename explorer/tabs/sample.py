"""Sample: new images from the model's prior (class or none, temperature, top-k,
classifier-free guidance, seed); a sample clicked opens in Edit codes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import gradio as gr
import torch

from vqvae import images

from .. import inputs
from ..context import Context
from ..guards import clear_errors
from ..settings import DISPLAY, MAX_SAMPLES, SAMPLE_CODES
from ..ui import CLASS_CHOICE, PIX, bind, public


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


def check_cost(prior, n: int, guided: bool) -> None:
    """gr.Error if drawing ``n`` samples costs more than SAMPLE_CODES codes: each sample is
    a grid of h x w codes, drawn twice over with guidance (with and without the class)."""
    h, w = prior.grid
    most = SAMPLE_CODES // ((1 + guided) * h * w)
    if n > most:
        how = " with guidance other than 1 (it draws each twice)" if guided else ""
        raise gr.Error(
            f"At most {most} samples at once for this model{how}, got {n}: the limit keeps "
            "every request under a second of the server's time.",
            title="Too many samples",
        )


class Sample:
    """The Sample tab's events."""

    def __init__(self, ctx: Context):
        self.models = ctx.models

    @clear_errors
    def setup(self, model_name: str) -> SampleSetup:
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
    def draw(
        self, model_name: str, label="any", n=16, temperature=1.0, top_k=0, guidance=1.0, seed=-1
    ) -> Samples:
        """-> ``n`` (1-64) decoded samples of the model's prior (of class ``label``, or "any"),
        their code grids, a note naming the seed. top_k 0: all codes; seed -1 (the default):
        a new one each call."""
        m = self.models.get(model_name)
        prior = inputs.prior(m)
        n = inputs.whole_number(n, 1, MAX_SAMPLES, "The number of samples")
        cls = inputs.class_label(m, label)
        options = inputs.sampling(m, temperature, top_k, guidance, seed)
        check_cost(prior, n, guided=cls is not None and options["guidance"] != 1)
        start = time.perf_counter()
        with torch.inference_mode():
            codes = prior.sample(n, cls, **options)
            x = m.model.decode(codes)
        ms = 1000 * (time.perf_counter() - start)
        a = images.to_uint8(x)  # enlarged by the browser (pixelated), not here
        gallery = [(a[i], f"#{i}") for i in range(n)]
        note = (
            f"{n} sample{'s' * (n > 1)} of class **{label if cls is not None else 'any'}** "
            f"drawn and decoded in {ms:.0f} ms with seed **{options['generator'].initial_seed()}** "
            "(enter it as the seed to draw the same again). Click one to edit its codes."
        )
        return Samples(gallery, codes.tolist(), note)

    @clear_errors
    def pick(self, model_name: str, codes, evt: gr.SelectData):
        """Click on a sample -> its code grid (table)."""
        m = self.models.get(model_name)
        if not isinstance(codes, list):
            raise gr.Error("There are no samples to pick from: sample first.")
        i = inputs.selected_index(evt, len(codes), "samples")
        return inputs.table(inputs.code_grid(m, codes[i]))


INTRO = (
    "Draw new images from the model's **prior**, a transformer that has learned which "
    "code grids are likely, one code at a time, then decode them. Lower temperature or "
    "top-k: safer, less varied samples; guidance above 1 sharpens the class. Click a "
    "sample to edit its codes."
)


@dataclass
class SampleTab:
    note: gr.Markdown  # the prior, or why the model has none
    label: gr.Dropdown
    top_k: gr.Number
    gallery: gr.Gallery
    codes: gr.JSON  # the sampled grids, for picking one


def build(h: Sample, model: gr.Dropdown) -> SampleTab:
    gr.Markdown(INTRO)
    note = gr.Markdown(elem_id="sample-note")
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            label = gr.Dropdown(
                ["any"], value="any", label="Class", elem_id="sample-class", **CLASS_CHOICE
            )
            n = gr.Slider(1, MAX_SAMPLES, value=16, step=1, label="Number of samples")
            # the main button above the finer settings: within the first screen at 1280 px
            button = gr.Button("Sample", elem_id="sample-btn", variant="primary")
            temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature")
            top_k = gr.Number(value=0, label="Top-k (0: all codes)", precision=None, minimum=0)
            guidance = gr.Slider(0.0, 5.0, value=1.0, step=0.25, label="Guidance (with a class)")
            seed = gr.Number(
                value=-1, label="Seed (-1: a new one each click)", precision=None, minimum=-1
            )
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
        h.draw,
        [model, label, n, temperature, top_k, guidance, seed],
        bind(Samples, gallery=gallery, codes=codes, note=info),
        **public("sample", expensive=True),
    )
    return SampleTab(note, label, top_k, gallery, codes)
