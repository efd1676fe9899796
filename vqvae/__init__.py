"""vqvae: a VQ-VAE library: model, vector quantizer, metrics, data, checkpoints and a learned
prior over the codes.

>>> import vqvae, torch
>>> model = vqvae.VQVAE(vqvae.preset("mnist"))
>>> codes = model.encode(torch.rand(2, 1, 28, 28))       # (2, 7, 7) int64
>>> images = model.decode(codes)                          # (2, 1, 28, 28) in [0, 1]
>>> model = vqvae.VQVAE.from_pretrained("mnist")          # or a folder, or "org/name" on the Hub
"""

from . import grid, hub
from .codec import compress, compress_image, decompress, decompress_image, rates
from .config import PRESETS, VQVAEConfig, preset
from .grid_prior import GridPrior, GridPriorConfig, load_grid_prior
from .hub import resolve_pretrained
from .latent import code_atlas, color_code_map, interpolate
from .metrics import CodebookUsage, psnr, ssim
from .model import VQVAE, VQVAEOutput, load_pretrained, save_pretrained
from .prior import CodePrior, PriorConfig, load_prior
from .quantizer import Quantizer, QuantizerOutput, VectorQuantizer

__version__ = "0.1.0"

__all__ = [
    "VQVAE",
    "VQVAEConfig",
    "VQVAEOutput",
    "VectorQuantizer",
    "QuantizerOutput",
    "Quantizer",
    "preset",
    "PRESETS",
    "load_pretrained",
    "save_pretrained",
    "resolve_pretrained",
    "hub",
    "grid",
    "psnr",
    "ssim",
    "CodebookUsage",
    "interpolate",
    "code_atlas",
    "color_code_map",
    "CodePrior",
    "PriorConfig",
    "load_prior",
    "compress",
    "decompress",
    "GridPrior",
    "GridPriorConfig",
    "load_grid_prior",
    "compress_image",
    "decompress_image",
    "rates",
]
