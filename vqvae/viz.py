"""Pictures of a codebook: its UMAP projection and usage, stored beside a model in
``codebook.json`` so apps never run UMAP at start-up, and the Plotly figure that shows them.

>>> info = load_codebook_info(model, "pretrained/mnist")
>>> fig = codebook_figure(info["umap_2d"], info["usage"], highlight=codes)   # a go.Figure
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from .codes import usage_ranks
from .files import write_json_atomic

CODEBOOK_INFO = "codebook.json"

RING = "#e4572e"  # the outline of the highlighted codes


def umap_coords(codebook: torch.Tensor, dims: int = 2, seed: int = 0) -> np.ndarray:
    """UMAP projection (K, dims) of code vectors (K, D), umap-learn, Euclidean metric,
    15 neighbours. Deterministic for a given seed."""
    import umap  # umap-learn; imported lazily, it is slow to import

    x = codebook.detach().float().cpu().numpy()
    reducer = umap.UMAP(
        n_components=dims,
        n_neighbors=min(15, len(x) - 1),
        min_dist=0.1,
        random_state=seed,
        n_jobs=1,
    )
    return reducer.fit_transform(x).astype(np.float32)


def codebook_info(model, usage: torch.Tensor | None = None) -> dict:
    """``{"usage": [K], "umap_2d": [[x, y]] * K, "umap_3d": [[x, y, z]] * K}``."""
    K = model.config.codebook_size
    cb = model.codebook
    return {
        "usage": (usage if usage is not None else torch.zeros(K)).long().tolist(),
        "umap_2d": umap_coords(cb, 2).round(4).tolist(),
        "umap_3d": umap_coords(cb, 3).round(4).tolist(),
    }


def load_codebook_info(model, model_dir=None, cache_dir=None) -> dict:
    """The model's ``codebook.json`` if its folder has one; otherwise compute it once and
    cache it on disk (keyed by a hash of the codebook), so it is never recomputed per start."""
    if model_dir is not None and (Path(model_dir) / CODEBOOK_INFO).is_file():
        return json.loads((Path(model_dir) / CODEBOOK_INFO).read_text())
    from .data import cache_dir as default_cache

    digest = hashlib.sha1(model.codebook.detach().cpu().numpy().tobytes()).hexdigest()[:16]
    path = Path(cache_dir or default_cache() / "codebook") / f"{digest}.json"
    if path.is_file():
        return json.loads(path.read_text())
    info = codebook_info(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, info)
    return info


def codebook_figure(coords, usage, highlight=None, *, title: str | None = None, height=480):
    """A Plotly figure of a codebook: one marker per code at ``coords`` (K, 2) or (K, 3)
    (3-D gives a rotatable scatter), coloured by ``usage`` (K,) counts on a log scale, with
    the codes in ``highlight`` (any int array of code indices in [0, K), e.g. a code grid
    (h, w); None for none) ringed (2-D) or drawn as diamonds (3-D). Hovering a code shows its
    index, usage, usage rank and how often it occurs in ``highlight``.

    Trace 0 holds every code, trace 1 the highlighted ones; ``customdata`` rows are
    (code, uses, rank, occurrences in ``highlight``)."""
    import plotly.graph_objects as go  # imported lazily: only apps draw

    xyz = np.asarray(coords, dtype=np.float32)
    u = np.asarray(usage, dtype=np.int64)
    K = len(u)
    if xyz.ndim != 2 or xyz.shape[0] != K or xyz.shape[1] not in (2, 3):
        raise ValueError(f"coords must be (K, 2) or (K, 3) with K = {K}, got {xyz.shape}")
    count = np.zeros(K, np.int64)
    if highlight is not None:
        h = np.asarray(highlight, dtype=np.int64).ravel()
        if h.size and (h.min() < 0 or h.max() >= K):
            raise ValueError(f"highlighted codes must be in [0, {K - 1}]")
        count = np.bincount(h, minlength=K)
    three = xyz.shape[1] == 3
    data = np.stack([np.arange(K), u, usage_ranks(u).numpy(), count], 1)
    hover = (
        "<b>code %{customdata[0]}</b><br>used %{customdata[1]:,} times "
        "(rank %{customdata[2]})<br>%{customdata[3]} cells of this image<extra></extra>"
    )
    ticks = [0] + [10**t for t in range(1, int(np.log10(max(1, u.max(initial=0)))) + 1)]
    marker = dict(
        color=np.log10(1 + u),
        colorscale="Viridis",
        cmin=0,
        size=4 if three else 7,
        opacity=0.9,
        colorbar=dict(
            title="uses",
            tickvals=np.log10(1 + np.array(ticks)),
            ticktext=[f"{t:,}" for t in ticks],
            thickness=12,
        ),
    )
    sel = count > 0
    ring = (
        dict(size=7, color=RING, symbol="diamond")
        if three  # 3-D markers cannot be hollow rings
        else dict(size=15, color="rgba(0,0,0,0)", line=dict(color=RING, width=2.5))
    )

    def at(a):
        return dict(x=a[:, 0], y=a[:, 1], **(dict(z=a[:, 2]) if three else {}))

    Scatter = go.Scatter3d if three else go.Scattergl
    fig = go.Figure(
        [
            Scatter(
                mode="markers",
                marker=marker,
                customdata=data,
                hovertemplate=hover,
                name="codes",
                showlegend=False,
                **at(xyz),
            ),
            Scatter(
                mode="markers",
                marker=ring,
                customdata=data[sel],
                hovertemplate=hover,
                name="in this image",
                showlegend=bool(sel.any()),
                **at(xyz[sel]),
            ),
        ]
    )
    fig.update_layout(
        height=height,
        margin=dict(l=10, r=10, t=30, b=10),
        template="plotly_white",
        legend=dict(x=0, y=1.06, orientation="h"),
        title=dict(text=title, x=0.5, font_size=14) if title else None,
    )
    if three:
        fig.update_scenes(
            xaxis_showticklabels=False,
            yaxis_showticklabels=False,
            zaxis_showticklabels=False,
            xaxis_title="",
            yaxis_title="",
            zaxis_title="",
        )
    else:
        fig.update_xaxes(showticklabels=False, title=None)
        fig.update_yaxes(showticklabels=False, title=None, scaleanchor="x")
    return fig
