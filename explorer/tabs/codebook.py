"""Codebook: the codes' UMAP projection coloured by usage (the current image's codes ringed),
the code atlas (what each code decodes to on its own), and a code inspector (usage, rank,
nearest codes, the training patches where the encoder picked it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import gradio as gr
import numpy as np
import torch

from vqvae import viz
from vqvae.metrics import perplexity

from .. import inputs
from ..context import Context
from ..guards import clear_errors
from ..ui import CODE_NUMBER, PIX, bind, for_open_tab, private, public
from . import inspector
from .inspector import CodeDetails, CodePatches

VIEWS = ("2-D", "3-D")


class CodebookView(NamedTuple):
    figure: object  # plotly go.Figure
    summary: str  # Markdown


class Codebook:
    """The Codebook tab's events (the atlas and code tiles also serve the Edit tab)."""

    def __init__(self, ctx: Context):
        self.models = ctx.models

    @clear_errors
    def figure(self, model_name: str, view: str = "2-D", codes=None) -> CodebookView:
        """-> Plotly figure of the codebook's UMAP projection coloured by training-set usage
        (codes of ``codes``, a grid, outlined), and a summary (Markdown)."""
        m = self.models.get(model_name)
        if view not in VIEWS:
            raise gr.Error(f"view must be '2-D' or '3-D', got {view!r:.20}")
        grid = inputs.code_grid(m, codes) if inputs.has_table(codes) else None
        three = view == "3-D"
        u = m.usage
        fig = viz.codebook_figure(
            m.info["umap_3d" if three else "umap_2d"],
            u,
            grid,
            title=f"{m.name}: {len(u)} codes, UMAP {view}",
        )
        used = int((u > 0).sum())
        summary = (
            f"{used} of {len(u)} codes ({100 * used / len(u):.0f}%) are used on the training "
            f"set; usage perplexity {perplexity(torch.as_tensor(u)):.0f}."
        )
        if grid is not None:
            summary += (
                f" This image uses **{len(np.unique(grid))}** distinct codes "
                f"({'red diamonds' if three else 'ringed'})."
            )
        return CodebookView(fig, summary)

    @clear_errors
    def atlas(self, model_name: str) -> list[tuple[str, str]]:
        """-> the code atlas: (image, caption) per code, most used first."""
        m = self.models.get(model_name)
        files = self.models.atlas(m)
        return [(files[k], f"#{k}") for k in m.atlas_order]

    @clear_errors
    def atlas_pick(self, model_name: str, evt: gr.SelectData) -> int:
        """Click on the atlas -> the code's index."""
        m = self.models.get(model_name)
        return int(m.atlas_order[inputs.selected_index(evt, m.config.codebook_size, "codes")])

    @clear_errors
    def code(self, model_name: str, index) -> CodeDetails:
        """One code -> what it stands for (its atlas tile, enlarged), details (Markdown:
        usage, rank, nearest codes), the nearest codes' tiles."""
        m = self.models.get(model_name)
        return inspector.code_details(self.models, m, inputs.code_index(m, index), None)

    @clear_errors
    def code_in_image(self, model_name: str, index, cells) -> str:
        """The details of :meth:`code` with the code's usage in the current image (``cells``,
        its inspector state); unchanged without one of this model's."""
        m = self.models.get(model_name)
        if not isinstance(cells, inspector.CellCodes) or cells.model != m.name:
            return gr.skip()
        return inspector.code_text(m, inputs.code_index(m, index), cells)

    @clear_errors
    def code_patches(self, model_name: str, index) -> CodePatches:
        """One code -> the training-image crops it stands for (its cell outlined in red),
        from the model folder's code_patches.npz (written by train.export)."""
        m = self.models.get(model_name)
        return inspector.code_patches(m, inputs.code_index(m, index))

    @clear_errors
    def code_tile(self, model_name: str, code) -> str | None:
        """One code -> its atlas tile (a PNG file); None while the number is half-typed."""
        m = self.models.get(model_name)
        try:
            k = inputs.code_index(m, code)
        except gr.Error:
            return None
        return self.models.atlas(m)[k]


