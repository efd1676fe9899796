"""Rate-distortion curves: an image coded by JPEG, WebP and AVIF over their quality range
(:func:`vqvae.compare.sweep`) and by the codec at its operating points
(:func:`vqvae.codec.points.operating_points`), each point measured as CompressAI reports it.

>>> curves = image_curves(image, model, prior)   # image: (C, H, W) float in [0, 1]
>>> curves["WebP"]["bpp"], curves["WebP"]["psnr-rgb"], curves[".vqz"]["bpp"]
>>> mean = mean_curves([image_curves(x, model, prior) for x in images])  # a dataset's curves
>>> results("WebP", "Pillow 12.3 ...", mean["WebP"])  # CompressAI's JSON layout

A curve is a dict of equal-length lists, one entry per point: ``bpp`` (the whole file's
bits over the image's pixels), ``psnr-rgb`` (dB), ``ms-ssim-rgb`` (MS-SSIM in [0, 1], only
for images whose sides are all >= 161 px: :func:`vqvae.metrics.ms_ssim`), and ``quality``
(the format's quality setting) or ``rate`` (the codec's rate name). Greyscale images have
``psnr-grey`` / ``ms-ssim-grey`` instead.
"""

from __future__ import annotations

import numpy as np
import torch

from .codec.points import operating_points
from .compare import QUALITIES, available_formats, sweep
from .metrics import MS_SSIM_MIN_SIDE, ms_ssim, ms_ssim_db, psnr, rate_at

FORMAT_NAMES = {"jpeg": "JPEG", "webp": "WebP", "avif": "AVIF"}


def metric_keys(channels: int) -> tuple[str, str]:
    """The (PSNR, MS-SSIM) keys of a curve of images with ``channels`` (1 or 3) channels."""
    space = "rgb" if channels == 3 else "grey"
    return f"psnr-{space}", f"ms-ssim-{space}"


def _as_float(image) -> torch.Tensor:
    """A decoded image (a uint8 (H, W) / (H, W, 3) array or a (C, H, W) float tensor) as
    (1, C, H, W) float in [0, 1]."""
    if torch.is_tensor(image):
        return image.float()[None]
    t = torch.from_numpy(np.array(image)).float().div(255.0)
    return (t[None] if t.dim() == 2 else t.permute(2, 0, 1))[None]


def measure(original: torch.Tensor, decoded, bits: float) -> dict:
    """One point: ``decoded`` (a uint8 array or a (C, H, W) float tensor) of ``original``
    (C, H, W) float in [0, 1] from ``bits`` bits -> {"bpp", PSNR and, where the image is
    large enough, MS-SSIM} (keys as :func:`metric_keys`)."""
    x, y = original.float()[None], _as_float(decoded)
    if x.shape != y.shape:
        raise ValueError(f"decoded image {tuple(y.shape)} differs from {tuple(x.shape)}")
    psnr_key, ms_key = metric_keys(x.shape[1])
    point = {"bpp": bits / (x.shape[-1] * x.shape[-2]), psnr_key: float(psnr(y, x)[0])}
    if min(x.shape[-2:]) >= MS_SSIM_MIN_SIDE:
        point[ms_key] = float(ms_ssim(y, x)[0])
    return point


def _append(curves: dict, name: str, point: dict) -> None:
    curve = curves.setdefault(name, {})
    for k, v in point.items():
        curve.setdefault(k, []).append(v)


def image_curves(
    image: torch.Tensor,
    model=None,
    prior=None,
    *,
    grid_prior=None,
    formats=None,
    qualities=QUALITIES,
    rdo: float = 0.0,
    refine: int = 0,
) -> dict[str, dict]:
    """The rate-distortion curves of ``image`` (C, H, W) float in [0, 1]: {name: curve} for
    each of ``formats`` (default: every one the installed Pillow writes) at ``qualities``,
    and, given ``model`` (a VQ-VAE; ``prior`` its CodePrior or None, ``grid_prior`` its
    GridPrior or None), each curve of its operating points (".vqz", or its plain codes;
    ``rdo``: the photo codes' rate-distortion weight, :mod:`vqvae.codec.rdo`; ``refine``:
    their latents' refinement steps, :mod:`vqvae.codec.refine`)."""
    curves: dict[str, dict] = {}
    for fmt in available_formats() if formats is None else formats:
        for e in sweep(image, fmt, qualities):
            _append(
                curves, FORMAT_NAMES[fmt], {**measure(image, e.image, e.bits), "quality": e.quality}
            )
    if model is not None:
        for p in operating_points(model, prior, image, grid_prior, rdo, refine):
            _append(curves, p.codec, {**measure(image, p.image, p.bits), "rate": p.rate})
    return curves


def mean_curves(per_image: list[dict]) -> dict[str, dict]:
    """The curves of many images averaged point by point, as CompressAI averages a
    dataset's: {name: curve} with each number the mean over images (a metric some image
    lacks, MS-SSIM of a small one, is left out); labels (``quality``, ``rate``) as the first
    image has them. Every image must have the same curves and points."""
    if not per_image:
        raise ValueError("no curves to average")
    out = {}
    for name, first in per_image[0].items():
        curves = [c.get(name) for c in per_image]
        if any(c is None or len(c["bpp"]) != len(first["bpp"]) for c in curves):
            raise ValueError(f"the images' {name} curves differ in their points")
        mean = {}
        for key, values in first.items():
            if isinstance(values[0], str) or key == "quality":
                mean[key] = list(values)
            elif all(key in c for c in curves):
                mean[key] = np.mean([c[key] for c in curves], axis=0).tolist()
        out[name] = mean
    return out


def quality_db(curve: dict, key: str) -> list[float] | None:
    """A curve's ``key`` quality in dB (MS-SSIM through :func:`vqvae.metrics.ms_ssim_db`),
    or None where the curve lacks it."""
    if key not in curve:
        return None
    return [ms_ssim_db(v) for v in curve[key]] if key.startswith("ms-ssim") else curve[key]


def rate_changes(test: dict, anchor: dict, key: str) -> list[float | None]:
    """Per point of ``test``: its bits against ``anchor``'s at the same ``key`` quality, in
    percent (-50: half of the anchor's bits; ``anchor``'s rate interpolated by
    :func:`vqvae.metrics.rate_at`), or None where that quality is outside ``anchor``'s."""
    qt, qa = quality_db(test, key), quality_db(anchor, key)
    if qt is None or qa is None:
        raise ValueError(f"both curves need {key}")
    out = []
    for bpp, q in zip(test["bpp"], qt, strict=True):
        try:
            out.append(100 * (bpp / rate_at((anchor["bpp"], qa), q) - 1))
        except ValueError:
            out.append(None)
    return out


def results(name: str, description: str, curve: dict) -> dict:
    """A curve in CompressAI's results layout: {"name", "description", "results": {"bpp",
    "psnr-rgb", "ms-ssim-rgb", ...}}, MS-SSIM as CompressAI writes it (in [0, 1]) and also
    in dB (``ms-ssim-rgb-db``: -10 log10(1 - MS-SSIM), what its plots show)."""
    r = dict(curve)
    for key in [k for k in curve if k.startswith("ms-ssim-")]:
        r[f"{key}-db"] = [ms_ssim_db(v) for v in curve[key]]
    return {"name": name, "description": description, "results": r}
