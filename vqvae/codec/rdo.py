"""Rate-distortion optimised codes for the photo codec: each cell's code chosen for its
error *and* its cost in bits, not for its error alone (entropy-constrained VQ).

The nearest code is the cheapest in distortion, but the grid prior may give a slightly
farther code many times its probability. With ``lam`` > 0, stage by stage and pass by pass
in the coding order (:func:`vqvae.grid_prior.schedule`), every cell of a pass takes

    argmin_k  ||r - e_k||^2 / D  +  lam * bits(k)

where r is what the stages before it left of the cell's latent, e_k the stage's code
vectors (D numbers each), and bits(k) = log2(total / count_k) under the prior's integer
counts for that very pass, given the codes already chosen: the exact bits the coder will
spend on k there. Later stages then quantize what this choice leaves. ``lam`` = 0 gives the
nearest codes, as :meth:`vqvae.VQVAE.encode_image` does. Only the encoder changes: the
file format and the decoder are the same, and the file decodes to exactly the codes chosen.

The price: the prior runs once per (stage, pass) on the encoder too, one pass after
another as on the decoder, where the plain encoder runs it once for every pass together.
Those runs' counts are the very tables the range coder needs (each pass's counts depend only
on the codes before it, which are final when it runs), so :func:`rd_codes` hands each pass's
codes and table to ``on_pass`` and the coder codes them there, instead of running the prior
over every pass again: compressing a 512 x 512 photo takes about 1.4 times as long as with
the nearest codes (BENCHMARKS.md section 19).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..grid_prior import GridPrior, num_passes, pass_map

# the weight chosen on held-out photos (BENCHMARKS.md section 16)
RDO_WEIGHT = 1e-4


@torch.no_grad()
def rd_codes(
    model,
    prior: GridPrior,
    z_e: torch.Tensor,
    stages: int,
    lam: float,
    on_pass: Callable[[int, int, np.ndarray, np.ndarray], None] | None = None,
) -> torch.Tensor:
    """Codes (1, stages, h, w) int64 of the latents ``z_e`` (1, D, h, w) chosen for
    distortion + ``lam`` x bits (module docstring). With ``lam`` > 0 and ``on_pass``, each
    (stage, pass), in coding order, is handed on as ``on_pass(stage, pass, codes, counts)``
    once its codes are chosen: its cells' codes (raster order) and the prior's counts for
    them, the tables :meth:`GridPrior.counts` gives for the finished grid."""
    if not lam >= 0.0:  # also refuses NaN
        raise ValueError(f"the rate-distortion weight must be >= 0, got {lam}")
    _, D, h, w = z_e.shape
    quantizers = [model.quantizer, *model.residual][:stages]
    z = z_e.float()[0].permute(1, 2, 0).reshape(h * w, D)  # (cells, D)
    total = torch.zeros_like(z)  # the chosen stages' code vectors, summed
    codes = torch.zeros(1, stages, h, w, dtype=torch.long)
    flat = codes.view(1, stages, h * w)
    for s, vq in enumerate(quantizers):
        e = vq.embedding.float()
        left = z - total  # as VQVAE.quantize_stages computes it: the same codes at lam 0
        if lam == 0.0:
            flat[0, s] = vq.nearest(left)
        else:  # the prior sees none of the stage's cells not chosen yet: no need to fill them
            m = pass_map(h, w, s).flatten()
            for p in range(num_passes(s)):  # in the coding order (grid_prior.schedule)
                cells = (m == p).nonzero()[:, 0]
                dist = vq.distances(left[cells]) / D
                table = prior.counts(codes[:, : s + 1], [(s, p)])[0]
                counts = torch.from_numpy(table)
                bits = torch.log2(counts.sum(1, keepdim=True)) - torch.log2(counts)
                flat[0, s, cells] = (dist + lam * bits.float()).argmin(1)
                if on_pass is not None:
                    on_pass(s, p, flat[0, s, cells].numpy(), table)
        total = total + e[flat[0, s]]
    return codes
