"""Shared by the codec tests: small priors over a 3x4 grid of K = 16 codes, and a tiny
VQ-VAE with a prior tied to it."""

from __future__ import annotations

import vqvae
from prior_helpers import peaked_prior
from vqvae.codec import format as vqz
from vqvae.codec import prior_fingerprint, read_header
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


def as_version_2(f: bytes, prior: CodePrior, codes, label: int, vqvae_fp: str | None = None):
    """The version 2 file (4-bit ids, no longer written) of the version 4 file ``f`` of
    ``codes`` (h, w) coded under ``prior`` with class ``label``: the same payload, a 4-byte
    header. ``vqvae_fp``: the VQ-VAE's fingerprint (default: the one the prior names)."""
    vqvae_fp = vqvae_fp or prior.config.vqvae_fingerprint
    prior_fp = prior_fingerprint(prior)
    head = vqz.head_bytes(vqvae_fp, prior_fp, version=2)
    check = vqz.checksum(head, vqvae_fp, prior_fp, label, codes.flatten().numpy(), version=2)
    return head + check + f[read_header(f).header_bytes :]


def version_1_head(vqvae_fp: str, prior_fp: str) -> bytes:
    """A version 1 header before its checksum, for no class: b"VQZ", version 1, the 16-bit
    ids of the VQ-VAE and the prior, the class varint 0."""
    ids = b"".join(vqz.short_id(fp, 16).to_bytes(2, "big") for fp in (vqvae_fp, prior_fp))
    return b"VQZ\x01" + ids + b"\x00"
