"""The app: the model picker, the five tabs, the wiring between them, and the process.

Reading order: :class:`Handlers` (every tab's events over one shared context), then
:func:`build_app` (lays out the tabs and wires what one tab's events change in the others),
then :func:`launch` and :func:`main`. Importing this module changes nothing in the process:
torch threads, PIL's pixel limit and Gradio's temp folder are set by :func:`configure_process`,
which :func:`launch` and :func:`main` call.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path
from typing import NamedTuple

import gradio as gr
import PIL.Image
import torch
from starlette.middleware import Middleware

from vqvae import images
from vqvae.checkpoint import PRETRAINED_DIR
from vqvae.codec import rates

from . import fairness, inputs, limits, settings
from .context import Context
from .files import OutputFiles, UploadSpace, guard_gradio_image_cache
from .guards import clear_errors, guard_inputs
from .store import ModelStore
from .tabs import codebook, codec, edit, interpolate, reconstruct, sample
from .ui import bind, for_open_tab, open_tab, private


class ModelView(NamedTuple):
    """What the page shows for the model picked."""

    card: str  # one paragraph: shapes and test-set metrics
    card_full: str  # the model folder's README.md
    examples: list  # paths for the Reconstruct gallery (no captions: they covered the pictures)
    draw: dict  # update: the drawing pad is shown for 1-channel models only
    no_draw: dict  # update: ... and this note for the others
    size: dict  # update: own resolution or thumbnail, for colour models only
    interp_examples: list  # paths for the Interpolate gallery
    image_a: str | None
    image_b: str | None
    pick: dict  # update of the code picker (its maximum, the most used code)
    paint_code: dict  # same for the paint code
    rate: dict  # update of the codec panel's rates (a photo's .vqz), shown with a grid prior
    encoder: dict  # update of the codec panel's encoders, shown with the rates


class Handlers:
    """Every event of the app as a plain method of its tab's handler object
    (``h.reconstruct.image``, ``h.edit.paint``, ...): inputs are what Gradio passes (file
    paths, numbers, lists), outputs what it displays, as named tuples. Inputs are checked
    (any client can call any event, with any values): errors a user can fix raise gr.Error,
    others raise a generic gr.Error and are logged."""

    def __init__(
        self,
        models_dir=PRETRAINED_DIR,
        examples_dir=settings.EXAMPLES_DIR,
        cache_dir=None,
        *,
        sources=(),
        output_budget: int = settings.OUTPUT_BUDGET,
        gradio_cache: str | Path | None = None,
        gradio_cache_budget: int = settings.GRADIO_CACHE_BUDGET,
    ):
        self.models = ModelStore(models_dir, examples_dir, cache_dir, sources)
        self.files = OutputFiles(
            self.models.cache_dir / "out", output_budget, gradio_cache, gradio_cache_budget
        )
        ctx = Context(self.models, self.files)
        self.reconstruct = reconstruct.Reconstruct(ctx)
        self.codec = codec.Codec(ctx)
        self.codebook = codebook.Codebook(ctx)
        self.edit = edit.Edit(ctx)
        self.sample = sample.Sample(ctx)
        self.interpolate = interpolate.Interpolate(ctx)

    def model_card(self, model_name: str) -> str:
        """One paragraph: the model's shapes and test-set metrics (Markdown)."""
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
        return " ".join(lines)  # one paragraph: the page's header stays short

    @clear_errors
    def original_grid(self, model_name: str, grid):
        """The grid Reset goes back to, kept in the session's state: only ever a checked
        (h, w) grid of the model's codes, whatever the event was sent."""
        return inputs.code_grid(self.models.get(model_name), grid)

    @clear_errors
    def select_model(self, model_name: str) -> ModelView:
        """Model dropdown -> card, example galleries, drawing pad (digit models only), code
        pickers."""
        m = self.models.get(model_name)
        K = m.config.codebook_size
        digits = m.config.in_channels == 1
        ex = list(m.examples)
        first = int(m.atlas_order[0])
        return ModelView(
            card=self.model_card(model_name),
            card_full=m.card or "",
            examples=ex,
            draw=gr.update(visible=digits),
            no_draw=gr.update(visible=not digits),
            size=gr.update(visible=not digits),
            interp_examples=ex,
            image_a=m.examples[0] if m.examples else None,
            image_b=m.examples[1 % len(m.examples)] if m.examples else None,
            pick=gr.update(maximum=K - 1, value=first),
            paint_code=gr.update(maximum=K - 1, value=first),
            rate=self._rates(m),
            encoder=gr.update(visible=m.grid_prior is not None),
        )

    @staticmethod
    def _rates(m) -> dict:
        """The codec panel's rate choices: the model's rates when it has a grid prior. The
        first stage at full size is chosen: its file decodes to the reconstruction the tab
        shows (a residual model's higher rates are one choice away)."""
        if m.grid_prior is None:
            return gr.update(choices=[], value=None, visible=False)
        options = rates(m.model)
        shown = next(r for r in options if r.stages == 1 and r.downscale == 1)
        return gr.update(choices=[r.name for r in options], value=shown.name, visible=True)


