"""Image, codebook and rate-distortion metrics. Images are float tensors in [0, 1], shape
(B, C, H, W). A rate-distortion curve is a pair of sequences (rates, qualities): rates in any
unit (bits per pixel), qualities in dB (PSNR, or MS-SSIM through :func:`ms_ssim_db`)."""

from __future__ import annotations

import math

import numpy as np
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


# MS-SSIM's five scales (Wang, Simoncelli & Bovik 2003) halve the image four times and filter
# each scale with an 11-tap window: the shorter side must exceed (11 - 1) * 2**4.
MS_SSIM_MIN_SIDE = 161


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image MS-SSIM, shape (B,), in [0, 1] (1 for identical images): the standard
    five-scale MS-SSIM (Gaussian 11x11 window, sigma 1.5, the published scale weights) as
    ``pytorch_msssim.ms_ssim`` computes it, the implementation CompressAI reports.

    Images (B, C, H, W) in [0, ``data_range``]. Only defined where the shorter side is at
    least :data:`MS_SSIM_MIN_SIDE` (161) pixels: smaller images (a 32 x 32 thumbnail) raise
    ValueError rather than get a number measured on fewer scales."""
    from pytorch_msssim import ms_ssim as _ms_ssim

    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"images must be two (B, C, H, W) of one shape, got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")  # fmt: skip
    if min(x.shape[-2:]) < MS_SSIM_MIN_SIDE:
        raise ValueError(
            f"MS-SSIM needs images of at least {MS_SSIM_MIN_SIDE} x {MS_SSIM_MIN_SIDE} pixels "
            f"(five scales of an 11-pixel window), got {x.shape[-1]} x {x.shape[-2]}"
        )
    return _ms_ssim(x.float(), y.float(), data_range=data_range, size_average=False)


def ms_ssim_db(value, max_db: float = 100.0):
    """MS-SSIM on a dB scale, -10 log10(1 - value), as CompressAI plots it (0.99 is 20 dB,
    0.999 30 dB). ``value``: a float or tensor in [0, 1]; 1 (identical images) gives
    ``max_db`` rather than inf, as :func:`psnr` does. Same type as ``value``."""
    if torch.is_tensor(value):
        return (-10.0 * torch.log10((1.0 - value.double()).clamp_min(1e-30))).clamp_max(max_db)
    return min(max_db, -10.0 * math.log10(max(1.0 - float(value), 1e-30)))


def _rd_points(curve, which: str, swap: bool) -> tuple[np.ndarray, np.ndarray]:
    """A curve (rates, qualities) as (x, y) sorted by x: (quality, log10 rate), or with
    ``swap`` (log10 rate, quality)."""
    try:
        rates, quality = (np.asarray(v, dtype=np.float64) for v in curve)
    except (TypeError, ValueError):
        raise ValueError(
            f"the {which} curve must be a pair (rates, qualities) of numbers"
        ) from None
    if rates.ndim != 1 or rates.shape != quality.shape:
        raise ValueError(
            f"the {which} curve's rates and qualities must be two 1-D sequences of one "
            f"length, got shapes {rates.shape} and {quality.shape}"
        )
    if not (np.isfinite(rates).all() and np.isfinite(quality).all() and (rates > 0).all()):
        raise ValueError(f"the {which} curve needs finite qualities and rates > 0")
    x, y = (np.log10(rates), quality) if swap else (quality, np.log10(rates))
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if (np.diff(x) <= 0).any():
        raise ValueError(
            f"the {which} curve has two points of the same {'rate' if swap else 'quality'}"
        )
    return x, y


def _mean_over(x: np.ndarray, y: np.ndarray, lo: float, hi: float, method: str) -> float:
    """The mean of y(x) over [lo, hi], y interpolated through the points (``method``)."""
    if method == "pchip":
        from scipy.interpolate import PchipInterpolator

        return float(PchipInterpolator(x, y).integrate(lo, hi)) / (hi - lo)
    p = np.polyint(np.polyfit(x, y, 3))
    return float(np.polyval(p, hi) - np.polyval(p, lo)) / (hi - lo)


def _bd(anchor, test, method: str, swap: bool) -> float:
    """The mean difference test - anchor over the overlap: of log10 rate over quality, or
    (``swap``) of quality over log10 rate."""
    if method not in ("pchip", "cubic"):
        raise ValueError(f"method must be 'pchip' or 'cubic', got {method!r}")
    need = 4 if method == "cubic" else 2
    curves = []
    for curve, which in ((anchor, "anchor"), (test, "test")):
        x, y = _rd_points(curve, which, swap)
        if len(x) < need:
            raise ValueError(f"the {which} curve has {len(x)} point(s); the {method} method "
                             f"needs at least {need}")  # fmt: skip
        curves.append((x, y))
    (xa, ya), (xt, yt) = curves
    lo, hi = max(xa[0], xt[0]), min(xa[-1], xt[-1])
    if lo >= hi:
        axis = "rates" if swap else "qualities"
        raise ValueError(
            f"the curves do not overlap: the anchor's {axis} span [{xa[0]:.4g}, {xa[-1]:.4g}], "
            f"the test's [{xt[0]:.4g}, {xt[-1]:.4g}]"
        )
    return _mean_over(xt, yt, lo, hi, method) - _mean_over(xa, ya, lo, hi, method)


def bd_rate(anchor, test, *, method: str = "pchip") -> float:
    """Bjontegaard delta rate: the mean bitrate change of ``test`` against ``anchor`` at
    equal quality, in percent (-20.0: test needs 20 % fewer bits), over the quality range
    both curves cover.

    Each curve is (rates, qualities): rates > 0 in any one unit (bits per pixel), qualities
    in dB (PSNR, or :func:`ms_ssim_db`), in any order. log10(rate) is interpolated as a
    function of quality and integrated over the overlap; the result is
    100 * (10**(mean difference) - 1). ``method``: ``"pchip"`` (default) piecewise cubic
    Hermite interpolation through the points, as the JCT-VC common test conditions' BD-rate
    sheet computes it (2 points or more, no overshoot between points), or ``"cubic"``: one
    least-squares cubic polynomial, Bjontegaard's original VCEG-M33 (4 points or more).
    ValueError for curves that do not overlap in quality, have too few points, or repeat a
    quality."""
    return 100.0 * (10.0 ** _bd(anchor, test, method, swap=False) - 1.0)


def bd_psnr(anchor, test, *, method: str = "pchip") -> float:
    """Bjontegaard delta quality: the mean quality difference of ``test`` minus ``anchor``
    at equal rate, in dB, over the log-rate range both curves cover (quality interpolated
    as a function of log10 rate). Curves, ``method`` and errors as :func:`bd_rate`."""
    return _bd(anchor, test, method, swap=True)


def rate_at(curve, quality: float) -> float:
    """The rate of ``curve`` (rates, qualities) at ``quality``, log10(rate) interpolated
    piecewise-cubically (pchip, as :func:`bd_rate`) between its points: for comparing one
    operating point with another codec's curve (``100 * (rate / rate_at(curve, its quality)
    - 1)`` is its rate change at equal quality). ValueError outside the curve's qualities."""
    from scipy.interpolate import PchipInterpolator

    q, r = _rd_points(curve, "anchor", swap=False)
    if len(q) < 2 or not q[0] <= quality <= q[-1]:
        raise ValueError(
            f"quality {quality:.4g} is outside the curve's range "
            + (f"[{q[0]:.4g}, {q[-1]:.4g}]" if len(q) else "(no points)")
        )
    return float(10.0 ** PchipInterpolator(q, r)(quality))


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
