"""Latent refinement for the photo codec: the encoder's latents nudged, before they are
quantized, so that the *decoded image* comes closer to the photo.

The encoder maps a photo to latents z_e in one pass, trained for the average image; the
codes are then the residual quantizer's greedy choice for z_e. Neither looks at what the
decoder will make of the codes. Here, for ``steps`` steps of Adam on z (from z_e),

    z  <-  z - step(grad_z ||decode(q(z)) - x||^2)

with q the first ``stages`` stages of the quantizer and its gradient passed straight
through (q(z) + z - sg(z), as in training): z moves where the quantizer's codes decode to
pixels nearer the photo's, and the iterate whose codes decoded closest is kept (so the
nearest codes never decode farther than the encoder's own, tile by tile). The codes are
then chosen for the kept z as without refinement (the nearest codes, or
:mod:`vqvae.codec.rdo`'s). Only the encoder changes: the file format and the decoder are
the same, and the file decodes to exactly the codes chosen. It costs about one decoder
pass forward and back per step, which is why it is opt-in.

Photos larger than ``tile`` are refined tile by tile, in raster order: each tile's latents
with a halo as wide as the decoder's reach (:attr:`vqvae.VQVAE.decoder_halo`) held at the
values they have so far, and the error taken over the tile's own pixels; so memory is
bounded by the tile size whatever the photo's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import grid

REFINE_LR = 0.02  # Adam's step on the latents (chosen on held-out photos: BENCHMARKS.md)
# steps worth taking: 6 gave most of the gain on held-out photos, 20 no more than 10
# (BENCHMARKS.md section 17)
REFINE_STEPS = 10
# pixels: larger photos are refined in tiles of about this side (a 1000 x 1000 photo in one
# tile: 1.6 GB peak for cifar10-rvq; tiles cost a little: BENCHMARKS.md section 17)
REFINE_TILE = 1024


def refine_latents(
    model,
    x: torch.Tensor,
    z_e: torch.Tensor,
    stages: int,
    steps: int,
    *,
    lr: float = REFINE_LR,
    tile: int | None = None,
) -> torch.Tensor:
    """Latents (1, D, h, w) float32: ``z_e`` (1, D, h, w), the encoder's latents of the
    image ``x`` (1, C, H, W) float in [0, 1] (:meth:`vqvae.VQVAE.encode_image` with
    ``return_latents``), refined for ``steps`` steps so that the first ``stages`` stages of
    their codes decode closer to ``x`` (module docstring); ``tile`` (pixels, default
    :data:`REFINE_TILE`) bounds the memory on large photos. ``steps`` = 0 returns them as
    they are."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"refinement steps must be an int >= 0, got {steps!r}")
    if not lr > 0.0:  # also refuses NaN
        raise ValueError(f"the refinement step size must be > 0, got {lr}")
    d = model.config.downsample
    h, w = z_e.shape[-2:]
    if grid.grid_shape(x.shape[-2:], d) != (h, w):
        raise ValueError(f"latents of a {h}x{w} grid do not fit a {tuple(x.shape[-2:])} image")
    # refinement works outside any inference_mode / no_grad its caller runs under
    with torch.inference_mode(False), torch.enable_grad():
        z = z_e.detach().to(model.device, torch.float32).clone()
        if steps == 0:
            return z
        x = x.detach().to(model.device, torch.float32).clone()  # not an inference tensor
        cells = grid.tile_cells(REFINE_TILE if tile is None else tile, d)
        # (a single tile's halo is clipped away: the whole grid, none around it)
        for (r0, r1, c0, c1), (hr0, hr1, hc0, hc1) in grid.tiles((h, w), cells, model.decoder_halo):
            inner = (slice(r0 - hr0, r1 - hr0), slice(c0 - hc0, c1 - hc0))
            around = z[..., hr0:hr1, hc0:hc1]  # the halo's latents, as refined so far
            target = x[..., r0 * d : r1 * d, c0 * d : c1 * d]  # the last row / column clipped
            rows, cols = target.shape[-2:]
            own = z[..., r0:r1, c0:c1].clone().requires_grad_(True)
            opt = torch.optim.Adam([own], lr=lr)
            best, kept = float("inf"), own.detach().clone()
            for step in range(steps + 1):  # each iterate's error; a step after all but the last
                zt = around.clone()
                zt[..., inner[0], inner[1]] = own
                with torch.no_grad():
                    q, _ = model.quantize_stages(zt, stages)
                y = model._decode_raw(model._layout(q + zt - zt.detach()))
                y = y[..., inner[0].start * d :, inner[1].start * d :][..., :rows, :cols]
                loss = F.mse_loss(y, target)  # the error of these very codes' decoded pixels
                if float(loss.detach()) < best:
                    best, kept = float(loss.detach()), own.detach().clone()
                if step == steps:
                    break
                (own.grad,) = torch.autograd.grad(loss, [own])
                opt.step()
            z[..., r0:r1, c0:c1] = kept
    return z
