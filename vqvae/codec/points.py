"""The codec's operating points: every rate at which an image is coded, with the image
decoded from it. Rate-distortion curves (``benchmarks.rd``, the app's chart) are drawn from
:func:`operating_points` alone, so a new rate is added there and nowhere else.

>>> for p in operating_points(model, prior, image):   # image: (C, H, W) float in [0, 1]
...     p.codec, p.rate, p.bits, p.image               # the curve, its point, file bits, decoded
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..metrics import bits_per_image
from .api import compress, decompress
from .photo import compress_image, rates

VQZ = ".vqz"  # a file of the codec: the codes range-coded under the prior
PLAIN = "VQ-VAE plain codes (fixed length)"  # h*w*log2(K) bits, no entropy coding
# What each curve is, for results files
DESCRIPTIONS = {
    VQZ: ".vqz files (vqvae.codec: the VQ-VAE's codes range-coded under its prior), whole files",
    PLAIN: "the VQ-VAE's codes at a fixed length, h*w*log2(K) bits, not entropy-coded, "
    "decoded at the image's size",
}


def vqz_name(rdo: float = 0.0, refine: int = 0) -> str:
    """The name of the ``.vqz`` curve whose codes were chosen with rate-distortion weight
    ``rdo`` (:mod:`vqvae.codec.rdo`) after ``refine`` steps of latent refinement
    (:mod:`vqvae.codec.refine`); both 0: the nearest codes, the plain ``.vqz`` curve."""
    return VQZ + (f" rdo={rdo:g}" if rdo else "") + (f" refine={refine}" if refine else "")


def describe(name: str) -> str:
    """What a codec curve named ``name`` is (:data:`DESCRIPTIONS`, with what
    :func:`vqz_name`'s options say)."""
    base, options = re.fullmatch(r"(.*?)((?: (?:rdo|refine)=\S+)*)", name).groups()
    what = DESCRIPTIONS.get(base, name)
    for key, value in (o.split("=") for o in options.split()):
        if key == "rdo":
            what += f"; codes chosen for error + {value} x bits"
        else:
            what += f"; latents refined for {value} steps before quantizing"
    return what


@dataclass(frozen=True)
class OperatingPoint:
    """An image coded at one rate."""

    codec: str  # the curve it belongs to: VQZ or PLAIN
    rate: str  # its name on that curve
    bits: float  # what is stored: the whole file's bits (8 x bytes), or h*w*log2(K)
    image: torch.Tensor  # the image decoded from it: (C, H, W) float in [0, 1], on the CPU


def operating_points(
    model, prior, image: torch.Tensor, grid_prior=None, rdo: float = 0.0, refine: int = 0
) -> list[OperatingPoint]:
    """Every operating point at which ``model`` (a VQ-VAE) and its ``prior`` (a
    :class:`vqvae.CodePrior` fitting it, or None) code ``image`` (C, H, W) float in [0, 1].

    - the model's training size with a prior: a ``.vqz`` file (:func:`compress`, the class
      that makes it smallest), decoded by :func:`decompress`;
    - any other size with a ``grid_prior`` (a :class:`vqvae.GridPrior` of the model): a
      ``.vqz`` file of format 3 at every rate of :func:`vqvae.codec.rates`
      (:func:`compress_image`, its codes chosen with rate-distortion weight ``rdo`` after
      ``refine`` steps of latent refinement; the curve :func:`vqz_name`), decoded at the
      image's size by :func:`decompress_image`;
    - otherwise: the plain codes (:meth:`VQVAE.encode_image`, h*w*log2(K) bits), decoded
      at the image's size by :meth:`VQVAE.decode_codes`.
    """
    if not torch.is_tensor(image) or image.dim() != 3:
        raise ValueError(f"image must be a (C, H, W) tensor, got {getattr(image, 'shape', image)}")
    c = model.config
    x = image[None].to(model.device)
    with torch.inference_mode():
        if prior is not None and tuple(image.shape[-2:]) == (c.image_size, c.image_size):
            data = compress(model, prior, x, labels="auto" if prior.num_classes else None)[0]
            decoded, _ = decompress(model, prior, data)
            return [OperatingPoint(VQZ, "prior", 8 * len(data), decoded[0].cpu())]
        if grid_prior is not None:
            points = []
            for i, r in enumerate(rates(model)):
                data, decoded = compress_image(model, grid_prior, x, rate=i, decoded=True,
                                               rdo=rdo, refine=refine)  # fmt: skip
                points.append(
                    OperatingPoint(vqz_name(rdo, refine), r.name, 8 * len(data), decoded[0].cpu())
                )
            return points
        codes = model.encode_image(x)
        decoded = model.decode_codes(codes, tuple(x.shape[-2:]))
    h, w = codes.shape[-2:]
    bits = bits_per_image(h, w, c.codebook_size)
    return [OperatingPoint(PLAIN, f"K={c.codebook_size}", bits, decoded[0].cpu())]
