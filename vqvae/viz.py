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
from .files import atomic_write, write_json_atomic

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


def rd_figure(curves: dict, metric: str = "psnr-rgb", *, title: str | None = None, height=420):
    """A Plotly rate-distortion chart: bits per pixel (log scale) against ``metric`` (a
    curve's key: ``psnr-rgb``, ``psnr-grey``, ``ms-ssim-rgb``...; MS-SSIM is drawn in dB)
    for each of ``curves`` {name: curve} (:mod:`vqvae.rd`'s layout) that has it. The
    formats' curves (a ``quality`` setting per point) are lines; the codec's points (a
    ``rate`` per point) are large stars, joined when there are several. Hovering a point
    shows its setting, bits per pixel and quality."""
    import plotly.graph_objects as go  # imported lazily: only apps draw

    from .rd import quality_db

    unit = "MS-SSIM (dB)" if metric.startswith("ms-ssim") else "PSNR (dB)"
    fig = go.Figure()
    for name, c in curves.items():
        y = quality_db(c, metric)
        if y is None:
            continue
        ours = "rate" in c
        labels = c["rate"] if ours else [f"quality {q}" for q in c.get("quality", [])]
        fig.add_trace(
            go.Scatter(
                x=c["bpp"],
                y=y,
                name=name,
                mode="markers" if len(c["bpp"]) == 1 else "lines+markers",
                marker=dict(size=16, symbol="star") if ours else dict(size=6),
                customdata=labels,
                hovertemplate=f"<b>{name}</b> %{{customdata}}<br>%{{x:.3f}} bits per pixel"
                f"<br>%{{y:.2f}} dB<extra></extra>",
            )
        )
    fig.update_layout(
        height=height,
        margin=dict(l=10, r=10, t=40 if title else 10, b=10),
        template="plotly_white",
        title=dict(text=title, x=0.5, font_size=14) if title else None,
        legend=dict(x=1, xanchor="right", y=0, yanchor="bottom"),
    )
    fig.update_xaxes(type="log", title="bits per pixel")
    fig.update_yaxes(title=unit)
    return fig


# -- what a code stands for: training patches --------------------------------------------------

CODE_PATCHES = "code_patches.npz"
PATCHES_PER_CODE = 32


