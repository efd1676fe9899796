"""The code grid of an image of any size: padding to the grid, cells <-> pixels, and tiles.

A VQ-VAE with downsample factor ``d`` gives one code per d x d block of pixels. An image
of H x W pixels is padded at the bottom and right to ``(ceil(H/d) d, ceil(W/d) d)``, so its
codes are ``(ceil(H/d), ceil(W/d))`` and code cell (i, j) covers the pixel rows
``[i d, min((i+1) d, H))`` and columns ``[j d, min((j+1) d, W))`` (:func:`cell_box`,
:func:`pixel_cell`); the decoded image is cropped back to H x W.

Padding: the padded pixels repeat the image's last row and column (``replicate``). Zero
padding would put a black band (in the model's [-1, 1] pixel scale, -1) next to the border,
which the convolutions smear back into the last cells: a dark, ringing edge. Reflection
also keeps the border's colour, but it needs the image to be larger than the padding
(a 1 x N strip cannot be reflected by 3 rows) and mirrors texture into a band the model then
spends code on; replication extends the last pixels as a flat band, the cheapest thing for
the model to code and the same for every size, so its cells agree with their neighbours.
Only the bottom and right are padded, so the grid starts at the image's top-left pixel and
the cell <-> pixel mapping is a plain division.

Tiles: :func:`tiled_encode` / :func:`tiled_decode` run the encoder / decoder on tiles of
the grid, each read with a halo of cells around it as wide as the network's reach
(:func:`reach`), and keep only each tile's own cells. Tiles start on cell boundaries (so
the strided convolutions see the same phase) and every kept cell's receptive field lies
inside its tile's input, so the result equals the whole-image one up to float rounding,
with memory bounded by the tile size; tiles are independent, so several can run at once
(``workers``: :mod:`vqvae.parallel`). :func:`decode_box` decodes one box of cells the same
way: after an edit, only the cells within the decoder's reach of the change need decoding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .parallel import thread_map


def grid_shape(size, downsample: int) -> tuple[int, int]:
    """Code grid (h, w) = (ceil(H/d), ceil(W/d)) of an image of ``size`` (H, W)."""
    H, W = size
    return -(-H // downsample), -(-W // downsample)


def pad_to_grid(x: torch.Tensor, downsample: int) -> torch.Tensor:
    """Images (B, C, H, W) padded at the bottom and right, by repeating the last row and
    column, to multiples of ``downsample`` (the image itself if they are already)."""
    h, w = grid_shape(x.shape[-2:], downsample)
    ph, pw = h * downsample - x.shape[-2], w * downsample - x.shape[-1]
    if not (ph or pw):
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


def cell_box(cell, downsample: int, size) -> tuple[int, int, int, int]:
    """Pixel box (top, left, bottom, right), bottom and right exclusive, of code cell
    ``cell`` = (row, column) in an image of ``size`` (H, W): the cell's d x d block,
    clipped to the image (the last row and column of cells may be partly padding).
    Raises ValueError for a cell outside the grid."""
    i, j = (int(v) for v in cell)
    H, W = size
    h, w = grid_shape(size, downsample)
    if not (0 <= i < h and 0 <= j < w):
        raise ValueError(f"cell ({i}, {j}) is outside the {h}x{w} code grid of a {H}x{W} image")
    d = downsample
    return i * d, j * d, min((i + 1) * d, H), min((j + 1) * d, W)


def pixel_cell(pixel, downsample: int, size) -> tuple[int, int]:
    """Code cell (row, column) holding pixel ``pixel`` = (y, x) (row, column; fractional
    positions as from a click are floored) of an image of ``size`` (H, W).
    Raises ValueError for a pixel outside the image."""
    try:
        y, x = (float(v) for v in pixel)
    except (TypeError, ValueError):
        raise ValueError(f"a pixel position is two numbers (y, x), got {pixel!r}") from None
    H, W = size
    if not (0 <= y < H and 0 <= x < W):  # False for NaN and inf too
        raise ValueError(f"pixel ({y:g}, {x:g}) is outside the {H}x{W} image")
    return int(y) // downsample, int(x) // downsample


def reach(net: nn.Module) -> float:
    """How far, in units of ``net``'s input grid, an output can depend on inputs away from
    its own position: the sum over the convolutions (in order, and inside residual blocks,
    whose skips reach nowhere) of each one's one-sided kernel reach, scaled by the
    resolution it runs at. An upper bound, used to size the halo of tiles."""
    total, unit = 0.0, 1.0  # unit: one step of the current feature map, in input units
    for m in net.modules():
        if isinstance(m, nn.ConvTranspose2d):
            k, s, p = m.kernel_size[0], m.stride[0], m.padding[0]
            # output o reads inputs (o + p - t) / s for taps t < k: at most ceil(.../s) + 1 away
            total += (math.ceil(max(p, k - 1 - p) / s) + 1) * unit
            unit /= s
        elif isinstance(m, nn.Conv2d):
            k, s, p = m.kernel_size[0], m.stride[0], m.padding[0]
            total += max(p, k - 1 - p) * m.dilation[0] * unit
            unit *= s
    return total


def _spans(n: int, tile: int, halo: int):
    """(start, stop) of each tile along an axis of n cells, and the (start, stop) of the
    input it reads: the tile widened by ``halo`` cells, clipped to the axis."""
    for a in range(0, n, tile):
        b = min(n, a + tile)
        yield (a, b), (max(0, a - halo), min(n, b + halo))


def tiles(grid, tile: int, halo: int):
    """The tiles of a grid (h, w) of cells, in raster order: ((top, bottom, left, right) of
    the tile, (top, bottom, left, right) of the tile widened by ``halo`` cells and clipped
    to the grid), tiles ``tile`` cells a side (the last ones in a row or column smaller)."""
    h, w = grid
    for (r0, r1), (hr0, hr1) in _spans(h, tile, halo):
        for (c0, c1), (hc0, hc1) in _spans(w, tile, halo):
            yield (r0, r1, c0, c1), (hr0, hr1, hc0, hc1)


def tile_cells(tile: int, downsample: int) -> int:
    """A tile side in pixels as a whole number of code cells (at least one)."""
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise ValueError(f"tile must be a positive number of pixels, got {tile!r}")
    return max(1, tile // downsample)


def tiled_encode(
    encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    x: torch.Tensor,
    downsample: int,
    tile_cells: int,
    halo: int,
    workers: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``encode`` (images (B, C, hd, wd) -> (latents (B, D, h, w), codes (B, ..., h, w))) run
    tile by tile over ``x`` (B, C, H, W), H and W multiples of ``downsample``: each tile
    of ``tile_cells`` cells read with ``halo`` cells around it, ``workers`` tiles at once
    (:func:`vqvae.parallel.thread_map`). Returns the latents and codes of the whole grid."""
    d = downsample
    grid = (x.shape[-2] // d, x.shape[-1] // d)
    parts = list(tiles(grid, tile_cells, halo))

    def encode_tile(t):
        hr0, hr1, hc0, hc1 = t[1]
        return encode(x[..., hr0 * d : hr1 * d, hc0 * d : hc1 * d])

    z = codes = None
    for ((r0, r1, c0, c1), (hr0, _, hc0, _)), (zt, ct) in zip(
        parts, thread_map(encode_tile, parts, workers), strict=True
    ):
        if z is None:
            z = zt.new_empty(*zt.shape[:2], *grid)
            codes = ct.new_empty(*ct.shape[:-2], *grid)
        rows, cols = slice(r0 - hr0, r1 - hr0), slice(c0 - hc0, c1 - hc0)
        z[..., r0:r1, c0:c1] = zt[..., rows, cols]
        codes[..., r0:r1, c0:c1] = ct[..., rows, cols]
    return z, codes


def widen(box, cells: int, shape) -> tuple[int, int, int, int]:
    """Box of cells (top, left, bottom, right), bottom and right exclusive, widened by
    ``cells`` on every side and clipped to a grid of ``shape`` (h, w): the cells a change
    inside ``box`` can alter, for ``cells`` the decoder's reach."""
    r0, c0, r1, c1 = box
    h, w = shape
    return max(0, r0 - cells), max(0, c0 - cells), min(h, r1 + cells), min(w, c1 + cells)


def decode_box(
    decode: Callable[[torch.Tensor], torch.Tensor],
    codes: torch.Tensor,
    box,
    downsample: int,
    halo: int,
) -> torch.Tensor:
    """The pixels of the cells ``box`` = (top, left, bottom, right) (bottom and right
    exclusive) of the grid ``codes`` (B, h, w), decoded by ``decode`` (codes (B, h', w') ->
    images (B, C, h' d, w' d)) from the box widened by ``halo`` cells (clipped to the grid):
    images (B, C, (bottom - top) d, (right - left) d), equal to the same pixels of the whole
    grid's decode up to float rounding when ``halo`` covers the decoder's reach. A change to
    some cells alters only the pixels of the cells within the reach of them: decoding those
    again is enough (an edit re-decodes what it touched, not the picture)."""
    r0, c0, r1, c1 = (int(v) for v in box)
    h, w = codes.shape[-2:]
    if not (0 <= r0 < r1 <= h and 0 <= c0 < c1 <= w):
        raise ValueError(f"box {(r0, c0, r1, c1)} is not a box of cells of the {h}x{w} grid")
    hr0, hc0, hr1, hc1 = widen((r0, c0, r1, c1), halo, (h, w))
    d = downsample
    x = decode(codes[..., hr0:hr1, hc0:hc1])
    return x[..., (r0 - hr0) * d : (r1 - hr0) * d, (c0 - hc0) * d : (c1 - hc0) * d]


def tiled_decode(
    decode: Callable[[torch.Tensor], torch.Tensor],
    codes: torch.Tensor,
    downsample: int,
    tile_cells: int,
    halo: int,
    workers: int = 1,
) -> torch.Tensor:
    """``decode`` (codes (B, ..., h, w) -> images (B, C, hd, wd)) run tile by tile over
    ``codes`` (B, ..., h, w): each tile of ``tile_cells`` cells read with ``halo`` cells around
    it (:func:`decode_box`), ``workers`` tiles at once (:func:`vqvae.parallel.thread_map`).
    Returns the images (B, C, h d, w d) of the whole grid."""
    d = downsample
    grid = codes.shape[-2:]
    boxes = [(r0, c0, r1, c1) for (r0, r1, c0, c1), _ in tiles(grid, tile_cells, halo)]
    out = None
    for (r0, c0, r1, c1), xt in zip(
        boxes,
        thread_map(lambda box: decode_box(decode, codes, box, d, halo), boxes, workers),
        strict=True,
    ):
        if out is None:
            out = xt.new_empty(*xt.shape[:2], grid[0] * d, grid[1] * d)
        out[..., r0 * d : r1 * d, c0 * d : c1 * d] = xt
    return out