def open_edit_tab():
    return gr.Tabs(selected="edit"), "Edit codes"


class _Tabs(NamedTuple):
    rec: reconstruct.ReconstructTab
    cb: codebook.CodebookTab
    ed: edit.EditTab
    sa: sample.SampleTab
    it: interpolate.InterpolateTab


def _build_tabs(h: Handlers, model: gr.Dropdown) -> tuple[gr.Tabs, _Tabs]:
    with gr.Tabs() as tabs:
        with gr.Tab("Reconstruct", id="reconstruct"):
            rec = reconstruct.build(h.reconstruct, h.codec, model)
        with gr.Tab("Codebook", id="codebook"):
            cb = codebook.build(h.codebook, model, rec.grid, rec.cells)
        with gr.Tab("Edit codes", id="edit"):
            ed = edit.build(h.edit, h.codebook.atlas_pick, h.codebook.code_tile, model)
        with gr.Tab("Sample", id="sample"):
            sa = sample.build(h.sample, model)
        with gr.Tab("Interpolate", id="interpolate"):
            it = interpolate.build(h.interpolate, model)
    return tabs, _Tabs(rec, cb, ed, sa, it)


def _wire(h: Handlers, model, t: _Tabs, tabs: gr.Tabs):
    """What one tab's events change in the others; -> on_model(dep, trigger), what follows a
    model being chosen (``dep``: its select_model event, ``trigger``: what started it)."""
    rec, cb, ed, sa, it = t
    # the atlases and the first interpolation follow the model only on the tab in view
    # (ui.for_open_tab): a page opened on Reconstruct runs neither
    shown_tab = gr.State("Reconstruct")
    opened = tabs.select(open_tab, None, shown_tab, **private("open_tab", quick=True))
    first_gif = for_open_tab(
        h.interpolate.gif_if_any,
        [it.image_a, it.image_b, model, *it.settings],
        it.outputs,
        tab="Interpolate",
        model=model,
        shown_tab=shown_tab,
        **private("first_interpolation", expensive=True),
    )
    lazy = [
        codebook.lazy_atlas(h.codebook, model, cb.atlas, "Codebook", shown_tab),
        codebook.lazy_atlas(h.codebook, model, ed.atlas, "Edit codes", shown_tab),
        first_gif,
    ]
    for refresh in lazy:
        refresh(opened)

    def after_reconstruct(dep):
        """A new current image: the inspector follows it, the edit tab starts from its grid,
        the codebook rings it."""
        reconstruct.follow_new_image(h.reconstruct.inspector, rec, dep)
        ed.redraw(dep.success(h.edit.reset, [model, rec.grid], ed.edited, **private("edit_new")))
        dep.success(
            h.original_grid, [model, rec.grid], ed.original, **private("edit_original", quick=True)
        )
        dep.success(
            h.codebook.figure,
            [model, cb.view, rec.grid],
            bind(codebook.CodebookView, **cb.figure),
            **private("ring"),
        )

    for dep in rec.new_image:
        after_reconstruct(dep)

    # a sample picked: it becomes the edit tab's image
    pick = sa.gallery.select(
        h.sample.pick, [model, sa.codes], ed.original, **private("sample_pick", quick=True)
    )
    ed.redraw(pick.success(h.edit.reset, [model, ed.original], ed.edited, **private("edit_sample")))
    to_edit = pick.success(
        open_edit_tab, None, [tabs, shown_tab], **private("open_edit", quick=True)
    )
    for refresh in lazy:
        refresh(to_edit)

    def on_model(dep, trigger):
        """A model was chosen: show its first example, and on the tab in view its atlas or an
        interpolation of its first examples. The Reconstruct tab's outputs wait for the
        example from the start (or are cleared), so two models' results never sit side by
        side."""
        first = bind(reconstruct.Example, image=rec.image, **rec.outputs)
        first_example = trigger(h.reconstruct.example, [model], first, **private("first_example"))
        reconstruct.clear_on_switch(h.reconstruct, rec, trigger)
        after_reconstruct(first_example)
        for refresh in lazy:
            refresh(dep)
        dep.then(
            h.sample.setup,
            model,
            bind(
                sample.SampleSetup,
                note=sa.note,
                label=sa.label,
                resample_label=ed.label,
                top_k=sa.top_k,
            ),  # fmt: skip
            **private("sample_setup", quick=True),
        )

    return on_model


