"""vector_quantize_pytorch.VectorQuantize behind this library's quantizer contract
(:class:`vqvae.quantizer.Quantizer`), for the peer benchmark only
(pip install vector-quantize-pytorch; not a project dependency)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vqvae.metrics import perplexity
from vqvae.quantizer import Quantizer, QuantizerOutput


class PeerQuantizer(nn.Module):
    """Set to match our recipe: EMA decay 0.99, commitment 0.25, k-means init (10 iterations
    on the first batch, as the library does it), dead codes re-seeded when their EMA cluster
    size falls below ``dead_code_threshold``, plain straight-through (its rotation trick off).
    Meets :class:`vqvae.quantizer.Quantizer`."""

    def __init__(self, codebook_size: int, embedding_dim: int, dead_code_threshold: float = 2.0):
        super().__init__()
        from vector_quantize_pytorch import VectorQuantize

        self.codebook_size, self.embedding_dim = codebook_size, embedding_dim
        self.vq = VectorQuantize(
            dim=embedding_dim,
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
    def codebook(self) -> torch.Tensor:
        """(K, D) code vectors."""
        return self.vq.codebook

    embedding = codebook  # the name training toggles requires_grad on

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors for ``indices`` (B, h, w) as latents (B, D, h, w)."""
        return F.embedding(indices, self.codebook).permute(0, 3, 1, 2).contiguous()

    def quantize(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest codes, pure: (quantized (B, D, h, w), indices (B, h, w))."""
        b, d, h, w = z_e.shape
        flat = z_e.float().permute(0, 2, 3, 1).reshape(-1, d)
        idx = torch.cdist(flat, self.codebook.float()).argmin(1).view(b, h, w)
        return self.lookup(idx).float(), idx

    def forward(self, z_e: torch.Tensor) -> QuantizerOutput:
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            q, idx, commit = self.vq(z_e.float())
        counts = torch.bincount(idx.flatten(), minlength=self.codebook_size)
        return QuantizerOutput(
            q, idx, commit.new_zeros(()), commit.sum(), perplexity(counts), (counts > 0).sum()
        )


def with_peer_quantizer(config):
    """A VQVAE whose quantizer is the peer library's."""
    import vqvae

    model = vqvae.VQVAE(config)
    quantizer = PeerQuantizer(config.codebook_size, config.embedding_dim)
    if not isinstance(quantizer, Quantizer):  # the contract, checked where it is plugged in
        raise TypeError("PeerQuantizer does not meet vqvae.quantizer.Quantizer")
    model.quantizer = quantizer
    return model
