"""vector_quantize_pytorch.VectorQuantize behind this library's quantizer interface, for the
peer benchmark only (pip install vector-quantize-pytorch; not a project dependency)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vqvae.quantizer import QuantizerOutput


class PeerQuantizer(nn.Module):
    """Set to match our recipe: EMA decay 0.99, commitment 0.25, k-means init (10 iterations
    on the first batch, as the library does it), dead codes re-seeded when their EMA cluster
    size falls below ``dead_code_threshold``, plain straight-through (its rotation trick off)."""

    def __init__(self, codebook_size: int, dim: int, dead_code_threshold: float = 2.0):
        super().__init__()
        from vector_quantize_pytorch import VectorQuantize

        self.codebook_size, self.dim = codebook_size, dim
        self.vq = VectorQuantize(
            dim=dim,
            codebook_size=codebook_size,
            decay=0.99,
            commitment_weight=0.25,
            kmeans_init=True,
            kmeans_iters=10,
            threshold_ema_dead_code=dead_code_threshold,
            accept_image_fmap=True,
            rotation_trick=False,
        )

    @property
    def embedding(self) -> torch.Tensor:
        return self.vq.codebook

    codebook = embedding

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        return torch.cdist(flat.float(), self.embedding.float()).argmin(1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.embedding).permute(0, 3, 1, 2).contiguous()

    def forward(self, z_e: torch.Tensor) -> QuantizerOutput:
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            q, idx, commit = self.vq(z_e.float())
        counts = torch.bincount(idx.flatten(), minlength=self.codebook_size).float()
        p = counts / counts.sum()
        ppl = torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum())
        return QuantizerOutput(q, idx, commit.new_zeros(()), commit.sum(), ppl, (counts > 0).sum())


def with_peer_quantizer(config):
    """A VQVAE whose quantizer is the peer library's."""
    import vqvae

    model = vqvae.VQVAE(config)
    model.quantizer = PeerQuantizer(config.codebook_size, config.embedding_dim)
    return model