def build_app(
    models_dir=None, examples_dir=None, cache_dir=None, **handler_options
) -> tuple[gr.Blocks, Handlers]:
    """The app's gr.Blocks and the handlers behind its events. ``models_dir`` (default
    $VQVAE_MODELS_DIR or pretrained/) holds one folder per model; ``examples_dir`` (default
    $VQVAE_EXAMPLES_DIR or assets/examples) one folder of example images per model name;
    ``handler_options`` go to :class:`Handlers` (``sources``: more models by shipped name,
    folder or Hub repo id, default $VQVAE_MODELS split at commas; disk budgets)."""
    models_dir = models_dir or os.environ.get("VQVAE_MODELS_DIR") or PRETRAINED_DIR
    examples_dir = examples_dir or os.environ.get("VQVAE_EXAMPLES_DIR") or settings.EXAMPLES_DIR
    if "sources" not in handler_options:
        env = os.environ.get("VQVAE_MODELS", "")
        handler_options["sources"] = [s.strip() for s in env.split(",") if s.strip()]
    h = Handlers(models_dir, examples_dir, cache_dir, **handler_options)
    names = h.models.names()

    with gr.Blocks(title=settings.TITLE, delete_cache=settings.GRADIO_CACHE_LIFETIME) as demo:
        gr.Markdown(settings.INTRO)
        if not names:
            gr.Markdown(
                f"**No models found in `{models_dir}`.** Train one (see README) or "
                f"start with `--models-dir` pointing at a folder of models."
            )
        with gr.Row(equal_height=True):
            model = gr.Dropdown(
                names, value=names[0] if names else None, label="Model", scale=1, min_width=200
            )
            with gr.Column(scale=2, elem_id="model-card"):  # the card, its full text folded
                card = gr.Markdown()
                with gr.Accordion("Model card", open=False):
                    card_full = gr.Markdown()
        tabs, t = _build_tabs(h, model)
        on_model = _wire(h, model, t, tabs)
        if names:
            shows = bind(
                ModelView,
                card=card, card_full=card_full, examples=t.rec.examples, draw=t.rec.draw,
                no_draw=t.rec.no_draw, size=t.rec.size, interp_examples=t.it.examples,
                image_a=t.it.image_a, image_b=t.it.image_b, pick=t.cb.pick,
                paint_code=t.ed.paint_code, rate=t.rec.codec.rate,
                encoder=t.rec.codec.encoder,
            )  # fmt: skip
            # Gradio's page runs the listeners of one trigger one after another, each to its
            # end (the card's event, then the first example, ...), but the events that
            # follow one ("then") all at once: so a choice starts a step on the page alone,
            # and everything a model switch does follows it side by side
            chosen = model.change(None, None, None, js="() => []")
            on_model(chosen.then(h.select_model, model, shows, **private("select_model")),
                     chosen.then)  # fmt: skip
            on_model(demo.load(h.select_model, model, shows, **private("load_model")), demo.load)
    guard_inputs(demo)
    return demo, h