INTRO = (
    "Every code is a vector; UMAP lays them out so that similar codes sit close together. "
    "Colour is how often a code is used on the training set (log scale); the codes in "
    "your current image are ringed. Hover for details; click a code to inspect it. Below, "
    "the **atlas** shows what each code stands for: the average of the training crops where "
    "the encoder picked it (its own cell outlined, one cell of context around), or, for a "
    "model without training patches, what a grid of that code alone decodes to; click one to "
    "inspect it."
)


# gr.Plot gives the server no clicks: on the page, a click on a code of the UMAP plot types its
# number into the code box (#pick), which opens the inspector as typing it does. Hooked again
# whenever a new figure is drawn.
UMAP_CLICK_JS = """
() => {
  let tries = 0;
  const hook = () => {
    const plot = document.querySelector('#codebook-plot .js-plotly-plot');
    const box = document.querySelector('#pick input');
    if (!plot || !plot.on || !box) return tries++ < 50 && setTimeout(hook, 200);
    if (plot.dataset.inspects) return;
    plot.dataset.inspects = '1';
    plot.on('plotly_click', (e) => {
      const p = e && e.points && e.points[0];
      const code = p && p.customdata && p.customdata[0];
      if (code == null) return;
      const set = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
      set.call(box, String(code));
      box.dispatchEvent(new Event('input', {bubbles: true}));
    });
  };
  setTimeout(hook, 100);
  return [];
}
"""


@dataclass
class CodebookTab:
    view: gr.Radio
    figure: dict  # the components of a CodebookView, by field
    pick: gr.Number
    atlas: gr.Gallery


def build(h: Codebook, model: gr.Dropdown, grid: gr.Dataframe, cells=None) -> CodebookTab:
    """``grid``: the current image's codes, ringed in the plot; ``cells``: the state of
    its cells (inspector.CellCodes), for a code's usage in it."""
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=3):
            view = gr.Radio(
                list(VIEWS), elem_id="view", value="2-D", label="Projection", container=False
            )
            plot = gr.Plot(elem_id="codebook-plot", label="Codebook (UMAP)")
            summary = gr.Markdown(elem_id="codebook-summary")
        with gr.Column(scale=2):
            pick = gr.Number(elem_id="pick", label="Inspect code #", value=0, **CODE_NUMBER)
            look = inspector.layout("pick-", cells=False)
    atlas = gr.Gallery(
        elem_id="atlas",
        label="Code atlas (most used first)",
        columns=16,
        height=360,
        allow_preview=False,
        elem_classes=PIX,
    )

    figure = dict(figure=plot, summary=summary)
    view.change(h.figure, [model, view, grid], bind(CodebookView, **figure), **public("codebook"))
    details = pick.change(
        h.code,
        [model, pick],
        bind(CodeDetails, **look.details),
        **public("code"),
        trigger_mode="always_last",
    )
    if cells is not None:  # the API's /code knows no current image: the page adds it
        details.success(
            h.code_in_image,
            [model, pick, cells],
            look.details["details"],
            **private("code_in_image", quick=True),
        )
    pick.change(
        h.code_patches,
        [model, pick],
        bind(CodePatches, **look.patches),
        **public("code_patches"),
        trigger_mode="always_last",
    )
    atlas.select(h.atlas_pick, [model], pick, **private("atlas_pick", quick=True))
    plot.change(None, None, None, js=UMAP_CLICK_JS)
    return CodebookTab(view, figure, pick, atlas)


def lazy_atlas(h: Codebook, model: gr.Dropdown, gallery: gr.Gallery, tab: str, shown_tab):
    """-> ``refresh(dep)``: the chosen model's atlas in ``gallery`` (on the tab labelled
    ``tab``) when that tab is open (:func:`explorer.ui.for_open_tab`). Sending K tiles costs
    the server about 0.4 s per gallery for K = 512: a model switch pays it only for the tab
    in view."""
    name = "atlas" if tab == "Codebook" else f"atlas_{tab.split()[0].lower()}"
    return for_open_tab(h.atlas, [model], [gallery], tab=tab, model=model,
                        shown_tab=shown_tab, **private(name))  # fmt: skip
