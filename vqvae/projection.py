"""Kept so that ``from vqvae.projection import ...`` (train/export.py) still works: the codebook
statistics now live in :mod:`vqvae.viz`, beside the figure that shows them."""

from .viz import CODEBOOK_INFO, codebook_info, load_codebook_info, umap_coords

__all__ = ["CODEBOOK_INFO", "codebook_info", "load_codebook_info", "umap_coords"]
