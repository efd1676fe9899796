"""Shared by the codec tests: small priors over a 3x4 grid of K = 16 codes, and a tiny
VQ-VAE with a prior tied to it."""

from __future__ import annotations

import vqvae
from prior_helpers import peaked_prior
from vqvae.prior import CodePrior, PriorConfig

K, H, W, CLASSES = 16, 3, 4, 3


def make_prior(num_classes=CLASSES, model=None, seed=1, std=0.5, **kw) -> CodePrior:
    kw = dict(num_classes=num_classes, d_model=32, n_layers=2, n_heads=2, **kw)
    if model is None:  # a prior that names a (pretend) VQ-VAE, as trained priors do
        config = PriorConfig(K, H, W, vqvae_fingerprint="0123456789abcdef", **kw)
    else:
        config = PriorConfig.for_model(model, **kw)
    return peaked_prior(config, seed=seed, std=std)


def codec_pair(config) -> tuple[vqvae.VQVAE, CodePrior]:
    """A VQ-VAE of ``config`` (tiny_config: 28x28 -> 7x7 codes, K = 32) and a random prior
    tied to it."""
    model = vqvae.VQVAE(config).eval()
    return model, make_prior(model=model, std=0.3)
