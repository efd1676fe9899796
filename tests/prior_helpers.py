"""Shared by the prior, codec and app tests: a tiny prior whose distributions are peaked."""

from __future__ import annotations

import torch

from vqvae.prior import CodePrior, PriorConfig


def peaked_prior(config: PriorConfig, *, seed: int = 1, std: float = 0.5) -> CodePrior:
    """A prior of ``config`` in eval mode with random weights of scale ``std``, far from the
    tiny init, so that its distributions are peaked and its labels matter, as a trained
    prior's are."""
    prior = CodePrior(config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in prior.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return prior