def configure_process(cpus: int | None = None) -> int:
    """The process-wide settings the app needs, before it serves anything: torch threads (one
    share of the usable CPUs per concurrent request), PIL's pixel limit (Gradio opens some
    images itself, such as the drawing pad's), Gradio's output images written whole before
    they are served, and glibc's mmap threshold (:func:`explorer.limits.return_freed_memory`).
    Returns the number of torch threads."""
    PIL.Image.MAX_IMAGE_PIXELS = images.MAX_PIXELS
    guard_gradio_image_cache()
    limits.return_freed_memory()
    n = settings.torch_threads(cpus)
    torch.set_num_threads(n)
    return n


def launch(demo: gr.Blocks, handlers: Handlers, host=None, port=None, **kw):
    """Queue with limits and launch; ``host``/``port`` default to GRADIO_SERVER_NAME /
    GRADIO_SERVER_PORT, then 127.0.0.1:7860. Errors reach clients only as gr.Error messages
    (``show_error=False``): anything else is logged here and answered generically. Uploads
    are refused while Gradio's cache is over its budget (:class:`explorer.files.UploadSpace`);
    request bodies are capped and idle sessions dropped (:func:`explorer.limits.app_kwargs`;
    pass ``app_kwargs`` to choose other limits)."""
    configure_process()
    demo.queue(default_concurrency_limit=settings.CONCURRENCY, max_size=settings.QUEUE_SIZE)
    fairness.install(
        demo,
        per_session=settings.EXPENSIVE_PER_SESSION,
        per_address=settings.EXPENSIVE_PER_ADDRESS,
        total=settings.EXPENSIVE_QUEUE,
        wait=settings.EXPENSIVE_WAIT,
        trust_forwarded_for=settings.TRUST_FORWARDED_FOR,
    )
    app_kwargs = kw.pop("app_kwargs", None) or limits.app_kwargs()
    app_kwargs.setdefault("middleware", []).append(Middleware(UploadSpace, files=handlers.files))
    return demo.launch(
        server_name=host or os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(port or os.environ.get("GRADIO_SERVER_PORT", 7860)),
        theme=gr.themes.Soft(primary_hue="indigo"),
        css=settings.CSS,
        allowed_paths=[str(handlers.models.examples_dir), str(handlers.models.cache_dir)],
        max_file_size=settings.MAX_UPLOAD,
        show_error=False,
        app_kwargs=app_kwargs,
        **kw,
    )


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="The VQ-VAE explorer, a Gradio app.")
    p.add_argument("--host", default=None, help="default: $GRADIO_SERVER_NAME or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: $GRADIO_SERVER_PORT or 7860")
    p.add_argument(
        "--models-dir",
        default=None,
        help="folder of model folders (default: $VQVAE_MODELS_DIR or pretrained/)",
    )
    p.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="SOURCE",
        dest="sources",
        help="one more model: a shipped name, a model folder or a Hugging Face Hub repo id "
        "(org/name, downloaded once into the Hub cache); repeat for more "
        "(default: $VQVAE_MODELS, comma-separated)",
    )
    p.add_argument(
        "--examples-dir",
        default=None,
        help="folder of <model>/ example images (default: $VQVAE_EXAMPLES_DIR or assets/examples/)",
    )
    return p.parse_args(argv)


def main(argv=None, **launch_options) -> gr.Blocks:
    """``python app.py [--host H] [--port P] [--models-dir D] [--examples-dir D]``; returns
    the app once it stops serving (at once with ``prevent_thread_lock=True``).

    Gradio's cache goes into a folder of the app's own (unless $GRADIO_TEMP_DIR names one),
    so the app may trim it to a budget; it is set before Gradio first reads it."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    configure_process()
    cache_dir = Path(tempfile.mkdtemp(prefix="vqvae-app-"))
    options = {}
    if not os.environ.get("GRADIO_TEMP_DIR"):
        os.environ["GRADIO_TEMP_DIR"] = str(cache_dir / "gradio")
        options["gradio_cache"] = cache_dir / "gradio"
    if args.sources is not None:
        options["sources"] = args.sources
    demo, handlers = build_app(args.models_dir, args.examples_dir, cache_dir, **options)
    launch(demo, handlers, args.host, args.port, **launch_options)
    return demo
