"""Image and codebook metrics. Images are float tensors in [0, 1], shape (B, C, H, W)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error, shape (B,)."""
    return (x.float() - y.float()).pow(2).flatten(1).mean(1)


def psnr(
    x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, max_db: float = 100.0
) -> torch.Tensor:
    """Per-image PSNR in dB, shape (B,). Identical images give ``max_db`` rather than inf."""
    m = mse(x, y)
    return (10.0 * torch.log10(data_range**2 / m.clamp_min(1e-30))).clamp_max(max_db)


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    g = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(g**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(
    x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004, Gaussian 11x11 window, sigma 1.5, valid region),
    averaged over channels; shape (B,). The window shrinks for images smaller than it."""
    x, y = x.float(), y.float()
    c = x.shape[1]
    window = min(window, x.shape[2], x.shape[3])
    w = _gaussian_window(window, sigma, c, x.device, x.dtype)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x = F.conv2d(x, w, groups=c)
    mu_y = F.conv2d(y, w, groups=c)
    sxx = F.conv2d(x * x, w, groups=c) - mu_x**2
    syy = F.conv2d(y * y, w, groups=c) - mu_y**2
    sxy = F.conv2d(x * y, w, groups=c) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of the code distribution given per-code counts (K,) (any numeric dtype;
    all zero gives 1): a 0-dim tensor on ``counts``' device, in [1, K], float64 for float64
    counts, float32 otherwise. No host sync (``float()`` it to read it). The one definition
    behind the quantizer's batch perplexity and :attr:`CodebookUsage.perplexity`."""
    counts = torch.as_tensor(counts)
    p = counts.to(torch.promote_types(counts.dtype, torch.float32))
    p = p / p.sum().clamp_min(1)
    return torch.exp(-torch.special.xlogy(p, p).sum())  # xlogy: 0 log 0 = 0


class CodebookUsage:
    """Accumulates code counts over a whole dataset: ``update(indices)`` per batch, then
    ``used``, ``fraction`` and ``perplexity``."""

    def __init__(self, codebook_size: int):
        self.counts = torch.zeros(codebook_size, dtype=torch.long)

    def update(self, indices: torch.Tensor) -> None:
        self.counts += torch.bincount(indices.flatten().cpu(), minlength=len(self.counts))

    @property
    def used(self) -> int:
        return int((self.counts > 0).sum())

    @property
    def fraction(self) -> float:
        return self.used / len(self.counts)

    @property
    def perplexity(self) -> float:
        """exp(entropy) of the counts so far (:func:`perplexity`, in float64)."""
        return float(perplexity(self.counts.double()))


def bits_per_image(latent_h: int, latent_w: int, codebook_size: int) -> float:
    """Bits to store one code grid of h x w codes from K without entropy coding:
    h * w * log2(K). The one definition (``VQVAEConfig.bits_per_image`` calls it)."""
    return latent_h * latent_w * math.log2(codebook_size)