def code_patches(
    model, images_u8: torch.Tensor, *, per_code: int = PATCHES_PER_CODE, context: int = 1,
    batch_size: int = 1000, seed: int = 0,
) -> dict:  # fmt: skip
    """Training-image crops showing what each code stands for: up to ``per_code`` random
    positions where the encoder picked code k, over ``images_u8`` (N, C, S, S) uint8.

    A crop is the code's cell (``S // h`` pixels square) with ``context`` cells around it
    on each side: the pixels the code mostly depends on (the encoder's full receptive field
    is larger, for a 28 px model the whole image). Pixels outside the image are 0.
    Returns numpy arrays: ``patches`` uint8 (M, C, side, side), grouped by code, code k's at
    ``patches[offsets[k]:offsets[k + 1]]``; ``offsets`` int64 (K + 1,); ``image_index``
    int64 (M,) and ``cell_yx`` int64 (M, 2): where each crop comes from; ``cell`` and
    ``context`` (int64 scalars): the crop's geometry."""
    if per_code < 1 or context < 0:
        raise ValueError(f"per_code must be >= 1 and context >= 0, got {per_code}, {context}")
    c = model.config
    K, cell = c.codebook_size, c.image_size // c.latent_size
    grids = []
    with torch.no_grad():
        for i in range(0, len(images_u8), batch_size):
            x = images_u8[i : i + batch_size].to(model.device).float() / 255.0
            grids.append(model.encode(x).cpu())
    codes = torch.cat(grids).numpy()  # (N, h, w)
    _, h, w = codes.shape
    flat = codes.reshape(-1)
    order = np.random.default_rng(seed).permutation(flat.size)
    order = order[np.argsort(flat[order], kind="stable")]  # grouped by code, random within
    counts = np.bincount(flat, minlength=K)
    kept = np.minimum(counts, per_code)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    take = np.concatenate([order[s : s + n] for s, n in zip(starts, kept, strict=True)])
    img, rest = np.divmod(take, h * w)
    row, col = np.divmod(rest, w)
    pad = context * cell
    side = cell + 2 * pad
    x = np.pad(images_u8.numpy()[img], ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    r = (row * cell)[:, None] + np.arange(side)  # (M, side), in padded coordinates
    q = (col * cell)[:, None] + np.arange(side)
    m = np.arange(len(take))[:, None, None, None]
    ch = np.arange(c.in_channels)[None, :, None, None]
    patches = x[m, ch, r[:, None, :, None], q[:, None, None, :]]
    return {
        "patches": np.ascontiguousarray(patches, dtype=np.uint8),
        "offsets": np.concatenate([[0], np.cumsum(kept)]).astype(np.int64),
        "image_index": img.astype(np.int64),
        "cell_yx": np.stack([row, col], 1).astype(np.int64),
        "cell": np.int64(cell),
        "context": np.int64(context),
    }


def save_code_patches(path, data: dict) -> None:
    """Write :func:`code_patches`' arrays as a compressed ``.npz`` (atomically, no pickle)."""
    with atomic_write(path) as f:
        np.savez_compressed(f, **data)


def load_code_patches(path, codebook_size: int) -> dict:
    """Read a file of :func:`save_code_patches`; ValueError unless it is one for a codebook
    of ``codebook_size`` codes."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (ValueError, OSError) as e:
        raise ValueError(f"{path} is not a code patches file: {e}") from e
    need = {"patches", "offsets", "cell", "context"}
    if not need <= data.keys():
        raise ValueError(f"{path} lacks {', '.join(sorted(need - data.keys()))}")
    p, off = data["patches"], data["offsets"]
    if (
        p.dtype != np.uint8 or p.ndim != 4 or off.shape != (codebook_size + 1,)
        or off[0] != 0 or off[-1] != len(p) or (np.diff(off) < 0).any()
    ):  # fmt: skip
        raise ValueError(f"{path} does not hold patches for {codebook_size} codes")
    return data


def code_patch_sheet(data: dict, code: int, *, per_row: int = 8, scale: int = 4):
    """Code ``code``'s patches (from :func:`code_patches`) as one PIL image, ``per_row`` a
    row, enlarged ``scale`` times without blur, each with its code's cell outlined in red;
    None when the code has no patches (never picked on the training set)."""
    import PIL.Image
    from PIL import ImageDraw
    from torchvision.utils import make_grid

    from .images import to_uint8

    p = data["patches"][int(data["offsets"][code]) : int(data["offsets"][code + 1])]
    if len(p) == 0:
        return None
    pad, side = 2, p.shape[-1]
    grid = make_grid(torch.from_numpy(p).float() / 255.0, nrow=per_row, padding=pad, pad_value=1.0)
    im = PIL.Image.fromarray(to_uint8(grid)).convert("RGB")
    im = im.resize((im.width * scale, im.height * scale), PIL.Image.NEAREST)
    draw = ImageDraw.Draw(im)
    for t in range(len(p)):
        x0, y0 = (t % per_row) * (side + pad) + pad, (t // per_row) * (side + pad) + pad
        outline_cell(draw, data, scale, x0, y0)
    return im


def mean_patches(data: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """What each code stands for in real data: the mean of its training crops (from
    :func:`code_patches`: its cell and ``context`` cells around it), float (K, C, s, s) in
    [0, 1], and which codes have crops (bool (K,); the others are never picked and get 0).
    Unlike a grid filled with one code (vqvae.code_atlas), which for a digit model mostly
    decodes to black, the mean crop shows the stroke or texture piece the code is used for."""
    p = torch.from_numpy(data["patches"]).float() / 255.0
    off = torch.from_numpy(data["offsets"])
    counts = off.diff()
    owner = torch.repeat_interleave(torch.arange(len(counts)), counts)
    sums = torch.zeros((len(counts), *p.shape[1:])).index_add_(0, owner, p)
    return sums / counts.clamp(min=1).view(-1, 1, 1, 1), counts > 0


def outline_cell(
    draw, data: dict, scale: int, x0: int = 0, y0: int = 0, *, width: int | None = None
) -> None:
    """Outline the code's own cell of a crop of ``data``'s layout (see :func:`code_patches`)
    whose top-left corner is at (x0, y0) crop pixels, on a PIL ``ImageDraw`` of a picture
    enlarged ``scale`` times."""
    cell, ctx = int(data["cell"]), int(data["context"]) * int(data["cell"])
    if ctx:
        x, y = x0 + ctx, y0 + ctx
        draw.rectangle(
            [x * scale, y * scale, (x + cell) * scale - 1, (y + cell) * scale - 1],
            outline=RING,
            width=width or max(1, scale // 2),
        )


# -- code map overlays: surprise and marked cells ----------------------------------------------

# light yellow -> orange -> dark brown (ColorBrewer YlOrBr): few bits pale, many dark
HEAT = np.array([(255, 247, 188), (254, 153, 41), (140, 45, 4)], dtype=np.float64)


def heat_colors(values, vmax: float) -> np.ndarray:
    """uint8 RGB (..., 3) for ``values`` (any shape) on a pale-to-dark scale, 0 to ``vmax``."""
    t = np.clip(np.asarray(values, dtype=np.float64) / max(float(vmax), 1e-9), 0, 1)
    s = t * (len(HEAT) - 1)
    i = np.minimum(s.astype(int), len(HEAT) - 2)
    f = (s - i)[..., None]
    return np.round(HEAT[i] * (1 - f) + HEAT[i + 1] * f).astype(np.uint8)


def surprise_image(bits, vmax: float, size: int = 256):
    """The code map of a grid's surprise: cells (h, w) shaded by ``bits`` (each code's bits
    under the prior, ``CodePrior.code_bits``) from pale (0) to dark (``vmax``, e.g. log2 K),
    with each cell's bits written in it; the same geometry as ``images.code_map_image``."""
    import PIL.Image

    from .images import code_map_cell_size, draw_cells

    b = np.asarray(bits, dtype=np.float64)
    h, w = b.shape
    cell = code_map_cell_size((h, w), size)
    rgb = heat_colors(b, vmax)
    im = PIL.Image.fromarray(rgb.repeat(cell, 0).repeat(cell, 1))
    labels = [[f"{v:.1f}" for v in row] for row in b.tolist()]
    draw_cells(im, rgb, cell, labels if cell >= 20 else None, max(8, min(cell // 3, 14)))
    return im


def mark_cells(image, marks, size: int = 256):
    """A copy of a code map ``image`` (PIL, drawn at ``size``) with the cells where
    ``marks`` (bool (h, w)) is true veiled in white and outlined in magenta."""
    import PIL.Image
    from PIL import ImageDraw

    from .images import code_map_cell_size

    m = np.asarray(marks, dtype=bool)
    cell = code_map_cell_size(m.shape, size)
    veil = PIL.Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(veil)
    width = max(2, cell // 10)
    for i, j in zip(*np.nonzero(m), strict=True):
        box = [j * cell, i * cell, (j + 1) * cell - 1, (i + 1) * cell - 1]
        draw.rectangle(box, fill=(255, 255, 255, 120), outline=(214, 0, 147, 255), width=width)
    return PIL.Image.alpha_composite(image.convert("RGBA"), veil).convert("RGB")
