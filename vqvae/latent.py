"""Operations on code grids and latents: interpolation, code atlas, code-map colours."""

from __future__ import annotations

import colorsys
import functools

import torch

from . import grid

PATHS = ("lerp", "slerp", "codebook")


def _slerp(a: torch.Tensor, b: torch.Tensor, t: float, dim: int = 1) -> torch.Tensor:
    """Spherical interpolation of vectors along ``dim``, magnitudes interpolated linearly;
    falls back to lerp where the vectors are (anti)parallel or zero."""
    na, nb = a.norm(dim=dim, keepdim=True), b.norm(dim=dim, keepdim=True)
    ua, ub = a / na.clamp_min(1e-8), b / nb.clamp_min(1e-8)
    cos = (ua * ub).sum(dim, keepdim=True).clamp(-1 + 1e-6, 1 - 1e-6)
    omega = torch.acos(cos)
    so = torch.sin(omega)
    direction = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / so
    out = direction * ((1 - t) * na + t * nb)
    lin = (1 - t) * a + t * b
    return torch.where(so.abs() < 1e-4, lin, out)


# Frames decoded at once, in pixels: a batch's decoder activations stay around 100 MB (a
# 512 x 512 photo's frames go one by one, 64 thumbnails of 32 x 32 at once)
DECODE_PIXELS = 1 << 18


@torch.no_grad()
def interpolate(
    model, x0: torch.Tensor, x1: torch.Tensor, steps: int = 16, path: str = "lerp",
    *, tile: int | None = None,
) -> torch.Tensor:  # fmt: skip
    """Frames (steps, C, H, W) in [0, 1] going from image ``x0`` to ``x1`` (each (C, H, W) or
    (1, C, H, W), in [0, 1], of any one size: padded to the code grid as
    ``model.encode_image`` pads, the frames cropped back to H x W).

    Paths:
      - ``lerp``: linear interpolation of the continuous latents z_e, each step quantized.
      - ``slerp``: spherical interpolation of each position's z_e vector, then quantized.
      - ``codebook``: a straight line between the two images' quantized latents, decoded
        without re-quantizing: the path runs through codebook space itself.

    Frames are decoded a few at a time (about ``DECODE_PIXELS`` pixels); ``tile``: encode
    and decode in tiles of about ``tile`` x ``tile`` pixels (bounded memory for large
    photos, the same frames up to float rounding).
    """
    if path not in PATHS:
        raise ValueError(f"unknown interpolation path {path!r}; choose from {PATHS}")
    if not 2 <= steps <= 1024:
        raise ValueError(f"steps must be between 2 and 1024, got {steps}")
    x0 = x0[None] if x0.dim() == 3 else x0
    x1 = x1[None] if x1.dim() == 3 else x1
    if x0.shape != x1.shape:
        raise ValueError(
            f"both images must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}"
        )
    dev = model.device
    H, W = x0.shape[-2:]
    z = model.encode_image(torch.cat([x0, x1]).to(dev), tile=tile, return_latents=True)[1]
    z = z.float()
    z0, z1 = z[:1], z[1:]
    ts = torch.linspace(0, 1, steps, device=dev).view(-1, 1, 1, 1)
    if path == "lerp":
        zs = model.quantize(torch.lerp(z0, z1, ts))[0]
    elif path == "slerp":
        zs = model.quantize(torch.cat([_slerp(z0, z1, float(t)) for t in ts.flatten()]))[0]
    else:
        q = model.quantize(z)[0]
        zs = torch.lerp(q[:1], q[1:], ts)
    d = model.config.downsample
    per_batch = max(1, DECODE_PIXELS // (zs.shape[-2] * zs.shape[-1] * d * d))
    frames = []
    for batch in zs.split(per_batch):
        batch = model._layout(batch)  # channels_last on the CPU, as decode_codes runs
        if tile is None:
            frames.append(model.decode_latents(batch))
        else:
            cells = grid.tile_cells(tile, d)
            halo = model.decoder_halo
            frames.append(grid.tiled_decode(model.decode_latents, batch, d, cells, halo))
    return torch.cat(frames)[..., :H, :W].contiguous()


@torch.no_grad()
def code_atlas(model, size: int | None = None, batch: int = 256) -> torch.Tensor:
    """What each code decodes to on its own: images (K, C, H, W) in [0, 1] of a code grid
    filled with that single code (``size`` x ``size`` codes; default the model's grid)."""
    K = model.config.codebook_size
    s = size or model.config.latent_size
    out = []
    for start in range(0, K, batch):
        idx = torch.arange(start, min(K, start + batch), device=model.device)
        out.append(model.decode(idx.view(-1, 1, 1).expand(-1, s, s)).cpu())
    return torch.cat(out)


def code_colors(codebook_size: int) -> torch.Tensor:
    """A fixed, well-spread colour per code: uint8 (K, 3). Neighbouring indices get distant
    hues (golden-ratio steps), so a code map shows where codes change."""
    return _code_colors(codebook_size).clone()


@functools.lru_cache(maxsize=16)
def _code_colors(codebook_size: int) -> torch.Tensor:
    # computed once per K: 512 HSV conversions take ~5 ms, more than drawing a code map
    cols = []
    for k in range(codebook_size):
        h = (k * 0.618033988749895) % 1.0
        s = 0.55 + 0.35 * ((k * 7) % 5) / 4
        v = 0.70 + 0.30 * ((k * 3) % 4) / 3
        cols.append([round(255 * c) for c in colorsys.hsv_to_rgb(h, s, v)])
    return torch.tensor(cols, dtype=torch.uint8)


def color_code_map(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """uint8 RGB image (h, w, 3) of a code grid (h, w), one colour per code."""
    return _code_colors(codebook_size)[indices.long().cpu()]
