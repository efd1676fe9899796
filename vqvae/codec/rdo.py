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

The price: the prior runs once per (stage, pass) on the encoder too, as on the decoder,
so compressing takes about as long again as decompressing.
"""

from __future__ import annotations

import torch

from ..grid_prior import GridPrior, num_passes, pass_map

# the weight chosen on held-out photos (BENCHMARKS.md section 16)
RDO_WEIGHT = 1e-4


@torch.no_grad()
def rd_codes(model, prior: GridPrior, z_e: torch.Tensor, stages: int, lam: float) -> torch.Tensor:
    """Codes (1, stages, h, w) int64 of the latents ``z_e`` (1, D, h, w) chosen for
    distortion + ``lam`` x bits (module docstring)."""
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
        flat[0, s] = vq.nearest(left)  # passes not chosen yet: the context a plain encode gives
        if lam > 0.0:
            m = pass_map(h, w, s).flatten()
            for p in range(num_passes(s)):  # in the coding order (grid_prior.schedule)
                cells = (m == p).nonzero()[:, 0]
                dist = vq.distances(left[cells]) / D
                counts = torch.from_numpy(prior.counts(codes[:, : s + 1], [(s, p)])[0])
                bits = torch.log2(counts.sum(1, keepdim=True)) - torch.log2(counts)
                flat[0, s, cells] = (dist + lam * bits.float()).argmin(1)
        total = total + e[flat[0, s]]
    return codes
